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
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .metrics import attack_metrics, roc_curve

THRESHOLD_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")
ATTACKS = ("nn", *THRESHOLD_ATTACKS)
# log(max(p, LOG_FLOOR)) keeps saturated softmax outputs finite, as in Song & Mittal's code.
LOG_FLOOR = 1e-30
NN_DECISION_PROBABILITY = 0.5


# --- Signals from logits --------------------------------------------------------------------


def _logit_matrix(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D (samples, classes) array, got shape {logits.shape}")
    return logits


def _class_labels(labels: np.ndarray, n_samples: int, n_classes: int) -> np.ndarray:
    """Validate true labels: `n_samples` integers in [0, n_classes)."""
    labels = np.asarray(labels)
    if labels.shape != (n_samples,):
        raise ValueError(f"expected {n_samples} labels, got an array of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if n_samples and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]"
        )
    return labels


def _at_labels(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """values[i, labels[i]] for every sample i."""
    labels = _class_labels(labels, *values.shape)
    return values[np.arange(len(values)), labels]


def _log(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values, LOG_FLOOR))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities, computed from max-shifted logits so large logits do not overflow."""
    return np.exp(_log_softmax(_logit_matrix(logits)))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample loss -log p_y, via log-softmax so it stays finite when p_y underflows."""
    return -_at_labels(_log_softmax(_logit_matrix(logits)), labels)


def confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability p_y assigned to the true class."""
    return _at_labels(np.asarray(probs, dtype=np.float64), labels)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each prediction; members tend to get confident, low-entropy outputs."""
    probs = np.asarray(probs, dtype=np.float64)
    return -np.sum(probs * _log(probs), axis=1)


def modified_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).

    Unlike entropy it uses the label: it is low only when the model is confident AND correct.
    """
    probs = np.asarray(probs, dtype=np.float64)
    p_true = confidence(probs, labels)
    is_true_class = np.arange(probs.shape[1]) == np.asarray(labels)[:, None]
    wrong_class_terms = np.where(is_true_class, 0.0, probs * _log(1 - probs))
    return -(1 - p_true) * _log(p_true) - wrong_class_terms.sum(axis=1)


def membership_score(metric: str, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Score of a threshold attack, oriented so that higher means more member-like."""
    match metric:
        case "loss":
            return -cross_entropy(logits, labels)
        case "confidence":
            return confidence(softmax(logits), labels)
        case "entropy":
            return -entropy(softmax(logits))
        case "modified_entropy":
            return -modified_entropy(softmax(logits), labels)
    raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(THRESHOLD_ATTACKS)}")


# --- Threshold attacks ----------------------------------------------------------------------


def fit_threshold(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Threshold t for which `scores >= t` has the highest balanced accuracy on these samples.

    Candidates are +inf, the midpoints between consecutive distinct scores, and -inf; ties in
    balanced accuracy go to the highest threshold (the fewest samples flagged).
    """
    scores = np.asarray(scores, dtype=np.float64)
    fpr, tpr, thresholds = roc_curve(is_member, scores)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite to fit a threshold")
    # ROC point k flags the scores >= thresholds[k]; halfway down to the next distinct score
    # flags the same samples here and leaves a margin on new data.
    upper, lower = thresholds[1:-1], thresholds[2:]
    midpoints = upper / 2 + lower / 2
    midpoints = np.where(midpoints > lower, midpoints, upper)  # adjacent floats: no room between
    candidates = np.r_[np.inf, midpoints, -np.inf]
    balanced_accuracies = (tpr + 1 - fpr) / 2
    return float(candidates[np.argmax(balanced_accuracies)])


def fit_class_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    is_member: np.ndarray,
    n_classes: int,
    min_per_class: int = 10,
) -> np.ndarray:
    """One threshold per true class (Song & Mittal); a class with fewer than `min_per_class`
    members or non-members gets the global threshold instead."""
    scores = np.asarray(scores, dtype=np.float64)
    global_threshold = fit_threshold(scores, is_member)
    labels = _class_labels(labels, len(scores), n_classes)
    is_member = np.asarray(is_member, dtype=bool)
    thresholds = np.full(n_classes, global_threshold)
    for label in range(n_classes):
        in_class = labels == label
        n_members = np.count_nonzero(is_member[in_class])
        if min(n_members, np.count_nonzero(in_class) - n_members) >= min_per_class:
            thresholds[label] = fit_threshold(scores[in_class], is_member[in_class])
    return thresholds


def predict_with_thresholds(
    scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Flag a sample as a member when its score reaches the threshold of its true class."""
    scores, thresholds = np.asarray(scores, dtype=np.float64), np.asarray(thresholds)
    return scores >= thresholds[_class_labels(labels, len(scores), len(thresholds))]


# --- Neural-network attack ------------------------------------------------------------------


def nn_attack_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, 4) features: the top-3 softmax probabilities, descending, and the true-class one.

    With fewer than 3 classes the missing top-k entries are 0, the probability of no class.
    """
    probs = softmax(logits)
    top3 = np.sort(probs, axis=1)[:, ::-1][:, :3]
    top3 = np.pad(top3, ((0, 0), (0, 3 - top3.shape[1])))
    return np.column_stack([top3, confidence(probs, labels)])


def fit_nn_attack(features: np.ndarray, is_member: np.ndarray, seed: int) -> Pipeline:
    """Shadow-trained attack classifier: standardized features into a one-hidden-layer MLP."""
    classifier = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed),
    )
    return classifier.fit(features, np.asarray(is_member, dtype=bool))


def nn_member_probability(classifier: Pipeline, features: np.ndarray) -> np.ndarray:
    """The fitted classifier's probability that each sample is a member: the `nn` score."""
    member_column = list(classifier.classes_).index(True)
    return classifier.predict_proba(features)[:, member_column]


# --- Evaluation on saved signals ------------------------------------------------------------


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
    labels = _class_labels(frame["label"].to_numpy(), len(frame), len(logit_ids))
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
    logits = np.r_[_logit_matrix(logits_members), _logit_matrix(logits_nonmembers)]
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
