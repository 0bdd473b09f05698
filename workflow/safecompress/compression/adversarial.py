"""Adversarial regularisation: the model is trained against simulated membership attackers.

The min-max game of Nasr, Shokri and Houmansadr ("Machine learning with membership privacy
using adversarial regularization", CCS 2018) as the SafeCompress journal version (IEEE TSE
2024) plays it inside sparse training (JiePKU/SafeCompress, `adv_main.py` and
`adv_module.py`): before every model step, the attacker(s) take a step on a batch of the
defender's members against a batch of its non-members with the model frozen (`adv_train`);
then the model takes a step on its training batch with the loss (`train_privately`)

    cross_entropy(f(x), y) - weight * sum_k BCE(h_k(x, y, f), member)
        = cross_entropy(f(x), y) + weight * sum_k mean log h_k(x, y, f),

h_k the attacker's member probability, k over the black-box (Nasr), the white-box attacker or
both (BMIA-, WMIA-, MMIA-SafeCompress). The reference writes `loss1 - 0.1 * (black_mia_loss +
white_mia_loss)` with `F.binary_cross_entropy(out, ones)`; Nasr et al.'s min-max objective,
L(f) + lambda * max_h G(h) with G the attacker's log-likelihood gain, has the same log form.
So with weight > 0 the model lowers the attackers' confidence that its members are members,
i.e. raises their loss on members. Other forms, not used here: Nasr et al.'s code
(SPIN-UMass/ML-Privacy-Regulization, `PPN_Purchase_GIT.py`) adds `alpha * (mean h - 0.5)`, a
probability instead of its log; the ASE code (JiePKU/MIA-SafeCompress, `train.py`) adds
`0.5 * mia_loss`, the opposite sign.

The log form is unbounded below: against a frozen attacker the model drives its members'
attacker logits to -inf within a few dozen steps; only the alternation, the attacker re-fitting
every step, keeps the game bounded.

Differences from the reference, each for a reason:
- the white-box inputs of the model step (per-sample loss, last-layer gradient) are functions
  of the training forward pass and carry its graph; the reference computes them in a separate
  evaluation-mode pass and detaches them, so its white-box term acts through the logits only;
- attacker batches are drawn with this object's own generator, and the attackers' dropout runs
  under a seed drawn from it: training with the term leaves the model's random stream alone,
  and a checkpoint of this object resumes the run exactly;
- attacker members are un-augmented training samples; non-members are the defender's own
  held-out data (the `reference` set), never an evaluation set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from safecompress.compression.job import Job
from safecompress.config.specs import AdversarialSpec
from safecompress.data.splits import Samples
from safecompress.privacy.attacks.learned import (
    ADVERSARIES,
    ATTACKER_LR,
    NasrAdversary,
    WhiteBoxAdversary,
)
from safecompress.privacy.features import output_layer, penultimate_features
from safecompress.training.devices import forward
from safecompress.training.loop import Callback, Penalty

ATTACKERS = tuple(ADVERSARIES)
# The reference's weight (`loss1 - 0.1 * ...`); see the module docstring.
DEFAULT_WEIGHT = 0.1
CPU = torch.device("cpu")


def adversarial_penalty(weight: float, member_logits: Iterable[torch.Tensor]) -> torch.Tensor:
    """weight x sum over attackers of mean log sigmoid(z) = -weight x sum BCE(z, member).

    `member_logits` are the attackers' membership logits on the model's training batch."""
    return weight * sum(F.logsigmoid(z).mean() for z in member_logits)


def attacker_loss(
    member_logits: torch.Tensor, nonmember_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One attacker's BCE on members (label 1) and non-members (label 0), and the number of
    samples it classifies correctly at probability 1/2."""
    logits = torch.cat([member_logits, nonmember_logits])
    targets = torch.cat([torch.ones_like(member_logits), torch.zeros_like(nonmember_logits)])
    correct = ((logits > 0) == (targets > 0.5)).sum()
    return F.binary_cross_entropy_with_logits(logits, targets), correct


def _set_mode(modules: Iterable[nn.Module], training: bool) -> None:
    """Train or eval mode, switched only where it differs (a switch walks every submodule)."""
    for module in modules:
        if module.training != training:
            module.train(training)


@contextmanager
def _mode(module: nn.Module, training: bool) -> Iterator[None]:
    """A module in train or eval mode for the block, its mode restored afterwards."""
    was_training = module.training
    _set_mode([module], training)
    try:
        yield
    finally:
        _set_mode([module], was_training)


@contextmanager
def _constants(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Parameters recorded as constants by the graphs built in the block: the model's step
    differentiates through the attackers without accumulating gradients in them."""
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


@contextmanager
def _output_layer_input(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Captures, with its graph, what the output layer receives in forward passes inside the
    block: the penultimate features that the white-box attacker reads."""
    captured: dict[str, torch.Tensor] = {}

    def capture(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor):
        captured["features"] = inputs[0].float().flatten(1)

    handle = output_layer(model).register_forward_hook(capture)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def _private_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The device's global generator seeded with `seed` in the block and restored afterwards,
    so the attackers' dropout neither draws from nor disturbs the model's random stream.
    (Not `torch.manual_seed`: it also queues a lazy seeding of every other backend, some
    1 ms and a growing queue per call.)"""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.random.fork_rng(devices=[index]), torch.cuda.device(index):
            torch.cuda.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield


class AdversarialRegularizer(Callback):
    """The simulated attacker(s), their Adam optimiser, the defender's data that trains them and
    the generator that draws it: the `loop.Callback` of adversarial training.

    `members` are the model's training samples, `nonmembers` the defender's held-out ones (the
    split's `reference` set); the attackers read the model's raw logits and labels (and, the
    white-box one, the penultimate features), as `attacks.learned` does and the reference feeds
    them. Per model step (`penalty`): no attacker work and no term for the first `start_step` model
    steps (plain training, the reference's `pretrain_epoch`); then, at the first regularised
    step, `warmup_steps` extra attacker steps (attacker pre-training, as in Nasr et al.'s
    code); and at every regularised step `attacker_steps` attacker steps, then the term.
    """

    def __init__(
        self,
        model: nn.Module,
        members: Samples,
        nonmembers: Samples,
        *,
        attackers: Sequence[str] = ("nasr",),
        weight: float = DEFAULT_WEIGHT,
        attacker_steps: int = 1,
        warmup_steps: int = 0,
        start_step: int = 0,
        batch_size: int = 32,
        lr: float = ATTACKER_LR,
        seed: int = 0,
    ):
        attackers = tuple(attackers)
        unknown = sorted(set(attackers) - set(ATTACKERS))
        if not attackers or unknown or len(set(attackers)) != len(attackers):
            raise ValueError(
                f"attackers must name each of {ATTACKERS} at most once, got {list(attackers)}"
            )
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        if min(attacker_steps, warmup_steps, start_step) < 0 or batch_size < 1 or lr <= 0:
            raise ValueError(
                "attacker_steps, warmup_steps and start_step must be >= 0, batch_size >= 1 and "
                f"lr > 0; got {attacker_steps}, {warmup_steps}, {start_step}, {batch_size}, {lr}"
            )
        if min(len(members), len(nonmembers)) < 1:
            raise ValueError(
                f"the attackers need members and non-members, got {len(members)} and "
                f"{len(nonmembers)}"
            )
        self.device = next(model.parameters()).device
        self.members, self.nonmembers = members.to(self.device), nonmembers.to(self.device)
        self.weight, self.attacker_steps = weight, attacker_steps
        self.warmup_steps, self.start_step = warmup_steps, start_step
        self.batch_size = batch_size
        layer = output_layer(model)
        if "whitebox" in attackers:
            penultimate_features(model, members.x[:2])  # refuses a head that is not the logits
        with _private_rng(seed, CPU):  # built on the host, then moved
            self.attackers: dict[str, nn.Module] = {
                name: (
                    NasrAdversary(layer.out_features)
                    if name == "nasr"
                    else WhiteBoxAdversary(layer.out_features, layer.in_features)
                ).to(self.device)
                for name in attackers
            }
        self.optimizer = torch.optim.Adam(
            [p for attacker in self.attackers.values() for p in attacker.parameters()],
            lr=lr,
            fused=self.device.type in ("cpu", "cuda"),  # some 2x faster on the CPU
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.model_steps = 0
        self._reset_totals()

    # --- the loop.Callback hooks -----------------------------------------------------------

    @contextmanager
    def penalty(self, model: nn.Module) -> Iterator[Penalty]:
        """Attacker update(s) with the model frozen, then the penalty for the model's training
        batch: call it inside the block on the logits of a forward pass made inside it."""
        self.model_steps += 1
        if self.model_steps <= self.start_step:
            yield lambda logits, _labels: logits.new_zeros(())
            return
        first = self.model_steps == self.start_step + 1
        for _ in range(self.attacker_steps + (self.warmup_steps if first else 0)):
            self.attacker_step(model)
        with self._watch(model) as captured:

            def penalty(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                term = self.term(logits, labels, captured.get("features"))
                self._totals["penalty"] += term.detach()
                self._totals["model_steps"] += 1
                return term

            yield penalty

    def frozen(self) -> Callback:
        """The term against these attackers as they stand, with no attacker step: what models
        trained beside the loop's (SafeCompress's candidates) train under, so the attackers
        take the loop's steps only, as many as in `dst_adv`."""
        return _Frozen(self)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly: attackers, optimiser, generator,
        the step count, and the running totals of `summary`."""
        return {
            "attackers": {name: a.state_dict() for name, a in self.attackers.items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "model_steps": self.model_steps,
            "totals": {name: float(value) for name, value in self._totals.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["attackers"]) != set(self.attackers):
            raise ValueError(
                f"the saved state has attackers {sorted(state['attackers'])}, this run "
                f"{sorted(self.attackers)}"
            )
        for name, attacker in self.attackers.items():
            attacker.load_state_dict(state["attackers"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.model_steps = int(state["model_steps"])
        self._reset_totals()
        for name, value in state["totals"].items():
            self._totals[name] += value

    # --- the parts ---------------------------------------------------------------------

    def attacker_step(self, model: nn.Module) -> None:
        """One Adam step of every attacker on a batch of members against as many non-members,
        the model frozen in evaluation mode (the reference's `adv_train`)."""
        n = min(self.batch_size, len(self.members), len(self.nonmembers))
        x_in, y_in = self._draw(self.members, n)
        x_out, y_out = self._draw(self.nonmembers, n)
        labels = torch.cat([y_in, y_out])
        with torch.no_grad(), _mode(model, False), self._watch(model) as captured:
            logits = forward(model, torch.cat([x_in, x_out]))
        seed = int(torch.randint(2**62, (), generator=self.generator))
        _set_mode(self.attackers.values(), True)
        with _private_rng(seed, self.device):
            losses, corrects = zip(
                *(
                    attacker_loss(*self._attack(name, logits, labels, captured).split(n))
                    for name in self.attackers
                ),
                strict=True,
            )
            loss = sum(losses)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self._totals["attacker_loss"] += loss.detach() / len(losses)
        self._totals["attacker_correct"] += sum(corrects)
        self._totals["attacker_samples"] += 2 * n * len(losses)
        self._totals["attacker_steps"] += 1

    def term(
        self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The term added to the model's loss on its training batch (see `adversarial_penalty`),
        differentiable in the logits and features, the attackers frozen in evaluation mode."""
        if "whitebox" in self.attackers and features is None:
            raise ValueError("the white-box attacker needs the batch's penultimate features")
        inputs = {"features": features}
        _set_mode(self.attackers.values(), False)
        with _constants(self.attackers.values()):
            return adversarial_penalty(
                self.weight,
                [self._attack(name, logits, labels, inputs) for name in self.attackers],
            )

    @torch.no_grad()
    def attacker_accuracy(
        self, model: nn.Module, members: Samples, nonmembers: Samples, batch_size: int = 1024
    ) -> dict[str, float]:
        """Each attacker's balanced accuracy on these members and non-members, now."""
        _set_mode(self.attackers.values(), False)
        hit_rates: dict[str, list[float]] = {name: [] for name in self.attackers}
        for is_member, samples in ((True, members), (False, nonmembers)):
            hits = dict.fromkeys(self.attackers, 0)
            for x, y in zip(samples.x.split(batch_size), samples.y.split(batch_size), strict=True):
                x, y = x.to(self.device), y.to(self.device)
                with _mode(model, False), self._watch(model) as captured:
                    logits = forward(model, x)
                for name in self.attackers:
                    said_member = self._attack(name, logits, y, captured) > 0
                    hits[name] += int((said_member == is_member).sum())
            for name in self.attackers:
                hit_rates[name].append(hits[name] / len(samples))
        return {name: sum(rates) / 2 for name, rates in hit_rates.items()}

    def summary(self) -> dict[str, float]:
        """Means since the last call: the attackers' loss and accuracy on their training
        batches, and the term; then the totals start over (e.g. once per epoch)."""
        totals = {name: float(value) for name, value in self._totals.items()}
        self._reset_totals()

        def mean(total: str, count: str) -> float:
            return totals[total] / totals[count] if totals[count] else float("nan")

        return {
            "attacker_loss": mean("attacker_loss", "attacker_steps"),
            "attacker_acc": mean("attacker_correct", "attacker_samples"),
            "adversarial_term": mean("penalty", "model_steps"),
        }

    def _attack(
        self,
        name: str,
        logits: torch.Tensor,
        labels: torch.Tensor,
        captured: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        attacker = self.attackers[name]
        if name == "nasr":
            return attacker(logits, labels)
        return attacker(logits, labels, captured["features"])

    def _watch(self, model: nn.Module):
        """Where the white-box attacker is one, the penultimate features of the forward passes
        in the block (see `_output_layer_input`); otherwise nothing."""
        return _output_layer_input(model) if "whitebox" in self.attackers else nullcontext({})

    def _draw(self, samples: Samples, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n distinct random samples, drawn with this object's generator."""
        rows = torch.randperm(len(samples), generator=self.generator)[:n].to(self.device)
        return samples.x[rows], samples.y[rows]

    def _reset_totals(self) -> None:
        names = ("attacker_loss", "attacker_correct", "attacker_samples", "attacker_steps")
        self._totals: dict[str, Any] = {name: 0.0 for name in (*names, "penalty", "model_steps")}


class _Frozen(Callback):
    """See `AdversarialRegularizer.frozen`; its state is the regulariser's, saved there."""

    def __init__(self, regularizer: AdversarialRegularizer):
        self.regularizer = regularizer

    @contextmanager
    def penalty(self, model: nn.Module) -> Iterator[Penalty]:
        adversary = self.regularizer
        if adversary.model_steps <= adversary.start_step:  # the loop's step is counted already
            yield lambda logits, _labels: logits.new_zeros(())
            return
        with adversary._watch(model) as captured:
            yield lambda logits, labels: adversary.term(logits, labels, captured.get("features"))


def regularizer_for(
    job: Job, adversarial: AdversarialSpec, model: nn.Module, steps_per_epoch: int
) -> AdversarialRegularizer:
    """The simulated attackers `adversarial` sets against a job's model: its known members (its
    own training set) against the defender's held-out data."""
    return AdversarialRegularizer(
        model,
        job.members(),
        job.heldout(),
        attackers=adversarial.attackers,
        weight=adversarial.weight,
        attacker_steps=adversarial.attacker_steps,
        warmup_steps=adversarial.warmup_steps,
        start_step=adversarial.start_epoch * steps_per_epoch,
        batch_size=job.train.batch_size,
        seed=job.seed_of("attackers"),
    )
