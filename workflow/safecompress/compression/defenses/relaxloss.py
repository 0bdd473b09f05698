"""`relaxloss`: RelaxLoss (Chen, Yu, Fritz, "RelaxLoss: Defending membership inference attacks
without losing utility", ICLR 2022), inside dynamic sparse training.

Trained sparse from the start, as the paper trains from scratch: the DST of `compression.dst`
whose loss is RelaxLoss's (`defenses.relax_objective`: their Algorithm 1, and where this
project departs from their code).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from safecompress.compression.defenses.relax_objective import is_ascent_epoch, relaxloss_penalty
from safecompress.compression.dst import dst_with
from safecompress.compression.job import Compressed, Job
from safecompress.config.specs import DSTSpec, RelaxLossSpec
from safecompress.training.loop import Callback, Penalty


class RelaxLoss(Callback):
    """RelaxLoss as a `loop.Callback`: its penalty turns the step's cross-entropy into the
    RelaxLoss objective. It counts the steps to know the epoch's parity."""

    def __init__(self, spec: RelaxLossSpec, steps_per_epoch: int):
        if spec.alpha <= 0 or not 0 < spec.upper <= 1:
            raise ValueError(
                f"relaxloss.alpha must be > 0 and relaxloss.upper in (0, 1], got {spec.alpha} "
                f"and {spec.upper}"
            )
        self.spec, self.steps_per_epoch, self.steps = spec, steps_per_epoch, 0

    @contextmanager
    def penalty(self, model: nn.Module) -> Iterator[Penalty]:
        self.steps += 1
        yield self._term(self.steps - 1)

    def _term(self, step: int) -> Penalty:
        """What turns step `step`'s cross-entropy into the RelaxLoss objective."""
        ascent = is_ascent_epoch(step, self.steps_per_epoch)
        return relaxloss_penalty(self.spec.alpha, self.spec.upper, ascent)

    def frozen(self) -> Callback:
        """The objective of the loop's last step, counting no step: what models trained beside
        the loop's (SafeCompress's candidates) train under, in the loop's epoch parity."""
        return _Frozen(self)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


class _Frozen(Callback):
    def __init__(self, source: RelaxLoss):
        self.source = source

    @contextmanager
    def penalty(self, model: nn.Module) -> Iterator[Penalty]:
        yield self.source._term(self.source.steps - 1)


def relaxloss(job: Job, sparse: DSTSpec, relaxloss: RelaxLossSpec) -> Compressed:
    """Dynamic sparse training on the RelaxLoss objective."""
    return dst_with(job, sparse, lambda _model, train: RelaxLoss(relaxloss, train.steps_per_epoch))
