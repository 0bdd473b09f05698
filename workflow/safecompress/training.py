"""The training loop shared by dense, shadow, fine-tuned and sparse models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .batches import TrainBatches
from .checkpoint import Checkpoint
from .data import Split
from .io import config_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """Optimiser and schedule: SGD with (Nesterov) momentum, step decay at fractions of
    training; and how batches are delivered (see `batches`)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    milestones: tuple[float, ...]
    gamma: float
    workers: int = 0
    augment: str = "none"

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
            workers=section.get("workers", 0),
            augment=section.get("augment", "none"),
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


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device`; on a GPU, convolution weights go channels-last once here,
    not on every forward pass."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Float32 logits. On a GPU: bf16 autocast, and images in channels-last layout to match
    the weights (see `to_device`), the fast paths of tensor cores. On the CPU: plain float32,
    so CPU runs stay bit-for-bit reproducible."""
    if x.device.type != "cuda":
        return model(x)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        return model(x).float()


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; returns the batch's summed loss and number correct (on device,
    so the loop never waits for the GPU)."""
    model.train()
    logits = forward(model, x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach() * len(y), (logits.argmax(1) == y).sum()


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of `model` on `x` in evaluation mode, computed on the model's device in chunks
    and returned in host memory, where the metrics and attacks read them."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([forward(model, chunk.to(device)).cpu() for chunk in x.split(batch_size)])


def loss_and_accuracy(model: nn.Module, data: Split) -> tuple[float, float]:
    logits, labels = predict_logits(model, data.x), data.y.cpu()
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


StepHook = Callable[[int], None]


def fit(
    model: nn.Module,
    train: TrainBatches,
    val: Split,
    spec: TrainSpec,
    seed: int,
    after_step: StepHook | None = None,
    optimizer: tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR] | None = None,
    checkpoint: Checkpoint | None = None,
    stateful: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Train `model` for `spec.epochs`; return one history row per epoch.

    `after_step(step)` runs after every optimiser step (mask updates of sparse training);
    pass the optimiser pair too when the hook needs it. With a `checkpoint`, the whole state
    (model with masks, optimiser, schedule, random generators, history, and every object in
    `stateful`, e.g. the candidate log) is saved after each epoch, and a run that finds a
    checkpoint of its own resumes from it and ends exactly as an uninterrupted run would.
    """
    optimizer_, scheduler = optimizer or make_optimizer(model, spec)
    generator = torch.Generator().manual_seed(seed)
    stateful = stateful or {}
    rows: list[dict[str, float]] = []
    step, first_epoch = 0, 1
    state = checkpoint.load() if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer_.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for name, item in stateful.items():
            item.load_state_dict(state[name])
        rows, step, first_epoch = state["history"], state["step"], state["epoch"] + 1

    for epoch in range(first_epoch, spec.epochs + 1):
        loss_sum = torch.zeros((), device=train.device)
        correct = torch.zeros((), device=train.device, dtype=torch.long)
        seen = 0
        for x, y in train.epoch(generator):
            loss, n_correct = train_step(model, optimizer_, x, y)
            loss_sum += loss
            correct += n_correct
            seen += len(y)
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
        if checkpoint is not None:
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
                    **{name: item.state_dict() for name, item in stateful.items()},
                }
            )
    return pd.DataFrame(rows)


def provenance(config_sections: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """What produced a result: config hash, code and library versions, device."""
    return {
        "config_hash": config_hash(config_sections),
        "code_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
    }
