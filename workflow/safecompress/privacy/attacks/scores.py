"""Per-sample quantities computed from logits and labels: the inputs of every attack.

Float64 numpy throughout; log-softmax keeps saturated outputs finite.
"""

from __future__ import annotations

import numpy as np

# log(max(p, LOG_FLOOR)) keeps saturated softmax outputs finite, as in Song & Mittal's code.
LOG_FLOOR = 1e-30
THRESHOLD_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")


def logit_matrix(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D (samples, classes) array, got shape {logits.shape}")
    return logits


def class_labels(labels: np.ndarray, n_samples: int, n_classes: int) -> np.ndarray:
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
    labels = class_labels(labels, *values.shape)
    return values[np.arange(len(values)), labels]


def _log(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values, LOG_FLOOR))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities, computed from max-shifted logits so large logits do not overflow."""
    return np.exp(_log_softmax(logit_matrix(logits)))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample loss -log p_y, via log-softmax so it stays finite when p_y underflows."""
    return -_at_labels(_log_softmax(logit_matrix(logits)), labels)


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
