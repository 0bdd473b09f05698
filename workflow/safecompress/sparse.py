"""The sparse engine: masks as registered buffers, ERK densities, magnitude prune, regrowth.

Masks live on the model (buffer `weight_mask` of every prunable layer), so saving the model's
state dict saves them and loading it restores them. Weights at masked positions are kept at
exactly zero; the engine re-applies the masks after every optimiser step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
MASK_BUFFER = "weight_mask"
GROWTH_CRITERIA = ("random", "gradient", "momentum")
DISTRIBUTIONS = ("erk", "uniform")


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


def prune_and_grow(
    weight: torch.Tensor, mask: torch.Tensor, n_swap: int, grow_scores: torch.Tensor
) -> torch.Tensor:
    """Drop the `n_swap` active weights of smallest magnitude, then activate the `n_swap`
    inactive positions with the largest `grow_scores`. The number of active weights is
    unchanged. Just-dropped positions may be regrown (as in RigL); they restart from zero."""
    mask = mask.bool()
    active = int(mask.sum())
    n_swap = min(n_swap, active, mask.numel() - active)
    if n_swap <= 0:
        return mask.clone()
    lowest = torch.finfo(weight.dtype).min
    magnitude = torch.where(mask, weight.detach().abs(), torch.full_like(weight, math.inf))
    dropped = top_k_mask(-magnitude, n_swap)
    kept = mask & ~dropped
    candidates = torch.where(kept, torch.full_like(grow_scores, lowest), grow_scores.float())
    return kept | top_k_mask(candidates, n_swap)


def growth_scores(
    criterion: str,
    weight: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> torch.Tensor:
    """Where to regrow: random (SET), |gradient| (RigL), or |momentum| (SNFS)."""
    if criterion == "random":
        return torch.rand(weight.shape, generator=generator).to(weight.device)
    if criterion == "gradient":
        if weight.grad is None:
            raise RuntimeError("gradient growth needs a backward pass before the mask update")
        return weight.grad.detach().abs()
    if criterion == "momentum":
        buffer = optimizer.state.get(weight, {}).get("momentum_buffer")
        if buffer is None:
            raise RuntimeError("momentum growth needs an SGD optimiser with momentum > 0")
        return buffer.detach().abs()
    raise ValueError(f"unknown growth criterion {criterion!r}; use one of {GROWTH_CRITERIA}")


def cosine_prune_fraction(initial: float, step: int, end_step: int) -> float:
    """Fraction of active weights replaced at `step`: cosine decay from `initial` to 0."""
    if step >= end_step:
        return 0.0
    return 0.5 * initial * (1.0 + math.cos(math.pi * step / end_step))


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

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the weights at masked positions (call after every optimiser step)."""
        for layer in self.layers.values():
            layer.weight.mul_(getattr(layer, MASK_BUFFER))

    def propose(
        self,
        fraction: float,
        growth: str,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """New masks after replacing `fraction` of each layer's active weights; not applied."""
        proposal = {}
        for name, layer in self.layers.items():
            mask = getattr(layer, MASK_BUFFER)
            n_swap = int(fraction * int(mask.sum()))
            scores = growth_scores(growth, layer.weight, optimizer, generator)
            proposal[name] = prune_and_grow(layer.weight, mask, n_swap, scores)
        return proposal

    @torch.no_grad()
    def set_masks(self, masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        """Adopt new masks: newly grown weights and their momentum start at zero."""
        for name, layer in self.layers.items():
            new = masks[name].to(torch.bool)
            grown = new & ~getattr(layer, MASK_BUFFER)
            layer.weight[grown] = 0.0
            buffer = optimizer.state.get(layer.weight, {}).get("momentum_buffer")
            if buffer is not None:
                buffer[grown] = 0.0
            getattr(layer, MASK_BUFFER).copy_(new)
        self.apply()

    def layer_density(self) -> dict[str, float]:
        """Measured fraction of non-zero weights per prunable layer."""
        return {
            name: float((layer.weight != 0).sum()) / layer.weight.numel()
            for name, layer in self.layers.items()
        }


def measured_density(model: nn.Module) -> float:
    """Fraction of non-zero weights over all prunable layers, counted from the weights."""
    layers = prunable_layers(model).values()
    nonzero = sum(int((m.weight != 0).sum()) for m in layers)
    return nonzero / sum(m.weight.numel() for m in layers)
