import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from safecompress.privacy import bootstrap, metrics
from safecompress.privacy.attacks import reference
from safecompress.privacy.attacks import scores as signal_scores


def log_normal_cdf(x):
    return math.log(0.5 * (1 + math.erf(x / math.sqrt(2))))


# --- LiRA ---------------------------------------------------------------------------------


def test_logit_scaled_confidence_is_log_odds_and_stays_exact_when_saturated():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = np.array([1, 0])
    p = signal_scores.confidence(signal_scores.softmax(logits), labels)
    np.testing.assert_allclose(
        reference.logit_scaled_confidence(logits, labels), np.log(p / (1 - p)), rtol=1e-12
    )
    # p_y rounds to 1 (1 - p_y to 0) and to 0 here, yet phi is exact: +-1000.
    np.testing.assert_array_equal(
        reference.logit_scaled_confidence(np.array([[0.0, 1000.0], [0.0, 1000.0]]), [1, 0]),
        [1000.0, -1000.0],
    )


def two_class_logits(phi):
    """Logits [phi, 0] of label 0, whose phi is exactly `phi`."""
    phi = np.asarray(phi, dtype=float)
    return np.stack([phi, np.zeros_like(phi)], axis=-1)


# Two samples (label 0), three references. Target phi: 2 and 1. Reference phi: sample 0 gets
# 0, 1, 2 (mean 1, variance 1), sample 1 gets 1, 1, 4 (mean 2, variance 3).
LIRA_TARGET = two_class_logits([2.0, 1.0])
LIRA_LABELS = np.array([0, 0])
LIRA_REFERENCES = two_class_logits([[0.0, 1.0], [1.0, 1.0], [2.0, 4.0]])


def test_lira_hand_case_global_variance():
    # Three references are few: one pooled variance (1 + 3) / 2 = 2 for both samples.
    # z = (2 - 1) / sqrt 2 and (1 - 2) / sqrt 2.
    scores = reference.lira_offline(LIRA_TARGET, LIRA_LABELS, LIRA_REFERENCES)
    expected = [log_normal_cdf(1 / math.sqrt(2)), log_normal_cdf(-1 / math.sqrt(2))]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores[0] > scores[1]  # above its OUT mean: more member-like


def test_lira_hand_case_per_sample_variance(monkeypatch):
    monkeypatch.setattr(reference, "LIRA_PER_SAMPLE_VARIANCE_FROM", 3)
    # z = (2 - 1) / 1 and (1 - 2) / sqrt 3.
    scores = reference.lira_offline(LIRA_TARGET, LIRA_LABELS, LIRA_REFERENCES)
    np.testing.assert_allclose(
        scores, [log_normal_cdf(1.0), log_normal_cdf(-1 / math.sqrt(3))], rtol=1e-12
    )
    # fix_variance forces the pooled variance whatever the number of references.
    fixed = reference.lira_offline(LIRA_TARGET, LIRA_LABELS, LIRA_REFERENCES, fix_variance=True)
    np.testing.assert_allclose(
        fixed, [log_normal_cdf(1 / math.sqrt(2)), log_normal_cdf(-1 / math.sqrt(2))], rtol=1e-12
    )


def test_lira_scores_stay_finite_for_saturated_and_identical_references():
    target = two_class_logits([800.0, -800.0])
    same_references = two_class_logits([[0.0, 0.0], [0.0, 0.0]])  # zero variance
    scores = reference.lira_offline(target, np.array([0, 0]), same_references)
    assert np.isfinite(scores).all()
    assert scores[0] > scores[1]


def test_lira_input_errors():
    with pytest.raises(ValueError, match="2 or more references"):
        reference.lira_offline(LIRA_TARGET, LIRA_LABELS, LIRA_REFERENCES[:1])
    with pytest.raises(ValueError, match="reference_logits must have shape"):
        reference.lira_offline(LIRA_TARGET, LIRA_LABELS, LIRA_REFERENCES[:, :1])


# --- RMIA ---------------------------------------------------------------------------------


def test_rmia_hand_case():
    # a = 0.5: Pr(s) = (1.5 Pr_OUT(s) + 0.5) / 2 = 0.75 Pr_OUT(s) + 0.25.
    # x0: Pr_OUT 0.6 -> Pr 0.7,   ratio 0.9 / 0.7 = 9/7
    # x1: Pr_OUT 0.2 -> Pr 0.4,   ratio 0.2 / 0.4 = 1/2
    # z0: Pr_OUT 0.6 -> Pr 0.7,   ratio 0.5 / 0.7 = 5/7
    # z1: Pr_OUT 0.4 -> Pr 0.55,  ratio 0.8 / 0.55 = 16/11
    # z2: Pr_OUT 0.1 -> Pr 0.325, ratio 0.1 / 0.325 = 4/13
    target_x, ref_x = np.array([0.9, 0.2]), np.array([[0.5, 0.2], [0.6, 0.2], [0.7, 0.2]])
    target_z = np.array([0.5, 0.8, 0.1])
    ref_z = np.array([[0.6, 0.2, 0.1], [0.6, 0.4, 0.1], [0.6, 0.6, 0.1]])
    # LR(x0, z) = 9/5, 99/112, 117/28; LR(x1, z) = 7/10, 11/32, 13/8.
    gamma_1 = reference.rmia_offline(target_x, ref_x, target_z, ref_z, gamma=1.0, offline_a=0.5)
    np.testing.assert_allclose(gamma_1, [2 / 3, 1 / 3], rtol=1e-15)
    gamma_2 = reference.rmia_offline(target_x, ref_x, target_z, ref_z, gamma=2.0, offline_a=0.5)
    np.testing.assert_allclose(gamma_2, [1 / 3, 0.0], rtol=1e-15)


def test_rmia_matches_the_pairwise_formula_with_the_default_a():
    rng = np.random.default_rng(0)
    target_x, ref_x = rng.random(40), rng.random((3, 40))
    target_z, ref_z = rng.random(70), rng.random((3, 70))
    a = reference.RMIA_OFFLINE_A
    ratio_x = target_x / (((1 + a) * ref_x.mean(axis=0) + 1 - a) / 2)
    ratio_z = target_z / (((1 + a) * ref_z.mean(axis=0) + 1 - a) / 2)
    expected = np.mean(ratio_x[:, None] / ratio_z[None, :] > 1.0, axis=1)
    np.testing.assert_array_equal(
        reference.rmia_offline(target_x, ref_x, target_z, ref_z), expected
    )
    assert reference.RMIA_GAMMA == 1.0


def test_rmia_input_errors():
    probs, refs = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="same references"):
        reference.rmia_offline(probs, refs, probs, refs[:1])
    with pytest.raises(ValueError, match="ref_probs_x must have shape"):
        reference.rmia_offline(probs, refs[:, :1], probs, refs)
    with pytest.raises(ValueError, match="probabilities"):
        reference.rmia_offline(probs + 1, refs, probs, refs)
    with pytest.raises(ValueError, match="gamma"):
        reference.rmia_offline(probs, refs, probs, refs, gamma=0.0)


def pairwise_rmia_auc(probs, is_member, population, j, a):
    """RMIA's AUC with reference j as the target, from the definitions: Pr(s) the corrected mean
    over the other references OUT on s, LR(x, z) against every population z, the share of z
    with LR > 1, and the AUC as the share of member/non-member pairs ranked right (ties 1/2)."""
    others = [k for k in range(len(probs)) if k != j]

    def ratio(i):
        out = [probs[k, i] for k in others if not is_member[k, i] and not np.isnan(probs[k, i])]
        return probs[j, i] / (((1 + a) * np.mean(out) + 1 - a) / 2) if out else None

    z = [ratio(i) for i in np.flatnonzero(population)]
    scores = {}
    for i in np.flatnonzero(~population & ~np.isnan(probs[j])):
        r = ratio(i)
        if r is not None:
            scores[i] = np.mean([r / rz > 1 for rz in z])
    members = [s for i, s in scores.items() if is_member[j, i]]
    nonmembers = [s for i, s in scores.items() if not is_member[j, i]]
    pairs = [(m > n) + 0.5 * (m == n) for m in members for n in nonmembers]
    return np.mean(pairs)


def test_rmia_a_is_tuned_on_the_references_as_each_one_plays_the_target():
    rng = np.random.default_rng(3)
    n_refs, n = 4, 60
    is_member = rng.random((n_refs, n)) < 0.5
    population = np.zeros(n, dtype=bool)
    population[-15:] = True
    is_member[:, population] = False
    difficulty = rng.random(n)  # members memorised: their probability pulled towards 1
    probs = np.clip(difficulty + rng.normal(0, 0.1, (n_refs, n)), 0.01, 0.99)
    probs = np.where(is_member, 1 - 0.3 * (1 - probs), probs)
    probs[1, :5] = np.nan  # reference 1's own held-out data: no signal there
    a, mean_auc = reference.tune_rmia_offline_a(probs, is_member, population)
    expected = [
        np.mean([pairwise_rmia_auc(probs, is_member, population, j, g) for j in range(n_refs)])
        for g in reference.RMIA_A_GRID
    ]
    np.testing.assert_allclose(mean_auc, expected, rtol=1e-12)
    assert a == reference.RMIA_A_GRID[int(np.argmax(expected))]
    assert mean_auc.max() > 0.6  # the members' pull is found


def test_rmia_a_untuned_with_one_reference_and_errors():
    probs, is_member, population = np.full((1, 4), 0.5), np.zeros((1, 4), bool), np.ones(4, bool)
    a, mean_auc = reference.tune_rmia_offline_a(probs, is_member, population)
    assert a == reference.RMIA_OFFLINE_A and np.isnan(mean_auc).all()
    with pytest.raises(ValueError, match="none train on it"):
        reference.tune_rmia_offline_a(np.full((2, 4), 0.5), np.ones((2, 4), bool), population)
    with pytest.raises(ValueError, match="must be"):
        reference.tune_rmia_offline_a(np.full((2, 4), 0.5), np.ones((2, 3), bool), population)


# --- Known answers on real models ---------------------------------------------------------

N_PER_SET = 200  # members; also non-members, and each reference model's training set
N_REFERENCES = 4
LABEL_NOISE = 0.2


def train_mlp(features, labels, seed):
    """A wide MLP trained full-batch to near-zero loss, no weight decay: it memorises."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(features.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(500):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def memorising():
    """Digits with 20% of the labels flipped, so the flipped members can only be fitted by
    memorising them: a target trained on 200 members, 200 unseen non-members, and K = 4
    offline references trained the same way on disjoint attacker draws of 200."""
    images, labels = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flipped = rng.random(len(labels)) < LABEL_NOISE
    labels = np.where(flipped, (labels + rng.integers(1, 10, len(labels))) % 10, labels)
    order = rng.permutation(len(labels))
    members, nonmembers = order[:N_PER_SET], order[N_PER_SET : 2 * N_PER_SET]
    attacker = order[2 * N_PER_SET :]
    reference_sets = np.split(attacker[: N_REFERENCES * N_PER_SET], N_REFERENCES)
    population = attacker[N_REFERENCES * N_PER_SET :]  # no model trained on these
    features = torch.tensor(images / 16.0, dtype=torch.float32)
    targets = torch.tensor(labels)

    def outputs(model, idx):
        with torch.no_grad():
            return model(features[idx]).double().numpy()

    # Tiny matrices: one thread is fastest, and spares the cores other tests share.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        target = train_mlp(features[members], targets[members], seed=0)
        references = [
            train_mlp(features[idx], targets[idx], seed=k + 1)
            for k, idx in enumerate(reference_sets)
        ]
    finally:
        torch.set_num_threads(threads)
    evaluated = np.r_[members, nonmembers]
    eval_labels, population_labels = labels[evaluated], labels[population]
    target_logits = outputs(target, evaluated)
    reference_logits = np.stack([outputs(model, evaluated) for model in references])

    def true_class_probability(logits, labels):
        return signal_scores.confidence(signal_scores.softmax(logits), labels)

    rmia = reference.rmia_offline(
        true_class_probability(target_logits, eval_labels),
        np.stack([true_class_probability(logits, eval_labels) for logits in reference_logits]),
        true_class_probability(outputs(target, population), population_labels),
        np.stack(
            [
                true_class_probability(outputs(model, population), population_labels)
                for model in references
            ]
        ),
    )
    scores = {
        "lira": reference.lira_offline(target_logits, eval_labels, reference_logits),
        "rmia": rmia,
        **{
            attack: signal_scores.membership_score(attack, target_logits, eval_labels)
            for attack in signal_scores.THRESHOLD_ATTACKS
        },
    }
    is_member = np.r_[np.ones(N_PER_SET, bool), np.zeros(N_PER_SET, bool)]
    return is_member, scores


@pytest.mark.slow
def test_reference_attacks_beat_the_loss_attack_at_low_fpr(memorising):
    """LiRA's point (Carlini et al.): a per-sample calibrated attack finds the memorised
    members at low FPR, where a global loss threshold is swamped by easy non-members. 200
    non-members resolve 1% FPR (2 false positives)."""
    is_member, scores = memorising
    loss_tpr = metrics.tpr_at_fpr(is_member, scores["loss"], 0.01)
    for attack in ("lira", "rmia"):
        tpr = metrics.tpr_at_fpr(is_member, scores[attack], 0.01)
        assert tpr >= max(3 * loss_tpr, loss_tpr + 0.05), (attack, tpr, loss_tpr)


def test_memorising_target_lira_auc_interval_excludes_chance(memorising):
    is_member, scores = memorising
    lira = scores["lira"]
    result = bootstrap.metric_intervals(is_member, lira, lira >= np.median(lira), 1000, seed=0)
    assert result["auc_ci_low"] > 0.5


def test_null_case_every_auc_interval_contains_chance(memorising):
    """'Members' and 'non-members' both drawn from data no model trained on: the target's
    non-members, split at random in two. No attack may claim to tell them apart."""
    is_member, scores = memorising
    unseen = ~is_member
    fake_member = np.random.default_rng(1).permutation(np.count_nonzero(unseen)) % 2 == 0
    for attack, attack_scores in scores.items():
        null_scores = attack_scores[unseen]
        predicted = null_scores >= np.median(null_scores)
        result = bootstrap.metric_intervals(fake_member, null_scores, predicted, 1000, seed=0)
        assert result["auc_ci_low"] <= 0.5 <= result["auc_ci_high"], attack
