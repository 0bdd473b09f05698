"""Step 5: gather every model's attack results into the summary, paper-style and paired tables.

    python -m safecompress.steps.summarize --inputs results/*/*/density*/seed*/attacks.csv \\
        --summary results/tables/summary.csv --paper-table results/tables/paper_table.csv \\
        --markdown results/tables/paper_table.md
    python -m safecompress.steps.summarize --inputs results/*/*/density*/seed*/attacks.csv \\
        --paired results/tables/paired.csv

Each table is written only if its option is given (the workflow computes the paired table in
a job of its own: its bootstrap takes most of the time, and no figure reads it).

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

The tables are built by `safecompress.reporting.tables`; this step reads and writes the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safecompress.io import atomic_path, read_csv, write_csv
from safecompress.reporting import tables
from safecompress.steps import cli


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--inputs", nargs="+", required=True, help="attacks.csv of every model")
    p.add_argument("--summary", type=Path, help="every model x attack (CSV)")
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
    if not (args.summary or args.paper_table or args.markdown or args.paired):
        p.error("nothing to write: give --summary, --paper-table, --markdown or --paired")
    required = (*tables.KEY, *tables.METRICS)
    summary = tables.summary_table([read_csv(path, required=required) for path in args.inputs])
    if args.summary:
        write_csv(summary, args.summary)
    stats = tables.replicate_statistics(summary)
    if args.paper_table:
        write_csv(stats, args.paper_table)
    if args.markdown:
        with atomic_path(args.markdown) as tmp:
            tmp.write_text(tables.markdown_tables(stats))
    if args.paired:
        baselines = [read_csv(path, required=required) for path in args.baselines]
        write_csv(tables.paired_table(summary, baselines, args.bootstrap), args.paired)
    written = [
        path for path in (args.summary, args.paper_table, args.markdown, args.paired) if path
    ]
    print(f"{len(summary)} rows from {len(args.inputs)} models -> {', '.join(map(str, written))}")


if __name__ == "__main__":
    cli.run(main)
