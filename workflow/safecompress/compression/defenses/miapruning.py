"""`miapruning`: MIA-Pruning (Wang et al., "Against membership inference attack: pruning is all
you need", IJCAI 2021, arXiv 2008.13578): ADMM weight pruning of the trained model.

A dense trained model pruned and retrained, as the paper prunes a pretrained network. Its
pruning problem is the task loss under a cardinality constraint on every layer,

    minimise f(W) subject to ||W_l||_0 <= k_l,

solved by ADMM (Zhang et al., ECCV 2018, the framework it adapts): with Z_l the constrained
copy and U_l the scaled dual variable,

    W <- a few epochs of SGD on f(W) + rho/2 sum_l ||W_l - Z_l + U_l||^2,
    Z_l <- the k_l largest-magnitude entries of W_l + U_l (the analytic projection),
    U_l <- U_l + W_l - Z_l,

repeated every `admm_interval` epochs for `admm_epochs` epochs; then hard pruning (the k_l
largest |W_l|, an exact projection) and retraining with the masks fixed. The budgets k_l are
the ERK budgets every method here gets at the same density, and the retraining lasts
`sparse.finetune_epochs`, as `magnitude`'s fine-tuning: the two differ only in ADMM.
The paper's "MIA-Pruning & Min-Max" variant adds Nasr et al.'s adversarial term to f; that is
`advreg`'s regulariser, not this method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import torch
from torch import nn

from safecompress.compression.job import Compressed, Job
from safecompress.config.specs import MagnitudeSpec, MIAPruningSpec
from safecompress.data.batches import TrainBatches
from safecompress.sparse.engine import (
    SparseEngine,
    layer_densities,
    n_active,
    prunable_layers,
    top_k_mask,
)
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import to_device
from safecompress.training.loop import Callback, KeepMasks, Penalty, fit
from safecompress.training.models import load_model


def layer_budgets(model: nn.Module, density: float, distribution: str) -> dict[str, int]:
    """Weights each prunable layer keeps: the budgets of `SparseEngine.magnitude_init`."""
    layers = prunable_layers(model)
    shapes = {name: tuple(layer.weight.shape) for name, layer in layers.items()}
    return {
        name: n_active(layers[name].weight.numel(), d)
        for name, d in layer_densities(shapes, density, distribution).items()
    }


def project(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The closest tensor to `weight` with at most k non-zeros: its k largest magnitudes."""
    return weight * top_k_mask(weight.abs(), k)


class ADMMPruning(Callback):
    """ADMM as a `loop.Callback`: the augmented-Lagrangian term as its penalty, and Z and U
    with it; every `interval_steps` steps one ADMM iteration's Z and U step (`update`), its
    residual logged (the method's `updates.csv`)."""

    def __init__(self, model: nn.Module, budgets: dict[str, int], rho: float, interval_steps: int):
        if rho <= 0:
            raise ValueError(f"miapruning.rho must be > 0, got {rho}")
        layers = prunable_layers(model)
        self.weights = {name: layers[name].weight for name in budgets}
        self.budgets, self.rho, self.interval_steps = budgets, rho, interval_steps
        with torch.no_grad():
            self.z = {name: project(w.detach(), budgets[name]) for name, w in self.weights.items()}
            self.u = {name: torch.zeros_like(w) for name, w in self.weights.items()}
        self.records: list[dict[str, float]] = []

    @contextmanager
    def penalty(self, model: nn.Module) -> Iterator[Penalty]:
        yield lambda _logits, _labels: self.term()

    def term(self) -> torch.Tensor:
        return (
            self.rho
            / 2
            * sum(
                (w - self.z[name] + self.u[name]).pow(2).sum() for name, w in self.weights.items()
            )
        )

    def after_step(self, step: int) -> None:
        if step % self.interval_steps == 0:
            self.records.append({"step": step, "residual": self.update()})

    @torch.no_grad()
    def update(self) -> float:
        """Z <- projection of W + U, U <- U + W - Z; returns the relative primal residual
        ||W - Z|| / ||W||, how far W still is from the constraint set."""
        for name, w in self.weights.items():
            self.z[name] = project(w + self.u[name], self.budgets[name])
            self.u[name] += w - self.z[name]
        return self.residual()

    @torch.no_grad()
    def residual(self) -> float:
        distance = sum(float((w - self.z[n]).pow(2).sum()) for n, w in self.weights.items())
        norm = sum(float(w.pow(2).sum()) for w in self.weights.values())
        return (distance / norm) ** 0.5 if norm else 0.0

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=["step", "residual"])

    def state_dict(self) -> dict[str, Any]:
        return {"z": self.z, "u": self.u, "records": self.records}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.weights:
            self.z[name].copy_(state["z"][name])
            self.u[name].copy_(state["u"][name])
        self.records = list(state["records"])


def miapruning(
    job: Job, sparse: MagnitudeSpec, miapruning: MIAPruningSpec, dense: str
) -> Compressed:
    """ADMM pruning of the dense model `dense`, hard pruning, retraining with fixed masks."""
    if miapruning.admm_epochs < 1 or miapruning.admm_interval < 1:
        raise ValueError("miapruning.admm_epochs and miapruning.admm_interval must be >= 1")
    model, _ = load_model(dense)
    to_device(model, job.device)
    train_batches = TrainBatches(job.members(), job.train, job.device)
    val = job.heldout()

    budgets = layer_budgets(model, job.density, sparse.distribution)
    admm = ADMMPruning(
        model, budgets, miapruning.rho, miapruning.admm_interval * train_batches.steps_per_epoch
    )
    admm_checkpoint = Checkpoint(
        job.checkpoint.path.with_name(f"admm-{job.checkpoint.path.name}"),
        job.checkpoint.fingerprint,
        job.checkpoint.every,
    )
    admm_spec = dataclasses.replace(job.train, epochs=miapruning.admm_epochs)
    admm_history = fit(
        model,
        train_batches,
        val,
        admm_spec,
        job.seed_of("batches"),
        [admm],
        checkpoint=admm_checkpoint,
    )
    residual = admm.residual()

    engine = SparseEngine.magnitude_init(model, job.density, sparse.distribution)  # hard pruning
    start = engine.layer_density()
    retrain_spec = dataclasses.replace(job.train, epochs=sparse.finetune_epochs)
    retrain_history = fit(
        model,
        train_batches,
        val,
        retrain_spec,
        job.seed_of("batches"),
        [KeepMasks(engine)],
        checkpoint=job.checkpoint,
    )
    admm_checkpoint.remove()
    retrain_history["epoch"] += len(admm_history)
    retrain_history["step"] += int(admm_history["step"].iloc[-1])
    history = pd.concat(
        [admm_history.assign(phase="admm"), retrain_history.assign(phase="retrain")],
        ignore_index=True,
    )
    return Compressed(model, history, start, admm.table(), {"admm_residual": residual})
