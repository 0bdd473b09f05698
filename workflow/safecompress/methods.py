"""The compression methods: how each turns a data set into a sparse model at one density.

magnitude:     prune the trained dense model once by weight magnitude, then fine-tune.
dst:           dynamic sparse training from a random ERK mask, one prune/grow strategy.
safecompress:  dynamic sparse training where, at every mask update, N candidate masks are
               made, each passes the safety test (a simulated membership inference attack on
               the defender's own data), and the best `val_acc - lambda * advantage` is kept.

Each returns the model, its training history, its mask-update log and its layer densities at
the start of training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from .batches import TrainBatches
from .checkpoint import Checkpoint
from .devices import to_device
from .loop import fit, make_optimizer
from .mask_updates import DSTUpdate, LoggedUpdate, SafeCompressUpdate, Schedule
from .models import build_model, load_model
from .safety import SafetyTest
from .sparse import SparseEngine
from .specs import DSTSpec, MagnitudeSpec, SafeCompressSpec, ScheduleSpec, TrainSpec
from .splits import MEMBER_SETS, Data, Samples, set_indices

Result = tuple[nn.Module, pd.DataFrame, pd.DataFrame, dict[str, float]]


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
        return self.data.set(*MEMBER_SETS)


def magnitude(job: Job, sparse: MagnitudeSpec, dense: str) -> Result:
    """Static baseline: one-shot layer-wise magnitude pruning of the dense model, fine-tuning."""
    model, _ = load_model(dense)
    to_device(model, job.device)
    engine = SparseEngine.magnitude_init(model, job.density, sparse.distribution)
    start = engine.layer_density()
    spec = dataclasses.replace(job.train, epochs=sparse.finetune_epochs)
    history = fit(
        model,
        TrainBatches(job.members(), spec, job.device),
        job.data.set("reference"),
        spec,
        job.seed,
        after_step=lambda step: engine.apply(),
        checkpoint=job.checkpoint,
    )
    return model, history, pd.DataFrame(columns=["step"]), start


def dst(job: Job, sparse: DSTSpec) -> Result:
    """Dynamic sparse training without a safety test."""

    def make_update(model, engine, optimizer, train: TrainBatches) -> DSTUpdate:
        generator = torch.Generator().manual_seed(job.seed)
        schedule = _schedule(sparse, job.train.epochs * train.steps_per_epoch)
        return DSTUpdate(engine, optimizer, schedule, sparse.growth, generator)

    return _sparse_training(job, sparse, make_update)


def safecompress(job: Job, sparse: ScheduleSpec, safecompress: SafeCompressSpec) -> Result:
    """Dynamic sparse training with safety-test-driven candidate selection."""

    def make_update(model, engine, optimizer, train: TrainBatches) -> SafeCompressUpdate:
        generator = torch.Generator().manual_seed(job.seed)
        safety = SafetyTest(
            attack=safecompress.safety_attack,
            members=_probe(job.data, "known_members", safecompress.probe_size, generator),
            nonmembers=_probe(job.data, "reference", safecompress.probe_size, generator),
        )
        return SafeCompressUpdate(
            model,
            engine,
            optimizer,
            _schedule(sparse, job.train.epochs * train.steps_per_epoch),
            list(safecompress.strategies),
            safety,
            safecompress.safety_weight,
            safecompress.candidate_steps,
            train,
            generator,
        )

    return _sparse_training(job, sparse, make_update)


COMPRESSORS: dict[str, Callable[..., Result]] = {
    "magnitude": magnitude,
    "dst": dst,
    "safecompress": safecompress,
}


def _sparse_training(
    job: Job, sparse: ScheduleSpec, make_update: Callable[..., LoggedUpdate]
) -> Result:
    """Random ERK masks, then training with mask updates from `make_update`'s hook."""
    train = TrainBatches(job.members(), job.train, job.device)
    model = build_model(job.model, tuple(job.data.x.shape[1:]), job.data.n_classes)
    to_device(model, job.device)
    engine = SparseEngine.random_init(
        model,
        job.density,
        sparse.distribution,
        torch.Generator().manual_seed(job.seed),
        # the 1/sqrt(density) rescaling suits fresh weights, not a pretrained transformer's
        rescale=job.model["arch"] != "transformer",
    )
    start = engine.layer_density()
    optimizer, scheduler = make_optimizer(model, job.train)
    update = make_update(model, engine, optimizer, train)

    def after_step(step: int) -> None:
        engine.apply()
        update(step)

    history = fit(
        model,
        train,
        job.data.set("reference"),
        job.train,
        job.seed,
        after_step,
        (optimizer, scheduler),
        checkpoint=job.checkpoint,
        stateful={"update": update},
    )
    return model, history, update.table(), start


def _schedule(sparse: ScheduleSpec, total_steps: int) -> Schedule:
    return Schedule(
        interval=sparse.update_interval,
        prune_fraction=sparse.prune_fraction,
        end_step=int(sparse.stop_fraction * total_steps),
    )


def _probe(data: Data, name: str, size: int, generator: torch.Generator) -> Samples:
    """A seeded random subset of at most `size` samples of one set for the safety test."""
    indices = set_indices(data.split, name)
    return data.take(indices[torch.randperm(len(indices), generator=generator)[:size].numpy()])
