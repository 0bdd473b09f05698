"""What every compression method is given (`Job`) and what it returns (`Compressed`), and the
random generators of a run, one per purpose."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from safecompress.config.specs import TrainSpec
from safecompress.data.splits import Data, Samples, target_members
from safecompress.training.checkpoint import Checkpoint

# Every random choice of a run draws from its own generator, one per purpose, so one purpose
# never replays another's numbers (SET's first update regrew exactly the weights it had just
# dropped when masks and updates shared a seed) and adding draws to one leaves the others be.
# Append new purposes: a purpose's seed depends on its position.
PURPOSES = ("masks", "updates", "probes", "batches", "selection", "attackers", "noise")


def purpose_seed(seed: int, purpose: str) -> int:
    """The 64-bit seed of `purpose` in a run seeded `seed`: numpy's SeedSequence(seed) spawns
    one child per purpose (in PURPOSES order); each child's first uint64 word is the seed."""
    child = np.random.SeedSequence(seed).spawn(len(PURPOSES))[PURPOSES.index(purpose)]
    return int(child.generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class Job:
    """What every method is given: the data, the model and training sections, the target
    density and seed, the device, and the checkpoint that makes the run resumable."""

    data: Data
    model: dict[str, Any]
    train: TrainSpec
    density: float
    seed: int
    device: torch.device
    checkpoint: Checkpoint

    def members(self) -> Samples:
        """What the model trains on: the members and this seed's inserted canaries (none in a
        reference's stand-in split)."""
        return self.data.take(target_members(self.data.split, self.seed))

    def heldout(self) -> Samples:
        """The defender's held-out data: validation during training, non-members of its own
        simulated attacks."""
        return self.data.set("reference")

    def generator(self, purpose: str) -> torch.Generator:
        """A fresh generator for one purpose of this run (see `purpose_seed`)."""
        return torch.Generator().manual_seed(self.seed_of(purpose))

    def seed_of(self, purpose: str) -> int:
        return purpose_seed(self.seed, purpose)


def _no_updates() -> pd.DataFrame:
    return pd.DataFrame(columns=["step"])


@dataclass
class Compressed:
    """What a method returns: the sparse model, its per-epoch history, its mask-update log
    (per candidate for SafeCompress), its layer densities at the start of training, the
    per-model numbers it reports (DP-SGD's epsilon) and any arrays it logged."""

    model: nn.Module
    history: pd.DataFrame
    start_density: dict[str, float]
    updates: pd.DataFrame = field(default_factory=_no_updates)
    report: dict[str, float] = field(default_factory=dict)
    # arrays logged for analysis (SafeCompress's candidates' logits: `candidates.npz`)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
