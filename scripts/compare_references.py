"""How much dense references flatter each model: the same models attacked with references
trained by their own recipe (`evaluation.references: matched`) and with the dense shadow
models (`dense`), side by side.

    snakemake --cores 2                                             # matched (the default)
    snakemake --cores 2 --config results=results_dense \\
        evaluation="{references: dense}"                           # the same models, dense
    PYTHONPATH=workflow python scripts/compare_references.py \\
        --matched results/tables/summary.csv --dense results_dense/tables/summary.csv

The two runs train identical targets (the references are the only difference), so the
tables pair row for row. For the evidence run, config/evidence_dense.yaml attacks a copy of
its targets instead of training them again (its header gives the commands).

Prints, per method and density (mean over replicates), each attack's AUC and TPR at 1 % FPR
under both, and matched minus dense; `--out` also writes it as CSV.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from safecompress.io import read_csv, write_csv

MODEL = ["dataset", "method", "variant", "density"]
METRICS = ["auc", "tpr_at_1pct_fpr"]


def side_by_side(matched: pd.DataFrame, dense: pd.DataFrame, attacks: list[str]) -> pd.DataFrame:
    """One row per model and attack: each metric under matched and dense references (means
    over replicates) and their difference."""
    keys = [*MODEL, "split", "seed", "attack"]
    pairs = matched[matched["attack"].isin(attacks)].merge(
        dense[dense["attack"].isin(attacks)],
        on=keys,
        suffixes=("_matched", "_dense"),
        validate="one_to_one",
    )
    for metric in METRICS:
        pairs[f"{metric}_shift"] = pairs[f"{metric}_matched"] - pairs[f"{metric}_dense"]
    columns = [f"{m}_{kind}" for m in METRICS for kind in ("matched", "dense", "shift")]
    return pairs.groupby([*MODEL, "attack"], sort=False)[columns].mean().reset_index()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--matched", type=Path, required=True, help="summary.csv, matched references")
    p.add_argument("--dense", type=Path, required=True, help="summary.csv, dense references")
    p.add_argument("--attacks", nargs="+", default=["lira", "rmia", "loss"])
    p.add_argument("--out", type=Path, help="also write the table here (CSV)")
    args = p.parse_args()
    required = (*MODEL, "split", "seed", "attack", *METRICS)
    table = side_by_side(
        read_csv(args.matched, required=required),
        read_csv(args.dense, required=required),
        args.attacks,
    )
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(table.round(3).to_string(index=False))
    if args.out:
        write_csv(table, args.out)


if __name__ == "__main__":
    main()
