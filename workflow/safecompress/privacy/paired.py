"""Paired comparisons of methods on the same evaluated samples.

Every target model of a data set and split is judged on the same members and non-members, so
two models at the same data set, density and replicate (split and seed) can be compared
sample by sample: the bootstrap resamples the samples once for both, and what the samples
share cancels. Across replicates, the per-replicate differences get a Student-t interval:
with several splits it carries the split-to-split variance too (which members are
memorable).
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

# What the paired table compares besides task accuracy: the threshold-free attack metrics.
PAIRED_METRICS = ("auc", "tpr_at_1pct_fpr")


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
        # in the summary's attack order: a set's order changes from run to run
        for attack in [a for a in model.scores if a in reference.scores]:
            differences = paired_differences(
                model.is_member,
                model.scores[attack],
                reference.scores[attack],
                PAIRED_METRICS,
                n_resamples,
                seed,
            )
            for metric, triple in differences.items():
                comparisons[attack, metric] = triple
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
