"""Adversarial regularisation (TSE SafeCompress, after Nasr et al. 2018): the term's sign, the
white-box path, its effect on an overfit model, determinism and exact resumption."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from safecompress.compression.adversarial import AdversarialRegularizer
from safecompress.config.specs import TrainSpec
from safecompress.data.batches import TrainBatches
from safecompress.data.splits import Samples
from safecompress.privacy.features import penultimate_features
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import forward
from safecompress.training.loop import Callback, fit, seed_everything, train_step
from safecompress.training.models import build_model

CPU = torch.device("cpu")
# An overfit case: 100 members, no weight decay, many epochs (train accuracy 1.0, loss-attack
# AUC ~0.67 against held-out non-members).
OVERFIT = TrainSpec(
    epochs=60,
    batch_size=32,
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.0,
    milestones=(0.5, 0.75),
    gamma=0.1,
)

# Small models: one thread is as fast, and spares the cores others share.
pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass(frozen=True)
class Sets:
    members: Samples  # what the model trains on
    reference: Samples  # the defender's non-members: the attackers' training data
    heldout: Samples  # non-members nobody trains on: judge and test set


def digits_sets(seed: int, n_members: int = 100) -> Sets:
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    cut = (n_members, n_members + 300, n_members + 800)
    parts = order[: cut[0]], order[cut[0] : cut[1]], order[cut[1] : cut[2]]
    return Sets(*(Samples(x[rows], y[rows]) for rows in parts))


@pytest.fixture(scope="module")
def sets():
    return digits_sets(0)


def new_model(seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model({"arch": "mlp", "hidden": [256, 128]}, (64,), 10)


def trained(sets, seed, spec=OVERFIT, weight=None, checkpoint=None, hook=None, **options):
    """A model trained on the members, with the adversarial term unless weight is None (and
    `hook`, a callback after it, if given)."""
    model = new_model(seed)
    regularizer = None
    if weight is not None:
        regularizer = AdversarialRegularizer(
            model, sets.members, sets.reference, weight=weight, seed=seed, **options
        )
    callbacks = [c for c in (regularizer, hook) if c is not None]
    history = fit(
        model,
        TrainBatches(sets.members, spec, CPU),
        sets.heldout,
        spec,
        seed,
        callbacks,
        checkpoint=checkpoint,
    )
    return model, regularizer, history


def loss_attack_auc(model, sets) -> float:
    with torch.no_grad():
        member_loss = F.cross_entropy(model(sets.members.x), sets.members.y, reduction="none")
        other_loss = F.cross_entropy(model(sets.heldout.x), sets.heldout.y, reduction="none")
    is_member = np.r_[np.ones(len(member_loss)), np.zeros(len(other_loss))]
    return roc_auc_score(is_member, -np.r_[member_loss.numpy(), other_loss.numpy()])


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def members_bce(regularizer, name, model, x, y) -> float:
    """The attacker's BCE for calling these members members (evaluation mode)."""
    with torch.no_grad():
        features = penultimate_features(model, x)
        attacker = regularizer.attackers[name].eval()
        z = attacker(model(x), y) if name == "nasr" else attacker(model(x), y, features)
        return F.binary_cross_entropy_with_logits(z, torch.ones_like(z)).item()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nasr", "whitebox"])
def test_one_model_step_raises_the_attackers_loss_on_members(sets, name):
    spec = dataclasses.replace(OVERFIT, epochs=15)
    model, _, _ = trained(sets, 0, spec)  # memorising, so the attacker has a signal
    regularizer = AdversarialRegularizer(
        model, sets.members, sets.reference, attackers=[name], weight=1.0, attacker_steps=0
    )
    for _ in range(100):
        regularizer.attacker_step(model)
    attacker = regularizer.attackers[name]
    before = copy.deepcopy([attacker.state_dict(), [p.grad for p in attacker.parameters()]])
    x, y = sets.members.x[:32], sets.members.y[:32]

    # the term is exactly -weight x the attacker's BCE on the batch, members labelled members
    with regularizer.penalty(model) as penalty:
        term = penalty(forward(model, x), y)
    assert term.item() == pytest.approx(-members_bce(regularizer, name, model, x, y), rel=1e-5)

    def after_one_step(with_term: bool) -> float:
        stepped = copy.deepcopy(model)
        optimizer = torch.optim.SGD(stepped.parameters(), lr=0.01)
        train_step(stepped, optimizer, x, y, [regularizer] if with_term else [])
        return members_bce(regularizer, name, stepped, x, y)

    plain, adversarial = after_one_step(False), after_one_step(True)
    assert adversarial > plain + 1e-4, (plain, adversarial)
    # the model's step neither trains the attacker nor adds to its gradients
    after = attacker.state_dict()
    assert all(torch.equal(before[0][k], after[k]) for k in after)
    assert all(
        torch.equal(g, p.grad) for g, p in zip(before[1], attacker.parameters(), strict=True)
    )


def test_white_box_term_reaches_every_weight_through_the_training_forward(sets):
    model = new_model()
    regularizer = AdversarialRegularizer(
        model, sets.members, sets.reference, attackers=["nasr", "whitebox"], weight=1.0
    )
    for _ in range(20):
        regularizer.attacker_step(model)
    x, y = sets.members.x[:32], sets.members.y[:32]
    model.train()
    with regularizer.penalty(model) as penalty:
        logits = forward(model, x)
        term = penalty(logits, y)
    # the hook captured this forward pass's features: same term as from features given directly
    features = penultimate_features(model, x)  # the MLP has no dropout: train = eval features
    assert torch.allclose(term, regularizer.term(logits, y, features))
    term.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        assert torch.isfinite(parameter.grad).all(), name
    # the white-box attacker's inputs carry the graph: the term moves with the features alone
    detached = features.detach().requires_grad_(True)
    regularizer.term(logits.detach(), y, detached).backward()
    assert detached.grad.abs().sum() > 0

    # and a whole MMIA run trains, with finite losses
    spec = dataclasses.replace(OVERFIT, epochs=2)
    _, both, history = trained(sets, 0, spec, weight=1.0, attackers=["nasr", "whitebox"])
    assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    summary = both.summary()
    assert 0.0 <= summary["attacker_acc"] <= 1.0 and summary["adversarial_term"] < 0


@pytest.mark.slow
def test_term_brings_the_attacker_toward_chance_at_a_bounded_cost():
    """Same seeds, same data, weight 0 (the attacker trains alongside, no term) vs weight 1."""
    rows = []
    for seed in (0, 1):
        sets = digits_sets(seed)
        for weight in (0.0, 1.0):
            model, regularizer, history = trained(sets, seed, weight=weight)
            attacker_acc = regularizer.attacker_accuracy(model, sets.members, sets.heldout)
            rows.append(
                {
                    "weight": weight,
                    "attacker_gap": abs(attacker_acc["nasr"] - 0.5),
                    "loss_auc": loss_attack_auc(model, sets),
                    "test_acc": history["val_acc"].iloc[-1],
                }
            )
    mean = {
        w: {k: np.mean([r[k] for r in rows if r["weight"] == w]) for k in rows[0]} for w in (0, 1)
    }
    plain, adversarial = mean[0], mean[1]
    assert plain["attacker_gap"] > 0.1  # the inner attacker finds a leak without the term
    assert adversarial["attacker_gap"] < plain["attacker_gap"] - 0.05
    assert adversarial["loss_auc"] < plain["loss_auc"]  # the independent loss attack too
    assert adversarial["test_acc"] > plain["test_acc"] - 0.15


@pytest.mark.slow
def test_runs_are_seeded_and_weight_zero_leaves_training_untouched(sets):
    spec = dataclasses.replace(OVERFIT, epochs=3)
    options = {"attackers": ["nasr", "whitebox"], "weight": 0.5}
    a, reg_a, history_a = trained(sets, 3, spec, **options)
    b, reg_b, history_b = trained(sets, 3, spec, **options)
    c, _, _ = trained(sets, 4, spec, **options)
    assert same_weights(a, b) and history_a.equals(history_b)
    for name in reg_a.attackers:
        assert same_weights(reg_a.attackers[name], reg_b.attackers[name])
    assert not same_weights(a, c)
    # the attackers draw from their own generators: with weight 0 the model is bit-identical
    # to training without the regulariser
    plain, _, _ = trained(sets, 3, spec)
    silent, _, _ = trained(sets, 3, spec, attackers=["nasr", "whitebox"], weight=0.0)
    assert same_weights(plain, silent)
    assert not same_weights(plain, a)


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resumed_run_ends_exactly_as_an_uninterrupted_one(sets, tmp_path):
    spec = dataclasses.replace(OVERFIT, epochs=4)  # 4 steps an epoch
    options = {"attackers": ["nasr", "whitebox"], "weight": 1.0, "start_step": 3}
    options |= {"warmup_steps": 5, "attacker_steps": 2}
    reference, reg_reference, history_reference = trained(sets, 0, spec, **options)

    checkpoint = Checkpoint(tmp_path / "checkpoint.pt", "adversarial", every=0)

    class KillInEpoch3(Callback):
        def after_step(self, step):
            if step == 10:
                raise Killed

    with pytest.raises(Killed):
        trained(sets, 0, spec, checkpoint=checkpoint, hook=KillInEpoch3(), **options)
    assert torch.load(checkpoint.path, weights_only=True)["epoch"] == 2
    resumed, reg_resumed, history_resumed = trained(
        sets, 0, spec, checkpoint=checkpoint, hook=Callback(), **options
    )

    assert same_weights(reference, resumed)
    assert history_reference.equals(history_resumed)
    for name in reg_reference.attackers:
        assert same_weights(reg_reference.attackers[name], reg_resumed.attackers[name])
    assert torch.equal(reg_reference.generator.get_state(), reg_resumed.generator.get_state())
    assert reg_reference.summary() == reg_resumed.summary()


def test_term_starts_after_start_step_with_the_warm_up(sets):
    model = new_model()
    regularizer = AdversarialRegularizer(
        model, sets.members, sets.reference, start_step=2, warmup_steps=5, attacker_steps=3
    )
    calls = []
    attacker_step = regularizer.attacker_step
    regularizer.attacker_step = lambda m: calls.append(1) or attacker_step(m)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = sets.members.x[:32], sets.members.y[:32]
    counts, terms = [], []
    for _ in range(4):
        before = len(calls)
        with regularizer.penalty(model) as penalty:
            terms.append(penalty(forward(model, x), y).item())
        counts.append(len(calls) - before)
        train_step(model, optimizer, x, y)
    assert counts == [0, 0, 5 + 3, 3]
    assert terms[:2] == [0.0, 0.0] and all(t < 0 for t in terms[2:])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"attackers": ["shadow"]}, "attackers must name"),
        ({"attackers": ["nasr", "nasr"]}, "attackers must name"),
        ({"attackers": []}, "attackers must name"),
        ({"weight": -0.1}, "weight must be"),
        ({"weight": float("nan")}, "weight must be"),
        ({"attacker_steps": -1}, "must be >= 0"),
        ({"batch_size": 0}, "batch_size >= 1"),
    ],
)
def test_bad_settings_are_refused(sets, options, message):
    with pytest.raises(ValueError, match=message):
        AdversarialRegularizer(new_model(), sets.members, sets.reference, **options)


def test_state_of_other_attackers_is_refused(sets):
    model = new_model()
    nasr = AdversarialRegularizer(model, sets.members, sets.reference, attackers=["nasr"])
    both = AdversarialRegularizer(
        model, sets.members, sets.reference, attackers=["nasr", "whitebox"]
    )
    with pytest.raises(ValueError, match="saved state has attackers"):
        both.load_state_dict(nasr.state_dict())
