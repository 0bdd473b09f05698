"""How training batches reach the model.

One order, two ways to deliver it. The order is shuffled index batches drawn from the training
run's own seeded generator, so a run is reproducible and resumes exactly. Then:

- `workers: 0` (the default): the training set is copied to the device once and every batch
  is gathered there, with no host work per step (each paper data set fits on one GPU);
- `workers: N`: the set stays in host memory; N DataLoader worker processes gather batches
  into pinned memory, copied to the GPU without blocking the training loop (data larger than
  the device, or host work kept off the loop).

Both give the same batches. Augmentation runs on the device after the copy: `crop_flip` is
the CIFAR recipe of the reference code, a random crop from the image padded by H/8 (4 pixels
of a 32x32 image; zeros, the mean of normalised images) and a horizontal flip with
probability 1/2.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .data import Split

if TYPE_CHECKING:
    from .training import TrainSpec

AUGMENTATIONS = ("none", "crop_flip")


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch in a seeded random order. The last batch may be smaller,
    but never a single sample, which batch normalisation cannot train on."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) == 1 else batches


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of an (N, C, H, W) batch randomly cropped from its zero-padded copy and
    flipped left-right with probability 1/2. The random numbers come from `generator` on the
    host (reproducible, checkpointed with the run); the gather runs on `x`'s device."""
    n, channels, height, width = x.shape
    pad = max(1, height // 8)
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    # asynchronous copies: a blocking one would make the host wait for the GPU every step
    offsets, flips = offsets.to(x.device, non_blocking=True), flips.to(x.device, non_blocking=True)
    rows = offsets[0, :, None] + torch.arange(height, device=x.device)
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flipped crop reads right to left
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(channels, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class _Rows(Dataset):
    """A split indexed by a whole batch of rows at once: one gather per batch in a worker."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.x[rows], self.split.y[rows]


class TrainBatches:
    """The training set as the model sees it: shuffled, augmented batches on `device`."""

    def __init__(self, train: Split, spec: TrainSpec, device: torch.device):
        if spec.augment not in AUGMENTATIONS:
            raise ValueError(f"train.augment: {spec.augment!r} is not one of {AUGMENTATIONS}")
        if spec.augment == "crop_flip" and train.x.dim() != 4:
            raise ValueError(
                f"train.augment: crop_flip needs images (N, C, H, W), the data are "
                f"{tuple(train.x.shape)}; set `augment: none` for this data set"
            )
        self.batch_size, self.workers, self.augment = spec.batch_size, spec.workers, spec.augment
        self.device = device
        self.split = train if spec.workers else train.to(device)

    def __len__(self) -> int:
        return len(self.split)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (inputs, labels) batches on the device."""
        order = shuffled_batches(len(self), self.batch_size, generator)
        if self.workers:
            gathered = DataLoader(
                _Rows(self.split),
                sampler=order,
                batch_size=None,  # the sampler yields whole batches of rows
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
            )
        else:
            gathered = (self._gather(rows) for rows in order)
        for x, y in gathered:
            yield self._prepare(x, y, generator)

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of random rows (a candidate's training steps)."""
        rows = torch.randperm(len(self), generator=generator)[: self.batch_size]
        return self._prepare(*self._gather(rows), generator)

    def _gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to(self.split.x.device, non_blocking=True)
        return self.split.x[rows], self.split.y[rows]

    def _prepare(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        return (crop_flip(x, generator) if self.augment == "crop_flip" else x), y
