"""Step 5b: the safety-accuracy frontier as a table, from the paper table.

    python -m safecompress.steps.frontier --paper-table results/tables/paper_table.csv \\
        --attack strongest --out results/tables/frontier.csv

frontier.csv: per data set, density and leakage metric (AUC, TPR at 1 % FPR) of the --attack
(`strongest`: each model's strongest), every model point (each method's default and curve
points, the dense model in every density's set) with the means and 95 % intervals of task
accuracy and leakage over replicates; `pareto` (on the Pareto set), `dominated_by` (the other
methods with a point at least as accurate and as safe, better in one) and `method_on_pareto`.
Built by `safecompress.reporting.tables.frontier_table`, as figures/tradeoff draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safecompress.io import read_csv, write_csv
from safecompress.reporting import tables
from safecompress.steps import cli


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--paper-table", required=True, type=Path, help="paper_table.csv")
    p.add_argument("--attack", required=True, help="an attack, or 'strongest'")
    p.add_argument("--out", required=True, type=Path, help="frontier.csv to write")
    args = p.parse_args(argv)
    stats = read_csv(args.paper_table)
    try:
        frontier = tables.frontier_table(stats, args.attack)
    except ValueError as err:
        raise ValueError(f"{args.paper_table}: {err}") from err
    write_csv(frontier, args.out)
    print(f"{len(frontier)} model points -> {args.out}")


if __name__ == "__main__":
    cli.run(main)
