import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import sklearn.metrics

from safecompress.privacy import bootstrap, metrics, paired


def problem_with_ties(seed, n_members=300, n_nonmembers=500):
    """Integer-valued scores (many ties), members shifted up: a moderate attack."""
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    scores = rng.integers(0, 40, len(is_member)) + 6.0 * is_member
    return is_member, scores.astype(float)


def identity(n):
    return np.arange(n)[None, :]


def ranks_of(members, nonmembers, member_idx, nonmember_idx):
    codes = bootstrap.value_codes(members, nonmembers)
    return bootstrap.resample_ranks(codes, member_idx, nonmember_idx)


def sklearn_tpr_at_fpr(is_member, scores, max_fpr):
    """The best TPR among scikit-learn's ROC points with FPR <= max_fpr."""
    fpr, tpr, _ = sklearn.metrics.roc_curve(is_member, scores, drop_intermediate=False)
    return tpr[fpr <= max_fpr].max()


# --- Vectorised metrics against scikit-learn and safecompress.privacy.metrics ---------------


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_auc_equals_sklearn_on_the_original_sample_with_ties(seed):
    is_member, scores = problem_with_ties(seed)
    members, nonmembers = scores[is_member], scores[~is_member]
    ranks = ranks_of(members, nonmembers, identity(len(members)), identity(len(nonmembers)))
    auc = bootstrap.auc_of_ranks(ranks)
    assert auc.shape == (1,)
    assert abs(auc[0] - sklearn.metrics.roc_auc_score(is_member, scores)) <= 1e-12


def test_vectorised_auc_counts_a_tie_as_half():
    # Member 2 beats non-member 1, ties non-member 2 and loses to 3: (1 + 0.5 + 0) / 3.
    ranks = ranks_of(np.array([2.0]), np.array([1.0, 2.0, 3.0]), identity(1), identity(3))
    assert bootstrap.auc_of_ranks(ranks)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("max_fpr", [0.0, 0.002, 0.01, 0.05, 0.3, 1.0])
def test_vectorised_tpr_equals_sklearn_on_the_original_sample_with_ties(max_fpr):
    is_member, scores = problem_with_ties(seed=5)
    members, nonmembers = scores[is_member], scores[~is_member]
    ranks = ranks_of(members, nonmembers, identity(len(members)), identity(len(nonmembers)))
    tpr = bootstrap.tpr_at_fpr_of_ranks(ranks, max_fpr)
    assert tpr.shape == (1,)
    assert tpr[0] == pytest.approx(sklearn_tpr_at_fpr(is_member, scores, max_fpr), abs=1e-15)


def test_vectorised_tpr_of_many_fprs_is_each_fprs_own():
    """An array of FPRs gives a column per FPR, each as that FPR alone would."""
    is_member, scores = problem_with_ties(seed=6, n_members=60, n_nonmembers=200)
    members, nonmembers = scores[is_member], scores[~is_member]
    rng = np.random.default_rng(1)
    ranks = ranks_of(
        members,
        nonmembers,
        rng.integers(0, len(members), (7, len(members))),
        rng.integers(0, len(nonmembers), (7, len(nonmembers))),
    )
    fprs = np.array([0.0, 0.005, 0.01, 0.1, 0.5, 1.0])
    curves = bootstrap.tpr_at_fpr_of_ranks(ranks, fprs)
    assert curves.shape == (7, len(fprs))
    for column, fpr in enumerate(fprs):
        assert np.array_equal(curves[:, column], bootstrap.tpr_at_fpr_of_ranks(ranks, fpr))


def test_vectorised_metrics_equal_metrics_on_every_resample():
    """Each row of a resampling is an ordinary member/non-member sample with repeats."""
    is_member, scores = problem_with_ties(seed=6, n_members=60, n_nonmembers=200)
    predicted = scores >= 30
    members, nonmembers = scores[is_member], scores[~is_member]
    rng = np.random.default_rng(0)
    member_idx = rng.integers(0, len(members), (8, len(members)))
    nonmember_idx = rng.integers(0, len(nonmembers), (8, len(nonmembers)))
    ranks = ranks_of(members, nonmembers, member_idx, nonmember_idx)
    auc = bootstrap.auc_of_ranks(ranks)
    tpr = bootstrap.tpr_at_fpr_of_ranks(ranks, 0.01)
    accuracy = bootstrap.resampled_balanced_accuracy(
        predicted[is_member], predicted[~is_member], member_idx, nonmember_idx
    )
    labels = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    for row in range(8):
        resampled = np.r_[members[member_idx[row]], nonmembers[nonmember_idx[row]]]
        flagged = np.r_[
            predicted[is_member][member_idx[row]], predicted[~is_member][nonmember_idx[row]]
        ]
        assert auc[row] == pytest.approx(
            sklearn.metrics.roc_auc_score(labels, resampled), abs=1e-12
        )
        assert tpr[row] == pytest.approx(metrics.tpr_at_fpr(labels, resampled, 0.01), abs=1e-15)
        assert accuracy[row] == pytest.approx(
            sklearn.metrics.balanced_accuracy_score(labels, flagged), abs=1e-15
        )


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


def test_accuracy_difference_is_a_paired_interval():
    rng = np.random.default_rng(14)
    correct_b = rng.random(600) < 0.7
    correct_a = correct_b | (rng.random(600) < 0.15)  # a fixes some of b's mistakes
    difference, low, high = bootstrap.accuracy_difference(correct_a, correct_b, 1000, 0)
    assert difference == pytest.approx(correct_a.mean() - correct_b.mean())
    assert 0 < low <= difference <= high
    assert bootstrap.accuracy_difference(correct_b, correct_b.copy(), 100, 0) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="scored on 600 and 599 samples"):
        bootstrap.accuracy_difference(correct_a, correct_b[:-1], 100, 0)


def scored_model(method, seed, scores, correct, index=None, split=0):
    n = len(scores)
    return paired.ScoredModel(
        dataset="digits",
        split=split,
        method=method,
        variant="default",
        density=0.1,
        seed=seed,
        index=np.arange(n) if index is None else index,
        is_member=np.arange(n) < n // 2,
        correct=correct,
        scores={"loss": scores},
    )


def test_paired_rows_compare_each_replicate_then_the_mean_over_replicates():
    rng = np.random.default_rng(15)
    is_member = np.arange(400) < 200
    models = []
    # seed 0 on two splits: each model is paired with DST of its own split, not the other's
    for split, seed in ((0, 0), (7, 0), (7, 1)):
        base = rng.normal(size=400) + is_member
        correct = rng.random(400) < 0.8
        noisy = base + rng.normal(scale=0.8, size=400)
        models += [
            scored_model("dst", seed, base, correct, split=split),
            scored_model("safecompress", seed, noisy, correct, split=split),
        ]
    rows = pd.DataFrame(paired.paired_rows(models, "dst", n_resamples=200))
    compared = {("task", "task_acc"), *(("loss", m) for m in paired.PAIRED_METRICS)}
    assert set(rows["method"]) == {"safecompress"}
    assert set(zip(rows["attack"], rows["metric"], strict=True)) == compared
    per_seed, over_seeds = rows[rows["scope"] == "replicate"], rows[rows["scope"] == "replicates"]
    assert len(per_seed) == 3 * len(compared) and len(over_seeds) == len(compared)
    auc = per_seed[per_seed["metric"] == "auc"].sort_values(["split", "seed"])
    for model, reference, row in zip(models[1::2], models[::2], auc.itertuples(), strict=True):
        expected = metrics.roc_auc(model.is_member, model.scores["loss"]) - metrics.roc_auc(
            reference.is_member, reference.scores["loss"]
        )
        assert row.difference == pytest.approx(expected)
        assert row.ci_low <= row.difference <= row.ci_high
    mean = over_seeds[over_seeds["metric"] == "auc"].iloc[0]
    assert mean["n_replicates"] == 3
    assert (mean["difference"], mean["ci_low"], mean["ci_high"]) == pytest.approx(
        bootstrap.seed_t_interval(auc["difference"].to_numpy())
    )
    task = per_seed[per_seed["metric"] == "task_acc"]
    assert (task[["difference", "ci_low", "ci_high"]] == 0).all(axis=None)  # same correctness


def test_paired_rows_refuse_models_scored_on_other_samples():
    scores, correct = np.linspace(0, 1, 10), np.ones(10, bool)
    models = [
        scored_model("dst", 0, scores, correct),
        scored_model("safecompress", 0, scores, correct, index=np.arange(10)[::-1]),
    ]
    with pytest.raises(ValueError, match="not scored on the same samples"):
        paired.paired_rows(models, "dst", n_resamples=10)


# --- ROC band -------------------------------------------------------------------------------


def members_and_scores(n: int, separation: float = 0.5, seed: int = 3, ties: bool = False):
    rng = np.random.default_rng(seed)
    is_member = np.repeat([True, False], n)
    scores = rng.normal(separation * is_member, 1.0)
    return is_member, np.round(scores, 1) if ties else scores


def test_fpr_grid_spans_the_resolvable_fprs_on_a_log_scale():
    grid = bootstrap.roc_fpr_grid(359)
    assert grid[0] == 1 / 359 and grid[-1] == 1.0
    assert np.allclose(grid * 359, np.rint(grid * 359))  # each a number of false positives
    assert (np.diff(grid) > 0).all() and 40 <= len(grid) <= bootstrap.ROC_GRID_POINTS
    assert bootstrap.roc_fpr_grid(5).tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied scores"])
def test_band_point_is_sklearns_roc_at_each_fpr(ties):
    is_member, scores = members_and_scores(150, ties=ties)
    band = bootstrap.roc_band(is_member, scores, n_resamples=20, seed=0)
    expected = [sklearn_tpr_at_fpr(is_member, scores, fpr) for fpr in band.fpr]
    assert band.tpr == pytest.approx(expected, abs=1e-15)


def test_band_at_one_fpr_is_the_interval_of_that_tpr():
    """The band and the metric intervals draw the same resamples: at 1% FPR, with the same
    seed, the band is exactly the interval of tpr_at_1pct_fpr."""
    is_member, scores = problem_with_ties(seed=16)
    band = bootstrap.roc_band(is_member, scores, 300, seed=5, fprs=np.array([0.01]))
    intervals = bootstrap.metric_intervals(is_member, scores, scores > 25, 300, seed=5)
    assert (band.low[0], band.high[0]) == (
        intervals["tpr_at_1pct_fpr_ci_low"],
        intervals["tpr_at_1pct_fpr_ci_high"],
    )


def test_band_contains_the_point_roc_and_narrows_with_more_samples():
    widths = {}
    for n in (100, 2000):
        is_member, scores = members_and_scores(n)
        band = bootstrap.roc_band(is_member, scores, n_resamples=300, seed=0)
        assert band.fpr[0] == 1 / n
        assert (band.low <= band.tpr).all() and (band.tpr <= band.high).all()
        assert ((band.low >= 0) & (band.high <= 1)).all()
        resolved = band.fpr >= 0.01  # FPRs that both sample sizes resolve
        widths[n] = np.interp(
            np.log([0.01, 0.1, 0.5]), np.log(band.fpr[resolved]), (band.high - band.low)[resolved]
        )
    assert (widths[2000] < 0.6 * widths[100]).all()


def test_band_is_reproducible_and_refuses_unresolvable_fprs():
    is_member, scores = members_and_scores(50)
    first, second = (bootstrap.roc_band(is_member, scores, 100, seed=7) for _ in range(2))
    assert np.array_equal(first.low, second.low) and np.array_equal(first.high, second.high)
    with pytest.raises(ValueError, match="FPRs must lie in"):
        bootstrap.roc_band(is_member, scores, 100, seed=0, fprs=[0.001, 0.1])


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
