"""RelaxLoss's training objective (Chen, Yu, Fritz, ICLR 2022, Algorithm 1), as a term of a
step's loss: what the `relaxloss` method trains on, and what a SafeCompress candidate with
`Strategy.relax` trains on until the next mask update. With L the batch's mean cross-entropy
and alpha the target loss:

- L >= alpha: gradient descent on L;
- L < alpha, in every other epoch (the 1st, 3rd, ...): gradient ascent on L, back up to alpha
  (the code's `|L - alpha|`);
- L < alpha, in the epochs between: posterior flattening. A correctly classified sample is
  trained towards the soft label that keeps its predicted target probability p_y and spreads
  1 - p_y evenly over the other classes (p_y capped at `upper`); a misclassified one takes
  the plain cross-entropy (Algorithm 1's "normal gradient operation").

So the members' mean loss hovers at alpha instead of falling to 0, and their loss distribution
widens towards the non-members'. Departures from the authors' code (DingfanChen/RelaxLoss,
`defense/relaxloss.py`), each following Algorithm 1: the soft label is a constant (their code
lets the gradient flow through p_y inside it), and it is the correctly classified samples that
are flattened (their CIFAR code applies the soft loss to the misclassified ones and subtracts
every sample's cross-entropy; their Purchase / Texas code flattens every sample).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from safecompress.training.loop import Penalty


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


def is_ascent_epoch(step: int, steps_per_epoch: int) -> bool:
    """Whether 0-based step `step` falls in an ascent epoch (the code's even epochs)."""
    return (step // steps_per_epoch) % 2 == 0


def relaxloss_penalty(alpha: float, upper: float, ascent_epoch: bool) -> Penalty:
    """The term that turns a step's cross-entropy into the RelaxLoss objective."""

    def penalty(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        objective = relaxloss_objective(logits, labels, ascent_epoch, alpha, upper)
        return objective - F.cross_entropy(logits, labels)

    return penalty
