"""White-box signals of a model: the input h of its output layer and the loss gradient with
respect to the logits, softmax(z) - onehot(y). Their outer product is each sample's gradient
of the output layer's weight, which the white-box attacker (SafeCompress TSE) reads without a
backward pass per sample (`attacks.learned.conv_of_outer_product`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def output_layer(model: nn.Module) -> nn.Linear:
    """The model's last nn.Linear in `model.modules()` order: the classifier head of every
    architecture in `models` (Sequential models end in it; a Hugging Face sequence classifier
    registers its `classifier` after the encoder and pooler)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take features from")
    return linears[-1]


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(n, d) float32 host tensor: what the output layer receives, in evaluation mode (the
    model's own mode is restored afterwards, so this also works in the middle of training).

    Captured by a forward hook, so any architecture works whose logits are the output of its
    last nn.Linear; that is checked on every chunk, since features of a layer whose output is
    post-processed would not give the gradient that the white-box attacker assumes. Plain
    float32 on every device (no autocast): one pass, and bit-reproducible on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    layer = output_layer(model)
    captured: dict[str, torch.Tensor] = {}

    def capture(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        captured["input"], captured["output"] = inputs[0], output

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    handle = layer.register_forward_hook(capture)
    try:
        chunks = []
        for chunk in x.split(batch_size):
            logits = model(chunk.to(device))
            if not torch.equal(captured["output"].float(), logits.float()):
                raise ValueError(
                    f"the last nn.Linear of {type(model).__name__} does not produce its logits; "
                    "its input is not the penultimate feature vector"
                )
            chunks.append(captured["input"].detach().float().flatten(1).cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if not chunks:
        return torch.empty(0, layer.in_features)
    return torch.cat(chunks)


def output_residual(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """softmax(logits) - onehot(labels): the cross-entropy gradient with respect to the logits."""
    return torch.softmax(logits, dim=1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)
