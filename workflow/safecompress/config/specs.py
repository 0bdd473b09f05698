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

from safecompress.config.settings import check_section

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
    and (defaults: DST's own) prune criterion, where grown weights start, whether each layer
    keeps its budget (see `sparse`), and how the candidate trains until the next update if it
    is kept: its per-sample gradient clipping and its RelaxLoss target loss."""

    scale: float
    growth: str
    prune: str = "magnitude"
    init: str = "zero"
    budget: str = "layer"
    clip: float = 0.0  # per-sample gradient norm bound while the candidate trains (0: none)
    relax: float = 0.0  # RelaxLoss's target loss alpha while it trains (0: the cross-entropy)

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
    halving), the test's leakage score and data, the weight of leakage in the selection, the
    evidence a candidate needs to replace the first (DST's own update), whether every
    tested candidate's logits are logged for the validity analysis (steps.validity),
    whether leakage counts by its distance from none (`two_sided`), and how much held-out
    accuracy a candidate may lose against the first and still replace it (`max_acc_drop`)."""

    strategies: tuple[Strategy, ...]
    lookahead: tuple[int, ...]
    safety_score: str
    probe_members: str
    probe_size: int | str
    safety_weight: float = field(metadata={"key": "lambda"})
    min_z: float
    log_candidates: bool = False
    two_sided: bool = False
    max_acc_drop: float = 1.0  # of the first candidate's held-out accuracy (1: no floor)

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


@dataclass(frozen=True)
class AdversarialSpec:
    """`adversarial`: the TSE extension's adversarial training inside sparse training (and the
    regulariser of `advreg`): which simulated attackers the model is trained against, the
    term's weight, attacker steps per model step, extra attacker steps when the term starts,
    and the epoch it starts at."""

    attackers: tuple[str, ...]
    weight: float
    attacker_steps: int
    warmup_steps: int
    start_epoch: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "attackers", tuple(self.attackers))


@dataclass(frozen=True)
class DPSGDSpec:
    """`dpsgd`: the noise multiplier sigma (noise std / clipping norm) and the per-sample
    clipping norm C; those of Opacus's MNIST example; and the delta epsilon is reported at.
    On the digits default (40 epochs, q = 32/485) sigma = 1 gives epsilon ~ 12.9 at
    delta = 1e-5 (9.3 at delta = 1/n, a bound too loose to mean much)."""

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5


@dataclass(frozen=True)
class RelaxLossSpec:
    """`relaxloss`: the target loss alpha, and the cap on the target probability of the
    flattened soft labels (1: none, as in the authors' CIFAR configs). The authors' alpha is 1
    on CIFAR-10; 0.5 suits digits, whose non-members' loss is ~0.2 after plain training."""

    alpha: float = 0.5
    upper: float = 1.0


@dataclass(frozen=True)
class MIAPruningSpec:
    """`miapruning`: ADMM's penalty rho, the epochs of the ADMM phase and the epochs between
    two Z, U updates (one ADMM iteration); the retraining lasts `sparse.finetune_epochs`.
    rho = 0.1: on the digits default W comes within ~10 % of the sparse set (the relative
    residual ||W - Z|| / ||W||, 0.11 at density 0.1); at 0.01 it drifts away (1.8 at 0.05)."""

    rho: float = 0.1
    admm_epochs: int = 20
    admm_interval: int = 1


@dataclass(frozen=True)
class DistillSpec:
    """`distill`: temperature T of the soft labels and weight alpha of the soft term (the
    reference's `kd_train`: T = 1, alpha = 1/2)."""

    temperature: float = 1.0
    alpha: float = 0.5


# Evaluation attacks that train a network on the shadow models: the workflow fits each once
# per data set and seed. The workflow's copy of `attacks.NETWORK_ATTACKS`, which needs torch
# (a test keeps the two equal).
NETWORK_ATTACKS = ("nasr", "whitebox")
