"""Membership inference attacks as pure functions of saved per-sample signals.

Each attack turns what the attacker can observe into a membership score per target sample
(higher = more member-like) and a hard prediction. The attacker's knowledge is its own data
and K shadow models trained on draws of it, like the target (Shokri et al. 2017); the
target model is only queried. Three families, one registry (`ATTACKS`):

- threshold attacks (Song & Mittal 2021): loss, confidence, entropy, modified entropy, one
  threshold per class fitted on the shadow models' members and non-members;
- learned attacks, trained on the shadow models' members and non-members: `nn` (ML-Leaks
  features, Salem et al. 2019), `nasr` (the SafeCompress reference code's black-box
  adversary, after Nasr et al. 2018) and `whitebox` (the TSE extension's white-box adversary:
  also the loss and the output layer's gradient);
- reference-model attacks, offline (the shadow models never saw the target's samples, so
  they are OUT references): `lira` (Carlini et al. 2022) and `rmia` (Zarifzadeh et al. 2024).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from safecompress.privacy.attacks import learned, reference
from safecompress.privacy.attacks.scores import (
    THRESHOLD_ATTACKS,
    class_labels,
    confidence,
    membership_score,
    softmax,
)
from safecompress.privacy.attacks.threshold import fit_class_thresholds, predict_with_thresholds

# A reference-model score above this is a "member" prediction: LiRA's target confidence above
# the OUT references' mean (log Phi(0)); RMIA's sample dominating half of the population.
LIRA_DECISION_SCORE = float(np.log(0.5))
RMIA_DECISION_SCORE = 0.5


@dataclass(frozen=True)
class Signals:
    """Per-sample arrays of one model on a set of samples."""

    logits: np.ndarray  # (n, C)
    labels: np.ndarray  # (n,)
    is_member: np.ndarray  # (n,) bool: a member of this model's training set
    features: np.ndarray | None = None  # (n, d) input of the output layer (white-box)


@dataclass(frozen=True)
class Population:
    """RMIA's population z: samples of the attacker's pool, the target's logits on them, and
    each one's mean true-class probability under the reference models that did not train on
    it."""

    target_logits: np.ndarray  # (m, C)
    labels: np.ndarray  # (m,)
    reference_probability: np.ndarray  # (m,)
    offline_a: float = reference.RMIA_OFFLINE_A  # tuned on the references (signals.population)


@dataclass(frozen=True)
class AttackInputs:
    """Everything an attack may read."""

    target: Signals  # the target model on the evaluated samples
    shadow: Signals  # every shadow model on its own members and non-members, pooled
    references: np.ndarray  # (K, n, C) each shadow model's logits on the evaluated samples
    population: Population
    # fitted attackers of the learned attacks (FIT_ADVERSARY) by name; one not given is fitted
    # here on `shadow` (the same attacker: the fit depends on `shadow` and the seed)
    adversaries: Mapping[str, Any] = field(default_factory=dict)


Result = tuple[np.ndarray, np.ndarray]  # (scores, 0/1 predictions) on the target's samples


def _threshold(metric: str) -> Callable[[AttackInputs, int], Result]:
    def attack(inputs: AttackInputs, seed: int) -> Result:
        shadow, target = inputs.shadow, inputs.target
        thresholds = fit_class_thresholds(
            membership_score(metric, shadow.logits, shadow.labels),
            shadow.labels,
            shadow.is_member,
            n_classes=shadow.logits.shape[1],
        )
        scores = membership_score(metric, target.logits, target.labels)
        return scores, predict_with_thresholds(scores, target.labels, thresholds)

    return attack


def _fit_nn(shadow: Signals, seed: int) -> Any:
    return learned.fit_nn_attack(
        learned.nn_attack_features(shadow.logits, shadow.labels), shadow.is_member, seed
    )


def _fit_nasr(shadow: Signals, seed: int) -> nn.Module:
    return learned.fit_nasr(shadow.logits, shadow.labels, shadow.is_member, seed)


def _fit_whitebox(shadow: Signals, seed: int) -> nn.Module:
    if shadow.features is None:
        raise ValueError("the whitebox attack needs the shadow models' features")
    return learned.fit_whitebox(
        shadow.logits, shadow.labels, shadow.features, shadow.is_member, seed
    )


# The learned attacks. Each attacker reads only the shadow models, so it is fitted once for
# every set of target samples; the workflow fits the torch networks (NETWORK_ATTACKS) once per
# recipe or seed (steps.fit_attackers, steps.references) for every target.
FIT_ADVERSARY: dict[str, Callable[[Signals, int], Any]] = {
    "nn": _fit_nn,
    "nasr": _fit_nasr,
    "whitebox": _fit_whitebox,
}
NETWORK_ATTACKS = tuple(learned.ADVERSARIES)


def _adversary(inputs: AttackInputs, name: str, seed: int) -> Any:
    given = inputs.adversaries.get(name)
    return FIT_ADVERSARY[name](inputs.shadow, seed) if given is None else given


def with_adversaries(inputs: AttackInputs, attacks: Sequence[str], seed: int) -> AttackInputs:
    """`inputs` with the attacker of every learned attack among `attacks` fitted, so that
    attacks on several sets of target samples (the evaluated ones, the canaries) fit each once."""
    fitted = {name: _adversary(inputs, name, seed) for name in attacks if name in FIT_ADVERSARY}
    return dataclasses.replace(inputs, adversaries=fitted)


def _nn(inputs: AttackInputs, seed: int) -> Result:
    target = inputs.target
    scores = learned.nn_member_probability(
        _adversary(inputs, "nn", seed), learned.nn_attack_features(target.logits, target.labels)
    )
    return scores, scores >= learned.NN_DECISION_PROBABILITY


def _nasr(inputs: AttackInputs, seed: int) -> Result:
    target = inputs.target
    adversary = _adversary(inputs, "nasr", seed)
    scores = learned.nasr_member_probability(adversary, target.logits, target.labels)
    return scores, scores >= learned.NN_DECISION_PROBABILITY


def _whitebox(inputs: AttackInputs, seed: int) -> Result:
    target = inputs.target
    if target.features is None:
        raise ValueError("the whitebox attack needs the target model's features")
    adversary = _adversary(inputs, "whitebox", seed)
    scores = learned.whitebox_member_probability(
        adversary, target.logits, target.labels, target.features
    )
    return scores, scores >= learned.NN_DECISION_PROBABILITY


def _lira(inputs: AttackInputs, seed: int) -> Result:
    target = inputs.target
    scores = reference.lira_offline(target.logits, target.labels, inputs.references)
    return scores, scores > LIRA_DECISION_SCORE


def _true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return confidence(softmax(logits), labels)


def _rmia(inputs: AttackInputs, seed: int) -> Result:
    target, population = inputs.target, inputs.population
    # Pr(x) and Pr(z) are means over OUT references; z's come from a different subset of the
    # shadow models (those that did not train on it), so both enter as their means.
    references_x = np.mean(
        [_true_class_probability(logits, target.labels) for logits in inputs.references], axis=0
    )
    scores = reference.rmia_offline(
        _true_class_probability(target.logits, target.labels),
        references_x[None, :],
        _true_class_probability(population.target_logits, population.labels),
        population.reference_probability[None, :],
        offline_a=population.offline_a,
    )
    return scores, scores > RMIA_DECISION_SCORE


ATTACKS: dict[str, Callable[[AttackInputs, int], Result]] = {
    **{metric: _threshold(metric) for metric in THRESHOLD_ATTACKS},
    "nn": _nn,
    "nasr": _nasr,
    "whitebox": _whitebox,
    "lira": _lira,
    "rmia": _rmia,
}


def run_attacks(inputs: AttackInputs, attacks: Sequence[str], seed: int) -> dict[str, Result]:
    """(scores, predictions) of each named attack on the target's samples."""
    attacks = list(attacks)
    unknown = [attack for attack in attacks if attack not in ATTACKS]
    if unknown or not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(
            f"attacks must be distinct names from {list(ATTACKS)}; got {attacks} "
            f"(unknown: {unknown})"
        )
    n_classes = inputs.target.logits.shape[1]
    if inputs.shadow.logits.shape[1] != n_classes:
        raise ValueError(
            f"target has {n_classes} logit columns but shadow has "
            f"{inputs.shadow.logits.shape[1]}; both must come from the same task"
        )
    results = {}
    for attack in attacks:
        scores, predicted = ATTACKS[attack](inputs, seed)
        results[attack] = np.asarray(scores, dtype=np.float64), np.asarray(predicted, dtype=bool)
    return results


def read_signals(frame: pd.DataFrame, name: str, features: np.ndarray | None = None) -> Signals:
    """Validate a signals table (`index`, `set`, `label`, `logit_0..C-1`) and extract its arrays."""
    missing = [column for column in ("index", "set", "label") if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} signals lack column(s) {missing}")
    logit_ids = sorted(
        int(match[1]) for column in frame.columns if (match := re.fullmatch(r"logit_(\d+)", column))
    )
    if not logit_ids:
        raise ValueError(f"{name} signals have no logit_<class> columns")
    if logit_ids != list(range(len(logit_ids))):
        absent = sorted(set(range(max(logit_ids) + 1)) - set(logit_ids))
        raise ValueError(f"{name} signals lack column(s) {[f'logit_{c}' for c in absent]}")
    unknown_sets = sorted(set(frame["set"]) - {"member", "non-member"})
    if unknown_sets:
        raise ValueError(f"{name} column set has {unknown_sets}; expected 'member' or 'non-member'")
    is_member = (frame["set"] == "member").to_numpy()
    if is_member.all() or not is_member.any():
        raise ValueError(f"{name} signals need both 'member' and 'non-member' rows in column set")
    if features is not None and len(features) != len(frame):
        raise ValueError(f"{name} features have {len(features)} rows for {len(frame)} signals")
    logits = frame[[f"logit_{c}" for c in logit_ids]].to_numpy(dtype=np.float64)
    labels = class_labels(frame["label"].to_numpy(), len(frame), len(logit_ids))
    return Signals(logits, labels, is_member, features)
