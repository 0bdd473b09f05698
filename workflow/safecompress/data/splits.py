"""The split every MIA number depends on: disjoint sets of a pool's samples, and the samples
of each set as tensors.

The sets, cut in this order from one seeded permutation of the pool:
- `target_train`: members of every target model, the members every evaluation attack judges;
- `known_members`: members of every target model too, the ones the defender knows and its
  safety test may use; never evaluated, so no method is judged on the samples it tuned against;
- `target_out`: non-members of every target model, the evaluated non-members and the test set;
- `shadow_train` / `shadow_out`: the attacker's pool (shadow and reference models);
- `reference`: the defender's held-out data (validation, and the safety test's non-members).
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


def check_split(split: pd.DataFrame, n_pool: int, fractions: dict[str, float]) -> None:
    """Refuse a split whose sets overlap, leave the pool, or do not have the configured sizes."""
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
    target's reference : target_out ratio), and its `target_out` the rest, which the reference
    never touches. Columns `index`, `set`; only those four sets."""
    members, nonmembers = shadow_partition(split, k)
    sizes = split["set"].value_counts()
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
    return Data(torch.from_numpy(pool.x), torch.from_numpy(pool.y), split, pool.n_classes)
