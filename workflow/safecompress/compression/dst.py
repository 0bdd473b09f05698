"""Dynamic sparse training (SET / RigL style, no safety test): the sparse start every DST
method shares, the training loop with its masks kept and its mask updates, and DST itself,
alone, with the TSE adversarial term (`dst_adv`) or with a defense's loss term."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from safecompress.compression.adversarial import regularizer_for
from safecompress.compression.job import Compressed, Job
from safecompress.compression.updates import DSTUpdate, Schedule
from safecompress.config.specs import AdversarialSpec, DSTSpec, ScheduleSpec
from safecompress.data.batches import TrainBatches
from safecompress.sparse.engine import SparseEngine
from safecompress.training.devices import to_device
from safecompress.training.loop import Callback, KeepMasks, fit, make_optimizer
from safecompress.training.models import build_model

Optimizer = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]
# A loss term built once the sparse start is drawn: (model, training batches) -> its callback.
Term = Callable[[nn.Module, TrainBatches], Callback]


def sparse_start(
    job: Job, sparse: ScheduleSpec
) -> tuple[nn.Module, SparseEngine, dict[str, float]]:
    """A fresh model on the job's device with random ERK masks (as every DST method starts),
    its engine and its layer densities."""
    model = build_model(job.model, tuple(job.data.x.shape[1:]), job.data.n_classes)
    to_device(model, job.device)
    engine = SparseEngine.random_init(
        model,
        job.density,
        sparse.distribution,
        job.generator("masks"),
        # the 1/sqrt(density) rescaling suits fresh weights, not a pretrained transformer's
        rescale=job.model["arch"] != "transformer",
    )
    return model, engine, engine.layer_density()


def train_sparse(
    job: Job,
    model: nn.Module,
    engine: SparseEngine,
    train: TrainBatches,
    optimizer: Optimizer,
    callbacks: Sequence[Callback],
) -> pd.DataFrame:
    """Train `model` (or a wrapper of it, e.g. Opacus's) on the job's batches with its masks
    kept after every step, then the `callbacks` (the mask update first); resumable from the
    job's checkpoint. Every DST method draws its batches from the same generator, so DST and
    SafeCompress see the same batches in the same order. Returns the per-epoch history."""
    return fit(
        model,
        train,
        job.heldout(),
        job.train,
        job.seed_of("batches"),
        [KeepMasks(engine), *callbacks],
        optimizer,
        checkpoint=job.checkpoint,
    )


def fit_dst(
    job: Job,
    sparse: ScheduleSpec,
    growth: str,
    model: nn.Module,
    engine: SparseEngine,
    optimizer: Optimizer,
    train: TrainBatches,
    callbacks: Sequence[Callback] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """DST of `model` (whose masks `engine` owns) with `growth` regrowth on `sparse`'s
    schedule, under the given callbacks; returns the history and the mask-update log."""
    schedule = Schedule.of(sparse, job.train.epochs * train.steps_per_epoch)
    update = DSTUpdate(engine, optimizer[0], schedule, growth, job.generator("updates"))
    history = train_sparse(job, model, engine, train, optimizer, [update, *callbacks])
    return history, update.table()


def dst_with(job: Job, sparse: DSTSpec, *terms: Term) -> Compressed:
    """DST from the sparse start, its loss plus the given terms (a defense's own loss)."""
    model, engine, start = sparse_start(job, sparse)
    train = TrainBatches(job.members(), job.train, job.device)
    optimizer = make_optimizer(model, job.train)
    callbacks = [term(model, train) for term in terms]
    history, updates = fit_dst(
        job, sparse, sparse.growth, model, engine, optimizer, train, callbacks
    )
    return Compressed(model, history, start, updates)


def dst(job: Job, sparse: DSTSpec, adversarial: AdversarialSpec | None = None) -> Compressed:
    """Dynamic sparse training without a safety test (with adversarial training, if given)."""
    if adversarial is None:
        return dst_with(job, sparse)
    return dst_with(
        job,
        sparse,
        lambda model, train: regularizer_for(job, adversarial, model, train.steps_per_epoch),
    )
