"""The defenses compared with SafeCompress: DP-SGD's clipping, masks and accounting, RelaxLoss's
target loss, the distillation loss of the reference code, MIA-Pruning's ADMM, and for each the
density of the saved model and an exact resume."""

import dataclasses
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch import nn

from helpers import SHORT_TRAINING
from safecompress.compression.defenses import distill, dpsgd, miapruning, relax_objective, relaxloss
from safecompress.compression.defenses.per_sample import ClippedSteps, PerSampleClipping
from safecompress.compression.job import Job
from safecompress.config.methods import REGISTRY
from safecompress.config.specs import (
    DistillSpec,
    DPSGDSpec,
    DSTSpec,
    MagnitudeSpec,
    MIAPruningSpec,
    RelaxLossSpec,
    ScheduleSpec,
)
from safecompress.data.batches import TrainBatches
from safecompress.data.splits import Data
from safecompress.sparse.engine import SparseEngine, measured_density
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.loop import fit, loss_and_accuracy, make_optimizer
from safecompress.training.models import build_model, load_model, save_model

MODEL = {"arch": "mlp", "hidden": [32]}
TRAIN = dataclasses.replace(SHORT_TRAINING, epochs=4, batch_size=16, lr=0.05)
SCHEDULE = {"distribution": "erk", "prune_fraction": 0.5, "prune_floor": 0.0, "update_interval": 5}
DST = DSTSpec(**SCHEDULE, stop_fraction=0.75, growth="gradient")
DENSITY = 0.2
SETS = {"target_train": 96, "known_members": 32, "reference": 64, "target_out": 64}
DEFENSES = ("dpsgd", "relaxloss", "miapruning", "distill")  # advreg: tests/test_adversarial.py

# Small models: one thread is as fast, and spares the cores others share.
pytestmark = pytest.mark.usefixtures("one_thread")


def toy_data(seed=0):
    """Four classes of 4x4 'images', learnable from their sums and first pixel."""
    generator = torch.Generator().manual_seed(seed)
    n = sum(SETS.values())
    x = torch.randn(n, 1, 4, 4, generator=generator)
    y = (x.sum((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    split = pd.DataFrame({"index": np.arange(n), "set": np.repeat(list(SETS), list(SETS.values()))})
    return Data(x, y, split, 4)


@pytest.fixture(scope="module")
def data():
    return toy_data()


def make_job(data, path, checkpoint=None, train=TRAIN):
    checkpoint = checkpoint or Checkpoint(path / "checkpoint.pt", "test", every=0)
    return Job(data, MODEL, train, DENSITY, 0, torch.device("cpu"), checkpoint)


@pytest.fixture(scope="module")
def dense(data, tmp_path_factory):
    """A trained dense model file: the teacher of `distill`, the start of `miapruning`."""
    torch.manual_seed(0)
    model = build_model(MODEL, (1, 4, 4), 4)
    train = TrainBatches(data.set("target_train", "known_members"), TRAIN, torch.device("cpu"))
    fit(model, train, data.set("reference"), dataclasses.replace(TRAIN, epochs=10), 0)
    path = tmp_path_factory.mktemp("dense") / "dense.safetensors"
    save_model(model, path, {"model": MODEL, "input_shape": [1, 4, 4], "n_classes": 4})
    return str(path)


def run(name, job, dense, **spec):
    """One defense with its default spec (fields in `spec` changed), seeded."""
    torch.manual_seed(job.seed)
    if name == "dpsgd":
        return dpsgd.dpsgd(job, ScheduleSpec(**SCHEDULE, stop_fraction=0.75), DPSGDSpec(**spec))
    if name == "relaxloss":
        return relaxloss.relaxloss(job, DST, RelaxLossSpec(**spec))
    if name == "distill":
        return distill.distill(job, DST, DistillSpec(**spec), dense)
    sparse = MagnitudeSpec("erk", finetune_epochs=3)
    return miapruning.miapruning(job, sparse, MIAPruningSpec(**{"admm_epochs": 3, **spec}), dense)


def sparse_model(seed=0):
    torch.manual_seed(seed)
    model = build_model(MODEL, (1, 4, 4), 4)
    engine = SparseEngine.random_init(model, DENSITY, "erk", torch.Generator().manual_seed(seed))
    return model, engine


def clipping_case(kind):
    """A masked model for each path through `PerSampleClipping`: an MLP (ghost norms), and a
    convolution with a group norm and a linear layer on a sequence (Opacus's samplers)."""
    torch.manual_seed(0)
    if kind == "mlp":
        model = build_model(MODEL, (1, 4, 4), 4)
    elif kind == "conv":
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.GroupNorm(1, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(48, 4),
        )
    else:  # (n, 1, 4, 4) -> a sequence of 4 vectors of 4 -> (n, 4, 6)
        model = nn.Sequential(
            nn.Flatten(1, 2), nn.Linear(4, 6), nn.ReLU(), nn.Flatten(), nn.Linear(24, 4)
        )
    engine = SparseEngine.random_init(model, 0.5, "erk", torch.Generator().manual_seed(0))
    return model, engine.weight_masks()


@pytest.mark.parametrize("kind", ["mlp", "conv", "sequence"])
def test_clipping_sums_each_samples_own_masked_gradient_clipped(data, kind):
    model, masks = clipping_case(kind)
    x, y = 10 * data.x[:8], data.y[:8]
    params = [p for p in model.parameters() if p.requires_grad]
    own = []  # each sample's gradient by its own backward pass, masked
    for i in range(8):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        own.append([p.grad * masks.get(p, 1) for p in params])
    norms = torch.stack([torch.stack([g.norm() for g in grads]).norm() for grads in own])
    clip = norms.median().item()  # half the samples clipped, half not
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    assert (factor < 1).sum() >= 3 and (factor == 1).sum() >= 3
    clipping = PerSampleClipping(model)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    sums, got_norms = clipping.clipped_sum(clip, masks)
    torch.testing.assert_close(got_norms, norms, rtol=1e-5, atol=1e-6)
    for i, p in enumerate(params):
        expected = sum(f * grads[i] for f, grads in zip(factor, own, strict=True))
        torch.testing.assert_close(sums[p], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        model(x)  # evaluation passes leave nothing behind for the next step
    assert not clipping.inputs and not clipping.output_grads


def private_step(data, noise_multiplier, batch_size):
    """An SGD optimiser whose steps are DP-SGD's, on a masked MLP."""
    model, engine = sparse_model()
    sgd, _ = make_optimizer(model, TRAIN)
    batches = dpsgd.PoissonBatches(
        data.set("target_train"),
        dataclasses.replace(TRAIN, batch_size=batch_size),
        torch.device("cpu"),
    )
    spec = DPSGDSpec(noise_multiplier=noise_multiplier)
    step = dpsgd.PrivateStep(PerSampleClipping(model), engine, spec, batches, torch.Generator())
    sgd.register_step_pre_hook(step)
    return model, engine, sgd, step


def test_dpsgd_step_gradient_is_the_clipped_sum_over_the_expected_batch(data):
    model, engine, sgd, step = private_step(data, 0.0, batch_size=8)
    masks = engine.weight_masks()
    x, y = 10 * data.x[:8], data.y[:8]
    checker = PerSampleClipping(model)  # a second set of hooks, on the same pass
    sgd.zero_grad()
    F.cross_entropy(model(x), y).backward()
    sums, _ = checker.clipped_sum(1.0, masks)
    step(sgd, (), {})
    for p in model.parameters():
        torch.testing.assert_close(p.grad * 8, sums[p])
    for weight, mask in masks.items():
        assert not weight.grad[~mask].any()
    assert step.accountant.history == [(0.0, 8 / 96, 1)]


def test_clipped_steps_take_the_mean_clipped_gradient_and_at_zero_the_plain_one(data):
    model, engine = sparse_model()
    sgd, _ = make_optimizer(model, TRAIN)
    clipped = ClippedSteps(model, engine, sgd)
    masks = engine.weight_masks()
    x, y = 10 * data.x[:8], data.y[:8]
    clipped.set(0.5)
    checker = PerSampleClipping(model)  # a second set of hooks, on the same pass
    sgd.zero_grad()
    F.cross_entropy(model(x), y).backward()
    plain = {p: p.grad.clone() for p in model.parameters()}
    sums, norms = checker.clipped_sum(0.5, masks)
    assert (norms > 0.5).sum() >= 4  # the clipping binds
    clipped(sgd, (), {})
    for p in model.parameters():
        mask = masks.get(p, torch.ones_like(p, dtype=torch.bool))
        torch.testing.assert_close(p.grad[mask], sums[p][mask] / 8)
        assert torch.equal(p.grad[~mask], plain[p][~mask])  # pruned: what growth reads
    checker.remove()
    clipped.set(0.0)
    assert not any(module._forward_hooks for module in model.modules())
    sgd.zero_grad()
    F.cross_entropy(model(x), y).backward()
    plain = [p.grad.clone() for p in model.parameters()]
    clipped(sgd, (), {})
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), plain, strict=True))
    with pytest.raises(ValueError, match="clipping norm"):
        clipped.set(-1.0)


def test_dpsgd_noise_does_not_revive_a_pruned_weight(data):
    model, engine, sgd, _ = private_step(data, 100.0, batch_size=16)
    for _ in range(3):  # the SGD step alone, masks not re-applied: momentum carries no noise
        sgd.zero_grad()
        F.cross_entropy(model(data.x[:16]), data.y[:16]).backward()
        sgd.step()
    for weight, mask in engine.weight_masks().items():
        assert not weight[~mask].any()
        assert weight[mask].abs().max() > 1.0  # the noise did reach the live weights
        assert not sgd.state[weight]["momentum_buffer"][~mask].any()


def test_dpsgd_refuses_batch_norm():
    model = build_model({"arch": "cnn", "channels": [4]}, (1, 4, 4), 4)
    SparseEngine.random_init(model, 0.5, "erk", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="BatchNorm"):
        dpsgd.check_private(model)


def test_dpsgd_epsilon_falls_as_noise_rises(data, tmp_path):
    short = dataclasses.replace(TRAIN, epochs=2)
    reports = []
    for i, sigma in enumerate((0.7, 1.0, 2.0)):
        job = make_job(data, tmp_path / str(i), train=short)
        reports.append(run("dpsgd", job, None, noise_multiplier=sigma).report)
    epsilons = [r["epsilon"] for r in reports]
    assert 0 < epsilons[2] < epsilons[1] < epsilons[0] < np.inf
    # every step of the run was accounted at the Poisson rate q = B / n, at the given delta
    n = SETS["target_train"] + SETS["known_members"]
    steps = short.epochs * (n // short.batch_size)
    accountant = RDPAccountant()
    accountant.history = [(2.0, short.batch_size / n, steps)]
    assert reports[2]["delta"] == 1e-5  # the default, well below 1/n
    assert reports[2]["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5))
    job = make_job(data, tmp_path / "at_1_over_n", train=short)
    looser = run("dpsgd", job, None, noise_multiplier=2.0, delta=1 / n).report
    assert looser["epsilon"] == pytest.approx(accountant.get_epsilon(1 / n))
    assert looser["epsilon"] < reports[2]["epsilon"]  # the same run, a looser delta


def test_poisson_batches_draw_each_member_with_the_sample_rate(data):
    batches = dpsgd.PoissonBatches(data.set("target_train"), TRAIN, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    sizes = [len(y) for _ in range(50) for _, y in batches.epoch(generator)]
    assert len(sizes) == 50 * batches.steps_per_epoch
    assert batches.sample_rate == 16 / 96
    assert np.mean(sizes) == pytest.approx(16, rel=0.05)
    assert np.std(sizes) > 1  # Poisson sampling, not fixed-size batches


def test_relaxloss_objective_branches():
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0])  # the first is classified correctly, the second not
    ce = F.cross_entropy(logits, labels)
    assert relax_objective.relaxloss_objective(logits, labels, True, 0.1, 1.0) == ce  # above alpha
    alpha = ce.item() + 1
    ascent = relax_objective.relaxloss_objective(logits, labels, True, alpha, 1.0)
    (grad_ascent,) = torch.autograd.grad(ascent, logits)
    (grad_ce,) = torch.autograd.grad(ce, logits)
    torch.testing.assert_close(grad_ascent, -grad_ce)
    soft = relax_objective.flattened_labels(logits, labels, 1.0)
    p = logits.detach().softmax(1)
    torch.testing.assert_close(soft[0], torch.stack([p[0, 0], *(1 - p[0, 0]).repeat(2) / 2]))
    assert relax_objective.flattened_labels(logits, labels, 0.5)[0, 0] == 0.5  # the cap
    flat = relax_objective.relaxloss_objective(logits, labels, False, alpha, 1.0)
    expected = (
        -(soft[0] * logits[0].log_softmax(0)).sum()
        + F.cross_entropy(logits[1:], labels[1:])  # misclassified: plain cross-entropy
    ) / 2
    torch.testing.assert_close(flat, expected)


def test_relaxloss_keeps_the_members_loss_near_its_target(data, tmp_path):
    train = dataclasses.replace(TRAIN, epochs=30)
    job = make_job(data, tmp_path, train=train)
    result = run("relaxloss", job, None, alpha=0.6)
    model, history = result.model, result.history
    member_loss, member_acc = loss_and_accuracy(model, job.members())
    assert member_loss == pytest.approx(0.6, abs=0.1)
    assert history["train_loss"].iloc[-5:].mean() == pytest.approx(0.6, abs=0.1)
    assert member_acc > 0.8
    plain = run(
        "relaxloss", make_job(data, tmp_path / "plain", train=train), None, alpha=1e-6
    ).model
    assert loss_and_accuracy(plain, job.members())[0] < 0.3  # with no target it goes lower


def test_distillation_loss_is_the_reference_kd_train_loss(data, dense):
    teacher, _ = load_model(dense)
    student, _ = sparse_model()
    regularizer = distill.Distillation(teacher, DistillSpec())
    x, y = data.x[:16], data.y[:16]
    with regularizer.penalty(student) as penalty:
        logits = student(x)
        loss = F.cross_entropy(logits, y) + penalty(logits, y)
    # JiePKU/MIA-SafeCompress train.py: (loss1 + KD_loss(t_out, output)) / 2
    t_out = teacher(x).detach()
    kd = (-torch.softmax(t_out, 1) * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss, (F.cross_entropy(logits, y) + kd) / 2)
    assert not student._forward_pre_hooks  # the hook is gone after the step


def test_admm_projection_and_updates(data):
    torch.manual_seed(0)
    model = build_model(MODEL, (1, 4, 4), 4)
    budgets = miapruning.layer_budgets(model, DENSITY, "erk")
    admm = miapruning.ADMMPruning(model, budgets, rho=1.0, interval_steps=1)
    for name, z in admm.z.items():
        weight = admm.weights[name].detach()
        assert int((z != 0).sum()) == budgets[name]
        assert z.abs().min() == 0 and weight[z != 0].abs().min() >= weight[z == 0].abs().max()
    before = {name: (w.detach() + admm.u[name]).clone() for name, w in admm.weights.items()}
    admm.update()
    for name, w in admm.weights.items():
        torch.testing.assert_close(admm.z[name], miapruning.project(before[name], budgets[name]))
        torch.testing.assert_close(admm.u[name], w.detach() - admm.z[name])
    penalty = admm.term()
    expected = sum((w - admm.z[n] + admm.u[n]).pow(2).sum() for n, w in admm.weights.items())
    torch.testing.assert_close(penalty, expected / 2)


def test_admm_draws_the_weights_to_the_sparse_set(data, dense, tmp_path):
    job = make_job(data, tmp_path)
    result = run("miapruning", job, dense, rho=0.5, admm_epochs=8)
    updates, report = result.updates, result.report
    assert updates["residual"].iloc[-1] < updates["residual"].iloc[0] / 2
    assert report["admm_residual"] == updates["residual"].iloc[-1]
    assert not (tmp_path / "admm-checkpoint.pt").exists()


@pytest.mark.parametrize("name", list(DEFENSES))
def test_each_defense_saves_a_model_at_its_density(name, data, dense, tmp_path):
    job = make_job(data, tmp_path)
    result = run(name, job, dense if REGISTRY[name].from_dense else None)
    model, start = result.model, result.start_density
    path = tmp_path / "model.safetensors"
    save_model(model, path, {"model": MODEL, "input_shape": [1, 4, 4], "n_classes": 4})
    saved, _ = load_model(path)
    engine = SparseEngine(saved)
    budgets = miapruning.layer_budgets(saved, DENSITY, "erk")  # the ERK budgets of the density
    assert {n: int(mask.sum()) for n, mask in engine.masks().items()} == budgets
    target = sum(budgets.values()) / sum(layer.weight.numel() for layer in engine.layers.values())
    assert target == pytest.approx(DENSITY, abs=0.01)
    assert target * 0.95 <= measured_density(saved) <= target
    assert set(start) == set(engine.layers)


@pytest.mark.parametrize("name", list(DEFENSES))
def test_a_killed_run_resumes_to_the_same_model(name, data, dense, tmp_path, caplog):
    class Recording(Checkpoint):
        """Keeps a copy of the checkpoint written after epoch 2: the state a run killed
        during epoch 3 would find."""

        def save(self, state):
            super().save(state)
            if state["epoch"] == 2:
                shutil.copy(self.path, tmp_path / "killed" / "checkpoint.pt")

    (tmp_path / "killed").mkdir()
    dense_path = dense if REGISTRY[name].from_dense else None
    whole = run(
        name, make_job(data, tmp_path, Recording(tmp_path / "c.pt", "fp", every=0)), dense_path
    )
    killed = Checkpoint(tmp_path / "killed" / "checkpoint.pt", "fp")
    with caplog.at_level(logging.INFO, logger="safecompress.training.checkpoint"):
        resumed = run(name, make_job(data, tmp_path, killed), dense_path)
    assert "(epoch 2)" in caplog.text  # it did resume, after its second epoch
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    pd.testing.assert_frame_equal(whole.history, resumed.history)
    assert whole.report == resumed.report
