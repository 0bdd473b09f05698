"""Membership-inference attack metrics: ROC, AUC, TPR at low FPR, balanced accuracy.

Convention: `is_member` marks the positives, and a higher score means "more likely a member".
The curves and areas come from scikit-learn, so they are the ones every reader can recompute;
this module adds the validation and the low-FPR conventions of the MIA literature (Carlini et
al. 2022): a TPR is reported only at an FPR that the number of non-members can resolve.
"""

from __future__ import annotations

import numpy as np


def _sklearn_metrics():
    """scikit-learn's metrics, imported on first use: the import takes about 0.7 s, and the
    training jobs, which reach this module through the attack package, never call them."""
    import sklearn.metrics

    return sklearn.metrics


ATTACK_METRICS = (
    "attack_acc",
    "advantage",
    "auc",
    "tpr_at_1pct_fpr",
    "tpr_at_0.1pct_fpr",
    "tpr_at_0fpr",
)
# The FPR bound of each low-FPR metric that `tpr_at_fpr` reports.
TPR_AT_FPR = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}
# The metrics also reported on the canaries alone (inserted: positives, held out: negatives),
# each named `worst_case_<metric>`: an attack's power on the most vulnerable samples.
WORST_CASE_PREFIX = "worst_case_"
WORST_CASE_METRICS = tuple(
    WORST_CASE_PREFIX + metric for metric in ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
)


def binary_problem(is_member: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a members-vs-non-members problem; return (is_member as bool, values).

    Every metric here needs both classes, so a problem without one fails loudly instead of
    returning an undefined rate.
    """
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


def membership_scores(is_member: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`binary_problem` for continuous scores, which must also be finite floats.

    A NaN has no rank, and scikit-learn's ranking metrics refuse infinities.
    """
    is_member, scores = binary_problem(is_member, scores)
    scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain +-inf; ranking metrics need finite scores")
    return is_member, scores


def roc_curve(
    is_member: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the rule `score >= threshold`: one point per distinct score, from (0, 0) to (1, 1).

    thresholds[0] is +inf (nobody flagged); thresholds[k] for k >= 1 is the k-th largest
    distinct score, and tied scores enter the curve together. Every point is kept
    (drop_intermediate=False) so that TPR at a given FPR is read off exactly.
    """
    is_member, scores = membership_scores(is_member, scores)
    return _sklearn_metrics().roc_curve(is_member, scores, drop_intermediate=False)


def roc_auc(is_member: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC: P(member score > non-member score) + 0.5 * P(tie) (Mann-Whitney)."""
    is_member, scores = membership_scores(is_member, scores)
    return float(_sklearn_metrics().roc_auc_score(is_member, scores))


def fpr_is_resolved(n_nonmembers: int, max_fpr: float) -> bool:
    """Whether `n_nonmembers` can measure an FPR of `max_fpr`: it must allow one false positive.

    Below 1 / n_nonmembers the only admissible ROC point is FPR = 0, a stricter and different
    quantity (`tpr_at_zero_fpr`) that must not be reported under the looser name.
    """
    return max_fpr >= 1 / n_nonmembers


def _check_fpr(max_fpr: float) -> None:
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1], got {max_fpr}")


def _tpr_on_roc(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float, n_nonmembers: int) -> float:
    if not fpr_is_resolved(n_nonmembers, max_fpr):
        return float("nan")
    return float(tpr[fpr <= max_fpr].max())


def tpr_at_fpr(is_member: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Largest TPR among ROC points with FPR <= max_fpr: the attack's low-false-alarm power.

    NaN when max_fpr < 1 / (number of non-members): that FPR cannot be resolved.
    """
    _check_fpr(max_fpr)
    fpr, tpr, _ = roc_curve(is_member, scores)
    return _tpr_on_roc(fpr, tpr, max_fpr, np.count_nonzero(~np.asarray(is_member, dtype=bool)))


def tpr_at_zero_fpr(is_member: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of members scored strictly above every non-member: TPR with no false positive."""
    fpr, tpr, _ = roc_curve(is_member, scores)
    return float(tpr[fpr == 0].max())


def balanced_accuracy(is_member: np.ndarray, predicted_member: np.ndarray) -> float:
    """(TPR + TNR) / 2 of hard member predictions; 0.5 is chance whatever the class balance."""
    is_member, predicted_member = binary_problem(is_member, predicted_member)
    if not np.isin(predicted_member, (0, 1)).all():
        raise ValueError("predicted_member must be boolean (True = predicted member)")
    predicted = predicted_member.astype(bool)
    return float(_sklearn_metrics().balanced_accuracy_score(is_member, predicted))


def attack_metrics(
    is_member: np.ndarray, scores: np.ndarray, predicted_member: np.ndarray
) -> dict[str, float]:
    """The reported numbers of one attack (`ATTACK_METRICS`, in order): thresholded accuracy
    and advantage, plus the threshold-free AUC and TPR at 1%, 0.1% and 0 FPR of the scores."""
    attack_acc = balanced_accuracy(is_member, predicted_member)
    is_member, scores = membership_scores(is_member, scores)
    fpr, tpr, _ = roc_curve(is_member, scores)
    n_nonmembers = np.count_nonzero(~is_member)
    return {
        "attack_acc": attack_acc,
        "advantage": 2 * attack_acc - 1,
        "auc": roc_auc(is_member, scores),
        **{
            name: _tpr_on_roc(fpr, tpr, max_fpr, n_nonmembers)
            for name, max_fpr in TPR_AT_FPR.items()
        },
        "tpr_at_0fpr": float(tpr[fpr == 0].max()),
    }
