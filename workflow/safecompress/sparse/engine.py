"""The sparse engine: masks as registered buffers, ERK densities, prune and grow criteria.

Masks live on the model (buffer `weight_mask` of every prunable layer), so saving the model's
state dict saves them and loading it restores them. Weights at masked positions are kept at
exactly zero; the engine re-applies the masks after every optimiser step.

A mask update drops some active weights and grows as many inactive ones. What is dropped,
what is grown, where grown weights start and whether layers keep their own budgets are the
four parts of a strategy (`specs.Strategy`); each part is a registry here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from safecompress.config.specs import Strategy

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
MASK_BUFFER = "weight_mask"
DISTRIBUTIONS = ("erk", "uniform")
# Layer budgets of a mask update: `layer` regrows in every layer as many weights as it
# dropped (densities fixed, RigL); `global` pools the regrowth of all layers and grows where
# the growth score is highest, so density moves between layers (down to a floor per layer).
BUDGETS = ("layer", "global")
# Where grown weights start: at zero (RigL: the function does not change), or drawn like the
# layer's active weights (normal, their standard deviation), so the candidate changes at once.
GROWTH_INITS = ("zero", "random")


@dataclass(frozen=True)
class UpdateContext:
    """What prune and growth criteria may read besides a layer's weight: the optimiser (its
    momentum), the update's random generator, and, for the leakage criteria, the gradients of
    the mean loss on the defender's known members and on its held-out (reference) data, by
    layer name."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    member_grads: dict[str, torch.Tensor] | None = None
    heldout_grads: dict[str, torch.Tensor] | None = None
    # fewest active weights a layer may be left with when budgets are global (default 1)
    layer_floors: dict[str, int] | None = None

    def grads(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.member_grads is None or self.heldout_grads is None:
            raise RuntimeError("leakage criteria need the defender's member and held-out gradients")
        return self.member_grads[name], self.heldout_grads[name]


# A criterion scores every position of one layer's weight: (layer name, weight, context).
Criterion = Callable[[str, torch.Tensor, UpdateContext], torch.Tensor]


def _magnitude(name: str, weight: torch.Tensor, context: UpdateContext) -> torch.Tensor:
    return weight.detach().abs()


def _leakage_keep(name: str, weight: torch.Tensor, context: UpdateContext) -> torch.Tensor:
    """Removing w changes the member/held-out loss gap L_heldout - L_members by about
    -w * (g_heldout - g_members) (first order); the weights whose removal narrows the gap most
    score lowest and go first."""
    members, heldout = context.grads(name)
    return weight.detach() * (members - heldout)


# Which active weights are kept (the lowest scores are dropped).
PRUNE_CRITERIA: dict[str, Criterion] = {"magnitude": _magnitude, "leakage": _leakage_keep}


def _random(name: str, weight: torch.Tensor, context: UpdateContext) -> torch.Tensor:
    return torch.rand(weight.shape, generator=context.generator).to(weight.device)


def _gradient(name: str, weight: torch.Tensor, context: UpdateContext) -> torch.Tensor:
    if weight.grad is None:
        raise RuntimeError("gradient growth needs a backward pass before the mask update")
    return weight.grad.detach().abs()


def _momentum(name: str, weight: torch.Tensor, context: UpdateContext) -> torch.Tensor:
    buffer = context.optimizer.state.get(weight, {}).get("momentum_buffer")
    if buffer is None:
        raise RuntimeError("momentum growth needs an SGD optimiser with momentum > 0")
    return buffer.detach().abs()


def _leakage_grow(name: str, weight: torch.Tensor, context: UpdateContext) -> torch.Tensor:
    """A training step on a grown weight moves it by -lr * g_members, which changes the
    held-out loss by -lr * g_members * g_heldout: grow where the members' and the held-out
    gradients agree (learning that generalises), not where they disagree (memorising)."""
    members, heldout = context.grads(name)
    return members * heldout


# Where inactive weights are grown (the highest scores first). The first three read only the
# training state (DST's choices); `leakage` reads the defender's data (SafeCompress only).
GROWTH_CRITERIA: dict[str, Criterion] = {
    "random": _random,
    "gradient": _gradient,
    "momentum": _momentum,
    "leakage": _leakage_grow,
}
TRAINING_GROWTH = ("random", "gradient", "momentum")
LEAKAGE_CRITERIA = ("leakage",)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and convolutional layers by name; their weights are pruned, biases and norms not."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdős–Rényi-kernel layer densities (Evci et al., RigL) with overall density `density`.

    Layer l gets density eps * (sum of its dims / product of its dims), with eps chosen so the
    total number of kept weights is `density` x all weights. Layers whose density would
    exceed 1 are made dense and eps is solved again for the rest.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while True:
        sparse_layers = [n for n in shapes if n not in dense]
        remaining = budget - sum(sizes[n] for n in dense)
        eps = remaining / sum(raw[n] * sizes[n] for n in sparse_layers) if sparse_layers else 0.0
        overflow = [n for n in sparse_layers if eps * raw[n] > 1.0]
        if not overflow:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.update(overflow)


def layer_densities(
    shapes: dict[str, tuple[int, ...]], density: float, distribution: str
) -> dict[str, float]:
    """Per-layer densities for an overall `density` under `distribution` (erk or uniform)."""
    if distribution == "erk":
        return erk_densities(shapes, density)
    if distribution == "uniform":
        return {name: density for name in shapes}
    raise ValueError(f"unknown sparse.distribution {distribution!r}; use one of {DISTRIBUTIONS}")


def _layer_budgets(
    model: nn.Module, density: float, distribution: str
) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """The prunable layers of `model` and the density each gets for an overall `density`."""
    layers = prunable_layers(model)
    shapes = {name: tuple(layer.weight.shape) for name, layer in layers.items()}
    return layers, layer_densities(shapes, density, distribution)


def n_active(size: int, density: float) -> int:
    """Number of weights a layer of `size` keeps at `density` (at least one)."""
    return max(1, min(size, round(density * size)))


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of `scores` (ties broken by position)."""
    flat = scores.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    return keep.view_as(scores)


def random_mask(shape: torch.Size, density: float, generator: torch.Generator) -> torch.Tensor:
    """A mask keeping a uniformly random `n_active` subset of positions."""
    scores = torch.rand(shape, generator=generator)
    return top_k_mask(scores, n_active(scores.numel(), density))


def drop(mask: torch.Tensor, keep_scores: torch.Tensor, n_drop: int) -> torch.Tensor:
    """The mask without its `n_drop` active positions of lowest `keep_scores`."""
    mask = mask.bool()
    n_drop = min(n_drop, int(mask.sum()))
    if n_drop <= 0:
        return mask.clone()
    scores = torch.where(mask, keep_scores.float(), torch.full_like(keep_scores.float(), math.inf))
    return mask & ~top_k_mask(-scores, n_drop)


def _growable(kept: torch.Tensor, grow_scores: torch.Tensor) -> torch.Tensor:
    """Growth scores with kept positions at the lowest value, so they are never chosen."""
    lowest = torch.finfo(torch.float32).min
    return torch.where(kept, torch.full_like(grow_scores.float(), lowest), grow_scores.float())


def grow(kept: torch.Tensor, grow_scores: torch.Tensor, n_grow: int) -> torch.Tensor:
    """`kept` plus its `n_grow` inactive positions of highest `grow_scores` (just-dropped
    positions may be regrown, as in RigL)."""
    n_grow = min(n_grow, kept.numel() - int(kept.sum()))
    if n_grow <= 0:
        return kept
    return kept | top_k_mask(_growable(kept, grow_scores), n_grow)


def grow_across_layers(
    kept: dict[str, torch.Tensor],
    grow_scores: dict[str, torch.Tensor],
    n_grow: int,
    floors: dict[str, int],
) -> dict[str, torch.Tensor]:
    """Grow `n_grow` positions in all layers together, where `grow_scores` are highest: the
    layers' budgets follow the growth criterion instead of staying fixed. A layer left below
    its floor first regrows up to it by its own scores, so no layer is starved."""
    names = list(kept)
    refilled = {n: grow(kept[n], grow_scores[n], floors[n] - int(kept[n].sum())) for n in names}
    n_grow -= sum(int(refilled[n].sum()) - int(kept[n].sum()) for n in names)
    flat = torch.cat([_growable(refilled[n], grow_scores[n]).flatten() for n in names])
    n_free = sum(refilled[n].numel() - int(refilled[n].sum()) for n in names)
    chosen = top_k_mask(flat, max(0, min(n_grow, n_free)))
    sizes = [kept[n].numel() for n in names]
    return {
        n: refilled[n] | part.view_as(kept[n])
        for n, part in zip(names, chosen.split(sizes), strict=True)
    }


def scheduled_prune_fraction(initial: float, floor: float, step: int, end_step: int) -> float:
    """Fraction of active weights replaced at `step`: cosine decay from `initial` to `floor`
    at `end_step` (RigL, ITOP: floor 0; a floor keeps late updates large enough to matter)."""
    if step >= end_step:
        return floor
    return floor + 0.5 * (initial - floor) * (1.0 + math.cos(math.pi * step / end_step))


class SparseEngine:
    """Owns the masks of one model: applies them, and proposes or applies drop/grow updates."""

    def __init__(self, model: nn.Module):
        self.layers = {
            name: layer
            for name, layer in prunable_layers(model).items()
            if hasattr(layer, MASK_BUFFER)
        }
        if not self.layers:
            raise ValueError("model has no masks; create them with SparseEngine.attach")

    @classmethod
    def attach(cls, model: nn.Module, masks: dict[str, torch.Tensor]) -> SparseEngine:
        """Register `masks` (layer name -> bool tensor) as buffers and zero masked weights."""
        layers = prunable_layers(model)
        for name, mask in masks.items():
            layer = layers[name]
            if mask.shape != layer.weight.shape:
                raise ValueError(
                    f"mask for {name} has shape {tuple(mask.shape)}, weight has "
                    f"{tuple(layer.weight.shape)}"
                )
            layer.register_buffer(MASK_BUFFER, mask.to(layer.weight.device, torch.bool))
        engine = cls(model)
        engine.apply()
        return engine

    @classmethod
    def random_init(
        cls,
        model: nn.Module,
        density: float,
        distribution: str,
        generator: torch.Generator,
        rescale: bool = True,
    ) -> SparseEngine:
        """Sparse start of dynamic sparse training: random masks with layer-wise densities."""
        layers, densities = _layer_budgets(model, density, distribution)
        masks = {n: random_mask(layers[n].weight.shape, d, generator) for n, d in densities.items()}
        # Sparsity-aware initialisation: with a fraction d of its inputs kept, a unit's output
        # variance shrinks by d; scaling by 1/sqrt(d) restores the dense initial variance so
        # very sparse networks still pass signal (Evci et al., "Gradient flow in sparse NNs").
        if rescale:
            with torch.no_grad():
                for name, density_l in densities.items():
                    layers[name].weight.mul_(1.0 / math.sqrt(density_l))
        return cls.attach(model, masks)

    @classmethod
    def magnitude_init(cls, model: nn.Module, density: float, distribution: str) -> SparseEngine:
        """One-shot magnitude pruning of a trained model with layer-wise densities."""
        layers, densities = _layer_budgets(model, density, distribution)
        masks = {
            n: top_k_mask(layers[n].weight.detach().abs(), n_active(layers[n].weight.numel(), d))
            for n, d in densities.items()
        }
        return cls.attach(model, masks)

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: getattr(layer, MASK_BUFFER) for name, layer in self.layers.items()}

    def weight_masks(self) -> dict[nn.Parameter, torch.Tensor]:
        """Each masked weight's mask, keyed by the weight itself."""
        return {layer.weight: getattr(layer, MASK_BUFFER) for layer in self.layers.values()}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the weights at masked positions (call after every optimiser step)."""
        for layer in self.layers.values():
            layer.weight.mul_(getattr(layer, MASK_BUFFER))

    def propose(
        self, fraction: float, strategy: Strategy, context: UpdateContext
    ) -> dict[str, torch.Tensor]:
        """New masks after replacing `fraction` of each layer's active weights by `strategy`'s
        prune and growth criteria and layer budget; not applied."""
        keep_score, grow_score = PRUNE_CRITERIA[strategy.prune], GROWTH_CRITERIA[strategy.growth]
        kept, grow_scores, n_swap = {}, {}, {}
        for name, layer in self.layers.items():
            mask = getattr(layer, MASK_BUFFER)
            active = int(mask.sum())
            # a layer that could lose its regrowth to other layers keeps one weight
            most = active - 1 if strategy.budget == "global" else mask.numel() - active
            n_swap[name] = max(0, min(int(fraction * active), active, most))
            kept[name] = drop(mask, keep_score(name, layer.weight, context), n_swap[name])
            grow_scores[name] = grow_score(name, layer.weight, context)
        if strategy.budget == "global":
            floors = context.layer_floors or dict.fromkeys(self.layers, 1)
            return grow_across_layers(kept, grow_scores, sum(n_swap.values()), floors)
        return {name: grow(kept[name], grow_scores[name], n_swap[name]) for name in self.layers}

    @torch.no_grad()
    def set_masks(
        self,
        masks: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        init: str = "zero",
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Adopt new masks; grown weights start as `init` says, their momentum at zero.
        Returns the number of grown positions that were inactive before, by layer."""
        grown_by_layer = {}
        for name, layer in self.layers.items():
            old, new = getattr(layer, MASK_BUFFER), masks[name].to(torch.bool)
            grown = new & ~old
            layer.weight[grown] = _initial_values(
                layer.weight, old, int(grown.sum()), init, generator
            )
            buffer = optimizer.state.get(layer.weight, {}).get("momentum_buffer")
            if buffer is not None:
                buffer[grown] = 0.0
            old.copy_(new)
            grown_by_layer[name] = int(grown.sum())
        self.apply()
        return grown_by_layer

    def layer_density(self) -> dict[str, float]:
        """Measured fraction of non-zero weights per prunable layer."""
        return {
            name: float((layer.weight != 0).sum()) / layer.weight.numel()
            for name, layer in self.layers.items()
        }


def _initial_values(
    weight: torch.Tensor, mask: torch.Tensor, n: int, init: str, generator: torch.Generator | None
) -> torch.Tensor | float:
    """Starting values of `n` grown weights of a layer whose active weights are `weight[mask]`."""
    if init == "zero" or n == 0:
        return 0.0
    if init == "random":
        if generator is None:
            raise ValueError("random growth initialisation needs a generator")
        active = weight[mask]
        scale = float(active.std()) if active.numel() > 1 else 0.0
        return (torch.randn(n, generator=generator) * scale).to(weight.device, weight.dtype)
    raise ValueError(f"unknown growth initialisation {init!r}; use one of {GROWTH_INITS}")


def measured_density(model: nn.Module) -> float:
    """Fraction of non-zero weights over all prunable layers, counted from the weights."""
    layers = prunable_layers(model).values()
    nonzero = sum(int((m.weight != 0).sum()) for m in layers)
    return nonzero / sum(m.weight.numel() for m in layers)
