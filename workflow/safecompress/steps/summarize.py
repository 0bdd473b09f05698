"""Step 5: gather every model's attack results into the summary and paper-style tables.

    python -m safecompress.steps.summarize --inputs results/*/*/density*/seed*/attacks.csv \\
        --summary results/tables/summary.csv --paper-table results/tables/paper_table.csv \\
        --markdown results/tables/paper_table.md

summary.csv:      one row per dataset x method x variant x density x seed x attack (tidy);
                  the variant is "default" except for ablations (ablation.csv).
paper_table.csv:  mean and sd over seeds per dataset x method x density x attack x metric.
paper_table.md:   the same as Markdown, one table per data set, "mean ± sd" cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..io import atomic_path, read_csv, write_csv
from . import cli

KEY = ["dataset", "method", "variant", "density", "seed", "attack"]
METRICS = ["task_acc", "attack_acc", "advantage", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"]
METHOD_ORDER = ["dense", "magnitude", "dst", "safecompress"]


def summary_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """All per-model results, sorted; a model listed twice is an error, not a silent duplicate."""
    summary = pd.concat(frames, ignore_index=True)
    duplicated = summary[summary.duplicated(KEY, keep=False)]
    if len(duplicated):
        raise ValueError(
            f"results listed twice: {duplicated[KEY].drop_duplicates().to_dict('records')}"
        )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return summary.sort_values(
        KEY,
        key=lambda col: col.map(order) if col.name == "method" else col,
        ascending=[True, True, True, False, True, True],
    ).reset_index(drop=True)


def seed_statistics(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd over seeds of every metric (tidy: one row per metric)."""
    long = summary.melt(id_vars=KEY, value_vars=METRICS, var_name="metric")
    grouped = long.groupby(
        ["dataset", "method", "variant", "density", "attack", "metric"], sort=False
    )
    stats = grouped["value"].agg(mean="mean", sd="std", n_seeds="count").reset_index()
    stats["sd"] = stats["sd"].fillna(0.0)
    return stats


def markdown_tables(stats: pd.DataFrame) -> str:
    """Per data set: rows method x density; columns task accuracy, then AUC and TPR@1%FPR per
    attack; cells "mean ± sd" in percent."""
    lines = []
    for dataset, rows in stats.groupby("dataset", sort=False):
        cell = rows.assign(
            text=[
                f"{100 * m:.1f} ± {100 * s:.1f}"
                for m, s in zip(rows["mean"], rows["sd"], strict=True)
            ]
        )
        accuracy = cell[cell["metric"] == "task_acc"].drop_duplicates(["method", "density"])
        table = accuracy.set_index(["method", "density"])[["text"]].rename(
            columns={"text": "task acc (%)"}
        )
        for metric, label in (("auc", "AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR")):
            wide = cell[cell["metric"] == metric].pivot(
                index=["method", "density"], columns="attack", values="text"
            )
            table = table.join(wide.rename(columns=lambda a, lab=label: f"{a} {lab} (%)"))
        n_seeds = int(rows["n_seeds"].max())
        lines += [
            f"## {dataset} (mean ± sd over {n_seeds} seed(s))",
            "",
            _markdown(table.reset_index()),
            "",
        ]
    return "\n".join(lines)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--inputs", nargs="+", required=True, help="attacks.csv of every model")
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--paper-table", type=Path, help="mean and sd over seeds (CSV)")
    p.add_argument("--markdown", type=Path, help="mean ± sd tables (Markdown)")
    args = p.parse_args(argv)
    summary = summary_table([read_csv(path, required=(*KEY, *METRICS)) for path in args.inputs])
    write_csv(summary, args.summary)
    stats = seed_statistics(summary)
    if args.paper_table:
        write_csv(stats, args.paper_table)
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(markdown_tables(stats))
    print(f"{len(summary)} rows from {len(args.inputs)} models -> {args.summary}")


if __name__ == "__main__":
    cli.run(main)
