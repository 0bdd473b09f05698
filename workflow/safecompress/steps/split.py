"""Step 1: one seeded split of a data set's pool into disjoint member / non-member sets.

    python -m safecompress.steps.split --dataset digits --split-seed 0 \\
        --out results/digits/split0/split.csv

The sets and what each is for, and the canaries (`evaluation.canaries`) cut from
`target_out`: `safecompress.data.splits`.
"""

from __future__ import annotations

from collections.abc import Sequence

from safecompress.data.sources import load_pool
from safecompress.data.splits import add_canaries, make_split
from safecompress.io import write_csv
from safecompress.steps import cli


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the permutation the split is cut from"
    )
    p.add_argument("--out", required=True, help="split table to write (CSV: index, set)")
    p.add_argument(
        "--canaries",
        type=int,
        default=0,
        help="config evaluation.canaries: flipped-label samples cut from target_out (0: none)",
    )
    cli.add_sections(p, "data")
    args = p.parse_args(argv)
    entry = cli.data_entry(args, args.dataset)
    pool = load_pool(entry)
    split = make_split(len(pool.y), entry["split"], args.split_seed)
    split = add_canaries(split, pool.y, pool.n_classes, args.canaries, args.split_seed)
    write_csv(split, args.out)
    counts = split["set"].value_counts().reindex(split["set"].unique())
    print(
        f"{args.dataset}, split {args.split_seed}: {len(pool.y)} samples, "
        f"{pool.n_classes} classes -> " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )


if __name__ == "__main__":
    cli.run(main)
