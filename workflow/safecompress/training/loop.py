"""The training loop shared by dense, shadow, fine-tuned and sparse models."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from safecompress.config.specs import TrainSpec
from safecompress.data.batches import TrainBatches
from safecompress.data.splits import Samples
from safecompress.sparse.engine import SparseEngine
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import forward, predict_logits

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 60.0  # at most one progress line per minute within an epoch


class Progress:
    """Steps done, samples per second and time left within a long epoch, logged at most once
    every `every` seconds (a short epoch logs nothing but its summary line)."""

    def __init__(self, epoch: int, epochs: int, steps: int, every: float = PROGRESS_SECONDS):
        self.epoch, self.epochs, self.steps, self.every = epoch, epochs, steps, every
        self.start = self.last = time.monotonic()

    def update(self, done: int, samples: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last, elapsed = now, now - self.start
        left = elapsed * (self.steps - done) / done
        log.info(
            "epoch %d/%d  step %d/%d  %.0f samples/s  %s left in the epoch",
            self.epoch,
            self.epochs,
            done,
            self.steps,
            samples / elapsed,
            time.strftime("%H:%M:%S", time.gmtime(left)),
        )


def seed_everything(seed: int) -> None:
    """Deterministic initialisation and CPU kernels for a given seed."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(
    model: nn.Module, spec: TrainSpec
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov and spec.momentum > 0,
        weight_decay=spec.weight_decay,
        foreach=True,  # one kernel per operation for all tensors (the CPU default loops in
        # Python): the same arithmetic, bit for bit
    )
    milestones = sorted({max(1, round(f * spec.epochs)) for f in spec.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=spec.gamma)
    return optimizer, scheduler


# A term of the training loss: (logits, labels) of the batch -> scalar tensor.
Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Callback:
    """A hook of `fit` that carries its own state, so a resumed run restores it with the rest
    (as Lightning's callbacks do). A hook overrides what it needs:

    `penalty(model)` is entered before each step's forward pass (work with the model frozen
    goes there) and yields a term added to the step's cross-entropy, or None;
    `after_step(step)` runs after each optimiser step (mask updates, ADMM's Z and U steps);
    `state_dict()` / `load_state_dict(state)` are saved in and restored from fit's checkpoint.
    """

    def penalty(self, model: nn.Module) -> AbstractContextManager[Penalty | None]:
        return nullcontext()

    def after_step(self, step: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Term(Callback):
    """A fixed term of the loss (or none) as a hook: a step trained beside the loop's."""

    def __init__(self, term: Penalty | None):
        self.term = term

    def penalty(self, model: nn.Module) -> AbstractContextManager[Penalty | None]:
        return nullcontext(self.term)


class KeepMasks(Callback):
    """Sparse training's first hook: pruned weights back to zero after every step."""

    def __init__(self, engine: SparseEngine):
        self.engine = engine

    def after_step(self, step: int) -> None:
        self.engine.apply()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    callbacks: Sequence[Callback] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the cross-entropy plus the callbacks' penalties; returns the
    batch's summed cross-entropy (the task loss, without penalties) and number correct (on
    device, so the loop never waits for the GPU)."""
    model.train()
    with ExitStack() as stack:
        penalties = [stack.enter_context(callback.penalty(model)) for callback in callbacks]
        logits = forward(model, x)
        loss = F.cross_entropy(logits, y)
        objective = loss
        for penalty in penalties:
            if penalty is not None:
                objective = objective + penalty(logits, y)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return loss.detach() * len(y), (logits.argmax(1) == y).sum()


def loss_and_accuracy(model: nn.Module, data: Samples) -> tuple[float, float]:
    logits, labels = predict_logits(model, data.x), data.y.cpu()
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


def fit(
    model: nn.Module,
    train: TrainBatches,
    val: Samples,
    spec: TrainSpec,
    seed: int,
    callbacks: Sequence[Callback] = (),
    optimizer: tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR] | None = None,
    checkpoint: Checkpoint | None = None,
) -> pd.DataFrame:
    """Train `model` for `spec.epochs`; return one history row per epoch.

    The `callbacks` add their penalties to every step's loss (history losses stay the task's
    cross-entropy) and run after every optimiser step, in order; pass the optimiser pair too
    when a callback needs it. With a `checkpoint`, the whole state (model with masks,
    optimiser, schedule, random generators, history and every callback's state) is saved
    after an epoch when the checkpoint is due, and a run that finds a checkpoint of its own
    resumes from it and ends exactly as an uninterrupted run would.
    """
    optimizer_, scheduler = optimizer or make_optimizer(model, spec)
    generator = torch.Generator().manual_seed(seed)
    rows: list[dict[str, float]] = []
    step, first_epoch = 0, 1
    state = checkpoint.load() if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer_.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for callback, saved in zip(callbacks, state["callbacks"], strict=True):
            callback.load_state_dict(saved)
        rows, step, first_epoch = state["history"], state["step"], state["epoch"] + 1

    for epoch in range(first_epoch, spec.epochs + 1):
        loss_sum = torch.zeros((), device=train.device)
        correct = torch.zeros((), device=train.device, dtype=torch.long)
        seen = 0
        progress = Progress(epoch, spec.epochs, train.steps_per_epoch)
        for done, (x, y) in enumerate(train.epoch(generator), start=1):
            loss, n_correct = train_step(model, optimizer_, x, y, callbacks)
            loss_sum += loss
            correct += n_correct
            seen += len(y)
            step += 1
            progress.update(done, seen)
            for callback in callbacks:
                callback.after_step(step)
        lr = optimizer_.param_groups[0]["lr"]
        scheduler.step()
        val_loss, val_acc = loss_and_accuracy(model, val)
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "lr": lr,
                "train_loss": loss_sum.item() / seen,
                "train_acc": correct.item() / seen,
                "val_loss": val_loss,
                "val_acc": val_acc,
            }
        )
        log.info(
            "epoch %d/%d  train loss %.4f acc %.3f  val loss %.4f acc %.3f",
            epoch,
            spec.epochs,
            rows[-1]["train_loss"],
            rows[-1]["train_acc"],
            val_loss,
            val_acc,
        )
        if checkpoint is not None and checkpoint.due():
            checkpoint.save(
                {
                    "epoch": epoch,
                    "step": step,
                    "history": rows,
                    "model": model.state_dict(),
                    "optimizer": optimizer_.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "callbacks": [callback.state_dict() for callback in callbacks],
                }
            )
    return pd.DataFrame(rows)
