"""Time the whole default workflow from an empty results directory (target: <= 240 s, 2 cores),
or another config's (the evidence run: target 90 minutes).

    python benchmarks/default_run.py [--cores 2] [--keep]
    python benchmarks/default_run.py --configfile config/evidence.yaml \
        --results results/evidence --target 5400 --keep

Runs `snakemake --cores N` with `results` pointed at --results (by default
benchmarks/results/default_run, so a user's own results/ is untouched), emptied first, then
prints the wall time and the wall and CPU time of every job kind from the workflow's own
benchmark files. `--report-only` prints the latter for a finished run without running it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 240


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the results afterwards")
    parser.add_argument("--configfile", type=Path, help="a config besides config/config.yaml")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/default_run"))
    parser.add_argument("--target", type=float, default=TARGET_SECONDS, help="seconds")
    parser.add_argument(
        "--report-only", action="store_true", help="only the job times of a finished run"
    )
    args = parser.parse_args()
    results = args.results
    if args.report_only:
        print(per_rule_table(REPO / results / "benchmarks").round(1).to_string())
        return
    shutil.rmtree(REPO / results, ignore_errors=True)

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "--cores", str(args.cores)]
    if args.configfile:
        command += ["--configfile", str(args.configfile)]
    command += ["--config", f"results={results}"]
    log = REPO / "benchmarks" / "results" / f"{results.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=output, stderr=output)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"snakemake failed (exit {done.returncode}); see {log}")

    per_rule = per_rule_table(REPO / results / "benchmarks")
    print(f"cpu cores: {os.cpu_count()}, snakemake --cores {args.cores}")
    print(per_rule.round(1).to_string())
    verdict = "within" if wall <= args.target else "OVER"
    print(
        f"workflow from empty results: {wall:.1f} s wall "
        f"({verdict} the {args.target:.0f} s target); snakemake log: {log.relative_to(REPO)}"
    )
    if not args.keep:
        shutil.rmtree(REPO / results, ignore_errors=True)


def per_rule_table(benchmarks: Path) -> pd.DataFrame:
    """Jobs, total and mean wall seconds and total CPU seconds of every rule, from the
    workflow's benchmark files."""
    rows = [  # benchmarks/<rule>/<job>.tsv; ablation jobs sit one folder deeper
        pd.read_csv(path, sep="\t").assign(rule=path.relative_to(benchmarks).parts[0])
        for path in sorted(benchmarks.rglob("*.tsv"))
    ]
    # CPU seconds too: on a shared machine they grow less with the load than wall seconds
    return (
        pd.concat(rows)
        .groupby("rule")
        .agg(
            jobs=("s", "count"),
            total_s=("s", "sum"),
            mean_s=("s", "mean"),
            cpu_s=("cpu_time", "sum"),
        )
    )


if __name__ == "__main__":
    main()
