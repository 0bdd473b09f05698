"""What SafeCompress's selection did, from the candidate logs of a finished run.

    PYTHONPATH=workflow python scripts/selection_report.py [--results results/evidence]

Reads every `<results>/<dataset>/split<k>/<method>/density<d>/seed<s>/updates.csv` of the
selecting methods (safecompress, safecompress_adv and the ablation variants) and prints,
per method and density:
- updates: mask updates logged, over all replicates;
- kept_dst: share of updates whose kept candidate is DST's own strategy (candidate 0);
- leakage_gain: mean leakage (the safety score) of DST's candidate minus the kept one's, at
  the last rung where both were tested (positive: the kept candidate leaks less);
- gain_z: that gain over its paired standard error, mean over updates (|z| < 2: the
  safety test cannot tell the two apart);
- acc_cost: mean val_acc of DST's candidate minus the kept one's at that rung;
- first_rung_same: share of updates where deciding at the first rung (by the run's own rule,
  `updates.survivors` with --min-z and --max-acc-drop) keeps the same candidate as the whole
  look-ahead did: what the later rungs decide;
- kept: how often each strategy was kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from safecompress.compression.updates import survivors
from safecompress.io import read_csv


def update_rows(path: Path, min_z: float, max_acc_drop: float = 1.0) -> list[dict]:
    """Per mask update: the kept candidate against DST's at the last rung with both, and
    whether the first rung alone would have kept it."""
    updates = read_csv(path, required=("step", "rung", "candidate", "strategy", "selected"))
    rows = []
    for step, logged in updates.groupby("step"):
        kept = logged[logged["selected"]].iloc[-1]
        both = logged[logged["candidate"].isin([0, kept["candidate"]])]
        rung = both.groupby("rung")["candidate"].nunique()
        last = both[both["rung"] == (rung[rung == both["candidate"].nunique()].index.max())]
        dst, mine = (last[last["candidate"] == c].iloc[0] for c in (0, kept["candidate"]))
        gain = dst["leakage"] - mine["leakage"]
        first = logged[logged["rung"] == 0].sort_values("score", ascending=False, kind="stable")
        (at_first_rung,) = survivors(
            list(first["candidate"]),
            dict(zip(first["candidate"], first["score_z"], strict=True)),
            dict(zip(first["candidate"], first["val_acc"], strict=True)),
            last=True,
            min_z=min_z,
            max_acc_drop=max_acc_drop,
        )
        rows.append(
            {
                "step": step,
                "kept_dst": kept["candidate"] == 0,
                "kept": kept["strategy"],
                "leakage_gain": gain,
                # leakage_diff_se: the paired standard error of a candidate's leakage minus the
                # best one's; 0 when DST's candidate is the best (then the gain is 0 too)
                "gain_z": gain / dst["leakage_diff_se"] if dst["leakage_diff_se"] > 0 else 0.0,
                "acc_cost": dst["val_acc"] - mine["val_acc"],
                "first_rung_same": at_first_rung == kept["candidate"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/evidence"))
    parser.add_argument(
        "--min-z", type=float, default=2.0, help="the run's safecompress.min_z (default 2)"
    )
    parser.add_argument(
        "--max-acc-drop",
        type=float,
        default=1.0,
        help="the run's safecompress.max_acc_drop (default 1: no floor)",
    )
    args = parser.parse_args()
    frames = []
    for path in sorted(args.results.glob("*/**/density*/seed*/updates.csv")):
        parts = path.relative_to(args.results).parts
        method = "/".join(parts[2:-3])  # <dataset>/split<k>/<method>/density<d>/seed<s>
        if not (method.startswith("safecompress") or method.startswith("ablation/")):
            continue
        density = float(parts[-3].removeprefix("density"))
        frames.append(
            pd.DataFrame(update_rows(path, args.min_z, args.max_acc_drop)).assign(
                method=method, density=density
            )
        )
    if not frames:
        raise SystemExit(f"no SafeCompress candidate logs under {args.results}")
    updates = pd.concat(frames, ignore_index=True)
    report = updates.groupby(["method", "density"]).agg(
        updates=("step", "size"),
        kept_dst=("kept_dst", "mean"),
        leakage_gain=("leakage_gain", "mean"),
        gain_z=("gain_z", "mean"),
        acc_cost=("acc_cost", "mean"),
        first_rung_same=("first_rung_same", "mean"),
    )
    kept = updates.groupby(["method", "density"])["kept"].agg(
        lambda kept: ", ".join(f"{name} {n}" for name, n in kept.value_counts().items())
    )
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(report.join(kept).round(3).to_string())


if __name__ == "__main__":
    main()
