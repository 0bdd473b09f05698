"""Membership-inference attack metrics: ROC, AUC, TPR at low FPR, balanced accuracy.

Convention: `is_member` marks the positives, and a higher score means "more likely a member".
Pure numpy, so the numbers do not depend on which ML library produced the scores.
"""

from __future__ import annotations

import numpy as np


def _binary_problem(is_member: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a members-vs-non-members problem; return (is_member as bool, values)."""
    is_member, values = np.asarray(is_member), np.asarray(values)
    if is_member.ndim != 1 or values.ndim != 1:
        raise ValueError(
            f"expected 1-D arrays, got shapes {is_member.shape} (is_member) and {values.shape}"
        )
    if len(is_member) != len(values):
        raise ValueError(
            f"length mismatch: {len(is_member)} membership labels vs {len(values)} scores"
        )
    if not np.isin(is_member, (0, 1)).all():
        raise ValueError("is_member must be boolean (True = member, False = non-member)")
    is_member = is_member.astype(bool)
    if not is_member.any():
        raise ValueError("no members: is_member is all False; the metric needs both classes")
    if is_member.all():
        raise ValueError("no non-members: is_member is all True; the metric needs both classes")
    return is_member, values


def roc_curve(
    is_member: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the rule `score >= threshold`: one point per distinct score, from (0, 0) to (1, 1).

    thresholds[0] is +inf (nobody flagged); thresholds[k] for k >= 1 is the k-th largest
    distinct score, and tied scores enter the curve together.
    """
    is_member, scores = _binary_problem(is_member, scores)
    scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_members = scores[order], is_member[order]
    last_of_each_tie = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    true_positives = np.cumsum(sorted_members)[last_of_each_tie]
    false_positives = last_of_each_tie + 1 - true_positives
    tpr = np.r_[0.0, true_positives / is_member.sum()]
    fpr = np.r_[0.0, false_positives / (~is_member).sum()]
    thresholds = np.r_[np.inf, sorted_scores[last_of_each_tie]]
    return fpr, tpr, thresholds


def roc_auc(is_member: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC: P(member score > non-member score) + 0.5 * P(tie) (Mann-Whitney).

    The trapezoid rule over the tie-aware ROC gives exactly this probability.
    """
    fpr, tpr, _ = roc_curve(is_member, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(is_member: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Largest TPR among ROC points with FPR <= max_fpr: the attack's low-false-alarm power."""
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1], got {max_fpr}")
    fpr, tpr, _ = roc_curve(is_member, scores)
    return float(tpr[fpr <= max_fpr].max())


def balanced_accuracy(is_member: np.ndarray, predicted_member: np.ndarray) -> float:
    """(TPR + TNR) / 2 of hard member predictions; 0.5 is chance whatever the class balance."""
    is_member, predicted_member = _binary_problem(is_member, predicted_member)
    predicted_member = predicted_member.astype(bool)
    tpr = predicted_member[is_member].mean()
    tnr = (~predicted_member[~is_member]).mean()
    return float((tpr + tnr) / 2)


ATTACK_METRICS = ("attack_acc", "advantage", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


def attack_metrics(
    is_member: np.ndarray, scores: np.ndarray, predicted_member: np.ndarray
) -> dict[str, float]:
    """The reported numbers of one attack: thresholded accuracy and advantage, plus
    threshold-free AUC and TPR at 1% and 0.1% FPR of the continuous scores."""
    attack_acc = balanced_accuracy(is_member, predicted_member)
    return {
        "attack_acc": attack_acc,
        "advantage": 2 * attack_acc - 1,
        "auc": roc_auc(is_member, scores),
        "tpr_at_1pct_fpr": tpr_at_fpr(is_member, scores, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(is_member, scores, 0.001),
    }
