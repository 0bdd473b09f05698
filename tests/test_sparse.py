"""The sparse engine: ERK densities, exact counts after every update, masks saved with weights."""

import math

import pytest
import torch
from torch import nn

from safecompress.config.specs import Strategy
from safecompress.sparse.engine import (
    MASK_BUFFER,
    SparseEngine,
    UpdateContext,
    drop,
    erk_densities,
    grow,
    grow_across_layers,
    measured_density,
    scheduled_prune_fraction,
    top_k_mask,
)
from safecompress.training.models import build_model, load_model, save_model

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
    scores = torch.tensor([[0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    new = grow(drop(mask, weight.abs(), 2), scores, 2)
    # drops -0.1 and 0.3 (smallest |w| among active), grows the two best inactive scores
    expected = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.equal(new, expected)
    assert torch.equal(top_k_mask(torch.tensor([3.0, 1.0, 2.0]), 2), torch.tensor([1, 0, 1]).bool())


def test_prune_fraction_decays_by_cosine_to_its_floor():
    assert scheduled_prune_fraction(0.5, 0.0, 0, 100) == pytest.approx(0.5)
    assert scheduled_prune_fraction(0.5, 0.0, 50, 100) == pytest.approx(0.25)
    assert scheduled_prune_fraction(0.5, 0.0, 100, 100) == 0.0
    assert scheduled_prune_fraction(0.5, 0.1, 50, 100) == pytest.approx(0.3)
    assert scheduled_prune_fraction(0.5, 0.1, 100, 100) == pytest.approx(0.1)


def make_sparse_mlp(density=0.1, seed=0):
    torch.manual_seed(seed)
    model = build_model({"arch": "mlp", "hidden": [64, 32]}, (1, 8, 8), 10)
    engine = SparseEngine.random_init(model, density, "erk", torch.Generator().manual_seed(seed))
    return model, engine


def leakage_context(model, optimizer, generator, seed=2):
    """Member and held-out gradients of random data, as the safety test would give them."""
    torch.manual_seed(seed)
    grads = []
    for _ in range(2):
        x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
        loss = nn.functional.cross_entropy(model(x), y)
        layers = {n: m.weight for n, m in SparseEngine(model).layers.items()}
        grad = torch.autograd.grad(loss, list(layers.values()))
        grads.append(dict(zip(layers, grad, strict=True)))
    return UpdateContext(optimizer, generator, *grads)


@pytest.mark.slow
@pytest.mark.parametrize("growth", ["random", "gradient", "momentum", "leakage"])
@pytest.mark.parametrize("prune", ["magnitude", "leakage"])
def test_every_update_keeps_exact_active_counts(growth, prune):
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
        context = leakage_context(model, optimizer, generator)
        engine.set_masks(engine.propose(0.3, Strategy(1.0, growth, prune), context), optimizer)
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


def test_drop_and_both_leakage_criteria_by_hand():
    weight = torch.tensor([[0.5, -0.1, 0.0], [0.0, 2.0, 0.3]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    members = torch.tensor([[0.1, 0.0, 1.0], [1.0, 0.0, 0.0]])
    heldout = torch.tensor([[-0.2, 1.0, 2.0], [1.0, 0.5, 0.0]])
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    engine = SparseEngine.attach(model, {"": mask})
    context = UpdateContext(
        torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator(), {"": members}, {"": heldout}
    )
    # keep score w * (g_members - g_heldout): 0.15, 0.1, ., ., -1.0, 0.0 -> drops 2.0 and 0.3
    # growth score g_members * g_heldout where not kept: 2.0 (0, 2), 1.0 (1, 0), 0 elsewhere
    new = engine.propose(0.5, Strategy(1.0, "leakage", prune="leakage"), context)[""]
    assert torch.equal(new, torch.tensor([[True, True, True], [True, False, False]]))
    assert torch.equal(drop(mask, weight.abs(), 1), mask & ~(weight == -0.1))


def test_global_budget_moves_density_between_layers():
    kept = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, False])}
    scores = {"a": torch.tensor([9.0, 0.1, 0.2, 0.3]), "b": torch.tensor([0.0, 5.0])}
    grown = grow_across_layers(kept, scores, 2, {"a": 1, "b": 1})
    assert torch.equal(grown["a"], torch.tensor([True, False, False, True]))
    assert torch.equal(grown["b"], torch.tensor([True, True]))
    # a layer below its floor refills to it by its own scores before the rest is pooled
    grown = grow_across_layers(kept, scores, 2, {"a": 3, "b": 1})
    assert torch.equal(grown["a"], torch.tensor([True, False, True, True]))
    assert torch.equal(grown["b"], torch.tensor([True, False]))


def test_global_budget_keeps_the_total_and_a_weight_in_every_layer():
    model, engine = make_sparse_mlp(density=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total = sum(int(m.sum()) for m in engine.masks().values())
    before = {n: int(m.sum()) for n, m in engine.masks().items()}
    generator = torch.Generator().manual_seed(0)
    engine.set_masks(
        engine.propose(
            1.0, Strategy(1.0, "random", budget="global"), UpdateContext(optimizer, generator)
        ),
        optimizer,
    )
    after = {n: int(m.sum()) for n, m in engine.masks().items()}
    assert sum(after.values()) == total and min(after.values()) >= 1
    assert after != before


@pytest.mark.parametrize("init", ["zero", "random"])
def test_grown_weights_start_as_configured(init):
    model, engine = make_sparse_mlp(density=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {n: m.clone() for n, m in engine.masks().items()}
    generator = torch.Generator().manual_seed(1)  # not the masks' seed: SET would regrow them
    masks = engine.propose(0.5, Strategy(1.0, "random"), UpdateContext(optimizer, generator))
    moved = engine.set_masks(masks, optimizer, init, generator)
    for name, mask in engine.masks().items():
        if mask.all():
            continue  # ERK made the layer dense: nothing to grow
        grown = mask & ~before[name]
        assert moved[name] == int(grown.sum()) > 0
        values = engine.layers[name].weight.detach()[grown]
        if init == "zero":
            assert torch.all(values == 0)
        else:  # drawn like the layer's active weights
            active = engine.layers[name].weight.detach()[mask & before[name]]
            assert torch.all(values != 0)
            assert float(values.std()) == pytest.approx(float(active.std()), rel=0.5)


def test_leakage_criteria_need_the_defenders_gradients():
    model, engine = make_sparse_mlp()
    context = UpdateContext(torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator())
    with pytest.raises(RuntimeError, match="member and held-out gradients"):
        engine.propose(0.3, Strategy(1.0, "random", prune="leakage"), context)
