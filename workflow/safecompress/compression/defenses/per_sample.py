"""Per-sample clipped gradients of a masked model: the part of a DP-SGD step that costs.

`PerSampleClipping` hooks every module that owns trainable parameters and keeps, for one step,
its input and the gradient of its output. After the backward pass, `clipped_sum` gives each
parameter's sum over the batch of every sample's masked gradient, scaled so that the sample's
norm over all layers is at most C:  sum_i min(1, C / ||M g_i||) M g_i.

A linear layer on one vector per sample (every layer of an MLP) never builds its per-sample
gradients g_i = b_i a_i^T, an (n, out, in) tensor whose writing costs forty times the step
itself: with mask M, ||M (b_i a_i^T)||^2 = (b_i^2)^T M (a_i^2), one matrix product for the
batch, and sum_i c_i M (b_i a_i^T) = M ((c b)^T a), another ("ghost" norms: Goodfellow 2015,
Li et al. ICLR 2022). Any other layer (a convolution, a linear layer on a sequence, an
embedding, a norm) takes its per-sample gradients from Opacus's sampler for its type
(functorch where Opacus has none), masked before their norms are taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from safecompress.sparse.engine import SparseEngine

# A layer's part of the step: each sample's squared gradient norm, and the clipped sum of its
# parameters' gradients given each sample's clipping factor.
LayerPart = tuple[torch.Tensor, Callable[[torch.Tensor], dict[nn.Parameter, torch.Tensor]]]


def _owns_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def _ghost_linear(
    layer: nn.Linear, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None
) -> LayerPart:
    """A linear layer on (n, in) inputs a with output gradients b: norms and sums by matrix
    products, the per-sample gradients never built."""
    a2, b2 = a * a, b * b
    # unmasked: ||b_i||^2 ||a_i||^2; masked: (b_i^2)^T M (a_i^2)
    squared = b2.sum(1) * a2.sum(1) if mask is None else ((b2 @ mask.to(b.dtype)) * a2).sum(1)
    if layer.bias is not None:
        squared = squared + b2.sum(1)

    def clipped(factor: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        weighted = b * factor[:, None]
        weight = weighted.T @ a
        sums = {layer.weight: weight if mask is None else weight * mask}
        if layer.bias is not None:
            sums[layer.bias] = weighted.sum(0)
        return sums

    return squared, clipped


def _materialised(
    module: nn.Module, a: torch.Tensor, b: torch.Tensor, masks: dict[nn.Parameter, torch.Tensor]
) -> LayerPart:
    """Any other layer: its per-sample gradients from Opacus's sampler for its type."""
    # imported here: Opacus takes a second to import, and an MLP never comes here
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.functorch import ft_compute_per_sample_gradient

    sampler = GradSampleModule.GRAD_SAMPLERS.get(type(module), ft_compute_per_sample_gradient)
    grads = {
        p: g * masks[p] if p in masks else g
        for p, g in sampler(module, [a], b).items()
        if p.requires_grad
    }
    squared = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())

    def clipped(factor: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        return {p: torch.einsum("i,i...->...", factor, g) for p, g in grads.items()}

    return squared, clipped


class PerSampleClipping:
    """Hooks on `model` that keep each trainable module's input and output gradient for one
    training step (forward and backward with grad enabled, in training mode), for
    `clipped_sum`. The loss is a mean over the batch, as `training.loop.train_step`'s is."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if _owns_trainable(m)]
        self.inputs: dict[nn.Module, torch.Tensor] = {}
        self.output_grads: dict[nn.Module, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = [
            module.register_forward_hook(self._capture) for module in self.modules
        ]

    def _capture(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"dpsgd needs one output tensor from each trainable module; "
                f"{type(module).__name__} gives {type(output).__name__}"
            )
        self.inputs[module] = inputs[0].detach()

        def keep(grad: torch.Tensor) -> None:
            self.output_grads[module] = grad.detach()

        output.register_hook(keep)

    def remove(self) -> None:
        """Detach the hooks: the model is a plain module again."""
        for handle in self.handles:
            handle.remove()

    def clipped_sum(
        self, max_grad_norm: float, masks: dict[nn.Parameter, torch.Tensor]
    ) -> tuple[dict[nn.Parameter, torch.Tensor], torch.Tensor]:
        """Every trainable parameter's sum of per-sample gradients, masked (`masks`: weight ->
        mask) and clipped to norm `max_grad_norm` over all layers as Opacus clips them; and
        each sample's norm before clipping. Consumes the step's captured tensors."""
        parts = []
        for module in self.modules:
            a, b = self.inputs.pop(module), self.output_grads.pop(module)
            b = b * len(b)  # the loss was a mean: per-sample gradients of each sample's loss
            if isinstance(module, nn.Linear) and a.dim() == 2:
                parts.append(_ghost_linear(module, a, b, masks.get(module.weight)))
            else:
                parts.append(_materialised(module, a, b, masks))
        norms = torch.stack([squared for squared, _ in parts]).sum(0).sqrt()
        factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # Opacus's factor
        sums: dict[nn.Parameter, torch.Tensor] = {}
        for _, clipped in parts:
            sums.update(clipped(factor))
        return sums, norms


class ClippedSteps:
    """Per-sample gradient clipping without noise, as a pre-step hook of a model's optimiser:
    on the active weights, a step's gradient becomes the batch mean of every sample's masked
    gradient clipped to norm `norm` (DP-SGD's clipping; the SafeCompress candidates that clip,
    `Strategy.clip`). The norm may change between steps; at 0 the model carries no hooks and
    the hook does nothing, so the step is the plain one, bit for bit."""

    def __init__(self, model: nn.Module, engine: SparseEngine, optimizer: torch.optim.Optimizer):
        self.model, self.engine, self.norm = model, engine, 0.0
        self.clipping: PerSampleClipping | None = None
        optimizer.register_step_pre_hook(self)

    def set(self, norm: float) -> None:
        """Clip the coming steps to `norm` (0: not at all)."""
        if norm < 0:
            raise ValueError(f"a clipping norm must be >= 0, got {norm}")
        if norm and self.clipping is None:
            self.clipping = PerSampleClipping(self.model)
        elif not norm and self.clipping is not None:
            self.clipping.remove()
            self.clipping = None
        self.norm = norm

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.clipping is None:
            return
        masks = self.engine.weight_masks()
        sums, norms = self.clipping.clipped_sum(self.norm, masks)
        for parameter, total in sums.items():
            mean = total / len(norms)
            # a pruned weight keeps its plain gradient, which only the growth criteria read
            # (RigL's regrowth), as in DST; its step is undone by the masks
            mask = masks.get(parameter)
            parameter.grad = mean if mask is None else torch.where(mask, mean, parameter.grad)
