"""Cost of each compression method relative to DST, from a finished run's job benchmarks.

    PYTHONPATH=workflow python benchmarks/method_cost.py [--results results/evidence]

Reads the benchmark file Snakemake writes for every compress job
(`<results>/benchmarks/compress/<dataset>_split<k>_<method>_density<d>_seed<s>.tsv`;
ablation variants one folder deeper) and prints, per data set, method and density, the mean
wall and CPU seconds of a job and their ratio to DST's at the same data set and density. A
job's time includes its interpreter and import start-up (about 3 s); jobs that ran side by
side share the machine, so compare ratios within one run, not seconds across runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from safecompress.config.methods import METHODS

# <dataset>_split<k>_<method>_density<d>_seed<s>; data set and method names may hold underscores, so
# the method is one of METHODS (longest first) or ablation/<variant>
JOB = re.compile(
    r"(?P<dataset>.+?)_split\d+_(?P<method>"
    + "|".join(sorted(METHODS, key=len, reverse=True))
    + r"|ablation/.+?)_density(?P<density>[0-9.]+)_seed\d+"
)


def job_table(results: Path) -> pd.DataFrame:
    """One row per compress job: dataset, method (ablation/<variant> for variants), density,
    wall seconds, CPU seconds."""
    folder = results / "benchmarks" / "compress"
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        name = path.relative_to(folder).with_suffix("").as_posix()
        match = JOB.fullmatch(name)
        if match is None:
            continue
        timing = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append(
            {
                **match.groupdict(),
                "wall_s": float(timing["s"]),
                "cpu_s": float(timing["cpu_time"]),
            }
        )
    if not rows:
        raise SystemExit(f"no compress benchmarks under {folder}; run the workflow first")
    table = pd.DataFrame(rows)
    table["density"] = table["density"].astype(float)
    return table


def relative_cost(jobs: pd.DataFrame) -> pd.DataFrame:
    """Mean wall and CPU seconds per method, and their ratios to DST's at the same density."""
    cost = (
        jobs.groupby(["dataset", "density", "method"])
        .agg(jobs=("wall_s", "size"), wall_s=("wall_s", "mean"), cpu_s=("cpu_s", "mean"))
        .reset_index()
    )
    dst = cost[cost["method"] == "dst"].set_index(["dataset", "density"])
    for column in ("wall_s", "cpu_s"):
        baseline = cost.set_index(["dataset", "density"]).index.map(dst[column])
        cost[f"{column}_vs_dst"] = cost[column].to_numpy() / baseline.to_numpy(dtype=float)
    return cost.sort_values(["dataset", "density", "wall_s_vs_dst"], ascending=[True, False, True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/evidence"))
    args = parser.parse_args()
    cost = relative_cost(job_table(args.results))
    print(cost.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
