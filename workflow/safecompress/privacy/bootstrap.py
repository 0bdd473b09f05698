"""Uncertainty of the attack metrics: bootstrap intervals, paired differences, ROC bands,
seed intervals.

The bootstrap resamples members and non-members separately (stratified): the evaluation set
fixes how many of each there are, and a fixed non-member count keeps every low-FPR metric
resolvable in every resample. `scipy.stats.bootstrap` resamples the sample *indices*, so one
draw serves every metric of a model, both models of a paired difference, and every FPR of a
pointwise ROC band. The metrics of a whole batch of resamples are computed at once from counts
on the sorted distinct values (AUC as the Mann-Whitney U statistic), so ~1000 resamples of
~900 samples take milliseconds.

Method 'percentile', not BCa: TPR at low FPR is an order statistic of the non-member scores,
for which the jackknife that BCa needs for its acceleration is not consistent (as for the
median), and BCa's corrections break down where the bootstrap distribution is a few discrete
values (TPR at 0 FPR, AUC near 1). Percentile intervals stay inside the metric's range, map
through monotone transforms (advantage = 2 * accuracy - 1 gets the mapped interval), and need
no jackknife, which would cost one more statistic per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from safecompress.privacy.metrics import (
    ATTACK_METRICS,
    TPR_AT_FPR,
    WORST_CASE_METRICS,
    WORST_CASE_PREFIX,
    attack_metrics,
    binary_problem,
    fpr_is_resolved,
    membership_scores,
)

METHOD = "percentile"
# Resamples go through in batches of about this many (resample, sample) cells: memory stays
# bounded at paper scale (tens of thousands of samples) and the small case is one batch.
BATCH_CELLS = 2**21
# FPRs of a ROC band, spaced evenly on a log scale from the smallest resolvable one.
ROC_GRID_POINTS = 60
# The suffixes of an interval's bounds: <metric>_ci_low, <metric>_ci_high.
CI_ENDS = ("_ci_low", "_ci_high")
# The metrics that read hard member predictions rather than continuous scores.
PREDICTION_METRICS = ("attack_acc", "advantage")
# Metrics of a batch of resamples: (member indices, non-member indices), each
# (resamples, group size) -> (metrics, resamples).
ResampledStatistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _stats():
    """scipy.stats, imported on first use: the import takes about a second, and most figure
    steps, which reach this module through the reporting tables, never call it."""
    import scipy.stats

    return scipy.stats


class ValueCodes(NamedTuple):
    """Each member's and non-member's index among the D distinct scores of both (ascending)."""

    members: np.ndarray
    nonmembers: np.ndarray
    n_values: int


class ResampleRanks(NamedTuple):
    """How many drawn members and drawn non-members score below each distinct value of the
    original sample, per resample: `members_below` and `nonmembers_below`, each (resamples,
    D + 1), the last column counting all of them.

    Every rank metric of a resample is read off these, so the AUC and the TPR at any number of
    FPRs cost a few O(resamples x n) passes instead of a sort per resample.
    """

    members_below: np.ndarray
    nonmembers_below: np.ndarray


def value_codes(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> ValueCodes:
    """`ValueCodes` of the scores: computed once, then shared by every batch of resamples."""
    _, codes = np.unique(np.r_[member_scores, nonmember_scores], return_inverse=True)
    return ValueCodes(
        codes[: len(member_scores)], codes[len(member_scores) :], int(codes.max()) + 1
    )


def _counts_below(codes: np.ndarray, idx: np.ndarray, n_values: int) -> np.ndarray:
    """(resamples, n_values + 1): drawn samples below each value, one bincount and one cumsum."""
    n_resamples = len(idx)
    cells = (codes[idx] + np.arange(n_resamples)[:, None] * n_values).ravel()
    counts = np.bincount(cells, minlength=n_resamples * n_values).reshape(n_resamples, n_values)
    below = np.zeros((n_resamples, n_values + 1), dtype=counts.dtype)
    np.cumsum(counts, axis=1, out=below[:, 1:])
    return below


def resample_ranks(
    codes: ValueCodes, member_idx: np.ndarray, nonmember_idx: np.ndarray
) -> ResampleRanks:
    """`ResampleRanks` of the resamples whose rows index the members and the non-members."""
    return ResampleRanks(
        _counts_below(codes.members, member_idx, codes.n_values),
        _counts_below(codes.nonmembers, nonmember_idx, codes.n_values),
    )


def auc_of_ranks(ranks: ResampleRanks) -> np.ndarray:
    """AUC of each resample as the Mann-Whitney U statistic over n_m * n_n pairs: a member
    wins against every non-member valued below it and half-wins against every tie, i.e. it
    scores the mean of the non-member counts below its value and below the next value."""
    members_at = np.diff(ranks.members_below, axis=1)
    below = ranks.nonmembers_below
    twice_wins = (members_at * (below[:, :-1] + below[:, 1:])).sum(axis=1)
    return twice_wins / 2 / (ranks.members_below[:, -1] * below[:, -1])


def _false_positives_allowed(n_nonmembers: int, max_fpr: np.ndarray) -> np.ndarray:
    """Largest k with k / n_nonmembers <= max_fpr, computed as the ROC's FPRs are."""
    return np.searchsorted(np.arange(n_nonmembers + 1) / n_nonmembers, max_fpr, "right") - 1


def tpr_at_fpr_of_ranks(ranks: ResampleRanks, max_fpr: float | np.ndarray) -> np.ndarray:
    """TPR at FPR <= max_fpr of each resample, as `metrics.tpr_at_fpr` (0: `tpr_at_zero_fpr`):
    (resamples,) for one FPR, (resamples, FPRs) for an array of them.

    With k false positives allowed, the best ROC point flags the values at or above which at
    most k non-members score: all values from the first one with at least n_n - k
    non-members below it. The TPR is the share of members on those values. The counts grow
    along each row, so one `searchsorted` finds that value for every resample and FPR, each
    row shifted past the one before it.
    """
    members_below, nonmembers_below = ranks
    n_resamples, n_values = nonmembers_below.shape[0], nonmembers_below.shape[1] - 1
    n_nonmembers = int(nonmembers_below[0, -1])  # the same in every stratified resample
    fprs = np.asarray(max_fpr, dtype=float)
    enough = n_nonmembers - _false_positives_allowed(n_nonmembers, fprs.ravel())
    row = np.arange(n_resamples)[:, None]
    shifted = nonmembers_below[:, :-1] + row * (n_nonmembers + 1)
    first_flagged = np.searchsorted(shifted.ravel(), enough + row * (n_nonmembers + 1))
    first_flagged -= row * n_values
    n_members = members_below[:, -1:]
    flagged = n_members - np.take_along_axis(members_below, first_flagged, axis=1)
    return (flagged / n_members).reshape(n_resamples, *fprs.shape)


def resampled_balanced_accuracy(
    member_predicted: np.ndarray,
    nonmember_predicted: np.ndarray,
    member_idx: np.ndarray,
    nonmember_idx: np.ndarray,
) -> np.ndarray:
    """Balanced accuracy of 0/1 member predictions in each resample, a row of each index matrix."""
    tpr = member_predicted[member_idx].mean(axis=1)
    tnr = 1 - nonmember_predicted[nonmember_idx].mean(axis=1)
    return (tpr + tnr) / 2


def _resampled_statistic(
    metrics: Sequence[str],
    is_member: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray | None = None,
) -> ResampledStatistic:
    """The vectorised twins of `metrics` on one attack's scores (and 0/1 predictions, which
    attack_acc and advantage read)."""
    unknown = sorted(set(metrics) - set(ATTACK_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(ATTACK_METRICS)}")
    codes = value_codes(scores[is_member], scores[~is_member])

    def statistic(member_idx: np.ndarray, nonmember_idx: np.ndarray) -> np.ndarray:
        ranks = resample_ranks(codes, member_idx, nonmember_idx)
        accuracy = None
        rows = []
        for metric in metrics:
            if metric in PREDICTION_METRICS:
                if accuracy is None:
                    accuracy = resampled_balanced_accuracy(
                        predicted[is_member], predicted[~is_member], member_idx, nonmember_idx
                    )
                rows.append(accuracy if metric == "attack_acc" else 2 * accuracy - 1)
            elif metric == "auc":
                rows.append(auc_of_ranks(ranks))
            else:  # a TPR; tpr_at_0fpr is the one without an entry, FPR 0
                rows.append(tpr_at_fpr_of_ranks(ranks, TPR_AT_FPR.get(metric, 0.0)))
        return np.stack(rows)

    return statistic


def _stratified_bootstrap(
    is_member: np.ndarray,
    statistic: ResampledStatistic,
    n_resamples: int,
    seed: int | np.random.Generator,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (low, high) of each row of `statistic` over stratified resamples."""
    n_members, n_nonmembers = np.count_nonzero(is_member), np.count_nonzero(~is_member)
    if min(n_members, n_nonmembers) < 2:
        raise ValueError(
            f"the bootstrap needs at least 2 members and 2 non-members, got {n_members} and "
            f"{n_nonmembers}"
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    result = _stats().bootstrap(
        (np.arange(n_members), np.arange(n_nonmembers)),
        lambda member_idx, nonmember_idx, axis: statistic(member_idx, nonmember_idx),
        n_resamples=n_resamples,
        batch=max(1, BATCH_CELLS // len(is_member)),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        method=METHOD,
        rng=np.random.default_rng(seed),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def _predictions(is_member: np.ndarray, predicted: np.ndarray, name: str) -> np.ndarray:
    """Validated 0/1 member predictions as bools."""
    _, predicted = binary_problem(is_member, predicted)
    if not np.isin(predicted, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 member predictions")
    return predicted.astype(bool)


def metric_intervals(
    is_member: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    n_resamples: int,
    seed: int | np.random.Generator,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Stratified percentile-bootstrap interval of every `ATTACK_METRICS` entry of one attack:
    `<metric>_ci_low` and `<metric>_ci_high`, NaN where the metric itself is NaN (an FPR that
    the non-members cannot resolve)."""
    is_member, scores = membership_scores(is_member, scores)
    predicted = _predictions(is_member, predicted, "predicted")
    n_nonmembers = np.count_nonzero(~is_member)
    defined = [
        metric
        for metric in ATTACK_METRICS
        if metric not in TPR_AT_FPR or fpr_is_resolved(n_nonmembers, TPR_AT_FPR[metric])
    ]
    statistic = _resampled_statistic(defined, is_member, scores, predicted)
    low, high = _stratified_bootstrap(is_member, statistic, n_resamples, seed, confidence)
    bounds = dict(zip(defined, zip(low.tolist(), high.tolist(), strict=True), strict=True))
    intervals = {}
    for metric in ATTACK_METRICS:
        intervals[f"{metric}{CI_ENDS[0]}"], intervals[f"{metric}{CI_ENDS[1]}"] = bounds.get(
            metric, (float("nan"), float("nan"))
        )
    return intervals


def paired_differences(
    is_member: np.ndarray,
    values_a: np.ndarray,
    values_b: np.ndarray,
    metrics: Sequence[str],
    n_resamples: int,
    seed: int | np.random.Generator,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float, float]]:
    """Per metric, (metric(a) - metric(b), low, high) for two models scored on the SAME samples.

    Both are evaluated on the same stratified index resamples, so what the samples share
    cancels and the interval is that of the difference itself (narrower than two separate
    intervals suggest). The metrics all read scores, or all read 0/1 member predictions
    (attack_acc, advantage): pass those as the values. A NaN triple where the metric is NaN
    (an FPR the non-members cannot resolve).
    """
    unknown = sorted(set(metrics) - set(ATTACK_METRICS))
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(ATTACK_METRICS)}")
    predictions = {metric in PREDICTION_METRICS for metric in metrics}
    if len(predictions) > 1:
        raise ValueError(
            f"metrics {list(metrics)} mix score metrics with prediction metrics "
            f"({', '.join(PREDICTION_METRICS)}); compare them in separate calls"
        )
    if predictions == {True}:
        is_member, _ = binary_problem(is_member, values_a)
        values_a = _predictions(is_member, values_a, "values_a")
        values_b = _predictions(is_member, values_b, "values_b")
    else:
        is_member, values_a = membership_scores(is_member, values_a)
        _, values_b = membership_scores(is_member, values_b)
    n_nonmembers = np.count_nonzero(~is_member)
    resolved = [
        metric
        for metric in metrics
        if metric not in TPR_AT_FPR or fpr_is_resolved(n_nonmembers, TPR_AT_FPR[metric])
    ]
    results = {metric: (float("nan"),) * 3 for metric in metrics}
    if resolved:
        statistic_a, statistic_b = (
            _resampled_statistic(
                resolved, is_member, values.astype(float), values if predictions == {True} else None
            )
            for values in (values_a, values_b)
        )

        def delta(member_idx: np.ndarray, nonmember_idx: np.ndarray) -> np.ndarray:
            return statistic_a(member_idx, nonmember_idx) - statistic_b(member_idx, nonmember_idx)

        # the differences themselves: the statistic on the sample as drawn (one "resample"
        # that takes every sample once), the same code as each resample's
        identity = [np.arange(n)[None] for n in (np.count_nonzero(is_member), n_nonmembers)]
        differences = delta(*identity)[:, 0]
        low, high = _stratified_bootstrap(is_member, delta, n_resamples, seed, confidence)
        for metric, point, lo, hi in zip(
            resolved, differences.tolist(), low.tolist(), high.tolist(), strict=True
        ):
            results[metric] = (point, lo, hi)
    return results


def accuracy_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, n_resamples: int, seed: int
) -> tuple[float, float, float]:
    """(acc(a) - acc(b), low, high) of two models on the same test samples, with a paired
    percentile-bootstrap 95 % interval."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"the two models were scored on {len(a)} and {len(b)} samples")
    difference = float(a.mean() - b.mean())
    if np.array_equal(a, b):
        return difference, difference, difference
    interval = (
        _stats()
        .bootstrap(
            (a - b,),
            np.mean,
            n_resamples=n_resamples,
            method=METHOD,
            rng=np.random.default_rng(seed),
        )
        .confidence_interval
    )
    return difference, float(interval.low), float(interval.high)


class RocBand(NamedTuple):
    """TPR at each FPR of a grid: the point estimate and a pointwise bootstrap interval."""

    fpr: np.ndarray
    tpr: np.ndarray
    low: np.ndarray
    high: np.ndarray


def roc_fpr_grid(n_nonmembers: int, n_points: int = ROC_GRID_POINTS) -> np.ndarray:
    """FPRs that `n_nonmembers` resolve, k / n_nonmembers for k from 1 to all of them, spaced
    evenly on a log scale (about `n_points` of them; fewer when there are few non-members)."""
    if n_nonmembers < 1:
        raise ValueError(f"the ROC needs non-members, got {n_nonmembers}")
    false_positives = np.unique(np.rint(np.geomspace(1, n_nonmembers, n_points)).astype(int))
    return false_positives / n_nonmembers


def roc_band(
    is_member: np.ndarray,
    scores: np.ndarray,
    n_resamples: int,
    seed: int | np.random.Generator,
    confidence: float = 0.95,
    fprs: np.ndarray | None = None,
) -> RocBand:
    """TPR at each FPR of `fprs` (default: `roc_fpr_grid`) and its pointwise percentile
    interval over the same stratified resamples as every other interval here, so every
    resample resolves the same FPRs. An FPR below 1 / (number of non-members) cannot be
    measured and is refused."""
    is_member, scores = membership_scores(is_member, scores)
    n_members, n_nonmembers = np.count_nonzero(is_member), np.count_nonzero(~is_member)
    fprs = roc_fpr_grid(n_nonmembers) if fprs is None else np.asarray(fprs, dtype=float)
    if (fprs < 1 / n_nonmembers).any() or (fprs > 1).any():
        raise ValueError(
            f"FPRs must lie in [1/{n_nonmembers}, 1]: {n_nonmembers} non-members resolve no "
            "smaller FPR"
        )
    codes = value_codes(scores[is_member], scores[~is_member])

    def curve(member_idx: np.ndarray, nonmember_idx: np.ndarray) -> np.ndarray:
        return tpr_at_fpr_of_ranks(resample_ranks(codes, member_idx, nonmember_idx), fprs).T

    point = curve(np.arange(n_members)[None], np.arange(n_nonmembers)[None])[:, 0]
    low, high = _stratified_bootstrap(is_member, curve, n_resamples, seed, confidence)
    return RocBand(fprs, point, low, high)


def seed_t_interval(
    differences: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of a per-seed quantity (e.g. a paired difference).

    Seeds are few, so the t quantile (not the normal one) widens the interval honestly; one
    seed has no spread and gives NaN bounds, identical seeds a zero-width interval, and a NaN
    seed (an unresolved metric) NaN throughout.
    """
    values = np.asarray(differences, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"differences must be a non-empty 1-D array, got shape {values.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean = float(values.mean())
    if len(values) == 1 or np.isnan(mean):
        return mean, float("nan"), float("nan")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0]), float(values[0])
    stats = _stats()
    low, high = stats.t.interval(confidence, df=len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def mean_bootstrap_interval(
    values: np.ndarray, n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean of independent units (e.g.
    one correlation per mask update); NaN bounds below two units, NaN throughout with none."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        mean = float(values[0]) if len(values) else float("nan")
        return mean, float("nan"), float("nan")
    interval = (
        _stats()
        .bootstrap(
            (values,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=METHOD,
            random_state=np.random.default_rng(seed),
        )
        .confidence_interval
    )
    return float(values.mean()), float(interval.low), float(interval.high)


def attack_report(
    is_member: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    n_resamples: int,
    seed: int | np.random.Generator,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Every `ATTACK_METRICS` entry of one attack with its bootstrap interval."""
    return {
        **attack_metrics(is_member, scores, predicted),
        **metric_intervals(is_member, scores, predicted, n_resamples, seed, confidence),
    }


def worst_case_report(
    is_member: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    n_resamples: int,
    seed: int | np.random.Generator,
    confidence: float = 0.95,
) -> dict[str, float]:
    """`WORST_CASE_METRICS` of one attack on the canaries alone (`is_member`: inserted), each
    with its bootstrap interval: `attack_report`'s numbers, renamed."""
    report = attack_report(is_member, scores, predicted, n_resamples, seed, confidence)
    named = {WORST_CASE_PREFIX + key: value for key, value in report.items()}
    wanted = [f"{metric}{end}" for metric in WORST_CASE_METRICS for end in ("", *CI_ENDS)]
    return {key: named[key] for key in wanted}


def accuracy_interval(correct: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Task accuracy and its Wilson score interval (the binomial interval that stays inside
    [0, 1] and keeps its coverage near 0 and 1)."""
    correct = np.asarray(correct, dtype=bool)
    ci = (
        _stats()
        .binomtest(int(correct.sum()), len(correct))
        .proportion_ci(confidence, method="wilson")
    )
    return {
        "task_acc": float(correct.mean()),
        "task_acc_ci_low": ci.low,
        "task_acc_ci_high": ci.high,
    }
