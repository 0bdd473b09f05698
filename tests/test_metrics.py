import numpy as np
import pytest
import sklearn.metrics

from safecompress.privacy import metrics

# Four samples ranked member, non-member, member, non-member (P = N = 2).
HAND_MEMBERS = np.array([True, False, True, False])
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.1])


def mann_whitney(is_member, scores):
    """P(member score > non-member score) + 0.5 P(tie), over all pairs."""
    member, nonmember = scores[is_member][:, None], scores[~is_member][None, :]
    return np.mean((member > nonmember) + 0.5 * (member == nonmember))


def random_problem_with_ties(seed, n=300):
    rng = np.random.default_rng(seed)
    is_member = rng.random(n) < 0.4
    scores = rng.integers(0, 12, n) + 0.8 * is_member  # few distinct values: many ties
    return is_member, scores.astype(float)


def test_roc_curve_hand_case():
    fpr, tpr, thresholds = metrics.roc_curve(HAND_MEMBERS, HAND_SCORES)
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.7, 0.1])


def test_roc_curve_tied_scores_enter_together():
    is_member = np.array([True, True, False, False])
    fpr, tpr, thresholds = metrics.roc_curve(is_member, np.array([2.0, 1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 2, 1, 0])
    assert metrics.roc_auc(is_member, np.array([2.0, 1.0, 1.0, 0.0])) == pytest.approx(0.875)


def test_roc_curve_does_not_depend_on_sample_order():
    is_member, scores = random_problem_with_ties(seed=3)
    permutation = np.random.default_rng(0).permutation(len(scores))
    for original, permuted in zip(
        metrics.roc_curve(is_member, scores),
        metrics.roc_curve(is_member[permutation], scores[permutation]),
        strict=True,
    ):
        np.testing.assert_array_equal(original, permuted)


@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_matches_sklearn_with_ties(seed):
    is_member, scores = random_problem_with_ties(seed)
    fpr, tpr, thresholds = metrics.roc_curve(is_member, scores)
    expected_fpr, expected_tpr, expected_thresholds = sklearn.metrics.roc_curve(
        is_member, scores, drop_intermediate=False
    )
    np.testing.assert_allclose(fpr, expected_fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(tpr, expected_tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(thresholds, expected_thresholds)


def test_roc_auc_hand_case():
    # Member 0.9 outranks both non-members, member 0.7 only the 0.1: 3 of 4 pairs.
    assert metrics.roc_auc(HAND_MEMBERS, HAND_SCORES) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([4.0, 3.0, 2.0, 1.0], 1.0),  # members on top: perfectly separated
        ([1.0, 2.0, 3.0, 4.0], 0.0),  # members at the bottom: reversed
        ([5.0, 5.0, 5.0, 5.0], 0.5),  # all tied
    ],
)
def test_roc_auc_extremes(scores, expected):
    is_member = np.array([True, True, False, False])
    assert metrics.roc_auc(is_member, np.array(scores)) == expected


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_and_mann_whitney_with_ties(seed):
    is_member, scores = random_problem_with_ties(seed)
    auc = metrics.roc_auc(is_member, scores)
    assert abs(auc - sklearn.metrics.roc_auc_score(is_member, scores)) <= 1e-12
    assert abs(auc - mann_whitney(is_member, scores)) <= 1e-12


def test_roc_auc_accepts_integer_membership():
    assert metrics.roc_auc(HAND_MEMBERS.astype(int), HAND_SCORES) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("max_fpr", "expected"),
    [(0.0, np.nan), (0.49, np.nan), (0.5, 1.0), (1.0, 1.0)],
)
def test_tpr_at_fpr_hand_case(max_fpr, expected):
    # Two non-members resolve FPR 0.5 and 1 only; below 1/2 there is no such FPR to measure.
    np.testing.assert_equal(metrics.tpr_at_fpr(HAND_MEMBERS, HAND_SCORES, max_fpr), expected)


def unresolved_problem(n_nonmembers):
    """Members all above the non-members: TPR is 1 wherever an FPR is measurable."""
    is_member = np.r_[np.ones(10, bool), np.zeros(n_nonmembers, bool)]
    return is_member, np.r_[np.arange(10) + 1000.0, np.arange(n_nonmembers, dtype=float)]


@pytest.mark.parametrize(
    ("n_nonmembers", "max_fpr", "resolved"),
    [(100, 0.01, True), (99, 0.01, False), (1000, 0.001, True), (999, 0.001, False)],
)
def test_tpr_at_fpr_is_nan_below_one_false_positive(n_nonmembers, max_fpr, resolved):
    is_member, scores = unresolved_problem(n_nonmembers)
    result = metrics.tpr_at_fpr(is_member, scores, max_fpr)
    assert result == 1.0 if resolved else np.isnan(result)
    # FPR 0 is always measurable, under its own name.
    assert metrics.tpr_at_zero_fpr(is_member, scores) == 1.0


def test_tpr_at_zero_fpr_hand_case():
    # Only the 0.9 member ranks above every non-member.
    assert metrics.tpr_at_zero_fpr(HAND_MEMBERS, HAND_SCORES) == 0.5


def test_tpr_at_zero_fpr_is_zero_when_a_non_member_ranks_first():
    is_member = np.array([False, True, True, False])
    assert metrics.tpr_at_zero_fpr(is_member, np.array([0.9, 0.8, 0.7, 0.1])) == 0.0


def test_tpr_counts_a_tie_with_a_non_member_as_a_false_positive():
    is_member = np.array([True, False, True, False])
    assert metrics.tpr_at_zero_fpr(is_member, np.array([1.0, 1.0, 0.5, 0.0])) == 0.0
    # 100 non-members allow one false positive at 1% FPR: a member tied with one non-member
    # is flagged, a member tied with two is not.
    members, nonmembers = np.array([5.0, -1.0]), np.r_[5.0, np.zeros(99)]
    is_member = np.r_[np.ones(2, bool), np.zeros(100, bool)]
    assert metrics.tpr_at_fpr(is_member, np.r_[members, nonmembers], 0.01) == 0.5
    nonmembers[1] = 5.0
    assert metrics.tpr_at_fpr(is_member, np.r_[members, nonmembers], 0.01) == 0.0


def test_tpr_at_fpr_rejects_out_of_range_fpr():
    with pytest.raises(ValueError, match="max_fpr"):
        metrics.tpr_at_fpr(HAND_MEMBERS, HAND_SCORES, 1.5)


def test_balanced_accuracy_hand_cases():
    is_member = np.array([True, True, True, False])
    # TPR 1/3, TNR 1.
    assert metrics.balanced_accuracy(is_member, np.array([True, False, False, False])) == (
        pytest.approx(2 / 3)
    )
    # Flagging everyone is chance, however unbalanced the classes.
    assert metrics.balanced_accuracy(is_member, np.ones(4, bool)) == 0.5
    assert metrics.balanced_accuracy(is_member, is_member) == 1.0
    assert metrics.balanced_accuracy(is_member, ~is_member) == 0.0


def test_balanced_accuracy_matches_sklearn():
    is_member, scores = random_problem_with_ties(seed=1)
    predicted = scores >= 6
    assert metrics.balanced_accuracy(is_member, predicted) == pytest.approx(
        sklearn.metrics.balanced_accuracy_score(is_member, predicted), abs=1e-15
    )


def test_balanced_accuracy_rejects_non_boolean_predictions():
    with pytest.raises(ValueError, match="predicted_member must be boolean"):
        metrics.balanced_accuracy(HAND_MEMBERS, HAND_SCORES)


def test_attack_metrics_hand_case():
    predicted = HAND_SCORES >= 0.85  # flags only the 0.9 member: TPR 1/2, TNR 1
    result = metrics.attack_metrics(HAND_MEMBERS, HAND_SCORES, predicted)
    assert (
        tuple(result)
        == metrics.ATTACK_METRICS
        == (
            "attack_acc",
            "advantage",
            "auc",
            "tpr_at_1pct_fpr",
            "tpr_at_0.1pct_fpr",
            "tpr_at_0fpr",
        )
    )
    assert result["attack_acc"] == pytest.approx(0.75)
    assert result["advantage"] == pytest.approx(0.5)
    assert result["auc"] == pytest.approx(0.75)
    # Two non-members cannot resolve 1% or 0.1% FPR.
    assert np.isnan(result["tpr_at_1pct_fpr"])
    assert np.isnan(result["tpr_at_0.1pct_fpr"])
    assert result["tpr_at_0fpr"] == 0.5


def test_attack_metrics_agree_with_the_single_metrics():
    is_member, scores = random_problem_with_ties(seed=2, n=3000)
    predicted = scores >= 6
    result = metrics.attack_metrics(is_member, scores, predicted)
    assert result["auc"] == metrics.roc_auc(is_member, scores)
    assert result["tpr_at_1pct_fpr"] == metrics.tpr_at_fpr(is_member, scores, 0.01)
    assert result["tpr_at_0.1pct_fpr"] == metrics.tpr_at_fpr(is_member, scores, 0.001)
    assert result["tpr_at_0fpr"] == metrics.tpr_at_zero_fpr(is_member, scores)
    assert not np.isnan(result["tpr_at_0.1pct_fpr"])  # about 1800 non-members resolve 0.1%


@pytest.mark.parametrize(
    "metric",
    [
        lambda m, s: metrics.roc_curve(m, s),
        metrics.roc_auc,
        lambda m, s: metrics.tpr_at_fpr(m, s, 0.01),
        metrics.tpr_at_zero_fpr,
        lambda m, s: metrics.balanced_accuracy(m, s > 0.5),
    ],
)
def test_errors(metric):
    with pytest.raises(ValueError, match="length mismatch: 4 membership labels vs 3"):
        metric(HAND_MEMBERS, HAND_SCORES[:3])
    with pytest.raises(ValueError, match="no members"):
        metric(np.zeros(4, bool), HAND_SCORES)
    with pytest.raises(ValueError, match="no non-members"):
        metric(np.ones(4, bool), HAND_SCORES)
    with pytest.raises(ValueError, match="is_member must be boolean"):
        metric(np.array(["member", "non-member", "member", "x"]), HAND_SCORES)


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc(HAND_MEMBERS, np.array([0.9, np.nan, 0.7, 0.1]))


def test_infinite_scores_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        metrics.roc_curve(HAND_MEMBERS, np.array([np.inf, 0.8, 0.7, 0.1]))
