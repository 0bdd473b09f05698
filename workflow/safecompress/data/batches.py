"""How training batches reach the model.

One order, two ways to deliver it. The order is shuffled index batches drawn from the training
run's own seeded generator, so a run is reproducible and resumes exactly. Then:

- `workers: 0` (the default): the training set is copied to the device once and every batch
  is gathered there, with no host work per step (each paper data set fits on one GPU);
- `workers: N`: the set stays in host memory; N DataLoader worker processes gather batches
  into pinned memory, copied to the GPU without blocking the training loop (data larger than
  the device, or host work kept off the loop).

Both give the same batches. Augmentation runs on the device after the copy: `crop_flip` is
the CIFAR recipe of the reference code, a random crop from the image padded by an eighth of
its size (4 pixels of a 32x32 image; zeros, the mean of normalised images) and a horizontal
flip with probability 1/2.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from safecompress.config.specs import TrainSpec
from safecompress.data.splits import Samples

AUGMENTATIONS = ("none", "crop_flip")


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch in a seeded random order. The last batch may be smaller,
    but never a single sample, which batch normalisation cannot train on."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) == 1 else batches


def async_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device`, through pinned memory on a GPU: a truly asynchronous
    copy, so the host never waits for the GPU's queue to drain."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of an (N, C, H, W) batch randomly cropped from its zero-padded copy (an
    eighth of each side) and flipped left-right with probability 1/2. The random numbers come
    from `generator` on the host (reproducible, checkpointed with the run); the gather runs on
    `x`'s device."""
    n, channels, height, width = x.shape
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    dy = async_copy(torch.randint(0, 2 * pad_h + 1, (n, 1), generator=generator), x.device)
    dx = async_copy(torch.randint(0, 2 * pad_w + 1, (n, 1), generator=generator), x.device)
    flips = async_copy(torch.rand(n, 1, generator=generator) < 0.5, x.device)
    rows = dy + torch.arange(height, device=x.device)
    cols = dx + torch.arange(width, device=x.device)
    cols = torch.where(flips, cols.flip(1), cols)  # a flipped crop reads right to left
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    return padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(channels, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class _Rows(Dataset):
    """A split indexed by a whole batch of rows at once: one gather per batch in a worker."""

    def __init__(self, split: Samples):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.x[rows], self.split.y[rows]


class _EpochOrder(Sampler):
    """The batches of the current epoch, set by the main process before each epoch, so one
    DataLoader with persistent workers serves the whole run."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TrainBatches:
    """The training set as the model sees it: shuffled, augmented batches on `device`."""

    def __init__(self, train: Samples, spec: TrainSpec, device: torch.device):
        if spec.augment not in AUGMENTATIONS:
            raise ValueError(f"train.augment: {spec.augment!r} is not one of {AUGMENTATIONS}")
        if spec.augment == "crop_flip" and train.x.dim() != 4:
            raise ValueError(
                f"train.augment: crop_flip needs images (N, C, H, W), the data are "
                f"{tuple(train.x.shape)}; set `augment: none` for this data set"
            )
        self.batch_size, self.augment, self.device = spec.batch_size, spec.augment, device
        self.split = train if spec.workers else train.to(device)
        self.order = _EpochOrder()
        self.loader = None
        if spec.workers:
            self.loader = DataLoader(
                _Rows(train),
                sampler=self.order,
                batch_size=None,  # the sampler yields whole batches of rows
                num_workers=spec.workers,
                pin_memory=device.type == "cuda",
                persistent_workers=True,
                # fork: workers share the host pool copy-on-write instead of receiving it
                # through /dev/shm (Python >= 3.14 defaults to forkserver on Linux)
                multiprocessing_context="fork" if sys.platform == "linux" else None,
                generator=torch.Generator(),  # worker seeds: leave the global generator alone
            )

    def __len__(self) -> int:
        return len(self.split)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (a lone last sample sits the epoch out)."""
        return len(self) // self.batch_size + (len(self) % self.batch_size > 1)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (inputs, labels) batches on the device."""
        order = shuffled_batches(len(self), self.batch_size, generator)
        if self.loader is not None:
            self.order.batches = [rows.tolist() for rows in order]
            gathered = iter(self.loader)
        else:
            # the epoch's order reaches the device in one copy, then is split there
            sizes = [len(rows) for rows in order]
            rows_on_device = async_copy(torch.cat(order), self.device).split(sizes)
            gathered = ((self.split.x[rows], self.split.y[rows]) for rows in rows_on_device)
        for x, y in gathered:
            yield self._prepare(x, y, generator)

    def _prepare(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """On the device (pinned batches from workers copy asynchronously), augmented."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        return (crop_flip(x, generator) if self.augment == "crop_flip" else x), y


class SharedBatches(TrainBatches):
    """The training batches, remembering the one the loop was just given, so that candidates
    trained beside the loop take exactly the loop's steps."""

    last: tuple[torch.Tensor, torch.Tensor] | None = None

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in super().epoch(generator):
            self.last = batch
            yield batch
