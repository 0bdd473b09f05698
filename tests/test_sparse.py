"""The sparse engine: ERK densities, exact counts after every update, masks saved with weights."""

import math

import pytest
import torch
from torch import nn

from safecompress.models import build_model, load_model, save_model
from safecompress.sparse import (
    MASK_BUFFER,
    SparseEngine,
    cosine_prune_fraction,
    erk_densities,
    measured_density,
    prune_and_grow,
    top_k_mask,
)

SHAPES = {"a": (256, 64), "b": (128, 256), "c": (10, 128)}


def sizes(shapes):
    return {n: math.prod(s) for n, s in shapes.items()}


@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.05])
def test_erk_keeps_the_requested_overall_density(density):
    densities = erk_densities(SHAPES, density)
    kept = sum(densities[n] * size for n, size in sizes(SHAPES).items())
    assert kept == pytest.approx(density * sum(sizes(SHAPES).values()))
    assert all(0 < d <= 1 for d in densities.values())


def test_erk_gives_small_layers_higher_density_and_caps_at_one():
    densities = erk_densities(SHAPES, 0.5)
    assert densities["c"] > densities["a"] > densities["b"]
    # by hand: raw density of layer c is (10 + 128) / 1280, large enough to be made dense
    assert densities["c"] == 1.0


def test_top_k_mask_and_prune_and_grow_by_hand():
    weight = torch.tensor([[0.5, -0.1, 0.0], [0.0, 2.0, 0.3]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    grow = torch.tensor([[0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    new = prune_and_grow(weight, mask, 2, grow)
    # drops -0.1 and 0.3 (smallest |w| among active), grows the two best inactive scores
    expected = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.equal(new, expected)
    assert torch.equal(top_k_mask(torch.tensor([3.0, 1.0, 2.0]), 2), torch.tensor([1, 0, 1]).bool())


def test_cosine_prune_fraction_decays_to_zero():
    assert cosine_prune_fraction(0.5, 0, 100) == pytest.approx(0.5)
    assert cosine_prune_fraction(0.5, 50, 100) == pytest.approx(0.25)
    assert cosine_prune_fraction(0.5, 100, 100) == 0.0


def make_sparse_mlp(density=0.1, seed=0):
    torch.manual_seed(seed)
    model = build_model({"arch": "mlp", "hidden": [64, 32]}, (1, 8, 8), 10)
    engine = SparseEngine.random_init(model, density, "erk", torch.Generator().manual_seed(seed))
    return model, engine


@pytest.mark.parametrize("growth", ["random", "gradient", "momentum"])
def test_every_update_keeps_exact_active_counts(growth):
    model, engine = make_sparse_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    counts = {n: int(m.sum()) for n, m in engine.masks().items()}
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        engine.apply()
        before = {n: m.clone() for n, m in engine.masks().items()}
        engine.set_masks(engine.propose(0.3, growth, optimizer, generator), optimizer)
        n_grown = 0
        for name, mask in engine.masks().items():
            assert int(mask.sum()) == counts[name]
            layer = engine.layers[name]
            assert torch.all(layer.weight[~mask] == 0)
            grown = mask & ~before[name]
            n_grown += int(grown.sum())
            assert torch.all(layer.weight[grown] == 0)  # regrown weights start at zero
            assert torch.all(optimizer.state[layer.weight]["momentum_buffer"][grown] == 0)
        assert n_grown > 0


def test_masks_are_buffers_saved_and_restored(tmp_path):
    model, engine = make_sparse_mlp(density=0.2)
    path = tmp_path / "model.safetensors"
    save_model(
        model,
        path,
        {"model": {"arch": "mlp", "hidden": [64, 32]}, "input_shape": [1, 8, 8], "n_classes": 10},
    )
    loaded, meta = load_model(path)
    assert meta["n_classes"] == 10
    for name, mask in engine.masks().items():
        layer = dict(loaded.named_modules())[name]
        assert torch.equal(getattr(layer, MASK_BUFFER), mask)
    assert measured_density(loaded) == pytest.approx(measured_density(model))
    assert measured_density(model) == pytest.approx(0.2, abs=0.01)


def test_magnitude_init_keeps_largest_weights():
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "hidden": [64, 32]}, (1, 8, 8), 10)
    first = model[1].weight.detach().abs().clone()
    engine = SparseEngine.magnitude_init(model, 0.1, "uniform")
    mask = engine.masks()["1"]
    assert first[mask].min() >= first[~mask].max()
    assert int(mask.sum()) == round(0.1 * first.numel())


def test_corrupt_model_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable SafeCompress model file"):
        load_model(path)
