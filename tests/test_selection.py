"""The safety test's leakage scores and their standard errors, and the selection's ranking."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from safecompress.compression.safety import (
    SAFETY_SCORES,
    SafetyTest,
    best_threshold_advantage,
    loss_auc,
    loss_gap,
    loss_gradients,
    loss_tail,
    selection_score,
)
from safecompress.compression.updates import rank, survivors
from safecompress.data.splits import Samples
from safecompress.privacy.attacks.threshold import fit_threshold
from safecompress.privacy.metrics import attack_metrics


def delong_by_hand(member_loss, nonmember_loss):
    """AUC of -loss and DeLong's variance from the O(m n) kernel, as in DeLong et al. 1988."""
    kernel = (nonmember_loss[None, :] > member_loss[:, None]) + 0.5 * (
        nonmember_loss[None, :] == member_loss[:, None]
    )
    v_members, v_nonmembers = kernel.mean(1), kernel.mean(0)
    variance = v_members.var(ddof=1) / len(v_members) + v_nonmembers.var(ddof=1) / len(v_nonmembers)
    return kernel.mean(), np.sqrt(variance)


def losses(seed, shift, m=60, n=80):
    rng = np.random.default_rng(seed)
    members = np.round(rng.exponential(1.0, m) * (1 - shift), 1)  # rounded: ties happen
    return members, np.round(rng.exponential(1.0, n), 1)


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_loss_auc_and_its_standard_error_match_sklearn_and_delong(shift):
    members, nonmembers = losses(0, shift)
    leakage = loss_auc(members, nonmembers)
    is_member = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    auc = roc_auc_score(is_member, -np.r_[members, nonmembers])
    assert leakage.value == pytest.approx(2 * auc - 1)
    auc_by_hand, se_by_hand = delong_by_hand(members, nonmembers)
    assert auc_by_hand == pytest.approx(auc)
    assert leakage.se == pytest.approx(2 * se_by_hand)


def test_loss_gap_and_its_standard_error_by_hand():
    members, nonmembers = np.array([0.1, 0.3, 0.2]), np.array([1.0, 0.5])
    leakage = loss_gap(members, nonmembers)
    assert leakage.value == pytest.approx(0.75 - 0.2)
    assert leakage.se == pytest.approx(np.sqrt(0.01 / 3 + 0.125 / 2))


def test_loss_tail_by_hand():
    """fpr 0.5, held-out losses 1..4: placements 0, 0.25, 0.5 give weights 1, 0.5, 0;
    mean 0.5, less 0.25, scaled by 1 / 0.75."""
    leakage = loss_tail(np.array([0.5, 1.5, 2.5]), np.array([1.0, 2.0, 3.0, 4.0]), fpr=0.5)
    assert leakage.value == pytest.approx((0.5 - 0.25) / 0.75)
    np.testing.assert_allclose(leakage.member_terms, [1.0, 0.5, 0.0])
    # the tail members are 0.5 (P 0) and 1.5 (P 0.25); a held-out sample's term is
    # -(sum over them of [l_n <= l_m] - P_m) / (fpr x 3 members)
    np.testing.assert_allclose(
        leakage.nonmember_terms, [-(0 + 0.75) / 1.5, -(0 + -0.25) / 1.5, 0.25 / 1.5, 0.25 / 1.5]
    )
    assert loss_tail(np.zeros(5), np.ones(5)).value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="fpr"):
        loss_tail(np.zeros(5), np.ones(5), fpr=0.0)


def test_loss_tail_standard_error_matches_the_bootstrap():
    """The influence terms' standard error is the spread of the score over resampled
    members and held-out samples, to within the bootstrap's own noise."""
    rng = np.random.default_rng(5)
    members, nonmembers = rng.exponential(0.7, 400), rng.exponential(1.0, 400)
    boot = [
        loss_tail(rng.choice(members, 400), rng.choice(nonmembers, 400)).value for _ in range(2000)
    ]
    assert loss_tail(members, nonmembers).se == pytest.approx(np.std(boot), rel=0.15)


@pytest.mark.parametrize("score", [loss_auc, loss_gap, loss_tail])
def test_paired_standard_error_sees_small_differences_on_the_same_samples(score):
    """Two candidates scored on the same samples share most of their noise: the paired SE
    of their difference is far below either's own SE, and a difference of none is exact."""
    rng = np.random.default_rng(1)
    members, nonmembers = rng.exponential(0.5, 300), rng.exponential(1.0, 300)
    a = score(members, nonmembers)
    b = score(members * (1 + 0.05 * rng.standard_normal(300)), nonmembers)
    assert a.diff_se(a) == 0.0
    assert 0 < a.diff_se(b) < 0.5 * min(a.se, b.se)


def test_no_leakage_scores_near_zero_within_its_standard_error():
    rng = np.random.default_rng(2)
    for score in (loss_auc, loss_gap, loss_tail):
        leakage = score(rng.exponential(1.0, 500), rng.exponential(1.0, 500))
        assert abs(leakage.value) < 3 * leakage.se


def test_rank_is_best_first_and_random_among_ties():
    scores = [0.5, 0.9, 0.9, 0.1, 0.9]
    firsts = set()
    for seed in range(40):
        order = rank(scores, torch.Generator().manual_seed(seed))
        assert sorted(order) == list(range(5))
        assert [scores[i] for i in order] == sorted(scores, reverse=True)
        firsts.add(order[0])
    assert firsts == {1, 2, 4}  # every tied candidate wins sometimes


# Candidates 0-3 best first as 2, 1, 0, 3; candidate 2's score is ahead of the first's
# (DST's own update, 0) by 3 paired standard errors, at 4 points of held-out accuracy.
ORDER = [2, 1, 0, 3]
Z = {0: 0.0, 1: 1.0, 2: 3.0, 3: -1.0}
ACCURACY = {0: 0.80, 1: 0.81, 2: 0.76, 3: 0.80}


def test_survivors_without_a_bar_are_the_better_half_then_the_best():
    assert survivors(ORDER, Z, ACCURACY, last=False) == [2, 1]
    assert survivors([2, 1], Z, ACCURACY, last=True) == [2]


def test_the_first_candidate_goes_on_and_is_replaced_only_on_evidence():
    assert survivors(ORDER, Z, ACCURACY, last=False, min_z=2.0) == [2, 1, 0]
    assert survivors([2, 1, 0], Z, ACCURACY, last=True, min_z=2.0) == [2]
    assert survivors([2, 1, 0], Z, ACCURACY, last=True, min_z=4.0) == [0]
    assert survivors([1, 0], Z, ACCURACY, last=True, min_z=2.0) == [0]


@pytest.mark.parametrize(("drop", "kept"), [(0.05, 2), (0.04, 2), (0.039, 0), (0.0, 0)])
def test_an_accuracy_floor_refuses_a_candidate_that_buys_leakage_with_accuracy(drop, kept):
    """A 4-point accuracy loss is allowed at a floor of 4 points or more (0.80 - 0.76 is not
    exactly 0.04 in floating point), refused below; the floor alone keeps the first in the
    race."""
    assert survivors(ORDER, Z, ACCURACY, last=False, max_acc_drop=drop) == [2, 1, 0]
    assert survivors([2, 1, 0], Z, ACCURACY, last=True, min_z=2.0, max_acc_drop=drop) == [kept]


def memorising_model():
    """A model that fits 64 random-label members far better than 64 other samples."""
    torch.manual_seed(0)
    x, y = torch.randn(128, 10), torch.randint(0, 4, (128,))
    model = nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
        optimizer.step()
    return model, Samples(x[:64], y[:64]), Samples(x[64:], y[64:])


@pytest.mark.slow
@pytest.mark.parametrize("score, n_se", [("loss_auc", 5), ("loss_gap", 5), ("loss_tail", 1.5)])
def test_safety_test_finds_a_memorising_model_leaky(score, n_se):
    """The tail score rests on the 6 held-out samples in the tail of 64: less resolved."""
    model, members, nonmembers = memorising_model()
    result, leakage, selection = SafetyTest(score, members, nonmembers).run(model, 2.0)
    assert result["leakage"] == leakage.value > n_se * result["leakage_se"] > 0
    assert 0 <= result["val_acc"] <= 1 and "auc" in result and "advantage" in result
    assert result["score"] == selection.value == result["val_acc"] - 2.0 * leakage.value


def test_selection_score_standard_error_by_hand():
    """val_acc - w x leakage, linearised: accuracy's terms join the leakage's non-member
    terms; a candidate against itself differs by exactly nothing."""
    members, nonmembers = np.array([0.1, 0.3, 0.2]), np.array([1.0, 0.5])
    correct = np.array([1.0, 0.0])
    leakage = loss_gap(members, nonmembers)
    score = selection_score(correct, leakage, 2.0)
    assert score.value == pytest.approx(0.5 - 2.0 * 0.55)
    by_hand = np.sqrt(
        np.var(-2 * -members, ddof=1) / 3 + np.var(correct - 2 * nonmembers, ddof=1) / 2
    )
    assert score.se == pytest.approx(by_hand)
    assert score.diff_se(score) == 0.0


@pytest.mark.parametrize("score", ["loss_auc", "loss_gap"])
def test_two_sided_leakage_is_the_distance_from_none(score):
    """Members that fit worse than the held-out data leak as much as members that fit better
    by as much: one-sided, a candidate is rewarded for unfitting its members (what a
    destructive leakage prune does); two-sided it is not. The standard errors are the
    signed score's."""
    members, nonmembers = losses(0, 0.4)
    better = SAFETY_SCORES[score](members, nonmembers)  # members fit better: leakage > 0
    worse = SAFETY_SCORES[score](nonmembers, members)  # the mirror: members fit worse
    assert better.value > 0 > worse.value
    assert worse.absolute().value == -worse.value and better.absolute().value == better.value
    assert worse.absolute().se == pytest.approx(worse.se)
    assert worse.absolute().diff_se(worse) == pytest.approx(2 * worse.se)  # its negative
    model, samples, others = memorising_model()
    # the test's members are the held-out samples here: the model fits them worse
    signed = SafetyTest(score, others, samples).run(model, 1.0)[1]
    two_sided = SafetyTest(score, others, samples, two_sided=True).run(model, 1.0)[1]
    assert signed.value < 0 and two_sided.value == -signed.value


def test_safety_test_refuses_an_unknown_score():
    with pytest.raises(ValueError, match="unknown safety score"):
        SafetyTest("telepathy", Samples(torch.zeros(2, 1), torch.zeros(2).long()), None)


@pytest.mark.slow
def test_loss_gradients_are_the_mean_loss_gradient_and_leave_grad_alone():
    model, members, _ = memorising_model()
    weights = {"0": model[0].weight, "2": model[2].weight}
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads = loss_gradients(model, members, weights, chunk=10)  # several chunks
    assert all(torch.all(p.grad == 7.0) for p in model.parameters())
    model.zero_grad()
    nn.functional.cross_entropy(model(members.x), members.y).backward()
    for name, weight in weights.items():
        assert torch.allclose(grads[name], weight.grad, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, 0.4])
def test_logged_advantage_is_the_fitted_loss_threshold_attacks(shift):
    members, nonmembers = losses(3, shift)
    score = -np.r_[members, nonmembers]  # the loss attack's: a lower loss flags a member
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    fitted = attack_metrics(is_member, score, score >= fit_threshold(score, is_member))
    assert best_threshold_advantage(members, nonmembers) == pytest.approx(fitted["advantage"])
