"""The split every MIA number depends on: disjoint sets of a pool's samples, and the samples
of each set as tensors.

The sets, cut in this order from one seeded permutation of the pool:
- `target_train`: members of every target model, the members every evaluation attack judges;
- `known_members`: members of every target model too, the ones the defender knows and its
  safety test may use; never evaluated, so no method is judged on the samples it tuned against;
- `target_out`: non-members of every target model, the evaluated non-members and the test set;
- `shadow_train` / `shadow_out`: the attacker's pool (shadow and reference models);
- `reference`: the defender's held-out data (validation, and the safety test's non-members).

With `evaluation.canaries: C`, C samples of `target_out` (seeded by the split) become
`canary`: each gets a flipped label (`canary_label`, the label every model trains on and is
queried with), and target seed s inserts its own seeded half of them into its members
(`inserted_canaries`), never into known members, probes, shadow or reference models. They
are neither test samples nor ordinary non-members: the attacks score them apart, the most
vulnerable samples (Aerni, Zhang, Tramer, CCS 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safecompress.data.sources import load_pool
from safecompress.io import read_csv

if TYPE_CHECKING:
    import torch

SPLIT_SETS = (
    "target_train",
    "known_members",
    "target_out",
    "shadow_train",
    "shadow_out",
    "reference",
)
# What a target model trains on, and the samples every evaluation attack judges.
MEMBER_SETS = ("target_train", "known_members")
EVALUATED_SETS = ("target_train", "target_out")
# Samples cut from `target_out` with a flipped label (`add_canaries`), and that label's column.
CANARY = "canary"
CANARY_LABEL = "canary_label"
# Every sample the attacker asks about: the evaluated ones and the canaries.
QUERIED_SETS = (*EVALUATED_SETS, CANARY)
# Streams of the split's seed apart from its permutation: which samples become canaries and
# their labels, and (with a target's seed) which half of them that target trains on.
CANARY_STREAM, INSERTED_STREAM = 1, 2
REFERENCE_SEED_OFFSET = 10_000  # reference (shadow) model k trains with seed offset + k


def reference_seed(k: int) -> int:
    """The training seed of reference model k of every recipe, apart from the targets'."""
    return REFERENCE_SEED_OFFSET + k


class SplitError(ValueError):
    """The split is unusable: sets overlap, fall outside the pool, or have the wrong sizes."""


def split_sizes(n_pool: int, fractions: dict[str, float]) -> dict[str, int]:
    """Number of samples in each set: floor(fraction x pool size)."""
    unknown = set(fractions) - set(SPLIT_SETS)
    missing = set(SPLIT_SETS) - set(fractions)
    if unknown or missing:
        raise SplitError(
            f"split fractions must name exactly {SPLIT_SETS}; "
            f"unknown: {sorted(unknown)}, missing: {sorted(missing)}"
        )
    total = sum(fractions.values())
    if any(f <= 0 for f in fractions.values()) or total > 1.0 + 1e-9:
        raise SplitError(f"split fractions must be > 0 and sum to at most 1 (they sum to {total})")
    sizes = {name: int(np.floor(fractions[name] * n_pool)) for name in SPLIT_SETS}
    if min(sizes.values()) < 2:
        raise SplitError(f"a pool of {n_pool} samples gives a set with < 2 samples: {sizes}")
    return sizes


def make_split(n_pool: int, fractions: dict[str, float], seed: int) -> pd.DataFrame:
    """Cut one seeded permutation of the pool into the disjoint sets: columns `index`, `set`."""
    sizes = split_sizes(n_pool, fractions)
    order = np.random.default_rng(seed).permutation(n_pool)
    bounds = np.cumsum([0, *(sizes[name] for name in SPLIT_SETS)])
    parts = [
        pd.DataFrame({"index": np.sort(order[lo:hi]), "set": name})
        for name, lo, hi in zip(SPLIT_SETS, bounds[:-1], bounds[1:], strict=True)
    ]
    split = pd.concat(parts, ignore_index=True)
    check_split(split, n_pool, fractions)
    return split


def add_canaries(
    split: pd.DataFrame, labels: np.ndarray, n_classes: int, count: int, seed: int
) -> pd.DataFrame:
    """`count` samples of `target_out` (seeded by the split's seed) moved to set `canary`, each
    with a flipped label in column `canary_label`: (y + 1 + r) mod n_classes, r uniform in
    [0, n_classes - 1), so never its own. The split unchanged when `count` is 0."""
    if count == 0:
        return split
    out = set_indices(split, "target_out")
    if count % 2 or count > len(out):
        raise SplitError(f"canaries: {count} must be even and at most target_out's {len(out)}")
    rng = np.random.default_rng([seed, CANARY_STREAM])
    chosen = np.sort(rng.choice(out, count, replace=False))
    shift = 1 + rng.integers(0, n_classes - 1, count)
    split = split.assign(**{CANARY_LABEL: pd.array([pd.NA] * len(split), dtype="Int64")})
    rows = split["index"].isin(chosen).to_numpy()
    flipped = dict(zip(chosen, (labels[chosen] + shift) % n_classes, strict=True))
    split.loc[rows, CANARY_LABEL] = split.loc[rows, "index"].map(flipped)
    split.loc[rows, "set"] = CANARY
    return split.sort_values("set", key=_set_order, kind="stable").reset_index(drop=True)


def _set_order(sets: pd.Series) -> pd.Series:
    return sets.map({name: i for i, name in enumerate((*SPLIT_SETS, CANARY))})


def inserted_canaries(split: pd.DataFrame, seed: int) -> np.ndarray:
    """The half of the split's canaries that the target of training seed `seed` trains on: a
    function of the canaries (the split's seed) and `seed` alone, so every method of one
    replicate inserts the same ones and their comparison stays paired."""
    canaries = set_indices(split, CANARY)
    chosen = np.random.default_rng([seed, INSERTED_STREAM]).permutation(canaries)
    return np.sort(chosen[: len(canaries) // 2])


def target_members(split: pd.DataFrame, seed: int) -> np.ndarray:
    """What the target of training seed `seed` trains on: MEMBER_SETS and its inserted half of
    the canaries, in pool order."""
    members = np.concatenate([set_indices(split, *MEMBER_SETS), inserted_canaries(split, seed)])
    return np.sort(members)


def check_split(split: pd.DataFrame, n_pool: int, fractions: dict[str, float]) -> None:
    """Refuse a split whose sets overlap, leave the pool, or do not have the configured sizes
    (the canaries count towards `target_out`, which they were cut from)."""
    missing = {"index", "set"} - set(split.columns)
    if missing:
        raise SplitError(f"split table lacks column(s) {sorted(missing)}")
    index = split["index"].to_numpy()
    if index.min() < 0 or index.max() >= n_pool:
        raise SplitError(
            f"split indices must lie in [0, {n_pool}); found {index.min()}..{index.max()}"
        )
    duplicated = split[split["index"].duplicated(keep=False)]
    if len(duplicated):
        sets = sorted(duplicated["set"].unique())
        raise SplitError(
            f"{duplicated['index'].nunique()} sample(s) appear twice (sets {sets}); members and "
            "non-members must be disjoint or every MIA number is void"
        )
    expected = split_sizes(n_pool, fractions)
    found = split["set"].value_counts().to_dict()
    n_canaries = found.pop(CANARY, 0)
    if n_canaries and (
        CANARY_LABEL not in split or split.loc[split["set"] == CANARY, CANARY_LABEL].isna().any()
    ):
        raise SplitError(f"every canary needs its label in column {CANARY_LABEL!r}")
    found["target_out"] = found.get("target_out", 0) + n_canaries
    for name, size in expected.items():
        if found.get(name, 0) != size:
            raise SplitError(f"set {name!r} has {found.get(name, 0)} samples, expected {size}")
    extra = set(found) - set(SPLIT_SETS)
    if extra:
        raise SplitError(f"split has unknown set(s) {sorted(extra)}")


def set_indices(split: pd.DataFrame, *names: str) -> np.ndarray:
    """Pool indices of one or more sets of the split, in pool order."""
    return np.sort(split.loc[split["set"].isin(names), "index"].to_numpy(dtype=np.int64))


def rmia_population(split: pd.DataFrame) -> np.ndarray:
    """RMIA's population z: half of `shadow_out` (seeded), which no reference model of any
    recipe ever trains on, so every reference is OUT for every z (Zarifzadeh et al.)."""
    out = set_indices(split, "shadow_out")
    return np.sort(np.random.default_rng(0).permutation(out)[: len(out) // 2])


def shadow_partition(split: pd.DataFrame, shadow: int) -> tuple[np.ndarray, np.ndarray]:
    """Members and non-members of shadow (reference) model `shadow`.

    Model 0 uses the split's shadow_train / shadow_out; model k > 0 re-draws the members, as
    many as shadow_train's, from the shadow pool outside RMIA's population (seed k), so
    reference models differ in their data as well as their initialisation and none trains on
    the population.
    """
    members = set_indices(split, "shadow_train")
    nonmembers = set_indices(split, "shadow_out")
    if shadow == 0:
        return members, nonmembers
    population = rmia_population(split)
    drawable = np.setdiff1d(np.concatenate([members, nonmembers]), population)
    pool = np.random.default_rng(shadow).permutation(drawable)
    rest = np.concatenate([pool[len(members) :], population])
    return np.sort(pool[: len(members)]), np.sort(rest)


def stand_in_split(split: pd.DataFrame, k: int) -> pd.DataFrame:
    """The split reference model k of a recipe trains by: the target's sets, played by draw k of
    the attacker's pool (`shadow_partition`). Its members (`target_train`, with the same share
    of `known_members` as the target's) are the draw's members; its defender's held-out
    `reference` set is a share of the draw's non-members outside RMIA's population (the
    target's reference : target_out ratio, canaries counted in `target_out` as configured), and
    its `target_out` the rest, which the reference never touches. No canary: the attacker's pool
    holds none. Columns `index`, `set`; only those four sets."""
    members, nonmembers = shadow_partition(split, k)
    sizes = split["set"].replace(CANARY, "target_out").value_counts()
    rng = np.random.default_rng(k)  # which members are known, which held out: seeded by k
    members = rng.permutation(members)
    population = rmia_population(split)
    others = rng.permutation(np.setdiff1d(nonmembers, population))
    n_known = round(len(members) * sizes["known_members"] / sizes[list(MEMBER_SETS)].sum())
    n_held = round(len(nonmembers) * sizes["reference"] / sizes[["reference", "target_out"]].sum())
    parts = {
        "target_train": members[n_known:],
        "known_members": members[:n_known],
        "target_out": np.concatenate([others[n_held:], np.intersect1d(nonmembers, population)]),
        "reference": others[:n_held],
    }
    return pd.DataFrame(
        {
            "index": np.concatenate([np.sort(rows) for rows in parts.values()]),
            "set": np.repeat(list(parts), [len(rows) for rows in parts.values()]),
        }
    )


@dataclass(frozen=True)
class Samples:
    """Inputs and labels of one set of samples (in host memory unless moved)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> Samples:
        return Samples(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Data:
    """A data set's whole pool as tensors in host memory, and its split. Training copies what
    it needs to the device (see `batches`); evaluation moves chunks."""

    x: torch.Tensor
    y: torch.Tensor
    split: pd.DataFrame
    n_classes: int

    def take(self, indices: np.ndarray) -> Samples:
        """The samples at these pool indices."""
        import torch

        rows = torch.tensor(indices, dtype=torch.long)  # indexing copies
        return Samples(self.x[rows], self.y[rows])

    def set(self, *names: str) -> Samples:
        """The samples of one or more sets of the split (see SPLIT_SETS)."""
        return self.take(set_indices(self.split, *names))


def load_data(spec: dict[str, Any], split_path: str | Path) -> Data:
    """Load the pool, read the split and refuse it unless its sets are disjoint and sized."""
    import torch  # on first use: the split step (make_split) needs no torch

    pool = load_pool(spec)
    split = read_csv(split_path, required=("index", "set"))
    check_split(split, len(pool.y), spec["split"])
    labels = pool.y.copy()
    canaries = split[split["set"] == CANARY]
    if len(canaries):
        labels[canaries["index"].to_numpy()] = canaries[CANARY_LABEL].to_numpy()
    return Data(torch.from_numpy(pool.x), torch.from_numpy(labels), split, pool.n_classes)
