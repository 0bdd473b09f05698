"""`relaxloss`: RelaxLoss (Chen, Yu, Fritz, "RelaxLoss: Defending membership inference attacks
without losing utility", ICLR 2022), inside dynamic sparse training.

Trained sparse from the start, as the paper trains from scratch: the DST of `compression.dst`
whose loss is RelaxLoss's (their Algorithm 1; DingfanChen/RelaxLoss, `defense/relaxloss.py`).
With L the batch's mean cross-entropy and alpha the target loss:

- L >= alpha: gradient descent on L;
- L < alpha, in every other epoch (the 1st, 3rd, ...): gradient ascent on L, back up to alpha
  (the code's `|L - alpha|`);
- L < alpha, in the epochs between: posterior flattening. A correctly classified sample is
  trained towards the soft label that keeps its predicted target probability p_y and spreads
  1 - p_y evenly over the other classes (p_y capped at `upper`); a misclassified one takes
  the plain cross-entropy (Algorithm 1's "normal gradient operation").

So the members' mean loss hovers at alpha instead of falling to 0, and their loss distribution
widens towards the non-members'. Departures from the authors' code, each following Algorithm 1:
the soft label is a constant (their code lets the gradient flow through p_y inside it), and
it is the correctly classified samples that are flattened (their CIFAR code applies the soft
loss to the misclassified ones and subtracts every sample's cross-entropy; their Purchase /
Texas code flattens every sample).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from safecompress.compression.dst import dst_with
from safecompress.compression.job import Compressed, Job
from safecompress.config.specs import DSTSpec, RelaxLossSpec
from safecompress.training.loop import Callback, Penalty


def flattened_labels(logits: torch.Tensor, labels: torch.Tensor, upper: float) -> torch.Tensor:
    """Soft labels keeping each sample's predicted target probability (capped at `upper`),
    with the rest spread evenly over the other classes; constants of the graph."""
    probs = logits.detach().softmax(1)
    target = probs.gather(1, labels[:, None]).clamp(max=upper)
    others = (1.0 - target) / (logits.shape[1] - 1)
    onehot = F.one_hot(labels, logits.shape[1]).bool()
    return torch.where(onehot, target, others)


def relaxloss_objective(
    logits: torch.Tensor, labels: torch.Tensor, ascent_epoch: bool, alpha: float, upper: float
) -> torch.Tensor:
    """The loss of one RelaxLoss step (see the module docstring); the branch on the batch
    loss is taken on the device, so a GPU step never waits for the host."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    loss = losses.mean()
    if ascent_epoch:
        below = (loss - alpha).abs()
    else:
        soft = -(flattened_labels(logits, labels, upper) * logits.log_softmax(1)).sum(1)
        below = torch.where(logits.argmax(1) == labels, soft, losses).mean()
    return torch.where(loss >= alpha, loss, below)


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
        ascent_epoch = (step // self.steps_per_epoch) % 2 == 0  # the code's even epochs

        def penalty(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            objective = relaxloss_objective(
                logits, labels, ascent_epoch, self.spec.alpha, self.spec.upper
            )
            return objective - F.cross_entropy(logits, labels)

        return penalty

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
