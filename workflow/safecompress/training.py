"""The training loop shared by dense, shadow, fine-tuned and sparse models."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .data import Split
from .io import config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """Optimiser and schedule: SGD with (Nesterov) momentum, step decay at fractions of training."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    milestones: tuple[float, ...]
    gamma: float

    @classmethod
    def from_config(cls, section: dict[str, Any], epochs: int | None = None) -> TrainSpec:
        return cls(
            epochs=section["epochs"] if epochs is None else epochs,
            batch_size=section["batch_size"],
            lr=section["lr"],
            momentum=section["momentum"],
            nesterov=section["nesterov"],
            weight_decay=section["weight_decay"],
            milestones=tuple(section["milestones"]),
            gamma=section["gamma"],
        )


def pick_device() -> torch.device:
    """The job's accelerator when it was given one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    )
    milestones = sorted({max(1, round(f * spec.epochs)) for f in spec.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=spec.gamma)
    return optimizer, scheduler


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one epoch in a seeded random order (the last batch may be smaller)."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; returns the batch's summed loss and number correct (on device)."""
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach() * len(y), (logits.argmax(1) == y).sum()


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` on `x` in evaluation mode."""
    model.eval()
    return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def loss_and_accuracy(model: nn.Module, data: Split) -> tuple[float, float]:
    logits = predict_logits(model, data.x)
    loss = F.cross_entropy(logits, data.y).item()
    return loss, (logits.argmax(1) == data.y).float().mean().item()


StepHook = Callable[[int], dict[str, float] | None]


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    spec: TrainSpec,
    seed: int,
    after_step: StepHook | None = None,
    optimizer: tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR] | None = None,
) -> pd.DataFrame:
    """Train `model` for `spec.epochs`; return one history row per epoch.

    `after_step(step)` runs after every optimiser step (mask updates of sparse training);
    pass the optimiser pair too when the hook needs it.
    """
    optimizer_, scheduler = optimizer or make_optimizer(model, spec)
    generator = torch.Generator().manual_seed(seed)
    rows, step = [], 0
    for epoch in range(1, spec.epochs + 1):
        loss_sum = torch.zeros((), device=train.x.device)
        correct = torch.zeros((), device=train.x.device, dtype=torch.long)
        for batch in shuffled_batches(len(train), spec.batch_size, generator):
            batch = batch.to(train.x.device)
            batch_loss, batch_correct = train_step(
                model, optimizer_, train.x[batch], train.y[batch]
            )
            loss_sum += batch_loss
            correct += batch_correct
            step += 1
            if after_step is not None:
                after_step(step)
        lr = optimizer_.param_groups[0]["lr"]
        scheduler.step()
        val_loss, val_acc = loss_and_accuracy(model, val)
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "lr": lr,
                "train_loss": loss_sum.item() / len(train),
                "train_acc": correct.item() / len(train),
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
    return pd.DataFrame(rows)


def provenance(config_sections: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """What produced a result: config hash, code and library versions, device."""
    return {
        "config_hash": config_hash(config_sections),
        "code_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device),
    }
