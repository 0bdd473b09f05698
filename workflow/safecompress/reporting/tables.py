"""The result tables, built from every model's attack results (`safecompress.steps.summarize`
writes them, `safecompress.steps.figures` draws from them).

summary:  one row per dataset x split x method x variant x density x seed x attack (tidy),
          every metric with its 95 % bootstrap interval; `strongest` marks each model's
          attack with the highest AUC.
replicate statistics (the paper table): per dataset x method x variant x density x attack x
          metric, the mean, sd and 95 % t-interval over replicates (split x seed; one
          replicate: that model's bootstrap interval); attack "strongest" is each model's
          strongest attack.
Markdown: the paper table as one table per data set, "mean [low, high]" in %.
paired:   every model against a baseline method's model on the same samples.
frontier: per data set, density and leakage metric, every model point (each method's default
          and its curve points) with its means and intervals over replicates, whether it is
          on the Pareto set and which other methods' points dominate it.
ROC:      every model's ROC and pointwise bootstrap band, per attack.
validity: per SafeCompress model x mask update x rung x attack, the rank correlation between
          the tested candidates' safety leakage and their evaluation AUC; pooled per method x
          density x attack (x rung, or all rungs) with a bootstrap interval over updates.

Every function takes and returns pandas tables; reading and writing files is the steps' part,
except the per-sample scores that the paired table reads through the summary's paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from safecompress.config.methods import METHODS, REGISTRY
from safecompress.config.settings import STRONGEST_ATTACK
from safecompress.io import read_csv
from safecompress.privacy.bootstrap import mean_bootstrap_interval, roc_band, seed_t_interval
from safecompress.privacy.metrics import (
    ATTACK_METRICS,
    TPR_AT_FPR,
    WORST_CASE_METRICS,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from safecompress.privacy.paired import Canaries, ScoredModel, paired_rows
from safecompress.privacy.signals import CANARY_SETS, logits_of

KEY = ["dataset", "split", "method", "variant", "density", "seed", "attack"]
MODEL = KEY[:-1]
METRICS = ["task_acc", *ATTACK_METRICS]
# What replicate_statistics reads of a summary table (summary.csv, ablation.csv).
SUMMARY_COLUMNS = (
    *KEY,
    "strongest",
    *METRICS,
    *(f"{metric}_ci_{end}" for metric in METRICS for end in ("low", "high")),
)
METHOD_ORDER = ["dense", *METHODS]
# Every method is compared with DST (no defense) and with SafeCompress, where they ran; and
# each method that selects by the safety test with the method it wraps (`Method.unselected`).
PAIRED_BASELINES = ("dst", "safecompress")
UNSELECTED = {
    name: m.unselected
    for name, m in REGISTRY.items()
    if m.unselected is not None and m.unselected not in PAIRED_BASELINES
}
PAIRED_COLUMNS = [
    "dataset",
    "method",
    "variant",
    "baseline",
    "density",
    "scope",
    "split",
    "seed",
    "n_replicates",
    "attack",
    "metric",
    "difference",
    "ci_low",
    "ci_high",
]
# The paper table of `replicate_statistics` (paper_table.csv): what the summary figures read.
PAPER_TABLE_COLUMNS = (
    "dataset",
    "method",
    "density",
    "attack",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
)
MARKDOWN_METRICS = (
    ("auc", "AUC"),
    ("tpr_at_1pct_fpr", "TPR@1%FPR"),
    ("worst_case_auc", "canary AUC"),
    ("worst_case_tpr_at_1pct_fpr", "canary TPR@1%FPR"),
)
# The leakage axes of the frontier (frontier.csv and figures/tradeoff), against task accuracy.
FRONTIER_LEAKAGE = ("auc", "tpr_at_1pct_fpr")
FRONTIER_COLUMNS = (
    "dataset",
    "density",
    "leakage_metric",
    "attack",
    "method",
    "variant",
    "task_acc",
    "task_acc_ci_low",
    "task_acc_ci_high",
    "leakage",
    "leakage_ci_low",
    "leakage_ci_high",
    "n_replicates",
    "pareto",
    "dominated_by",
    "method_on_pareto",
)
# The low-FPR number that the ROC table gives each model besides its AUC.
ROC_TPR_METRIC = "tpr_at_1pct_fpr"
ROC_COLUMNS = (
    "attack",
    "method",
    "density",
    "curve",
    "fpr",
    "tpr",
    "ci_low",
    "ci_high",
    "auc",
    ROC_TPR_METRIC,
    "n_members",
    "n_nonmembers",
)


def require_columns(table: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise ValueError naming the columns that `table` lacks."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(
            f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}"
        )


def summary_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """All per-model results, sorted, each model's strongest attack (highest AUC) marked; a
    model listed twice is an error, not a silent duplicate."""
    summary = pd.concat(frames, ignore_index=True)
    duplicated = summary[summary.duplicated(KEY, keep=False)]
    if len(duplicated):
        raise ValueError(
            f"results listed twice: {duplicated[KEY].drop_duplicates().to_dict('records')}"
        )
    best = summary.groupby(MODEL, sort=False)["auc"].transform("max")
    summary["strongest"] = summary["auc"] == best
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return summary.sort_values(
        KEY,
        key=lambda col: col.map(order) if col.name == "method" else col,
        ascending=[True, True, True, True, False, True, True],
    ).reset_index(drop=True)


def replicate_statistics(summary: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean and sd over replicates (every seed on every split), and a 95 %
    Student-t interval of the mean; with a single replicate, the model's own bootstrap
    interval (tidy: one row per metric). Besides each attack, the pseudo-attack `strongest`:
    every model's attack with the highest AUC (the first in the summary's order on a tie),
    which may differ between replicates. The worst-case metrics (on the canaries) where the
    summary has them."""
    strongest = (
        summary[summary["strongest"]]
        .drop_duplicates(MODEL)
        .assign(attack=STRONGEST_ATTACK, strongest=False)
    )
    rows = []
    group = ["dataset", "method", "variant", "density", "attack"]
    metrics = [*METRICS, *(metric for metric in WORST_CASE_METRICS if metric in summary)]
    for key, models in pd.concat([summary, strongest]).groupby(group, sort=False):
        for metric in metrics:
            values = models[metric].to_numpy(dtype=float)
            mean, low, high = seed_t_interval(values)
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            if len(values) == 1:
                low, high = models[f"{metric}_ci_low"].iloc[0], models[f"{metric}_ci_high"].iloc[0]
            rows.append(
                {
                    **dict(zip(group, key, strict=True)),
                    "metric": metric,
                    "mean": mean,
                    "sd": sd,
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "n_replicates": len(values),
                    "strongest": bool(models["strongest"].any()),
                }
            )
    return pd.DataFrame(rows)


def markdown_tables(stats: pd.DataFrame) -> str:
    """Per data set: rows method x variant x density; columns task accuracy, then AUC and
    TPR@1%FPR per attack (and on the canaries, where there are any); cells "mean [low,
    high]" in percent, the strongest attack of a row in bold."""
    lines = []
    index = ["method", "variant", "density"]
    for dataset, rows in stats.groupby("dataset", sort=False):
        cell = rows.assign(text=[_cell(row) for row in rows.itertuples(index=False)])
        accuracy = cell[cell["metric"] == "task_acc"].drop_duplicates(index)
        table = accuracy.set_index(index)[["text"]].rename(columns={"text": "task acc (%)"})
        for metric, label in MARKDOWN_METRICS:
            if metric not in set(cell["metric"]):
                continue
            wide = cell[cell["metric"] == metric].pivot(
                index=index, columns="attack", values="text"
            )
            table = table.join(wide.rename(columns=lambda a, lab=label: f"{a} {lab} (%)"))
        n = int(rows["n_replicates"].max())
        over = f"95 % t-interval over {n} replicates" if n > 1 else "95 % bootstrap interval"
        lines += [
            f"## {dataset} (mean [{over}]; bold: the strongest attack by AUC)",
            "",
            _markdown(table.reset_index()),
            "",
        ]
    return "\n".join(lines)


def _cell(row) -> str:
    if np.isnan(row.mean):
        return "n/a"
    text = f"{100 * row.mean:.1f} [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
    return f"**{text}**" if row.strongest and row.metric != "task_acc" else text


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def pareto_front(auc: Sequence[float], accuracy: Sequence[float]) -> pd.DataFrame:
    """Points no other point beats on both axes (lower AUC, higher accuracy), sorted by AUC.

    Points with a NaN coordinate take no part (an unresolvable metric ranks nowhere).
    """
    points = pd.DataFrame({"auc": auc, "accuracy": accuracy}).dropna()
    points = points.sort_values(["auc", "accuracy"], ascending=[True, False])
    best_before = points["accuracy"].cummax().shift(fill_value=-np.inf)
    return points[points["accuracy"] > best_before]


def frontier_table(stats: pd.DataFrame, attack: str) -> pd.DataFrame:
    """The safety-accuracy frontier of the paper table `stats` (`replicate_statistics`) under
    `attack` (or `strongest`), as figures/tradeoff draws it: per data set, compressed density
    and FRONTIER_LEAKAGE metric, every model point there (each method's default variant and
    curve points; the dense model in every density's set) with task accuracy and leakage
    (means and 95 % intervals over replicates), `pareto` (on the Pareto set: no point has
    higher accuracy and lower leakage), `dominated_by` (the other methods, space-separated,
    with a point at least as accurate and as safe and better in one: empty, none) and
    `method_on_pareto` (some point of the method is on the Pareto set). Means decide; the
    intervals say how sure each side is."""
    require_columns(stats, [*PAPER_TABLE_COLUMNS, "variant", "n_replicates"])
    rows = stats[
        (stats["attack"] == attack) & stats["metric"].isin(["task_acc", *FRONTIER_LEAKAGE])
    ]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(stats["attack"])))
        raise ValueError(f"no rows for attack {attack!r}; available attacks: {known}")
    model = ["dataset", "method", "variant", "density"]
    wide = rows.pivot(
        index=model, columns="metric", values=["mean", "ci_low", "ci_high", "n_replicates"]
    )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    cells = []
    for dataset, points in wide.groupby(level="dataset", sort=False):
        points = points.reset_index()
        densities = sorted(set(points.loc[points["method"] != "dense", "density"]), reverse=True)
        for density in densities or [1.0]:
            mine = points[(points["density"] == density) | (points["method"] == "dense")]
            mine = mine.sort_values(
                ["method", "variant"], key=lambda c: c.map(order) if c.name == "method" else c
            )
            for leakage in FRONTIER_LEAKAGE:
                cells.append(_frontier_cell(mine, dataset, density, leakage, attack))
    return pd.concat(cells, ignore_index=True)[list(FRONTIER_COLUMNS)]


def _frontier_cell(
    points: pd.DataFrame, dataset: str, density: float, leakage: str, attack: str
) -> pd.DataFrame:
    """The frontier rows of one data set, density and leakage metric (`points`: one row per
    model, mean / ci_low / ci_high / n_replicates per metric as two-level columns)."""
    accuracy = points[("mean", "task_acc")].to_numpy(float)
    leak = points[("mean", leakage)].to_numpy(float)
    methods = points["method"].to_numpy()
    # beats[i, j]: point i is at least as accurate and as safe as point j, and better in one
    beats = (
        (accuracy[:, None] >= accuracy)
        & (leak[:, None] <= leak)
        & ((accuracy[:, None] > accuracy) | (leak[:, None] < leak))
    )
    front = pareto_front(leak, accuracy).index
    table = pd.DataFrame(
        {
            "dataset": dataset,
            "density": density,
            "leakage_metric": leakage,
            "attack": attack,
            "method": methods,
            "variant": points["variant"].to_numpy(),
            "task_acc": accuracy,
            "task_acc_ci_low": points[("ci_low", "task_acc")].to_numpy(float),
            "task_acc_ci_high": points[("ci_high", "task_acc")].to_numpy(float),
            "leakage": leak,
            "leakage_ci_low": points[("ci_low", leakage)].to_numpy(float),
            "leakage_ci_high": points[("ci_high", leakage)].to_numpy(float),
            "n_replicates": points[("n_replicates", "task_acc")].to_numpy(int),
            "pareto": np.isin(np.arange(len(points)), front),
            "dominated_by": [
                " ".join(dict.fromkeys(methods[beats[:, j] & (methods != methods[j])]))
                for j in range(len(points))
            ],
        }
    )
    table["method_on_pareto"] = table.groupby("method")["pareto"].transform("any")
    return table


def scored_models(summary: pd.DataFrame) -> list[ScoredModel]:
    """Each model's per-sample scores and task correctness, read from its saved files."""
    models = []
    for key, rows in summary.groupby(MODEL, sort=False):
        first = rows.iloc[0]
        scores = read_csv(first["scores_path"], required=("index", "set"))
        signals = read_csv(first["signals_path"], required=("index", "set", "label"))
        if not scores["index"].equals(signals["index"]):
            raise ValueError(f"{first['scores_path']}: rows differ from {first['signals_path']}")
        fields = dict(zip(MODEL, key, strict=True))
        is_canary = scores["set"].isin(CANARY_SETS).to_numpy()
        evaluated, canaries, signals = scores[~is_canary], scores[is_canary], signals[~is_canary]
        models.append(
            ScoredModel(
                **fields,
                index=evaluated["index"].to_numpy(),
                is_member=(evaluated["set"] == "member").to_numpy(),
                correct=logits_of(signals).argmax(1) == signals["label"].to_numpy(),
                scores={a: evaluated[f"score_{a}"].to_numpy() for a in rows["attack"]},
                canaries=Canaries(
                    index=canaries["index"].to_numpy(),
                    is_member=canaries["set"].map(CANARY_SETS).eq("member").to_numpy(),
                    scores={a: canaries[f"score_{a}"].to_numpy() for a in rows["attack"]},
                )
                if len(canaries)
                else None,
            )
        )
    return models


def paired_table(
    summary: pd.DataFrame, baselines: Sequence[pd.DataFrame], n_resamples: int
) -> pd.DataFrame:
    """Every summarised model against each of `PAIRED_BASELINES` at the same data set,
    density and replicate (`paired_rows`), and each selecting method against the method it
    wraps (`UNSELECTED`); `baselines` holds the results of baseline models that are paired
    with but not summarised (the ablation's DST and SafeCompress)."""
    models = scored_models(summary_table([summary, *baselines]))
    summarised = set(zip(summary["method"], summary["variant"], strict=True))
    pairs = [(models, baseline) for baseline in PAIRED_BASELINES] + [
        ([m for m in models if m.method in (method, unselected)], unselected)
        for method, unselected in UNSELECTED.items()
    ]
    rows = [
        row
        for paired_models, baseline in pairs
        for row in paired_rows(paired_models, baseline, n_resamples)
        if (row["method"], row["variant"]) in summarised
    ]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def roc_table(
    scores: pd.DataFrame, attacks: Sequence[str], n_resamples: int, seed: int = 0
) -> pd.DataFrame:
    """Per attack and model (method, density) of the per-sample `scores` (columns method,
    density, set, score_<attack>): its ROC from the smallest FPR the non-members resolve
    (curve "roc", every point) and its pointwise 95 % bootstrap band on a log-spaced FPR grid
    (curve "band", with ci_low and ci_high). Every row also carries the model's AUC, TPR at
    1% FPR (NaN where unresolved) and numbers of members and non-members."""
    if not attacks:
        raise ValueError("no attack to draw; give at least one")
    require_columns(scores, ["method", "density", "set", *(f"score_{a}" for a in attacks)])
    unknown_sets = sorted(set(scores["set"]) - {"member", "non-member"})
    if unknown_sets:
        raise ValueError(f"column set has {unknown_sets}; expected 'member' or 'non-member'")
    curves = []
    for attack in attacks:
        for (method, density), model in scores.groupby(["method", "density"], sort=False):
            is_member = (model["set"] == "member").to_numpy()
            values = model[f"score_{attack}"].to_numpy()
            n_nonmembers = np.count_nonzero(~is_member)
            fpr, tpr, _ = roc_curve(is_member, values)
            measured = fpr >= 1 / n_nonmembers
            band = roc_band(is_member, values, n_resamples, seed)
            points = pd.DataFrame({"curve": "roc", "fpr": fpr[measured], "tpr": tpr[measured]})
            bands = pd.DataFrame(
                {
                    "curve": "band",
                    "fpr": band.fpr,
                    "tpr": band.tpr,
                    "ci_low": band.low,
                    "ci_high": band.high,
                }
            )
            curves.append(
                pd.concat([points, bands]).assign(
                    attack=attack,
                    method=method,
                    density=density,
                    auc=roc_auc(is_member, values),
                    **{ROC_TPR_METRIC: tpr_at_fpr(is_member, values, TPR_AT_FPR[ROC_TPR_METRIC])},
                    n_members=np.count_nonzero(is_member),
                    n_nonmembers=n_nonmembers,
                )
            )
    return pd.concat(curves, ignore_index=True)[list(ROC_COLUMNS)]


# One mask update of one SafeCompress model, and one safety test: the update at one rung.
VALIDITY_UPDATE = ["dataset", "split", "method", "density", "seed", "step"]
VALIDITY_TEST = [*VALIDITY_UPDATE, "rung"]
# What validity_correlations reads: every logged candidate's safety leakage and evaluation AUC.
VALIDITY_CANDIDATE_COLUMNS = (*VALIDITY_TEST, "candidate", "attack", "leakage", "auc")
VALIDITY_COLUMNS = (
    "dataset",
    "method",
    "density",
    "attack",
    "rung",
    "n_updates",
    "n_candidates",
    "spearman",
    "ci_low",
    "ci_high",
)
ALL_RUNGS = "all"


def validity_correlations(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per safety test (`VALIDITY_TEST`) and attack: `n_candidates` tested and the Spearman
    rank correlation between their safety `leakage` and their evaluation `auc` (NaN where
    either is constant: nothing to rank)."""
    require_columns(candidates, VALIDITY_CANDIDATE_COLUMNS)
    groups = candidates.groupby([*VALIDITY_TEST, "attack"], sort=True)
    return pd.DataFrame(
        {
            "n_candidates": groups.size(),
            "spearman": groups.apply(_rank_correlation, include_groups=False),
        }
    ).reset_index()


def _rank_correlation(test: pd.DataFrame) -> float:
    if test["leakage"].nunique() < 2 or test["auc"].nunique() < 2:
        return float("nan")  # constant: nothing to rank (and no scipy warning)
    return test["leakage"].corr(test["auc"], method="spearman")


def validity_table(tests: pd.DataFrame, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """The correlations of `validity_correlations` pooled per data set x method x density x
    attack, at each rung and over all rungs (an update's mean over its rungs): the mean over
    mask updates (of every replicate) with a 95 % percentile bootstrap interval over updates,
    the unit that is independent of the others' tests. Updates without a correlation are left
    out (`n_updates` counts the rest)."""
    rows = []
    keys = ["dataset", "method", "density", "attack"]
    for key, pooled in tests.groupby(keys, sort=True):
        rungs = [(str(rung), part) for rung, part in pooled.groupby("rung")]
        for rung, part in [(ALL_RUNGS, pooled), *rungs]:
            updates = part.groupby(VALIDITY_UPDATE)["spearman"].mean().dropna()
            mean, low, high = mean_bootstrap_interval(updates.to_numpy(), n_resamples, seed)
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "rung": rung,
                    "n_updates": len(updates),
                    "n_candidates": int(part["n_candidates"].sum()),
                    "spearman": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=list(VALIDITY_COLUMNS))
