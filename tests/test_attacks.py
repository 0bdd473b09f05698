import math

import numpy as np
import pandas as pd
import pytest

from safecompress.privacy import attacks
from safecompress.privacy.attacks import learned
from safecompress.privacy.attacks import scores as signal_scores
from safecompress.privacy.attacks import threshold as thresholds_mod
from safecompress.privacy.metrics import ATTACK_METRICS, attack_metrics

METRIC_KEYS = list(ATTACK_METRICS)


def signal_frame(seed, n_per_set, n_classes, member_margin, nonmember_margin, shadow=None):
    """Synthetic signals table: the true-class logit is raised by a per-set margin, so a larger
    member margin means members get a lower loss than non-members."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, margin in (("member", member_margin), ("non-member", nonmember_margin)):
        labels = rng.integers(0, n_classes, n_per_set)
        logits = rng.normal(size=(n_per_set, n_classes))
        logits[np.arange(n_per_set), labels] += margin
        part = pd.DataFrame({"set": name, "label": labels})
        part["loss"] = signal_scores.cross_entropy(logits, labels)
        for c in range(n_classes):
            part[f"logit_{c}"] = logits[:, c]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "index", np.arange(len(frame)) + 1000 * seed)
    if shadow is not None:
        frame.insert(0, "shadow", shadow)
    return frame


def leaky_signals(seed, n_classes=4, n_per_set=400):
    """(target, shadow) signals of an overfit model: members get clearly lower loss."""
    target = signal_frame(seed, n_per_set, n_classes, member_margin=4.0, nonmember_margin=1.0)
    shadow = signal_frame(seed + 1, n_per_set, n_classes, 4.0, 1.0, shadow=0)
    return target, shadow


# --- Signals ------------------------------------------------------------------------------


def test_softmax_matches_formula_and_is_stable():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(signal_scores.softmax(logits), expected, rtol=1e-12)
    np.testing.assert_allclose(signal_scores.softmax(np.array([[1000.0, 0.0]])), [[1.0, 0.0]])


def test_cross_entropy_is_minus_log_true_class_probability():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = np.array([0, 2])
    probs = signal_scores.softmax(logits)
    np.testing.assert_allclose(
        signal_scores.cross_entropy(logits, labels), -np.log(probs[[0, 1], labels]), rtol=1e-12
    )
    # p_y underflows to 0 here, yet the loss stays exact.
    assert signal_scores.cross_entropy(np.array([[0.0, 1000.0]]), np.array([0]))[0] == 1000.0


def test_confidence_and_entropy():
    probs = np.array([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(signal_scores.confidence(probs, np.array([2, 1])), [0.25, 1.0])
    np.testing.assert_allclose(signal_scores.entropy(probs), [math.log(4), 0.0], atol=1e-12)


def test_modified_entropy_matches_hand_formula_for_three_classes():
    probs = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    labels = np.array([0, 1])
    expected = [
        -0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9),
        -0.8 * math.log(0.2) - 0.7 * math.log(0.3) - 0.1 * math.log(0.9),
    ]
    np.testing.assert_allclose(signal_scores.modified_entropy(probs, labels), expected, rtol=1e-12)


def test_modified_entropy_is_zero_when_confident_and_right_and_finite_when_wrong():
    probs = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    result = signal_scores.modified_entropy(probs, np.array([0, 1]))
    assert result[0] == 0.0
    assert np.isfinite(result[1]) and result[1] > 60  # -log(LOG_FLOOR) = 69, not inf


@pytest.mark.parametrize("metric", signal_scores.THRESHOLD_ATTACKS)
def test_scores_are_higher_for_low_loss_members(metric):
    target, _ = leaky_signals(seed=0)
    logits = target.filter(like="logit_").to_numpy()
    scores = signal_scores.membership_score(metric, logits, target["label"].to_numpy())
    is_member = (target["set"] == "member").to_numpy()
    assert scores[is_member].mean() > scores[~is_member].mean()


def test_loss_score_is_minus_loss():
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 0])
    np.testing.assert_array_equal(
        signal_scores.membership_score("loss", logits, labels),
        -signal_scores.cross_entropy(logits, labels),
    )


def test_unknown_metric_names_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown metric 'nn'; valid metrics: loss, confidence"):
        signal_scores.membership_score("nn", np.zeros((2, 3)), np.array([0, 1]))


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        signal_scores.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


# --- Thresholds ---------------------------------------------------------------------------


def test_fit_threshold_separates_a_separable_case():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    is_member = np.array([False, False, False, True, True, True])
    threshold = thresholds_mod.fit_threshold(scores, is_member)
    assert threshold == 2.5
    np.testing.assert_array_equal(scores >= threshold, is_member)


def test_fit_threshold_uses_the_best_balanced_accuracy_not_plain_accuracy():
    # One member among many non-members: plain accuracy would flag nobody.
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    is_member = np.array([False, False, False, True, False, False, False, False, False, False])
    assert thresholds_mod.fit_threshold(scores, is_member) == 1.5


def test_fit_threshold_without_signal_flags_nobody():
    # Members score lower: no threshold beats chance; ties go to the highest threshold, +inf.
    scores = np.array([0.0, 1.0, 2.0, 3.0])
    assert thresholds_mod.fit_threshold(scores, np.array([True, True, False, False])) == np.inf


def test_fit_threshold_between_adjacent_floats_keeps_the_lower_one_out():
    scores = np.array([1.0, np.nextafter(1.0, 2.0)])
    is_member = np.array([False, True])
    np.testing.assert_array_equal(
        scores >= thresholds_mod.fit_threshold(scores, is_member), is_member
    )


def test_class_thresholds_fit_each_class_and_fall_back_for_small_classes():
    rng = np.random.default_rng(0)
    # Class 0 separates at 9.5, class 1 at 0.5: no single threshold does both.
    labels = np.repeat([0, 0, 1, 1], 20)
    is_member = np.tile(np.repeat([True, False], 20), 2)
    scores = np.r_[np.full(20, 10.0), np.full(20, 9.0), np.full(20, 1.0), np.full(20, 0.0)]
    scores += rng.uniform(-0.1, 0.1, len(scores))
    # Class 2 has 3 members and 3 non-members: too few, it gets the global threshold.
    labels = np.r_[labels, np.full(6, 2)]
    is_member = np.r_[is_member, [True] * 3 + [False] * 3]
    scores = np.r_[scores, [0.0] * 3 + [10.0] * 3]

    thresholds = thresholds_mod.fit_class_thresholds(scores, labels, is_member, n_classes=3)
    global_threshold = thresholds_mod.fit_threshold(scores, is_member)
    assert 9.1 < thresholds[0] < 9.9
    assert 0.1 < thresholds[1] < 0.9
    assert thresholds[2] == global_threshold
    predicted = thresholds_mod.predict_with_thresholds(scores, labels, thresholds)
    np.testing.assert_array_equal(predicted[:80], is_member[:80])


def test_class_threshold_minimum_is_configurable():
    scores = np.array([1.0, 0.0, 1.0, 0.0])
    labels = np.array([0, 0, 1, 1])
    is_member = np.array([True, False, False, True])  # class 1 is reversed
    per_class = thresholds_mod.fit_class_thresholds(scores, labels, is_member, 2, min_per_class=1)
    np.testing.assert_array_equal(per_class, [0.5, np.inf])
    pooled = thresholds_mod.fit_class_thresholds(scores, labels, is_member, 2)
    assert pooled[0] == pooled[1] == thresholds_mod.fit_threshold(scores, is_member)


# --- NN attack ----------------------------------------------------------------------------


def test_nn_attack_features_are_top3_and_true_class_probability():
    logits = np.log(np.array([[0.1, 0.5, 0.15, 0.25], [0.7, 0.1, 0.1, 0.1]]))
    features = learned.nn_attack_features(logits, np.array([0, 0]))
    np.testing.assert_allclose(features, [[0.5, 0.25, 0.15, 0.1], [0.7, 0.1, 0.1, 0.7]])


def test_nn_attack_features_pad_binary_tasks_with_zero():
    features = learned.nn_attack_features(np.log(np.array([[0.2, 0.8]])), np.array([0]))
    np.testing.assert_allclose(features, [[0.8, 0.2, 0.0, 0.2]])


def test_nn_attack_learns_membership_from_shadow_features():
    target, shadow = leaky_signals(seed=0)

    def features_and_membership(frame):
        logits = frame.filter(like="logit_").to_numpy()
        features = learned.nn_attack_features(logits, frame["label"].to_numpy())
        return features, (frame["set"] == "member").to_numpy()

    classifier = learned.fit_nn_attack(*features_and_membership(shadow), seed=0)
    features, is_member = features_and_membership(target)
    probability = learned.nn_member_probability(classifier, features)
    assert probability[is_member].mean() > probability[~is_member].mean() + 0.2


# --- run_attacks --------------------------------------------------------------------------


def reference_logits(target, margin, k, seed):
    """(k, n, C) logits of k OUT reference models on the target's samples: each sample's
    true-class logit raised by the non-member `margin`."""
    labels = target["label"].to_numpy()
    n, n_classes = len(labels), target.filter(like="logit_").shape[1]
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, n, n_classes))
    logits[:, np.arange(n), labels] += margin
    return logits


def run(target, shadow, names, seed=0, reference_margin=1.0, adversaries=None):
    """run_attacks on signal tables, as the attack step calls it: (metrics, scores) tables.
    References are OUT models; the population is the shadow models' non-members; features
    (white-box) are noise, so the white-box attack reads the logits and loss only."""
    rng = np.random.default_rng(seed + 11)
    target_signals = attacks.read_signals(target, "target", rng.normal(size=(len(target), 8)))
    shadow_signals = attacks.read_signals(shadow, "shadow", rng.normal(size=(len(shadow), 8)))
    out = ~shadow_signals.is_member
    probability = signal_scores.confidence(
        signal_scores.softmax(shadow_signals.logits[out]), shadow_signals.labels[out]
    )
    inputs = attacks.AttackInputs(
        target=target_signals,
        shadow=shadow_signals,
        references=reference_logits(target, reference_margin, 2, seed + 7),
        population=attacks.Population(
            shadow_signals.logits[out], shadow_signals.labels[out], probability
        ),
        adversaries=adversaries or {},
    )
    results = attacks.run_attacks(inputs, names, seed)
    scores = target[["index", "set", "label"]].reset_index(drop=True)
    rows = []
    for name, (score, predicted) in results.items():
        scores[f"score_{name}"] = score
        scores[f"pred_{name}"] = predicted.astype(int)
        rows.append({"attack": name, **attack_metrics(inputs.target.is_member, score, predicted)})
    return pd.DataFrame(rows), scores


@pytest.mark.slow
def test_learned_attacks_use_a_given_adversary_and_fit_the_same_one_without():
    """The workflow fits nasr and whitebox once per seed and passes them in, and steps.attack
    fits every learned attacker once for the evaluated samples and the canaries; without them
    the attack fits the same attackers on the shadow signals (same seed): the scores agree."""
    target, shadow = leaky_signals(seed=0)
    names = list(attacks.FIT_ADVERSARY)
    _, fitted_here = run(target, shadow, names, seed=0)
    rng = np.random.default_rng(11)  # the features run() draws for the shadow signals
    rng.normal(size=(len(target), 8))
    shadow_signals = attacks.read_signals(shadow, "shadow", rng.normal(size=(len(shadow), 8)))
    given = {name: attacks.FIT_ADVERSARY[name](shadow_signals, 0) for name in names}
    _, with_given = run(target, shadow, names, seed=0, adversaries=given)
    pd.testing.assert_frame_equal(with_given, fitted_here)
    untrained = {"nasr": learned.NasrAdversary(shadow_signals.logits.shape[1]).eval()}
    _, with_untrained = run(target, shadow, ["nasr"], seed=0, adversaries=untrained)
    assert not np.array_equal(with_untrained["score_nasr"], fitted_here["score_nasr"])


@pytest.mark.slow
def test_run_attacks_detects_members_with_lower_loss():
    target, shadow = leaky_signals(seed=0)
    metrics, scores = run(target, shadow, list(attacks.ATTACKS), seed=0)

    assert list(metrics.columns) == ["attack", *METRIC_KEYS]
    assert list(metrics["attack"]) == list(attacks.ATTACKS)
    by_attack = metrics.set_index("attack")
    assert by_attack.loc["loss", "auc"] > 0.8
    assert (by_attack["auc"] > 0.75).all()
    assert (by_attack["attack_acc"] > 0.65).all()
    np.testing.assert_allclose(by_attack["advantage"], 2 * by_attack["attack_acc"] - 1)

    score_columns = [f"{kind}_{a}" for a in attacks.ATTACKS for kind in ("score", "pred")]
    assert list(scores.columns) == ["index", "set", "label", *score_columns]
    pd.testing.assert_frame_equal(
        scores[["index", "set", "label"]], target[["index", "set", "label"]]
    )
    for attack in attacks.ATTACKS:
        assert set(scores[f"pred_{attack}"]) <= {0, 1}


@pytest.mark.slow
def test_run_attacks_without_membership_signal_is_near_chance():
    target = signal_frame(0, 1000, 4, member_margin=2.0, nonmember_margin=2.0)
    shadow = signal_frame(1, 1000, 4, 2.0, 2.0, shadow=0)
    metrics, _ = run(target, shadow, list(attacks.ATTACKS), seed=0)
    assert np.abs(metrics["auc"] - 0.5).max() < 0.06
    assert np.abs(metrics["attack_acc"] - 0.5).max() < 0.06


def test_run_attacks_metric_scores_match_membership_score():
    target, shadow = leaky_signals(seed=2)
    _, scores = run(target, shadow, ["modified_entropy"], seed=0)
    logits = target.filter(like="logit_").to_numpy()
    expected = signal_scores.membership_score(
        "modified_entropy", logits, target["label"].to_numpy()
    )
    np.testing.assert_array_equal(scores["score_modified_entropy"], expected)


@pytest.mark.slow
def test_run_attacks_never_reads_the_target_membership():
    target, shadow = leaky_signals(seed=0)
    shuffled = target.assign(set=np.random.default_rng(0).permutation(target["set"].to_numpy()))
    _, scores = run(target, shadow, list(attacks.ATTACKS), seed=0)
    _, shuffled_scores = run(shuffled, shadow, list(attacks.ATTACKS), seed=0)
    columns = scores.columns.drop("set")
    pd.testing.assert_frame_equal(scores[columns], shuffled_scores[columns])


def test_run_attacks_calibrates_on_the_shadow_models():
    # Shadow members have the HIGHER loss: calibrated there, the attacks cannot beat chance
    # on the target, although its scores still rank members first (AUC).
    target, _ = leaky_signals(seed=0)
    reversed_shadow = signal_frame(1, 400, 4, member_margin=1.0, nonmember_margin=4.0, shadow=0)
    metrics, _ = run(target, reversed_shadow, ["nn", "loss"], seed=0)
    by_attack = metrics.set_index("attack")
    assert by_attack.loc["loss", "auc"] > 0.8
    assert (by_attack["attack_acc"] <= 0.5).all()


def test_run_attacks_reads_logit_columns_by_class_number():
    target, shadow = leaky_signals(seed=0, n_classes=12, n_per_set=200)
    reordered = target[list(reversed(target.columns))]  # logit_11 ... logit_10, logit_1, logit_0
    expected, _ = run(target, shadow, ["entropy", "modified_entropy"], seed=0)
    result, _ = run(reordered, shadow, ["entropy", "modified_entropy"], seed=0)
    pd.testing.assert_frame_equal(result, expected)


@pytest.mark.parametrize(
    ("attack_names", "message"),
    [
        (["loss", "shokri"], r"unknown: \['shokri'\]"),
        ([], "attacks must be distinct names"),
        (["loss", "loss"], "attacks must be distinct names"),
    ],
)
def test_run_attacks_rejects_bad_attack_lists(attack_names, message):
    target, shadow = leaky_signals(seed=0, n_per_set=20)
    with pytest.raises(ValueError, match=message):
        run(target, shadow, attack_names, seed=0)


def test_run_attacks_rejects_malformed_signals():
    target, shadow = leaky_signals(seed=0, n_per_set=20)
    with pytest.raises(ValueError, match=r"target signals lack column\(s\) \['label'\]"):
        run(target.drop(columns="label"), shadow, ["loss"], seed=0)
    with pytest.raises(ValueError, match=r"shadow signals lack column\(s\) \['logit_1'\]"):
        run(target, shadow.drop(columns="logit_1"), ["loss"], seed=0)
    with pytest.raises(ValueError, match="target signals have no logit_<class> columns"):
        run(target.filter(regex="^[^l]|label"), shadow, ["loss"], seed=0)
    with pytest.raises(ValueError, match=r"column set has \['train'\]"):
        run(target.replace({"set": {"member": "train"}}), shadow, ["loss"], seed=0)
    with pytest.raises(ValueError, match="need both 'member' and 'non-member' rows"):
        run(target, shadow[shadow["set"] == "member"], ["loss"], seed=0)


def test_run_attacks_rejects_mismatched_logit_columns():
    target, _ = leaky_signals(seed=0, n_classes=3, n_per_set=20)
    _, shadow = leaky_signals(seed=0, n_classes=4, n_per_set=20)
    with pytest.raises(ValueError, match="target has 3 logit columns but shadow has 4"):
        run(target, shadow, ["loss"], seed=0)
