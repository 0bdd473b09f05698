"""Mask updates during sparse training: plain DST, and SafeCompress's safety-test-driven selection.

Both are callbacks of `training.loop.fit`, run after every step. DST replaces a scheduled
fraction of each layer's weights every `interval` steps with one fixed strategy. SafeCompress
makes one candidate per strategy and selects among them by successive halving: every candidate
trains on the loop's own batches, after each look-ahead rung the safety test (a membership inference
attack on data the defender owns) scores every candidate still in the race, and the better
half goes on, until one is left: the candidate with the best `val_acc - lambda * leakage`.

The loop's model is always one of the candidates (the "live" one); the others are copies
trained beside it on the same batches. So the kept candidate has taken exactly the loop's SGD
steps on the loop's data, the same as DST: look-ahead costs time, never extra training.

A candidate may also differ in how it trains: with `Strategy.clip`, every step of its
look-ahead clips each sample's gradient (DP-SGD's clipping, no noise); with `Strategy.relax`,
it trains on RelaxLoss's objective at that target loss. If it is kept the loop's model trains
so until the next update, where DST's own candidate trains plainly again. So the test chooses
the clipping and the objective per update, as it chooses the mask.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from safecompress.compression.defenses.per_sample import ClippedSteps
from safecompress.compression.defenses.relax_objective import is_ascent_epoch, relaxloss_penalty
from safecompress.compression.safety import Leakage, SafetyTest
from safecompress.config.specs import ScheduleSpec, Strategy
from safecompress.data.batches import SharedBatches
from safecompress.data.splits import Samples
from safecompress.sparse.engine import (
    LEAKAGE_CRITERIA,
    SparseEngine,
    UpdateContext,
    scheduled_prune_fraction,
)
from safecompress.training.devices import predict_logits
from safecompress.training.loop import Callback, Penalty, Term, train_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """When masks change and by how much: every `interval` steps before `end_step`, a
    fraction decaying from `prune_fraction` to `prune_floor`."""

    interval: int
    prune_fraction: float
    end_step: int
    prune_floor: float = 0.0

    def fraction_at(self, step: int) -> float | None:
        """Prune fraction if `step` is an update step, else None."""
        if step % self.interval or step >= self.end_step:
            return None
        return scheduled_prune_fraction(self.prune_fraction, self.prune_floor, step, self.end_step)

    @classmethod
    def of(cls, sparse: ScheduleSpec, total_steps: int) -> Schedule:
        """The schedule `sparse` gives a run of `total_steps` steps."""
        return cls(
            interval=sparse.update_interval,
            prune_fraction=sparse.prune_fraction,
            end_step=int(sparse.stop_fraction * total_steps),
            prune_floor=sparse.prune_floor,
        )


def rank(scores: list[float], generator: torch.Generator) -> list[int]:
    """Positions of `scores`, best first; tied scores in a seeded random order, so no strategy
    (e.g. the first, DST's own) wins every tie."""
    shuffled = torch.randperm(len(scores), generator=generator).tolist()
    return sorted(shuffled, key=lambda i: -scores[i])  # stable: ties keep the random order


class LoggedUpdate(Callback):
    """What every mask update checkpoints: its log so far and its random generators."""

    columns: tuple[str, ...]  # of the log, so a run without any update still has a header
    generators: dict[str, torch.Generator]

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        # The log as JSON, one string per update, written once: pickling thousands of small
        # objects into every epoch's checkpoint cost more than the updates (floats round-trip).
        self.chunks: list[str] = []

    def log(self, rows: list[dict[str, Any]]) -> None:
        self.records.extend(rows)
        self.chunks.append(json.dumps(rows))

    def table(self) -> pd.DataFrame:
        """The log: one row per mask update (per candidate and rung, for SafeCompress)."""
        return pd.DataFrame(self.records, columns=list(self.columns))

    def state_dict(self) -> dict[str, Any]:
        return {
            "log": list(self.chunks),
            "generators": {name: g.get_state() for name, g in self.generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chunks = list(state["log"])
        self.records = [row for chunk in self.chunks for row in json.loads(chunk)]
        for name, generator in self.generators.items():
            generator.set_state(state["generators"][name])


class DSTUpdate(LoggedUpdate):
    """Dynamic sparse training without a safety test (SET / RigL style): one strategy."""

    columns = ("step", "prune_fraction", "growth", "moved")

    def __init__(
        self,
        engine: SparseEngine,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        growth: str,
        generator: torch.Generator,
    ):
        super().__init__()
        self.engine, self.optimizer, self.schedule = engine, optimizer, schedule
        self.strategy, self.generators = Strategy(1.0, growth), {"updates": generator}

    def after_step(self, step: int) -> None:
        fraction = self.schedule.fraction_at(step)
        if fraction is None:
            return
        context = UpdateContext(self.optimizer, self.generators["updates"])
        masks = self.engine.propose(fraction, self.strategy, context)
        moved = sum(self.engine.set_masks(masks, self.optimizer).values())
        growth = self.strategy.growth
        self.log([{"step": step, "prune_fraction": fraction, "growth": growth, "moved": moved}])


class _Copy:
    """A candidate trained beside the loop's model: its own copy, optimiser, masks and
    clipping. Copies are made once, before the loop's model carries any hook, and reused, set
    to the loop's state at each update (`sync`)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model = copy.deepcopy(model)
        self.optimizer = type(optimizer)(self.model.parameters(), **optimizer.defaults)
        self.optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        self.engine = SparseEngine(self.model)
        self.clipped = ClippedSteps(self.model, self.engine, self.optimizer)

    @torch.no_grad()
    def sync(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> _Copy:
        """Take over `model`'s weights and masks and `optimizer`'s state (its momentum), in
        place: `load_state_dict` would copy every tensor twice, at every update."""
        for mine, theirs in zip(
            self.model.state_dict().values(), model.state_dict().values(), strict=True
        ):
            mine.copy_(theirs)
        for mine, theirs in zip(self.model.parameters(), model.parameters(), strict=True):
            source, target = optimizer.state.get(theirs, {}), self.optimizer.state[mine]
            for key in set(target) - set(source):
                del target[key]
            for key, value in source.items():
                if isinstance(value, torch.Tensor) and key in target:
                    target[key].copy_(value)
                else:
                    target[key] = value.clone() if isinstance(value, torch.Tensor) else value
        return self

    def step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        schedule: torch.optim.Optimizer,
        penalties: Sequence[Callback] = (),
    ) -> None:
        """One step on the loop's batch at the loop's learning rate (`schedule`'s), under the
        given terms (the candidate's own objective, then the loop's penalties)."""
        for group, source in zip(self.optimizer.param_groups, schedule.param_groups, strict=True):
            group["lr"] = source["lr"]
        train_step(self.model, self.optimizer, x, y, penalties)
        self.engine.apply()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        # the optimiser would keep references to the given tensors: copy them
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))


def _advantage_z(score: Leakage, first: Leakage | None) -> float:
    """How many paired standard errors `score` is above the first candidate's (NaN without
    it; 0 for the first itself)."""
    if first is None:
        return float("nan")
    se = score.diff_se(first)
    difference = score.value - first.value
    return (
        0.0
        if difference == 0
        else difference / se
        if se > 0
        else math.copysign(math.inf, difference)
    )


def survivors(
    order: list[int],
    z: dict[int, float],
    val_acc: dict[int, float],
    last: bool,
    min_z: float = 0.0,
    max_acc_drop: float = 1.0,
) -> list[int]:
    """The candidates that go on from a rung, given them best first (`order`), each one's
    score advantage over the first candidate (candidate 0, DST's own update) in paired
    standard errors (`z`) and its held-out accuracy: the better half, one at the `last` rung.
    With `min_z` or `max_acc_drop`, the first always goes on, and the best replaces it only
    when its score is higher by `min_z` paired standard errors (a choice made on a difference
    the test cannot resolve is a coin toss, and the coin costs accuracy) and its accuracy is
    at most `max_acc_drop` below the first's (the score trades accuracy for leakage one for
    one, so it would buy leakage at any price)."""
    keep = order[: 1 if last else math.ceil(len(order) / 2)]
    if (min_z > 0 or max_acc_drop < 1) and 0 in order:
        best = keep[0]
        if len(keep) > 1 and 0 not in keep:
            keep.append(0)
        # accuracies are shares of the same samples: equal drops compare equal to within 1e-9
        elif len(keep) == 1 and (
            z[best] < min_z or val_acc[0] - val_acc[best] > max_acc_drop + 1e-9
        ):
            keep = [0]
    return keep


# A row of SafeCompress's log: the update, the rung of its look-ahead, the candidate.
CANDIDATE_KEYS = ("step", "rung", "candidate")


class SafeCompressUpdate(LoggedUpdate):
    """Safety-test-driven selection among N candidate sparse models at every mask update."""

    columns = (
        "step",
        "rung",
        "lookahead",
        "candidate",
        "strategy",
        "scale",
        "growth",
        "prune",
        "init",
        "budget",
        "clip",
        "relax",
        "prune_fraction",
        "moved",
        "val_acc",
        "auc",
        "advantage",
        "leakage",
        "leakage_se",
        "leakage_diff_se",
        "score",
        "score_z",
        "decisive",
        "selected",
    )

    def __init__(
        self,
        model: nn.Module,
        engine: SparseEngine,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        strategies: list[Strategy],
        lookahead: tuple[int, ...],
        safety: SafetyTest,
        safety_weight: float,
        train: SharedBatches,
        total_steps: int,
        generators: dict[str, torch.Generator],
        min_z: float = 0.0,
        max_acc_drop: float = 1.0,
    ):
        if list(lookahead) != sorted(set(lookahead)) or lookahead[0] < 0:
            raise ValueError(f"safecompress.lookahead {lookahead} must be increasing and >= 0")
        if lookahead[-1] > schedule.interval:
            raise ValueError(
                f"safecompress.lookahead ends after {lookahead[-1]} steps, after the next mask "
                f"update (sparse.update_interval {schedule.interval}); shorten it"
            )
        super().__init__()
        self.model, self.engine, self.optimizer, self.schedule = model, engine, optimizer, schedule
        self.strategies, self.lookahead, self.safety = strategies, tuple(lookahead), safety
        self.safety_weight, self.train, self.total_steps = safety_weight, train, total_steps
        self.min_z, self.max_acc_drop = min_z, max_acc_drop
        self.generators = {name: generators[name] for name in ("updates", "selection")}
        # Global budgets move density between layers, but never below half a layer's start
        # (its ERK share): a layer stripped of its weights would disconnect the network.
        self.floors = {name: max(1, int(mask.sum()) // 2) for name, mask in engine.masks().items()}
        # The loop's penalties (adversarial training), set by the method: candidates train
        # under the same terms as the loop's model.
        self.penalties: tuple[Callback, ...] = ()
        # Samples whose logits every tested candidate logs (set by the method), one entry per
        # row of the log: for the validity analysis only, never read by the selection.
        self.watched: Samples | None = None
        self.watch_log: list[torch.Tensor] = []
        # the loop's clipping and RelaxLoss target: the kept candidate's (`Strategy.clip`,
        # `Strategy.relax`) until the next update; RelaxLoss's epoch parity is the loop's
        self.clipped = ClippedSteps(model, engine, optimizer)
        self.relax, self.done = 0.0, 0  # and the loop's steps done
        self.spares = [_Copy(model, optimizer) for _ in strategies[1:]]  # copies not in use
        self.copies: dict[int, _Copy] = {}
        self._idle()

    def _idle(self) -> None:
        """No selection in flight."""
        self.start: int | None = None  # step of the update whose selection is in flight
        self.rung = 0  # next rung of its look-ahead
        self.alive: list[int] = []  # candidates still in the race
        self.live = 0  # the candidate the loop's own model is
        self.spares.extend(self.copies.values())
        self.copies = {}  # the others
        self.made: dict[int, dict[str, Any]] = {}  # each candidate's log entries from its making
        self.pending: list[dict[str, Any]] = []  # rows of the selection in flight

    def penalty(self, model: nn.Module) -> AbstractContextManager[Penalty | None]:
        return nullcontext(self._relaxed(self.relax, self.done))

    def _relaxed(self, alpha: float, step: int) -> Penalty | None:
        """RelaxLoss's term at target `alpha` for 0-based step `step` (None at alpha 0);
        flattening uncapped (RelaxLoss's `upper` 1)."""
        if not alpha:
            return None
        return relaxloss_penalty(alpha, 1.0, is_ascent_epoch(step, self.train.steps_per_epoch))

    def after_step(self, step: int) -> None:
        self.done = step
        if self.start is not None:
            x, y = self.train.last
            for index in self.alive:
                if index != self.live:
                    relaxed = Term(self._relaxed(self.strategies[index].relax, step - 1))
                    self.copies[index].step(x, y, self.optimizer, (relaxed, *self.penalties))
            if step - self.start == self.lookahead[self.rung]:
                self._test(step)
        if self.start is not None:
            return
        fraction = self.schedule.fraction_at(step)
        if fraction is None:
            return
        if step + self.lookahead[-1] > self.total_steps:
            log.info("step %d: no mask update, its look-ahead would outlast training", step)
            return
        self._make_candidates(step, fraction)
        if self.lookahead[0] == 0:
            self._test(step)

    def _make_candidates(self, step: int, fraction: float) -> None:
        """One candidate per strategy, all from the current model; the first is the loop's."""
        members = heldout = None
        if any(c in LEAKAGE_CRITERIA for s in self.strategies for c in (s.prune, s.growth)):
            weights = {name: layer.weight for name, layer in self.engine.layers.items()}
            members, heldout = self.safety.gradients(self.model, weights)
        context = UpdateContext(
            self.optimizer, self.generators["updates"], members, heldout, self.floors
        )
        proposals = [self.engine.propose(fraction * s.scale, s, context) for s in self.strategies]
        self.copies = {i: self._spare() for i in range(1, len(proposals))}
        for index, (strategy, masks) in enumerate(zip(self.strategies, proposals, strict=True)):
            engine, optimizer = self._engine(index)
            grown = engine.set_masks(masks, optimizer, strategy.init, self.generators["updates"])
            self.made[index] = {
                "prune_fraction": fraction * strategy.scale,
                "moved": sum(grown.values()),
            }
            self._clipped(index).set(strategy.clip)
        self.relax = self.strategies[0].relax  # the loop's model is the first candidate
        self.start, self.rung, self.alive, self.live = step, 0, list(range(len(proposals))), 0

    def _spare(self) -> _Copy:
        """A copy in the loop's current state."""
        return self.spares.pop().sync(self.model, self.optimizer)

    def _engine(self, index: int) -> tuple[SparseEngine, torch.optim.Optimizer]:
        if index == self.live:
            return self.engine, self.optimizer
        return self.copies[index].engine, self.copies[index].optimizer

    def _model(self, index: int) -> nn.Module:
        return self.model if index == self.live else self.copies[index].model

    def _clipped(self, index: int) -> ClippedSteps:
        return self.clipped if index == self.live else self.copies[index].clipped

    def _test(self, step: int) -> None:
        """Safety-test every candidate in the race; the better half goes on (one at the last
        rung, or when one is left: `survivors`); a decided selection is logged."""
        results = {
            index: self.safety.run(self._model(index), self.safety_weight) for index in self.alive
        }
        scores = [results[i][0]["score"] for i in self.alive]
        order = [self.alive[i] for i in rank(scores, self.generators["selection"])]
        first = results[0][2] if 0 in results else None
        z = {i: _advantage_z(results[i][2], first) for i in self.alive}
        keep = survivors(
            order,
            z,
            {i: results[i][0]["val_acc"] for i in self.alive},
            self.rung == len(self.lookahead) - 1,
            self.min_z,
            self.max_acc_drop,
        )
        best: Leakage = results[order[0]][1]
        for index in self.alive:
            self._watch(index)
            metrics, leakage, _ = results[index]
            strategy = self.strategies[index]
            self.pending.append(
                {
                    "step": self.start,
                    "rung": self.rung,
                    "lookahead": step - self.start,
                    "candidate": index,
                    "strategy": strategy.name,
                    **dataclasses.asdict(strategy),
                    **self.made[index],
                    **metrics,
                    "leakage_diff_se": leakage.diff_se(best),
                    "score_z": z[index],
                    "selected": len(keep) == 1 and index == keep[0],
                }
            )
        self._keep(keep)
        self.rung += 1
        if len(keep) == 1:
            self._decided(keep[0])

    def _watch(self, index: int) -> None:
        """A forward pass after the test, in float32 like the evaluation's signals; it draws
        no random numbers and touches no training state, so the run is the same without it."""
        if self.watched is not None:
            logits = predict_logits(self._model(index), self.watched.x, autocast=False)
            self.watch_log.append(logits)

    def watched_logits(self) -> np.ndarray:
        """(rows of the log, samples, classes) float32: the logged logits, row for row."""
        if not self.watch_log:  # no update (too short a run)
            return np.zeros((0, len(self.watched) if self.watched else 0, 0), np.float32)
        return torch.stack(self.watch_log).numpy()

    def _keep(self, survivors: list[int]) -> None:
        """Drop the other candidates; if the loop's own model is dropped, the best survivor's
        state (with its gradients, which the next update's growth may read) moves into it."""
        if self.live not in survivors:
            best = self.copies.pop(survivors[0])
            self.model.load_state_dict(best.model.state_dict())
            self.optimizer.load_state_dict(copy.deepcopy(best.optimizer.state_dict()))
            for param, source in zip(self.model.parameters(), best.model.parameters(), strict=True):
                param.grad = None if source.grad is None else source.grad.clone()
            self.live = survivors[0]
            self.clipped.set(self.strategies[self.live].clip)
            self.relax = self.strategies[self.live].relax
            self.spares.append(best)
        self.alive = [index for index in self.alive if index in survivors]
        self.spares.extend(c for i, c in self.copies.items() if i not in survivors)
        self.copies = {i: c for i, c in self.copies.items() if i in survivors}

    def _decided(self, index: int) -> None:
        """Log the selection in flight, which kept candidate `index`."""
        # decisive: a candidate other than the first was kept (on evidence, with min_z)
        for row in self.pending:
            row["decisive"] = index != 0
        chosen = next(r for r in reversed(self.pending) if r["candidate"] == index)
        log.info(
            "step %d: kept %s (val acc %.3f, leakage %.4f ± %.4f) of %d candidates",
            self.start,
            chosen["strategy"],
            chosen["val_acc"],
            chosen["leakage"],
            chosen["leakage_se"],
            len(self.strategies),
        )
        self.log(self.pending)
        self._idle()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "selection": {
                "start": self.start,
                "rung": self.rung,
                "alive": self.alive,
                "live": self.live,
                "made": json.dumps(self.made),
                "pending": json.dumps(self.pending),
                "copies": {i: c.state_dict() for i, c in self.copies.items()},
            },
            "watched": list(self.watch_log),
            "clip": self.clipped.norm,
            "relax": self.relax,
            "done": self.done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._idle()
        selection = state["selection"]
        self.start, self.rung = selection["start"], selection["rung"]
        self.alive, self.live = list(selection["alive"]), selection["live"]
        self.watch_log = list(state["watched"])
        made, self.pending = json.loads(selection["made"]), json.loads(selection["pending"])
        self.made = {int(index): entry for index, entry in made.items()}  # JSON keys are text
        for index, copy_state in selection["copies"].items():
            self.copies[index] = self._spare()
            self.copies[index].load_state_dict(copy_state)
            self.copies[index].clipped.set(self.strategies[index].clip)
        self.clipped.set(state["clip"])
        self.relax, self.done = state["relax"], state["done"]
