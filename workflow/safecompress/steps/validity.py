"""Step: does SafeCompress's safety test predict the evaluation's attacks?

    python -m safecompress.steps.validity candidates --dataset digits \\
        --split results/digits/split0/split.csv \\
        --model-dir results/digits/split0/safecompress/density0.1/seed0 \\
        --shadows results/digits/split0/references/safecompress/density0.1/k0 ... \\
        --method safecompress --density 0.1 --split-seed 0 --seed 0
    python -m safecompress.steps.validity table --inputs .../candidate_attacks.csv ... \\
        --bootstrap 1000 --out-dir results/tables

`candidates` attacks every candidate the model's compress job logged (updates.csv and
candidates.npz, written with safecompress.log_candidates) with the evaluation's loss, LiRA and
RMIA attacks, calibrated on the same references as the model's own attack (its recipe's under
evaluation.references matched, else the dense shadow models), and writes candidate_attacks.csv
beside them: per candidate row of updates.csv and attack, its safety `leakage` and the evaluation's
`auc` and `tpr_at_1pct_fpr`. `table` pools these into validity.csv (the Spearman correlation
per method x density x attack x rung, mean over mask updates with a 95 % bootstrap interval),
validity_updates.csv (per update and rung) and validity_candidates.csv (every candidate, what
the figure draws).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from safecompress.compression.updates import CANDIDATE_KEYS
from safecompress.io import read_arrays, read_csv, write_csv
from safecompress.privacy.signals import read_shadows
from safecompress.privacy.validity import VALIDITY_ATTACKS, VALIDITY_METRICS, candidate_table
from safecompress.reporting.tables import (
    VALIDITY_CANDIDATE_COLUMNS,
    validity_correlations,
    validity_table,
)
from safecompress.steps import cli

# What each candidate's row carries from updates.csv besides its key.
LOGGED = ("strategy", "leakage", "leakage_se", "val_acc", "selected")


def candidates(args: argparse.Namespace) -> None:
    updates = read_csv(args.model_dir / "updates.csv", required=(*CANDIDATE_KEYS, *LOGGED))
    logged = read_arrays(args.model_dir / "candidates.npz", ("index", *CANDIDATE_KEYS, "logits"))
    for key in CANDIDATE_KEYS:
        if list(logged[key]) != updates[key].tolist():
            raise ValueError(f"{args.model_dir}: candidates.npz and updates.csv disagree; rerun")
    shadow, _, queries = read_shadows(args.shadows, features=False)
    split = read_csv(args.split, required=("index", "set"))
    judged = candidate_table(
        logged["index"], logged["logits"], split, shadow, queries, VALIDITY_ATTACKS, args.seed
    )
    model = {
        "dataset": args.dataset,
        "split": args.split_seed,
        "method": args.method,
        "density": args.density,
        "seed": args.seed,
    }
    rows = updates[[*CANDIDATE_KEYS, *LOGGED]].assign(**model)
    table = rows.join(judged.set_index("row"), how="inner")
    columns = [*model, *CANDIDATE_KEYS, *LOGGED, "attack", *VALIDITY_METRICS]
    write_csv(table[columns], args.model_dir / "candidate_attacks.csv")
    print(f"{args.model_dir}: {len(updates)} candidates x {len(VALIDITY_ATTACKS)} attacks")


def table(args: argparse.Namespace) -> None:
    frames = [read_csv(path, required=VALIDITY_CANDIDATE_COLUMNS) for path in args.inputs]
    judged = pd.concat(frames, ignore_index=True)
    tests = validity_correlations(judged)
    pooled = validity_table(tests, args.bootstrap)
    write_csv(judged, args.out_dir / "validity_candidates.csv")
    write_csv(tests, args.out_dir / "validity_updates.csv")
    write_csv(pooled, args.out_dir / "validity.csv")
    print(pooled.to_string())


def _parser() -> argparse.ArgumentParser:
    p = cli.parser(__spec__.name, __doc__)
    commands = p.add_subparsers(dest="command", required=True)
    one = commands.add_parser("candidates", help="attack one model's logged candidates")
    one.add_argument("--dataset", required=True)
    one.add_argument("--split", required=True, help="split table written by steps.split")
    one.add_argument(
        "--model-dir", required=True, type=Path, help="with updates.csv and candidates.npz"
    )
    cli.add_shadows(one)
    one.add_argument("--method", required=True)
    one.add_argument("--density", required=True, type=float)
    one.add_argument("--split-seed", type=int, default=0, help="seed of --split, for the table")
    one.add_argument("--seed", type=int, default=0, help="the model's seed, the attacks' seed")
    one.set_defaults(run=candidates)
    pooled = commands.add_parser("table", help="pool the candidates of every model")
    pooled.add_argument(
        "--inputs", nargs="+", required=True, type=Path, help="candidate_attacks.csv each"
    )
    pooled.add_argument("--bootstrap", type=int, default=1000, help="resamples of each interval")
    pooled.add_argument("--out-dir", required=True, type=Path)
    pooled.set_defaults(run=table)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    cli.run(main)
