"""Step 5: gather every model's attack results into the summary, paper-style and paired tables.

    python -m safecompress.steps.summarize --inputs results/*/*/density*/seed*/attacks.csv \\
        --summary results/tables/summary.csv --paper-table results/tables/paper_table.csv \\
        --markdown results/tables/paper_table.md --paired results/tables/paired.csv

summary.csv:      one row per dataset x method x variant x density x seed x attack (tidy), every
                  metric with its 95 % bootstrap interval (`<metric>_ci_low`, `_ci_high`);
                  `strongest` marks each model's attack with the highest AUC. The variant is
                  "default" except for ablations (ablation.csv).
paper_table.csv:  per dataset x method x density x attack x metric: mean, sd and a 95 %
                  t-interval over seeds (with one seed: that model's bootstrap interval);
                  attack "strongest" is each model's strongest attack (by AUC, per seed).
paper_table.md:   the same as Markdown, one table per data set, "mean [low, high]" in %.
paired.csv:       every method against DST and against SafeCompress at the same data set,
                  density and seed, on the same samples (difference and 95 % interval), and
                  the mean over seeds. For the ablation, --baselines gives the DST and
                  SafeCompress models its variants are paired with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from safecompress.config.methods import METHODS
from safecompress.config.settings import STRONGEST_ATTACK
from safecompress.io import atomic_path, read_csv, write_csv
from safecompress.privacy.bootstrap import seed_t_interval
from safecompress.privacy.metrics import ATTACK_METRICS
from safecompress.privacy.paired import ScoredModel, paired_rows
from safecompress.privacy.signals import logits_of
from safecompress.steps import cli

KEY = ["dataset", "method", "variant", "density", "seed", "attack"]
MODEL = KEY[:-1]
METRICS = ["task_acc", *ATTACK_METRICS]
# What seed_statistics reads of a summary table (summary.csv, ablation.csv).
SUMMARY_COLUMNS = (
    *KEY,
    "strongest",
    *METRICS,
    *(f"{metric}_ci_{end}" for metric in METRICS for end in ("low", "high")),
)
METHOD_ORDER = ["dense", *METHODS]
# Every method is compared with DST (no defense) and with SafeCompress, where they ran.
PAIRED_BASELINES = ("dst", "safecompress")
MARKDOWN_METRICS = (("auc", "AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR"))


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
        ascending=[True, True, True, False, True, True],
    ).reset_index(drop=True)


def seed_statistics(summary: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean and sd over seeds, and a 95 % Student-t interval of the mean; with a
    single seed, the model's own bootstrap interval (tidy: one row per metric). Besides each
    attack, the pseudo-attack `strongest`: every model's attack with the highest AUC (the
    first in the summary's order on a tie), which may differ between seeds."""
    strongest = (
        summary[summary["strongest"]]
        .drop_duplicates(MODEL)
        .assign(attack=STRONGEST_ATTACK, strongest=False)
    )
    rows = []
    group = ["dataset", "method", "variant", "density", "attack"]
    for key, models in pd.concat([summary, strongest]).groupby(group, sort=False):
        for metric in METRICS:
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
                    "n_seeds": len(values),
                    "strongest": bool(models["strongest"].any()),
                }
            )
    return pd.DataFrame(rows)


def markdown_tables(stats: pd.DataFrame) -> str:
    """Per data set: rows method x density; columns task accuracy, then AUC and TPR@1%FPR per
    attack; cells "mean [low, high]" in percent, the strongest attack of a row in bold."""
    lines = []
    for dataset, rows in stats.groupby("dataset", sort=False):
        cell = rows.assign(text=[_cell(row) for row in rows.itertuples(index=False)])
        accuracy = cell[cell["metric"] == "task_acc"].drop_duplicates(["method", "density"])
        table = accuracy.set_index(["method", "density"])[["text"]].rename(
            columns={"text": "task acc (%)"}
        )
        for metric, label in MARKDOWN_METRICS:
            wide = cell[cell["metric"] == metric].pivot(
                index=["method", "density"], columns="attack", values="text"
            )
            table = table.join(wide.rename(columns=lambda a, lab=label: f"{a} {lab} (%)"))
        n_seeds = int(rows["n_seeds"].max())
        over = f"95 % t-interval over {n_seeds} seeds" if n_seeds > 1 else "95 % bootstrap interval"
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
        models.append(
            ScoredModel(
                **fields,
                index=scores["index"].to_numpy(),
                is_member=(scores["set"] == "member").to_numpy(),
                correct=logits_of(signals).argmax(1) == signals["label"].to_numpy(),
                scores={a: scores[f"score_{a}"].to_numpy() for a in rows["attack"]},
            )
        )
    return models


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--inputs", nargs="+", required=True, help="attacks.csv of every model")
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--paper-table", type=Path, help="mean and interval over seeds (CSV)")
    p.add_argument("--markdown", type=Path, help="mean [interval] tables (Markdown)")
    p.add_argument("--paired", type=Path, help="paired differences (CSV)")
    p.add_argument(
        "--baselines",
        nargs="*",
        default=[],
        help="attacks.csv of baseline models the --inputs are paired with but that are not "
        "summarised (the ablation's DST and SafeCompress)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of paired intervals")
    args = p.parse_args(argv)
    summary = summary_table([read_csv(path, required=(*KEY, *METRICS)) for path in args.inputs])
    write_csv(summary, args.summary)
    stats = seed_statistics(summary)
    if args.paper_table:
        write_csv(stats, args.paper_table)
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(markdown_tables(stats))
    if args.paired:
        baselines = [read_csv(path, required=(*KEY, *METRICS)) for path in args.baselines]
        models = scored_models(summary_table([summary, *baselines]))
        summarised = set(zip(summary["method"], summary["variant"], strict=True))
        rows = [
            row
            for baseline in PAIRED_BASELINES
            for row in paired_rows(models, baseline, args.bootstrap)
            if (row["method"], row["variant"]) in summarised
        ]
        write_csv(pd.DataFrame(rows, columns=PAIRED_COLUMNS), args.paired)
    print(f"{len(summary)} rows from {len(args.inputs)} models -> {args.summary}")


PAIRED_COLUMNS = [
    "dataset",
    "method",
    "variant",
    "baseline",
    "density",
    "scope",
    "seed",
    "n_seeds",
    "attack",
    "metric",
    "difference",
    "ci_low",
    "ci_high",
]


if __name__ == "__main__":
    cli.run(main)
