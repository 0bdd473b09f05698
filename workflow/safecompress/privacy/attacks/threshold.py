"""Threshold attacks (Song & Mittal 2021): one threshold per true class on a membership score,
fitted on the shadow models' known members and non-members."""

from __future__ import annotations

import numpy as np

from safecompress.privacy.attacks.scores import class_labels
from safecompress.privacy.metrics import roc_curve


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
    labels = class_labels(labels, len(scores), n_classes)
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
    return scores >= thresholds[class_labels(labels, len(scores), len(thresholds))]
