"""frontier.csv: every model point per data set, density and leakage metric, the Pareto set and
which methods' points dominate which, from a paper table with a known dominance."""

import numpy as np
import pandas as pd
import pytest

from safecompress.reporting import tables

# (method, variant, density, task accuracy, AUC, TPR at 1 % FPR) of each model: at density
# 0.1, DP-SGD's sigma 0.02 point beats SafeCompress on accuracy and AUC, its default does not;
# on TPR SafeCompress is on the Pareto set; both beat DST on both.
MODELS = [
    ("dense", "default", 1.0, 0.95, 0.80, 0.20),
    ("dst", "default", 0.1, 0.87, 0.70, 0.10),
    ("safecompress", "default", 0.1, 0.88, 0.62, 0.03),
    ("dpsgd", "default", 0.1, 0.70, 0.52, 0.04),
    ("dpsgd", "noise_multiplier_0.02", 0.1, 0.89, 0.60, 0.05),
    ("dst", "default", 0.05, 0.85, 0.66, 0.08),
    ("safecompress", "default", 0.05, 0.86, 0.60, 0.06),
]


def paper_table(models=MODELS, n_replicates: int = 3) -> pd.DataFrame:
    """The paper table's rows of these models under the `strongest` attack."""
    rows = []
    for method, variant, density, accuracy, auc, tpr in models:
        for metric, mean in (("task_acc", accuracy), ("auc", auc), ("tpr_at_1pct_fpr", tpr)):
            rows.append(
                {
                    "dataset": "digits",
                    "method": method,
                    "variant": variant,
                    "density": density,
                    "attack": "strongest",
                    "metric": metric,
                    "mean": mean,
                    "sd": 0.01,
                    "ci_low": mean - 0.02,
                    "ci_high": mean + 0.02,
                    "n_replicates": n_replicates,
                    "strongest": False,
                }
            )
    return pd.DataFrame(rows)


def cell(frontier: pd.DataFrame, density: float, leakage: str) -> pd.DataFrame:
    mine = frontier[(frontier["density"] == density) & (frontier["leakage_metric"] == leakage)]
    return mine.set_index(["method", "variant"])


def test_frontier_lists_every_point_with_the_dense_model_in_each_density():
    frontier = tables.frontier_table(paper_table(), "strongest")
    assert list(frontier.columns) == list(tables.FRONTIER_COLUMNS)
    # two densities x two leakage metrics; dense in each density's set
    assert len(frontier) == 2 * (5 + 3)
    point = cell(frontier, 0.1, "auc").loc[("dpsgd", "noise_multiplier_0.02")]
    assert (point["task_acc"], point["leakage"], point["n_replicates"]) == (0.89, 0.60, 3)
    assert (point["leakage_ci_low"], point["leakage_ci_high"]) == pytest.approx((0.58, 0.62))
    assert cell(frontier, 0.05, "auc").index.get_level_values("method").tolist() == [
        "dense",
        "dst",
        "safecompress",
    ]


def test_frontier_names_the_methods_whose_points_dominate_a_point():
    frontier = tables.frontier_table(paper_table(), "strongest")
    auc = cell(frontier, 0.1, "auc")
    # DP-SGD's sigma 0.02 point dominates SafeCompress (and DST); its default dominates nothing
    assert auc.loc[("safecompress", "default"), "dominated_by"] == "dpsgd"
    assert auc.loc[("dst", "default"), "dominated_by"] == "safecompress dpsgd"
    assert not auc.loc[("safecompress", "default"), "pareto"]
    assert not auc.loc[("safecompress", "default"), "method_on_pareto"]
    on_front = auc[auc["pareto"]].index.tolist()
    assert on_front == [
        ("dense", "default"),
        ("dpsgd", "default"),
        ("dpsgd", "noise_multiplier_0.02"),
    ]
    assert auc.loc[("dpsgd", "default"), "method_on_pareto"]
    assert auc.loc[("dpsgd", "default"), "dominated_by"] == ""  # a method's own points do not count
    # on TPR at 1 % FPR SafeCompress leaks least: on the Pareto set, dominated by none
    tpr = cell(frontier, 0.1, "tpr_at_1pct_fpr")
    assert tpr.loc[("safecompress", "default"), "pareto"]
    assert tpr.loc[("safecompress", "default"), "dominated_by"] == ""
    assert tpr.loc[("dst", "default"), "dominated_by"] == "safecompress dpsgd"


def test_a_point_without_a_resolved_leakage_is_nowhere_on_the_frontier():
    models = [(*model[:5], np.nan) if model[0] == "dpsgd" else model for model in MODELS]
    tpr = cell(tables.frontier_table(paper_table(models), "strongest"), 0.1, "tpr_at_1pct_fpr")
    dpsgd = tpr.loc["dpsgd"]
    assert not dpsgd["pareto"].any() and (dpsgd["dominated_by"] == "").all()
    assert "dpsgd" not in " ".join(tpr["dominated_by"])


def test_frontier_names_an_attack_the_table_lacks():
    with pytest.raises(ValueError, match="no rows for attack 'lira'.*strongest"):
        tables.frontier_table(paper_table(), "lira")
