"""Membership inference attacks as pure functions of saved per-sample signals.

Each attack turns a sample's logits and true label into a membership score (higher = more
member-like). Attacks are calibrated on shadow models, whose members the attacker knows
(Shokri et al. 2017); the target model is only scored. The threshold attacks follow
Song & Mittal (2021), with one threshold per class; the `nn` attack is the shadow-trained
classifier on ML-Leaks features (Salem et al. 2019).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..metrics import attack_metrics
from .learned import (
    NN_DECISION_PROBABILITY,
    fit_nn_attack,
    nn_attack_features,
    nn_member_probability,
)
from .scores import THRESHOLD_ATTACKS, class_labels, membership_score
from .threshold import fit_class_thresholds, predict_with_thresholds

ATTACKS = ("nn", *THRESHOLD_ATTACKS)


class Signals(NamedTuple):
    """The arrays of a signals table that the attacks read."""

    logits: np.ndarray
    labels: np.ndarray
    is_member: np.ndarray


def _read_signals(frame: pd.DataFrame, name: str) -> Signals:
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
    logits = frame[[f"logit_{c}" for c in logit_ids]].to_numpy(dtype=np.float64)
    labels = class_labels(frame["label"].to_numpy(), len(frame), len(logit_ids))
    return Signals(logits, labels, is_member)


def _attack_target(
    attack: str, target: Signals, shadow: Signals, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate `attack` on the shadow signals; return its (scores, predictions) on the target."""
    if attack == "nn":
        classifier = fit_nn_attack(
            nn_attack_features(shadow.logits, shadow.labels), shadow.is_member, seed
        )
        scores = nn_member_probability(classifier, nn_attack_features(target.logits, target.labels))
        return scores, scores >= NN_DECISION_PROBABILITY
    thresholds = fit_class_thresholds(
        membership_score(attack, shadow.logits, shadow.labels),
        shadow.labels,
        shadow.is_member,
        n_classes=shadow.logits.shape[1],
    )
    scores = membership_score(attack, target.logits, target.labels)
    return scores, predict_with_thresholds(scores, target.labels, thresholds)


def run_attacks(
    target: pd.DataFrame, shadow: pd.DataFrame, attacks: Sequence[str], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run `attacks` on the target's signals, each calibrated on the (pooled) shadow signals.

    Returns (metrics: one row per attack, `attack` plus `attack_metrics`; scores: the target's
    `index`, `set`, `label` plus `score_<attack>` and 0/1 `pred_<attack>` per attack).
    """
    attacks = list(attacks)
    unknown = [attack for attack in attacks if attack not in ATTACKS]
    if unknown or not attacks or len(set(attacks)) != len(attacks):
        raise ValueError(
            f"attacks must be distinct names from {list(ATTACKS)}; got {attacks} "
            f"(unknown: {unknown})"
        )
    target_signals, shadow_signals = (
        _read_signals(target, "target"),
        _read_signals(shadow, "shadow"),
    )
    n_classes = target_signals.logits.shape[1]
    if shadow_signals.logits.shape[1] != n_classes:
        raise ValueError(
            f"target has {n_classes} logit columns but shadow has "
            f"{shadow_signals.logits.shape[1]}; both must come from the same task"
        )
    scores = target[["index", "set", "label"]].reset_index(drop=True)
    rows = []
    for attack in attacks:
        score, predicted = _attack_target(attack, target_signals, shadow_signals, seed)
        scores[f"score_{attack}"] = score
        scores[f"pred_{attack}"] = predicted.astype(int)
        rows.append(
            {"attack": attack, **attack_metrics(target_signals.is_member, score, predicted)}
        )
    return pd.DataFrame(rows), scores
