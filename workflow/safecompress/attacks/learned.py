"""Attacks that learn: classifiers trained on the shadow models' members and non-members."""

from __future__ import annotations

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .scores import confidence, softmax

NN_DECISION_PROBABILITY = 0.5


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
