import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from safecompress.privacy import bootstrap, metrics


def problem_with_ties(seed, n_members=300, n_nonmembers=500):
    """Integer-valued scores (many ties), members shifted up: a moderate attack."""
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    scores = rng.integers(0, 40, len(is_member)) + 6.0 * is_member
    return is_member, scores.astype(float)


def identity(n):
    return np.arange(n)[None, :]


# --- Vectorised metrics against safecompress.privacy.metrics / sklearn ----------------------------


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_auc_equals_sklearn_on_the_original_sample_with_ties(seed):
    is_member, scores = problem_with_ties(seed)
    members, nonmembers = scores[is_member], scores[~is_member]
    auc = bootstrap.resampled_auc(
        members, nonmembers, identity(len(members)), identity(len(nonmembers))
    )
    assert auc.shape == (1,)
    assert abs(auc[0] - sklearn.metrics.roc_auc_score(is_member, scores)) <= 1e-12


def test_vectorised_auc_counts_a_tie_as_half():
    # Member 2 beats non-member 1, ties non-member 2 and loses to 3: (1 + 0.5 + 0) / 3.
    auc = bootstrap.resampled_auc(
        np.array([2.0]), np.array([1.0, 2.0, 3.0]), identity(1), identity(3)
    )
    assert auc[0] == pytest.approx(0.5)


@pytest.mark.parametrize("max_fpr", [0.0, 0.002, 0.01, 0.05, 0.3, 1.0])
def test_vectorised_tpr_equals_metrics_on_the_original_sample_with_ties(max_fpr):
    is_member, scores = problem_with_ties(seed=5)
    members, nonmembers = scores[is_member], scores[~is_member]
    tpr = bootstrap.resampled_tpr_at_fpr(
        members, nonmembers, identity(len(members)), identity(len(nonmembers)), max_fpr
    )
    expected = (
        metrics.tpr_at_zero_fpr(is_member, scores)
        if max_fpr == 0
        else metrics.tpr_at_fpr(is_member, scores, max_fpr)
    )
    assert tpr[0] == pytest.approx(expected, abs=1e-15)


def test_vectorised_metrics_equal_metrics_on_every_resample():
    """Each row of a resampling is an ordinary member/non-member sample with repeats."""
    is_member, scores = problem_with_ties(seed=6, n_members=60, n_nonmembers=200)
    predicted = scores >= 30
    members, nonmembers = scores[is_member], scores[~is_member]
    rng = np.random.default_rng(0)
    member_idx = rng.integers(0, len(members), (8, len(members)))
    nonmember_idx = rng.integers(0, len(nonmembers), (8, len(nonmembers)))
    auc = bootstrap.resampled_auc(members, nonmembers, member_idx, nonmember_idx)
    tpr = bootstrap.resampled_tpr_at_fpr(members, nonmembers, member_idx, nonmember_idx, 0.01)
    accuracy = bootstrap.resampled_balanced_accuracy(
        predicted[is_member], predicted[~is_member], member_idx, nonmember_idx
    )
    labels = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    for row in range(8):
        resampled = np.r_[members[member_idx[row]], nonmembers[nonmember_idx[row]]]
        flagged = np.r_[
            predicted[is_member][member_idx[row]], predicted[~is_member][nonmember_idx[row]]
        ]
        assert auc[row] == pytest.approx(metrics.roc_auc(labels, resampled), abs=1e-12)
        assert tpr[row] == pytest.approx(metrics.tpr_at_fpr(labels, resampled, 0.01), abs=1e-15)
        assert accuracy[row] == pytest.approx(metrics.balanced_accuracy(labels, flagged), abs=1e-15)


# --- metric_intervals -----------------------------------------------------------------------


def test_metric_intervals_keys_bracket_the_point_and_are_reproducible():
    is_member, scores = problem_with_ties(seed=7)
    predicted = scores >= 25
    result = bootstrap.metric_intervals(is_member, scores, predicted, n_resamples=500, seed=3)
    assert list(result) == [
        f"{metric}_ci_{side}" for metric in metrics.ATTACK_METRICS for side in ("low", "high")
    ]
    point = metrics.attack_metrics(is_member, scores, predicted)
    for metric in ("attack_acc", "advantage", "auc", "tpr_at_1pct_fpr", "tpr_at_0fpr"):
        low, high = result[f"{metric}_ci_low"], result[f"{metric}_ci_high"]
        assert low <= point[metric] <= high, metric
        assert low < high, metric
    # advantage = 2 * accuracy - 1, and percentile intervals follow monotone maps.
    assert result["advantage_ci_low"] == pytest.approx(2 * result["attack_acc_ci_low"] - 1)
    assert result["advantage_ci_high"] == pytest.approx(2 * result["attack_acc_ci_high"] - 1)
    again = bootstrap.metric_intervals(is_member, scores, predicted, n_resamples=500, seed=3)
    assert again == pytest.approx(result, nan_ok=True)
    other_seed = bootstrap.metric_intervals(is_member, scores, predicted, n_resamples=500, seed=4)
    assert other_seed["auc_ci_low"] != result["auc_ci_low"]


def test_metric_intervals_are_nan_where_the_fpr_is_unresolved():
    # 500 non-members resolve 1% FPR but not 0.1%.
    is_member, scores = problem_with_ties(seed=8)
    result = bootstrap.metric_intervals(is_member, scores, scores >= 25, n_resamples=200, seed=0)
    assert np.isnan(result["tpr_at_0.1pct_fpr_ci_low"])
    assert np.isnan(result["tpr_at_0.1pct_fpr_ci_high"])
    assert not np.isnan(result["tpr_at_1pct_fpr_ci_low"])
    assert not np.isnan(result["tpr_at_0fpr_ci_low"])


def test_metric_intervals_of_a_perfect_attack_are_a_point():
    is_member = np.r_[np.ones(50, bool), np.zeros(150, bool)]
    scores = np.r_[np.linspace(10, 11, 50), np.linspace(0, 1, 150)]
    result = bootstrap.metric_intervals(is_member, scores, scores > 5, n_resamples=200, seed=0)
    for metric in ("attack_acc", "auc", "tpr_at_1pct_fpr", "tpr_at_0fpr"):
        assert result[f"{metric}_ci_low"] == result[f"{metric}_ci_high"] == 1.0


def test_metric_intervals_cover_the_population_auc():
    """Binormal scores with member shift d have population AUC Phi(d / sqrt 2): the 95%
    interval must contain it in most of 50 independent evaluation sets, without being wide."""
    shift, n = 0.6, 150
    population_auc = scipy.stats.norm.cdf(shift / math.sqrt(2))
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    rng = np.random.default_rng(2024)
    covered, widths = 0, []
    for repetition in range(50):
        scores = rng.normal(size=2 * n) + shift * is_member
        result = bootstrap.metric_intervals(
            is_member, scores, scores > shift / 2, n_resamples=400, seed=repetition
        )
        covered += result["auc_ci_low"] <= population_auc <= result["auc_ci_high"]
        widths.append(result["auc_ci_high"] - result["auc_ci_low"])
    # Nominal 47.5 of 50; 42 or fewer would be a clearly broken interval (P < 1% if valid).
    assert covered >= 43
    # The normal-theory width 2 * 1.96 * SE(AUC) is about 0.12 here; far wider is no interval.
    assert 0.08 < np.mean(widths) < 0.16


def test_metric_intervals_input_errors():
    is_member = np.array([True, False, False, False])
    with pytest.raises(ValueError, match="at least 2 members"):
        bootstrap.metric_intervals(is_member, np.arange(4.0), is_member, 10, 0)
    with pytest.raises(ValueError, match="predicted must hold 0/1"):
        bootstrap.metric_intervals(
            np.array([True, True, False, False]), np.arange(4.0), np.arange(4.0), 10, 0
        )
    with pytest.raises(ValueError, match="NaN"):
        bootstrap.metric_intervals(
            np.array([True, True, False, False]),
            np.array([1.0, np.nan, 0.0, 0.0]),
            np.array([True, True, False, False]),
            10,
            0,
        )


# --- paired_differences ---------------------------------------------------------------------


def test_paired_differences_of_identical_scores_are_exactly_zero():
    is_member, scores = problem_with_ties(seed=9)
    metrics = ["auc", "tpr_at_1pct_fpr", "tpr_at_0fpr"]
    differences = bootstrap.paired_differences(is_member, scores, scores.copy(), metrics, 300, 0)
    assert differences == {metric: (0.0, 0.0, 0.0) for metric in metrics}


def test_paired_differences_of_identical_predictions_are_exactly_zero():
    is_member, scores = problem_with_ties(seed=9)
    predicted = scores >= 25
    metrics = ["attack_acc", "advantage"]
    differences = bootstrap.paired_differences(
        is_member, predicted, predicted.copy(), metrics, 300, 0
    )
    assert differences == {metric: (0.0, 0.0, 0.0) for metric in metrics}


def test_paired_differences_of_several_metrics_are_each_metrics_own():
    """One bootstrap for several metrics gives each the interval it gets alone (same seed,
    same resamples)."""
    rng = np.random.default_rng(13)
    is_member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores_a = rng.normal(size=600) + 1.0 * is_member
    scores_b = scores_a + rng.normal(scale=0.5, size=600)
    metrics = ["auc", "tpr_at_1pct_fpr"]
    together = bootstrap.paired_differences(is_member, scores_a, scores_b, metrics, 200, 4)
    for metric in metrics:
        alone = bootstrap.paired_differences(is_member, scores_a, scores_b, [metric], 200, 4)
        assert alone[metric] == pytest.approx(together[metric], rel=1e-12)


def test_paired_differences_find_a_small_consistent_improvement():
    """b adds a little noise to a's scores: the AUC drop is small but systematic, and the
    paired interval, which cancels what both share, resolves it."""
    rng = np.random.default_rng(10)
    is_member = np.r_[np.ones(400, bool), np.zeros(400, bool)]
    scores_a = rng.normal(size=800) + 1.0 * is_member
    scores_b = scores_a + rng.normal(scale=0.5, size=800)
    difference, low, high = bootstrap.paired_differences(
        is_member, scores_a, scores_b, ["auc"], 1000, 0
    )["auc"]
    assert difference == pytest.approx(
        metrics.roc_auc(is_member, scores_a) - metrics.roc_auc(is_member, scores_b)
    )
    assert 0 < low <= difference <= high
    single = bootstrap.metric_intervals(is_member, scores_a, scores_a > 0.5, 1000, 0)
    assert high - low < 0.75 * (single["auc_ci_high"] - single["auc_ci_low"])


def test_paired_differences_are_nan_where_the_fpr_is_unresolved():
    is_member, scores = problem_with_ties(seed=11)  # 500 non-members: 0.1% unresolved
    result = bootstrap.paired_differences(
        is_member, scores, -scores, ["tpr_at_0.1pct_fpr", "auc"], 50, 0
    )
    assert all(np.isnan(result["tpr_at_0.1pct_fpr"]))
    assert result["auc"][1] <= result["auc"][0] <= result["auc"][2]


def test_paired_differences_input_errors():
    is_member, scores = problem_with_ties(seed=12)
    paired = bootstrap.paired_differences
    with pytest.raises(ValueError, match="unknown metric"):
        paired(is_member, scores, scores, ["precision"], 10, 0)
    with pytest.raises(ValueError, match="0/1 member predictions"):
        paired(is_member, scores, scores, ["attack_acc"], 10, 0)
    with pytest.raises(ValueError, match="mix score metrics with prediction metrics"):
        paired(is_member, scores, scores, ["auc", "attack_acc"], 10, 0)
    with pytest.raises(ValueError, match="length mismatch"):
        paired(is_member, scores, scores[:-1], ["auc"], 10, 0)


# --- seed_t_interval ------------------------------------------------------------------------


def test_seed_t_interval_hand_case():
    # Mean 2, standard error 1 / sqrt(3); with 2 degrees of freedom the t quantile has the
    # closed form (2p - 1) sqrt(2 / (4p(1 - p))), 4.3027 at p = 0.975.
    mean, low, high = bootstrap.seed_t_interval(np.array([1.0, 2.0, 3.0]))
    t_quantile = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
    half_width = t_quantile / math.sqrt(3)
    assert mean == 2.0
    assert low == pytest.approx(2 - half_width, rel=1e-12)
    assert high == pytest.approx(2 + half_width, rel=1e-12)


def test_seed_t_interval_edge_cases():
    mean, low, high = bootstrap.seed_t_interval(np.array([0.25]))
    assert mean == 0.25 and np.isnan(low) and np.isnan(high)
    assert bootstrap.seed_t_interval(np.array([0.1, 0.1, 0.1])) == (0.1, 0.1, 0.1)
    assert all(np.isnan(bootstrap.seed_t_interval(np.array([0.1, np.nan]))))
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap.seed_t_interval(np.array([]))
