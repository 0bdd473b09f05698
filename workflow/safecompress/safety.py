"""The safety test: the defender's simulated membership inference attack on a candidate model,
with its own known members and non-members (never the evaluation sets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from .attacks.learned import (
    NN_DECISION_PROBABILITY,
    fit_nn_attack,
    nn_attack_features,
    nn_member_probability,
)
from .attacks.scores import THRESHOLD_ATTACKS, logit_matrix, membership_score
from .attacks.threshold import fit_threshold
from .devices import predict_logits
from .metrics import attack_metrics
from .splits import Samples

# The attacks a candidate's safety test may simulate (config key safecompress.safety_attack).
SAFETY_ATTACKS = (*THRESHOLD_ATTACKS, "nn")


def probe_attack(
    metric: str,
    logits_members: np.ndarray,
    labels_members: np.ndarray,
    logits_nonmembers: np.ndarray,
    labels_nonmembers: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """The defender's safety test on its own known members and non-members (the probe).

    A threshold metric is fitted on the probe it is scored on: an optimistic attacker, an
    upper bound on what that metric reveals about these members. The `nn` attacker is
    cross-fitted instead (trained on one half of the probe, scored on the other, and back),
    since a classifier scored on its own training data would only measure its own memory.
    """
    logits = np.r_[logit_matrix(logits_members), logit_matrix(logits_nonmembers)]
    labels = np.r_[labels_members, labels_nonmembers]
    is_member = np.r_[np.ones(len(labels_members), bool), np.zeros(len(labels_nonmembers), bool)]
    if metric == "nn":
        features = nn_attack_features(logits, labels)
        fold = np.arange(len(labels)) % 2 == 0
        scores = np.empty(len(labels))
        for test in (fold, ~fold):
            classifier = fit_nn_attack(features[~test], is_member[~test], seed)
            scores[test] = nn_member_probability(classifier, features[test])
        return attack_metrics(is_member, scores, scores >= NN_DECISION_PROBABILITY)
    scores = membership_score(metric, logits, labels)
    predicted = scores >= fit_threshold(scores, is_member)
    return attack_metrics(is_member, scores, predicted)


@dataclass
class SafetyTest:
    """The defender's simulated attack on its own known members and non-members, never the
    evaluation sets. Task accuracy is read from the same non-member logits: the probe's
    non-members are held-out data, and a second forward pass over a validation set would
    make the test cost a third more."""

    attack: str
    members: Samples
    nonmembers: Samples

    def run(self, model: nn.Module) -> dict[str, float]:
        member_logits = predict_logits(model, self.members.x)
        nonmember_logits = predict_logits(model, self.nonmembers.x)
        member_labels, nonmember_labels = self.members.y.cpu(), self.nonmembers.y.cpu()
        val_acc = (nonmember_logits.argmax(1) == nonmember_labels).float().mean().item()
        result = probe_attack(
            self.attack,
            member_logits.double().numpy(),
            member_labels.numpy(),
            nonmember_logits.double().numpy(),
            nonmember_labels.numpy(),
        )
        return {"val_acc": val_acc, **{name: float(value) for name, value in result.items()}}
