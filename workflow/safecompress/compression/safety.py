"""The safety test: the defender's simulated membership inference attack on a candidate model,
with its own known members and non-members (never the evaluation sets).

Selection among candidates can only follow differences the test resolves. So the test is a
continuous, threshold-free leakage score over the defender's own data (its members: all it
trains on, or only its known members; its held-out `reference` set), with a standard error,
and a paired standard error for the difference between two candidates scored on the same
samples (far smaller than either's own: candidates share most of their errors). The
selection score `val_acc - lambda x leakage` is such an estimate too (`selection_score`), so
the selection can tell a resolved advantage from noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from safecompress.data.splits import Samples
from safecompress.privacy.attacks.scores import cross_entropy
from safecompress.training.devices import forward, predict_logits


@dataclass(frozen=True)
class Leakage:
    """A leakage estimate that varies, to first order, as `scale` x (the mean of
    `member_terms` over the members + the mean of `nonmember_terms` over the non-members):
    its influence terms, which give its standard error and the paired standard error of its
    difference to another candidate's estimate on the same samples."""

    value: float
    member_terms: np.ndarray
    nonmember_terms: np.ndarray
    scale: float

    @property
    def se(self) -> float:
        return self.diff_se(None)

    def absolute(self) -> Leakage:
        """|value|, the distance from no leakage: a model whose members fit worse than its
        held-out data is told apart as well as one whose members fit better (an attacker
        that calibrates flips its threshold). Influence terms by the delta method, away from
        0 (at exactly 0, the value's own)."""
        sign = -1.0 if self.value < 0 else 1.0
        return Leakage(
            abs(self.value), sign * self.member_terms, sign * self.nonmember_terms, self.scale
        )

    def diff_se(self, other: Leakage | None) -> float:
        """Standard error of `self.value - other.value` on the same samples (of the value
        alone without `other`)."""
        members, nonmembers = self.member_terms, self.nonmember_terms
        if other is not None:
            members, nonmembers = members - other.member_terms, nonmembers - other.nonmember_terms
        variance = members.var(ddof=1) / len(members) + nonmembers.var(ddof=1) / len(nonmembers)
        return float(self.scale * np.sqrt(variance))


def _placements(values: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each of `values`, the share of `others` above it, ties counting half."""
    others = np.sort(others)
    below_or_equal = np.searchsorted(others, values, side="right")
    equal = below_or_equal - np.searchsorted(others, values, side="left")
    return (len(others) - below_or_equal + 0.5 * equal) / len(others)


def loss_auc(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> Leakage:
    """2 x AUC - 1 of the loss attack (a lower loss flags a member): 0 for no leakage, 1 when
    every member's loss is below every non-member's. Standard error by DeLong's placement
    values (the AUC is the mean of either group's placements)."""
    member_placement = _placements(member_loss, nonmember_loss)  # non-members' loss higher
    nonmember_placement = 1.0 - _placements(nonmember_loss, member_loss)  # members' lower
    auc = member_placement.mean()
    return Leakage(float(2.0 * auc - 1.0), member_placement, nonmember_placement, 2.0)


def loss_gap(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> Leakage:
    """Mean non-member loss minus mean member loss (nats): the generalisation gap the loss
    attack exploits, sensitive to how far apart the losses are, not only to their order."""
    gap = nonmember_loss.mean() - member_loss.mean()
    return Leakage(float(gap), -member_loss, nonmember_loss, 1.0)


# The loss-tail score's FPR: the share of held-out samples whose loss marks the tail. The
# defender's few hundred held-out samples put 30 or so there at 0.1, enough for a standard
# error; at 0.01 a handful would decide.
TAIL_FPR = 0.1


def loss_tail(
    member_loss: np.ndarray, nonmember_loss: np.ndarray, fpr: float = TAIL_FPR
) -> Leakage:
    """How far the members reach into the held-out losses' low tail, where the low-FPR attacks
    find the most vulnerable samples: each member's placement P (the share of held-out losses
    at or below its own: the FPR of a threshold at its loss) counts max(0, 1 - P / fpr), 1 for
    a member below every held-out loss, 0 at or beyond the tail. The mean over members, less
    its value fpr / 2 when members and held-out losses are alike, scaled to at most 1. Unlike
    the AUC it ignores where the bulk of the members lie, and it is smooth (one member moves it
    by at most 1 / len(members)), so its influence terms give a standard error: the member's
    own weight, and for a held-out sample the change of every tail member's weight as that
    sample enters the held-out placements."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr}")
    held_out = np.sort(nonmember_loss)
    placement = np.searchsorted(held_out, member_loss, side="right") / len(held_out)
    weight = np.maximum(0.0, 1.0 - placement / fpr)
    in_tail = placement < fpr
    # d weight / d placement = -1 / fpr in the tail; a held-out sample at or below a member's
    # loss raises that member's placement: its term is the mean over members of the change.
    at_or_below = nonmember_loss[:, None] <= member_loss[None, :]
    nonmember_terms = -(at_or_below[:, in_tail] - placement[in_tail]).sum(axis=1) / (
        fpr * len(member_loss)
    )
    scale = 1.0 / (1.0 - fpr / 2.0)
    return Leakage(float(scale * (weight.mean() - fpr / 2.0)), weight, nonmember_terms, scale)


def best_threshold_advantage(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """TPR - FPR of the best loss threshold (a member when its loss is at most t), fitted on
    these samples: the old safety test's score, logged for comparison, not selected on. It
    moves in steps of 1/len(members) and saturates, which is why it is not the score."""
    thresholds = np.unique(np.r_[member_loss, nonmember_loss])
    tpr = np.searchsorted(np.sort(member_loss), thresholds, side="right") / len(member_loss)
    fpr = np.searchsorted(np.sort(nonmember_loss), thresholds, side="right") / len(nonmember_loss)
    return float(max(0.0, (tpr - fpr).max()))


def selection_score(correct: np.ndarray, leakage: Leakage, weight: float) -> Leakage:
    """`val_acc - weight x leakage` as an estimate with influence terms, so that its paired
    standard error against another candidate on the same samples is known: `correct` is the
    candidate's per-sample correctness on the held-out samples (whose mean is val_acc), the
    same samples as the leakage's non-members."""
    return Leakage(
        float(correct.mean() - weight * leakage.value),
        -weight * leakage.scale * leakage.member_terms,
        correct - weight * leakage.scale * leakage.nonmember_terms,
        1.0,
    )


# Leakage scores of the safety test (config key safecompress.safety_score).
SAFETY_SCORES: dict[str, Callable[[np.ndarray, np.ndarray], Leakage]] = {
    "loss_auc": loss_auc,
    "loss_gap": loss_gap,
    "loss_tail": loss_tail,
}


def loss_gradients(
    model: nn.Module, samples: Samples, weights: dict[str, torch.Tensor], chunk: int = 1024
) -> dict[str, torch.Tensor]:
    """Gradient of the mean loss on `samples` with respect to each of `weights`, in evaluation
    mode (normalisation statistics untouched) and without touching any `.grad`."""
    model.eval()
    device = next(model.parameters()).device
    totals = {name: torch.zeros_like(weight) for name, weight in weights.items()}
    for x, y in zip(samples.x.split(chunk), samples.y.split(chunk), strict=True):
        loss = F.cross_entropy(forward(model, x.to(device)), y.to(device), reduction="sum")
        for total, grad in zip(
            totals.values(), torch.autograd.grad(loss, list(weights.values())), strict=True
        ):
            total += grad
    return {name: total / len(samples) for name, total in totals.items()}


@dataclass
class SafetyTest:
    """The defender's simulated attack on its own members and non-members (its held-out data,
    never the evaluation's non-members). Task accuracy is read from the same non-member
    logits (held-out data all the same), so the test costs one forward pass over the
    defender's data."""

    score: str
    members: Samples
    nonmembers: Samples
    two_sided: bool = False  # leakage as its distance from none (`Leakage.absolute`)

    def __post_init__(self) -> None:
        if self.score not in SAFETY_SCORES:
            raise ValueError(f"unknown safety score {self.score!r}; use one of {SAFETY_SCORES}")
        # one forward pass over both sets per test
        self._x = torch.cat([self.members.x, self.nonmembers.x])
        self._y = torch.cat([self.members.y, self.nonmembers.y]).numpy()

    def run(self, model: nn.Module, weight: float) -> tuple[dict[str, float], Leakage, Leakage]:
        """Accuracy on the held-out data, the leakage score with its standard error, the loss
        attack's AUC and best-threshold advantage (for the log); then the leakage and the
        selection score `val_acc - weight x leakage` as estimates (`selection_score`)."""
        logits = predict_logits(model, self._x).double().numpy()
        loss = cross_entropy(logits, self._y)
        m = len(self.members)
        member_loss, nonmember_loss = loss[:m], loss[m:]
        signed = SAFETY_SCORES[self.score](member_loss, nonmember_loss)
        leakage = signed.absolute() if self.two_sided else signed
        auc = signed if self.score == "loss_auc" else loss_auc(member_loss, nonmember_loss)
        correct = (logits[m:].argmax(1) == self._y[m:]).astype(float)
        score = selection_score(correct, leakage, weight)
        return (
            {
                "val_acc": float(correct.mean()),
                "auc": (auc.value + 1.0) / 2.0,
                "advantage": best_threshold_advantage(member_loss, nonmember_loss),
                "leakage": leakage.value,
                "leakage_se": leakage.se,
                "score": score.value,
            },
            leakage,
            score,
        )

    def gradients(
        self, model: nn.Module, weights: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Loss gradients on the known members and on the held-out data (leakage criteria)."""
        return loss_gradients(model, self.members, weights), loss_gradients(
            model, self.nonmembers, weights
        )
