"""Typed config sections: what each step reads of the config, checked once when it is read.

A spec names the keys it reads (its fields; `key` metadata where the config spells one
otherwise). The workflow passes a job exactly those keys (`select`), so a change to a key a job
does not read never reruns it; a step run by hand checks what it gets against the same schema
as the config file (`read`), so a partial or wrong section ends in the same one-line message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .config import check_section

S = TypeVar("S")


def keys(spec: type) -> list[str]:
    """The config keys a spec reads."""
    return [f.metadata.get("key", f.name) for f in dataclasses.fields(spec)]


def select(spec: type, section: dict[str, Any]) -> dict[str, Any]:
    """The part of a config section that a spec reads."""
    return {key: section[key] for key in keys(spec) if key in section}


def read(spec: type[S], name: str, section: Any) -> S:
    """A config section as a typed spec, after checking it against the schema."""
    check_section(name, section, keys(spec))
    return spec(
        **{
            f.name: section[key]
            for f, key in zip(dataclasses.fields(spec), keys(spec), strict=True)
            if key in section
        }
    )


@dataclass(frozen=True)
class TrainSpec:
    """`train`: SGD with (Nesterov) momentum, step decay at fractions of training, and how
    batches are delivered (see `batches`)."""

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))


@dataclass(frozen=True)
class ScheduleSpec:
    """`sparse`, as dynamic sparse training reads it: initial layer-wise densities and when
    and how much the masks change."""

    distribution: str
    prune_fraction: float
    prune_floor: float
    update_interval: int
    stop_fraction: float


@dataclass(frozen=True)
class DSTSpec(ScheduleSpec):
    """`sparse` for DST without a safety test: one regrowth criterion."""

    growth: str


@dataclass(frozen=True)
class MagnitudeSpec:
    """`sparse` for one-shot magnitude pruning: layer-wise densities, fine-tuning epochs."""

    distribution: str
    finetune_epochs: int


@dataclass(frozen=True)
class Strategy:
    """One way to make a mask update: scale of the scheduled prune fraction, growth criterion,
    and (defaults: DST's own) prune criterion, where grown weights start, and whether each
    layer keeps its budget (see `sparse`)."""

    scale: float
    growth: str
    prune: str = "magnitude"
    init: str = "zero"
    budget: str = "layer"

    @property
    def name(self) -> str:
        changed = [
            f"+{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)[2:]
            if getattr(self, f.name) != f.default
        ]
        return f"{self.growth}x{self.scale:g}" + "".join(changed)


@dataclass(frozen=True)
class SafeCompressSpec:
    """`safecompress`: the candidates, how long they train before each safety test (successive
    halving), the test's leakage score and data, and the weight of leakage in the selection."""

    strategies: tuple[Strategy, ...]
    lookahead: tuple[int, ...]
    safety_score: str
    probe_size: int | str
    safety_weight: float = field(metadata={"key": "lambda"})

    def __post_init__(self) -> None:
        strategies = tuple(s if isinstance(s, Strategy) else Strategy(**s) for s in self.strategies)
        object.__setattr__(self, "strategies", strategies)
        object.__setattr__(self, "lookahead", tuple(self.lookahead))


@dataclass(frozen=True)
class EvaluationSpec:
    """`evaluation`, as the attack step reads it."""

    attacks: tuple[str, ...]
    bootstrap: int  # resamples of every bootstrap interval

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))


# What each compression method reads of `sparse` and `safecompress` (besides model and train).
METHOD_SPECS: dict[str, dict[str, type]] = {
    "magnitude": {"sparse": MagnitudeSpec},
    "dst": {"sparse": DSTSpec},
    "safecompress": {"sparse": ScheduleSpec, "safecompress": SafeCompressSpec},
}
METHODS = tuple(METHOD_SPECS)
