"""Mask updates during sparse training: plain DST, and SafeCompress's safety-test-driven selection.

Both are `after_step` hooks for `training.fit`. DST replaces a cosine-annealed fraction of each
layer's weights every `interval` steps with one fixed strategy. SafeCompress makes one candidate
per strategy, trains each for a few steps on the same batches, runs the safety test (a
membership inference attack on data the defender owns) on each, and keeps the candidate with
the best `val_acc - lambda * attack_advantage`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .batches import TrainBatches
from .loop import train_step
from .metrics import ATTACK_METRICS
from .safety import SafetyTest
from .sparse import SparseEngine, cosine_prune_fraction
from .specs import Strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """When masks change and by how much: every `interval` steps before `end_step`."""

    interval: int
    prune_fraction: float
    end_step: int

    def fraction_at(self, step: int) -> float | None:
        """Prune fraction if `step` is an update step, else None."""
        if step % self.interval or step >= self.end_step:
            return None
        return cosine_prune_fraction(self.prune_fraction, step, self.end_step)


class LoggedUpdate:
    """What every mask-update hook checkpoints: its log so far and its random generator."""

    columns: tuple[str, ...]  # of the log, so a run without any update still has a header
    records: list[dict[str, Any]]
    generator: torch.Generator

    def table(self) -> pd.DataFrame:
        """The log: one row per mask update (per candidate, for SafeCompress)."""
        return pd.DataFrame(self.records, columns=list(self.columns))

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state["records"])
        self.generator.set_state(state["generator"])


class DSTUpdate(LoggedUpdate):
    """Dynamic sparse training without a safety test (SET / RigL style): one strategy."""

    columns = ("step", "prune_fraction", "growth")

    def __init__(
        self,
        engine: SparseEngine,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        growth: str,
        generator: torch.Generator,
    ):
        self.engine, self.optimizer, self.schedule = engine, optimizer, schedule
        self.growth, self.generator = growth, generator
        self.records: list[dict[str, Any]] = []

    def __call__(self, step: int) -> None:
        fraction = self.schedule.fraction_at(step)
        if fraction is None:
            return
        masks = self.engine.propose(fraction, self.growth, self.optimizer, self.generator)
        self.engine.set_masks(masks, self.optimizer)
        self.records.append({"step": step, "prune_fraction": fraction, "growth": self.growth})


class SafeCompressUpdate(LoggedUpdate):
    """Safety-test-driven selection among N candidate sparse models at every mask update."""

    columns = (
        "step",
        "candidate",
        "strategy",
        "scale",
        "growth",
        "prune_fraction",
        "val_acc",
        *ATTACK_METRICS,
        "score",
        "selected",
    )

    def __init__(
        self,
        model: nn.Module,
        engine: SparseEngine,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        strategies: list[Strategy],
        safety: SafetyTest,
        safety_weight: float,
        candidate_steps: int,
        train: TrainBatches,
        generator: torch.Generator,
    ):
        self.model, self.engine, self.optimizer, self.schedule = model, engine, optimizer, schedule
        self.strategies, self.safety, self.safety_weight = strategies, safety, safety_weight
        self.candidate_steps, self.train, self.generator = candidate_steps, train, generator
        self.records: list[dict[str, Any]] = []

    def __call__(self, step: int) -> None:
        fraction = self.schedule.fraction_at(step)
        if fraction is None:
            return
        start = self._snapshot()
        # Every candidate trains on the same batches, so only its masks differ.
        batches = [self.train.sample(self.generator) for _ in range(self.candidate_steps)]
        best_score, best_state, best_index, rows = -np.inf, start, 0, []
        for index, strategy in enumerate(self.strategies):
            self._restore(start)
            masks = self.engine.propose(
                fraction * strategy.scale, strategy.growth, self.optimizer, self.generator
            )
            self.engine.set_masks(masks, self.optimizer)
            for x, y in batches:
                train_step(self.model, self.optimizer, x, y)
                self.engine.apply()
            result = self.safety.run(self.model)
            score = result["val_acc"] - self.safety_weight * result["advantage"]
            rows.append(
                {
                    "step": step,
                    "candidate": index,
                    "strategy": strategy.name,
                    "scale": strategy.scale,
                    "growth": strategy.growth,
                    "prune_fraction": fraction * strategy.scale,
                    **result,
                    "score": score,
                }
            )
            if score > best_score:
                best_score, best_state, best_index = score, self._snapshot(), index
        self._restore(best_state)
        for row in rows:
            row["selected"] = row["candidate"] == best_index
        self.records.extend(rows)
        chosen = rows[best_index]
        log.info(
            "step %d: kept %s (val acc %.3f, attack adv %.3f) of %d candidates",
            step,
            chosen["strategy"],
            chosen["val_acc"],
            chosen["advantage"],
            len(rows),
        )

    def _snapshot(self) -> dict[str, Any]:
        """Weights, masks, optimiser state and gradients (gradient growth reads them)."""
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "grads": [None if p.grad is None else p.grad.clone() for p in self.model.parameters()],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        for param, grad in zip(self.model.parameters(), state["grads"], strict=True):
            param.grad = None if grad is None else grad.clone()
