"""The compression methods: how each turns a data set into a sparse model at one density.

magnitude:     prune the trained dense model once by weight magnitude, then fine-tune.
dst:           dynamic sparse training from a random ERK mask, one prune/grow strategy.
safecompress:  dynamic sparse training where, at every mask update, N candidate masks are
               made, trained beside each other on the loop's batches and safety-tested (a
               simulated membership inference attack on the defender's own data) by successive
               halving; the best `val_acc - lambda * leakage` is kept.

safecompress_adv: SafeCompress with the TSE extension's adversarial training (the model also
               trained against the simulated attackers; `adversarial`).
dst_adv:       DST with the same adversarial training and no selection: what the selection
               adds on top of the adversarial term.
advreg:        compress, then defend: the dense model pruned by magnitude, then fine-tuned
               with Nasr et al.'s adversarial regularisation.
dpsgd, relaxloss, miapruning, distill: the defenses of `defenses`.

Each returns the model, its training history, its mask-update log, its layer densities at the
start of training, and the numbers it reports per model (DP-SGD's epsilon).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .adversarial import AdversarialRegularizer
from .batches import TrainBatches
from .checkpoint import Checkpoint
from .devices import to_device
from .loop import Regularizer, fit, make_optimizer
from .mask_updates import DSTUpdate, LoggedUpdate, SafeCompressUpdate, Schedule, SharedBatches
from .models import build_model, load_model
from .safety import SafetyTest
from .sparse import SparseEngine
from .specs import (
    AdversarialSpec,
    DSTSpec,
    MagnitudeSpec,
    SafeCompressSpec,
    ScheduleSpec,
    TrainSpec,
)
from .splits import MEMBER_SETS, Data, Samples, set_indices

Result = tuple[nn.Module, pd.DataFrame, pd.DataFrame, dict[str, float], dict[str, float]]


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

    def generator(self, purpose: str) -> torch.Generator:
        """A fresh generator for one purpose of this run (see `purpose_seed`)."""
        return torch.Generator().manual_seed(purpose_seed(self.seed, purpose))


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


def magnitude(
    job: Job,
    sparse: MagnitudeSpec,
    dense: str,
    defense: Callable[[nn.Module, int], Regularizer] | None = None,
) -> Result:
    """Static baseline: one-shot layer-wise magnitude pruning of the dense model, fine-tuning
    (under a `defense`'s regulariser, if one is given: model, steps per epoch -> regulariser)."""
    model, _ = load_model(dense)
    to_device(model, job.device)
    engine = SparseEngine.magnitude_init(model, job.density, sparse.distribution)
    start = engine.layer_density()
    spec = dataclasses.replace(job.train, epochs=sparse.finetune_epochs)
    train = TrainBatches(job.members(), spec, job.device)
    regularizer = defense(model, train.steps_per_epoch) if defense else None
    history = fit(
        model,
        train,
        job.data.set("reference"),
        spec,
        purpose_seed(job.seed, "batches"),
        after_step=lambda step: engine.apply(),
        checkpoint=job.checkpoint,
        regularizer=regularizer,
    )
    return model, history, pd.DataFrame(columns=["step"]), start, {}


def advreg(job: Job, sparse: MagnitudeSpec, adversarial: AdversarialSpec, dense: str) -> Result:
    """Compress, then defend: magnitude pruning of the dense model, fine-tuned with adversarial
    regularisation against the black-box attacker (Nasr et al.; `adversarial.attackers` is
    ignored: AdvReg's inference model is the black-box one)."""
    nasr_only = dataclasses.replace(adversarial, attackers=("nasr",))
    return magnitude(
        job, sparse, dense, lambda model, steps: _adversary(job, nasr_only, model, steps)
    )


def dst(job: Job, sparse: DSTSpec, adversarial: AdversarialSpec | None = None) -> Result:
    """Dynamic sparse training without a safety test (with adversarial training, if given)."""

    def make_update(model, engine, optimizer, train: TrainBatches) -> DSTUpdate:
        schedule = _schedule(sparse, job.train.epochs * train.steps_per_epoch)
        return DSTUpdate(engine, optimizer, schedule, sparse.growth, job.generator("updates"))

    return _sparse_training(job, sparse, make_update, adversarial)


def safecompress(
    job: Job,
    sparse: ScheduleSpec,
    safecompress: SafeCompressSpec,
    adversarial: AdversarialSpec | None = None,
) -> Result:
    """Dynamic sparse training with safety-test-driven candidate selection (with adversarial
    training, if given: the TSE extension)."""

    def make_update(model, engine, optimizer, train: SharedBatches) -> SafeCompressUpdate:
        probes = job.generator("probes")
        safety = SafetyTest(
            score=safecompress.safety_score,
            members=_probe(job.data, "known_members", safecompress.probe_size, probes),
            nonmembers=_probe(job.data, "reference", safecompress.probe_size, probes),
        )
        total_steps = job.train.epochs * train.steps_per_epoch
        return SafeCompressUpdate(
            model,
            engine,
            optimizer,
            _schedule(sparse, total_steps),
            list(safecompress.strategies),
            safecompress.lookahead,
            safety,
            safecompress.safety_weight,
            train,
            total_steps,
            {name: job.generator(name) for name in ("updates", "selection")},
        )

    return _sparse_training(job, sparse, make_update, adversarial)


def _defense(name: str) -> Callable[..., Result]:
    """A defense of `defenses`, imported when it runs (DP-SGD's Opacus takes a second)."""

    def run(job: Job, **sections: Any) -> Result:
        from . import defenses

        return defenses.DEFENSES[name](job, **sections)

    return run


COMPRESSORS: dict[str, Callable[..., Result]] = {
    "magnitude": magnitude,
    "dst": dst,
    "safecompress": safecompress,
    "safecompress_adv": safecompress,
    "dst_adv": dst,
    "advreg": advreg,
    **{name: _defense(name) for name in ("dpsgd", "relaxloss", "miapruning", "distill")},
}


def _adversary(
    job: Job, adversarial: AdversarialSpec, model: nn.Module, steps_per_epoch: int
) -> AdversarialRegularizer:
    """The simulated attackers the model trains against: known members (its own training
    set) against the defender's held-out `reference` set."""
    return AdversarialRegularizer(
        model,
        job.members(),
        job.data.set("reference"),
        attackers=adversarial.attackers,
        weight=adversarial.weight,
        attacker_steps=adversarial.attacker_steps,
        warmup_steps=adversarial.warmup_steps,
        start_step=adversarial.start_epoch * steps_per_epoch,
        batch_size=job.train.batch_size,
        seed=purpose_seed(job.seed, "attackers"),
    )


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


def _sparse_training(
    job: Job,
    sparse: ScheduleSpec,
    make_update: Callable[..., LoggedUpdate],
    adversarial: AdversarialSpec | None = None,
) -> Result:
    """Random ERK masks, then training with mask updates from `make_update`'s hook. Every
    method draws its masks and its batches from the same purposes' generators, so DST and
    SafeCompress start alike and see the same batches in the same order."""
    train = SharedBatches(job.members(), job.train, job.device)
    model, engine, start = sparse_start(job, sparse)
    optimizer, scheduler = make_optimizer(model, job.train)
    update = make_update(model, engine, optimizer, train)
    regularizer = None
    if adversarial is not None:
        regularizer = _adversary(job, adversarial, model, train.steps_per_epoch)
        if isinstance(update, SafeCompressUpdate):
            update.regularizer = regularizer  # candidates train under the same term

    history = train_with_updates(
        job, model, engine, train, (optimizer, scheduler), update, regularizer
    )
    return model, history, update.table(), start, {}


def train_with_updates(
    job: Job,
    model: nn.Module,
    engine: SparseEngine,
    train: TrainBatches,
    optimizer: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler],
    update: LoggedUpdate,
    regularizer: Regularizer | None = None,
    stateful: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train `model` (or a wrapper of it, e.g. Opacus's) on the job's batches, masks applied
    and `update` called after every step; resumable from the job's checkpoint, with `update`
    and `stateful` saved in it. Returns the per-epoch history."""

    def after_step(step: int) -> None:
        engine.apply()
        update(step)

    return fit(
        model,
        train,
        job.data.set("reference"),
        job.train,
        purpose_seed(job.seed, "batches"),
        after_step,
        optimizer,
        checkpoint=job.checkpoint,
        stateful={"update": update, **(stateful or {})},
        regularizer=regularizer,
    )


def _schedule(sparse: ScheduleSpec, total_steps: int) -> Schedule:
    return Schedule(
        interval=sparse.update_interval,
        prune_fraction=sparse.prune_fraction,
        end_step=int(sparse.stop_fraction * total_steps),
        prune_floor=sparse.prune_floor,
    )


def _probe(data: Data, name: str, size: int | str, generator: torch.Generator) -> Samples:
    """The samples of one set for the safety test: all (`size` "all"), or a seeded random
    subset of at most `size`."""
    indices = set_indices(data.split, name)
    if size != "all":
        indices = np.sort(indices[torch.randperm(len(indices), generator=generator)[:size].numpy()])
    return data.take(indices)
