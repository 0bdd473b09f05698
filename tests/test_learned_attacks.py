"""The paper's own attackers (Nasr-style black-box, TSE white-box) and the white-box signals."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from safecompress.privacy.attacks import learned
from safecompress.privacy.features import output_layer, output_residual, penultimate_features
from safecompress.privacy.metrics import balanced_accuracy, roc_auc
from safecompress.training.models import build_model

N_CLASSES, N_FEATURES = 4, 16


def synthetic(seed, n_members, n_nonmembers, member_margin, nonmember_margin):
    """Logits, labels, features, is_member: the true-class logit is raised by a per-set margin,
    so a larger member margin makes members detectable; features are the same for both."""
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    labels = rng.integers(0, N_CLASSES, len(is_member))
    logits = rng.normal(size=(len(is_member), N_CLASSES))
    logits[np.arange(len(is_member)), labels] += np.where(
        is_member, member_margin, nonmember_margin
    )
    features = np.abs(rng.normal(size=(len(is_member), N_FEATURES))).astype(np.float32)
    return logits, labels, features, is_member


def fit_and_score(attack, shadow, target, seed=0):
    logits, labels, features, is_member = shadow
    if attack == "nasr":
        module = learned.fit_nasr(logits, labels, is_member, seed)
        return learned.nasr_member_probability(module, target[0], target[1])
    module = learned.fit_whitebox(logits, labels, features, is_member, seed)
    return learned.whitebox_member_probability(module, target[0], target[1], target[2])


# --- White-box signals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ({"arch": "mlp", "hidden": [32, 16]}, (64,)),
        ({"arch": "cnn", "channels": [4, 8]}, (1, 8, 8)),
    ],
)
def test_outer_product_of_features_is_the_per_sample_last_layer_gradient(spec, shape):
    torch.manual_seed(0)
    model = build_model(spec, shape, 5).eval()
    x, y = torch.randn(6, *shape), torch.randint(0, 5, (6,))
    features = penultimate_features(model, x, batch_size=4)
    weight = output_layer(model).weight
    expected = torch.stack(
        [
            torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), weight)[0]
            for i in range(len(y))
        ]
    )
    with torch.no_grad():
        formula = output_residual(model(x), y).unsqueeze(2) * features.unsqueeze(1)
    torch.testing.assert_close(formula, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "shape"),
    [("mlp", (64,)), ("cnn", (3, 8, 8)), ("vgg_c", (3, 16, 16)), ("resnet18", (3, 8, 8))],
)
def test_features_are_the_input_of_each_architectures_output_layer(arch, shape):
    """In evaluation mode (BatchNorm on running statistics) even when called mid-training."""
    torch.manual_seed(0)
    model = build_model({"arch": arch}, shape, 3).train()
    x = torch.randn(5, *shape)
    features = penultimate_features(model, x, batch_size=2)
    assert model.training
    layer = output_layer(model)
    assert layer.out_features == 3
    assert features.dtype == torch.float32 and features.shape == (5, layer.in_features)
    with torch.no_grad():
        torch.testing.assert_close(layer(features), model.eval()(x))


@pytest.mark.slow
def test_features_of_a_transformer_are_its_classifier_heads_input(tiny_bert):
    model = build_model({"arch": "transformer", "checkpoint": tiny_bert}, (12,), 3).eval()
    ids = torch.randint(5, 50, (4, 12))
    features = penultimate_features(model, ids)
    layer = output_layer(model)
    assert layer is model.network.classifier and features.shape == (4, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(features), model(ids))


def test_features_refuse_models_whose_last_linear_is_not_the_output_layer():
    with pytest.raises(ValueError, match="does not produce its logits"):
        penultimate_features(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), torch.randn(2, 4))
    with pytest.raises(ValueError, match="no nn.Linear"):
        penultimate_features(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), torch.randn(2, 1, 4, 4)
        )


def test_gradient_conv_from_factors_equals_the_conv_of_the_gradient():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, kernel_size=5, padding=2)
    logits, labels, features = torch.randn(3, 7), torch.randint(0, 7, (3,)), torch.rand(3, 12)
    residual = torch.softmax(logits, 1) - F.one_hot(labels, 7)
    expected = conv((residual.unsqueeze(2) * features.unsqueeze(1)).unsqueeze(1))
    torch.testing.assert_close(learned.conv_of_outer_product(conv, residual, features), expected)


# --- Attackers ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("attack", "min_auc"), [("nasr", 0.9), ("whitebox", 0.9)])
def test_attackers_detect_members_with_larger_true_class_margins(attack, min_auc):
    shadow = synthetic(1, 300, 300, member_margin=4.0, nonmember_margin=1.0)
    target = synthetic(2, 300, 300, member_margin=4.0, nonmember_margin=1.0)
    scores = fit_and_score(attack, shadow, target)
    assert scores.shape == (600,) and scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc(target[3], scores) > min_auc


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["nasr", "whitebox"])
def test_attackers_find_nothing_when_members_and_nonmembers_look_alike(attack):
    shadow = synthetic(3, 300, 300, member_margin=2.0, nonmember_margin=2.0)
    target = synthetic(4, 400, 400, member_margin=2.0, nonmember_margin=2.0)
    assert abs(roc_auc(target[3], fit_and_score(attack, shadow, target)) - 0.5) < 0.07


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["nasr", "whitebox"])
def test_unbalanced_shadow_data_is_balanced_in_training(attack):
    """Five members per non-member: unweighted, the attackers call most non-members members
    at probability 0.5 (measured: FPR 1.0 and 0.4); balanced, both error rates are alike."""
    shadow = synthetic(5, 500, 100, member_margin=3.0, nonmember_margin=1.0)
    target = synthetic(6, 300, 300, member_margin=3.0, nonmember_margin=1.0)
    predicted = fit_and_score(attack, shadow, target) >= 0.5
    tpr, tnr = predicted[target[3]].mean(), 1 - predicted[~target[3]].mean()
    assert abs(tpr - tnr) < 0.15
    assert balanced_accuracy(target[3], predicted) > 0.7


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["nasr", "whitebox"])
def test_fits_are_deterministic_given_the_seed_and_leave_torch_state_alone(attack):
    shadow = synthetic(7, 100, 100, member_margin=3.0, nonmember_margin=1.0)
    target = synthetic(8, 50, 50, member_margin=3.0, nonmember_margin=1.0)
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    first = fit_and_score(attack, shadow, target, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(fit_and_score(attack, shadow, target, seed=3), first)
    assert not np.array_equal(fit_and_score(attack, shadow, target, seed=4), first)


def test_modules_pass_gradients_to_the_models_outputs_for_adversarial_training():
    torch.manual_seed(0)
    logits = torch.randn(8, N_CLASSES, requires_grad=True)
    features = torch.rand(8, N_FEATURES, requires_grad=True)
    labels = torch.randint(0, N_CLASSES, (8,))
    nasr = learned.NasrAdversary(N_CLASSES)
    whitebox = learned.WhiteBoxAdversary(N_CLASSES, N_FEATURES)
    assert nasr(logits, labels).shape == whitebox(logits, labels, features).shape == (8,)
    (nasr(logits, labels).sum() + whitebox(logits, labels, features).sum()).backward()
    assert logits.grad.abs().sum() > 0 and features.grad.abs().sum() > 0


def test_reference_architecture_sizes():
    nasr = learned.NasrAdversary(10)
    assert [m.out_features for m in nasr.modules() if isinstance(m, nn.Linear)] == [
        *(1024, 512, 64),
        *(512, 64),
        *(256, 64, 1),
    ]
    whitebox = learned.WhiteBoxAdversary(10, 128)
    assert whitebox.gradient_branch[5].in_features == 5 * 64  # (C // 2) x (d // 2) after pooling


@pytest.mark.parametrize("attack", ["nasr", "whitebox"])
def test_a_saved_adversary_scores_exactly_as_the_fitted_one(attack, tmp_path):
    logits, labels, features, is_member = synthetic(5, 60, 60, 3.0, 1.0)
    if attack == "nasr":
        module = learned.fit_nasr(logits, labels, is_member, 0)
    else:
        module = learned.fit_whitebox(logits, labels, features, is_member, 0)
    learned.save_adversary(module, tmp_path / "adversary.safetensors")
    kind, loaded = learned.load_adversary(tmp_path / "adversary.safetensors")
    assert kind == attack and type(loaded) is type(module) and not loaded.training
    inputs = (logits, labels) if attack == "nasr" else (logits, labels, features)
    score = (
        learned.nasr_member_probability
        if attack == "nasr"
        else (learned.whitebox_member_probability)
    )
    np.testing.assert_array_equal(score(loaded, *inputs), score(module, *inputs))


def test_a_missing_or_damaged_adversary_file_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="rerun the rule that fits it"):
        learned.load_adversary(tmp_path / "absent.safetensors")
    path = tmp_path / "nasr.safetensors"
    learned.save_adversary(learned.NasrAdversary(N_CLASSES), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="delete it and rerun") as error:
        learned.load_adversary(path)
    assert "\n" not in str(error.value)


# --- Bad input ----------------------------------------------------------------------------


def bad_calls():
    logits, labels, features, is_member = synthetic(9, 20, 20, 2.0, 1.0)
    nasr = learned.NasrAdversary(N_CLASSES)
    whitebox = learned.WhiteBoxAdversary(N_CLASSES, N_FEATURES)
    fit_nasr, fit_whitebox = learned.fit_nasr, learned.fit_whitebox
    return [
        (lambda: fit_nasr(logits[:, 0], labels, is_member, 0), "2-D"),
        (lambda: fit_nasr(logits[:, :1], labels * 0, is_member, 0), "at least 2 classes"),
        (lambda: fit_nasr(logits, labels[:-1], is_member, 0), "expected 40 labels"),
        (lambda: fit_nasr(logits, labels + N_CLASSES, is_member, 0), r"labels must lie in"),
        (lambda: fit_nasr(logits, labels.astype(float), is_member, 0), "must be integers"),
        (lambda: fit_nasr(logits * np.nan, labels, is_member, 0), "NaN"),
        (lambda: fit_nasr(logits, labels, is_member[:-1], 0), "is_member flags"),
        (lambda: fit_nasr(logits, labels, is_member * 2, 0), "must be boolean"),
        (lambda: fit_nasr(logits, labels, np.ones(40, bool), 0), "2 members and 2 non-members"),
        (lambda: fit_nasr(logits, labels, is_member, 0, epochs=0), "epochs must be >= 1"),
        (lambda: fit_whitebox(logits, labels, features[:-1], is_member, 0), "with 40 rows"),
        (lambda: fit_whitebox(logits, labels, features[:, :1], is_member, 0), "d >= 2"),
        (lambda: learned.nasr_member_probability(nasr, logits[:, :3], labels % 3), "4 classes"),
        (
            lambda: learned.whitebox_member_probability(whitebox, logits, labels, features[:, :8]),
            "16 features",
        ),
    ]


@pytest.mark.parametrize("case", range(len(bad_calls())))
def test_bad_input_raises_one_line_value_errors(case):
    call, message = bad_calls()[case]
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
