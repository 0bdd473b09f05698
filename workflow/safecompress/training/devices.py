"""Where models run: the job's device, placement, precision, and inference in chunks."""

from __future__ import annotations

import torch
from torch import nn


def pick_device() -> torch.device:
    """The job's accelerator when it was given one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device`; on a GPU, convolution weights go channels-last once here,
    not on every forward pass."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def forward(model: nn.Module, x: torch.Tensor, autocast: bool = True) -> torch.Tensor:
    """Float32 logits. On a GPU: bf16 autocast (unless `autocast` is off), and images in
    channels-last layout to match the weights (see `to_device`), the fast paths of tensor
    cores. On the CPU: plain float32, so CPU runs stay bit-for-bit reproducible."""
    if x.device.type != "cuda":
        return model(x)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        return model(x).float()


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1024, autocast: bool = True
) -> torch.Tensor:
    """Logits of `model` on `x` in evaluation mode, computed on the model's device in chunks
    and returned in host memory, where the metrics and attacks read them. `autocast=False`
    keeps a GPU in float32 too: the saved signals of the evaluation."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [forward(model, chunk.to(device), autocast).cpu() for chunk in x.split(batch_size)]
    )
