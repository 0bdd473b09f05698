"""Paired comparisons of methods on the same evaluated samples.

Every target model of a data set and split is judged on the same members and non-members, so
two models at the same data set, density and replicate (split and seed) can be compared
sample by sample: the bootstrap resamples the samples once for both, and what the samples
share cancels. Across replicates, the per-replicate differences get a Student-t interval:
with several splits it carries the split-to-split variance too (which members are
memorable). Where the models were scored on canaries too (the same ones within a
replicate), PAIRED_METRICS on the canaries alone are compared the same way, as
`worst_case_<metric>`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from safecompress.privacy.bootstrap import (
    accuracy_difference,
    paired_differences,
    seed_t_interval,
)
from safecompress.privacy.metrics import WORST_CASE_PREFIX

# What the paired table compares besides task accuracy: the threshold-free attack metrics.
PAIRED_METRICS = ("auc", "tpr_at_1pct_fpr")


@dataclass(frozen=True)
class Canaries:
    """One target model's per-attack scores on the canaries."""

    index: np.ndarray  # pool index of each canary, in the order of the arrays below
    is_member: np.ndarray  # inserted into this model's training set
    scores: dict[str, np.ndarray]


@dataclass(frozen=True)
class ScoredModel:
    """One target model's per-sample results on the evaluated samples."""

    dataset: str
    split: int
    method: str
    variant: str
    density: float
    seed: int
    index: np.ndarray  # pool index of each evaluated sample, in the order of the arrays below
    is_member: np.ndarray
    correct: np.ndarray  # task prediction correct, for every evaluated sample
    scores: dict[str, np.ndarray]  # per attack
    canaries: Canaries | None = None


def paired_rows(
    models: list[ScoredModel], baseline: str, n_resamples: int, seed: int = 0
) -> list[dict]:
    """Every model against the `baseline` method's model (its default variant) at the same
    data set, density and replicate: task accuracy (on the non-members) and each common
    attack's PAIRED_METRICS, as differences with 95 % intervals; then the mean over replicates
    with a t-interval."""
    by_cell = {
        (m.dataset, m.split, m.density, m.seed): m
        for m in models
        if m.method == baseline and m.variant == "default"
    }
    rows = []
    for model in models:
        reference = by_cell.get((model.dataset, model.split, model.density, model.seed))
        if reference is None or model is reference:
            continue
        if not np.array_equal(model.index, reference.index):
            raise ValueError(
                f"{model.method} and {baseline} at density {model.density}, split "
                f"{model.split}, seed {model.seed} "
                "were not scored on the same samples; rerun their attack jobs"
            )
        cell = {
            "dataset": model.dataset,
            "method": model.method,
            "variant": model.variant,
            "baseline": baseline,
            "density": model.density,
        }
        test = ~model.is_member
        comparisons = {
            ("task", "task_acc"): accuracy_difference(
                model.correct[test], reference.correct[test], n_resamples, seed
            )
        }
        comparisons |= _attack_comparisons(
            model.is_member, model.scores, reference.scores, n_resamples, seed
        )
        comparisons |= _worst_case_comparisons(model, reference, n_resamples, seed)
        for (attack, metric), (difference, low, high) in comparisons.items():
            rows.append(
                {
                    **cell,
                    "scope": "replicate",
                    "split": model.split,
                    "seed": model.seed,
                    "n_replicates": 1,
                    "attack": attack,
                    "metric": metric,
                    "difference": difference,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return rows + _over_replicates(rows)


def _worst_case_comparisons(
    model: ScoredModel, reference: ScoredModel, n_resamples: int, seed: int
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """PAIRED_METRICS of each common attack on the canaries alone, as `worst_case_<metric>`
    differences; none where either model has no canaries."""
    mine, theirs = model.canaries, reference.canaries
    if mine is None or theirs is None:
        return {}
    if not (
        np.array_equal(mine.index, theirs.index)
        and np.array_equal(mine.is_member, theirs.is_member)
    ):
        raise ValueError(
            f"{model.method} and {reference.method} at density {model.density}, split "
            f"{model.split}, seed {model.seed} were not scored on the same canaries with the same "
            "inserted half; rerun their attack jobs"
        )
    return _attack_comparisons(
        mine.is_member, mine.scores, theirs.scores, n_resamples, seed, WORST_CASE_PREFIX
    )


def _attack_comparisons(
    is_member: np.ndarray,
    scores: dict[str, np.ndarray],
    baseline: dict[str, np.ndarray],
    n_resamples: int,
    seed: int,
    prefix: str = "",
) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(attack, prefix + metric) -> paired difference of PAIRED_METRICS, for every attack
    both models were scored by, in the summary's attack order (a set's changes per run)."""
    comparisons = {}
    for attack in [a for a in scores if a in baseline]:
        differences = paired_differences(
            is_member, scores[attack], baseline[attack], PAIRED_METRICS, n_resamples, seed
        )
        for metric, triple in differences.items():
            comparisons[attack, prefix + metric] = triple
    return comparisons


def _over_replicates(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    fields = ("dataset", "method", "variant", "baseline", "density", "attack", "metric")
    for row in rows:
        groups[tuple(row[f] for f in fields)].append(row["difference"])
    summary = []
    for key, differences in groups.items():
        mean, low, high = seed_t_interval(np.array(differences))
        summary.append(
            {
                **dict(zip(fields, key, strict=True)),
                "scope": "replicates",
                "split": None,
                "seed": None,
                "n_replicates": len(differences),
                "difference": mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return summary
