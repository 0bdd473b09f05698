"""Model architectures, built from the config's `model` section."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import safetensors
import safetensors.torch
from torch import nn

from .io import atomic_path
from .sparse import MASK_BUFFER, SparseEngine

ARCHITECTURES = ("mlp", "cnn")


def build_model(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A freshly initialised model; seed torch before calling for a reproducible one."""
    arch = spec["arch"]
    if arch == "mlp":
        return mlp(math.prod(input_shape), spec.get("hidden", [256, 128]), n_classes)
    if arch == "cnn":
        return small_cnn(input_shape, spec.get("channels", [32, 64]), n_classes)
    raise ValueError(f"unknown model.arch {arch!r}; use one of {ARCHITECTURES}")


def mlp(n_inputs: int, hidden: list[int], n_classes: int) -> nn.Sequential:
    """Flatten, then Linear-ReLU blocks, then a linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_classes))
    model = nn.Sequential(*layers)
    init_relu_network(model)
    return model


def small_cnn(input_shape: tuple[int, ...], channels: list[int], n_classes: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU blocks, 2x2 max-pool after each, global average pool, linear head."""
    if len(input_shape) != 3:
        raise ValueError(f"model.arch 'cnn' needs image inputs (C, H, W), got shape {input_shape}")
    layers: list[nn.Module] = []
    width = input_shape[0]
    for size in channels:
        layers += [
            nn.Conv2d(width, size, 3, padding=1, bias=False),
            nn.BatchNorm2d(size),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        width = size
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes)]
    model = nn.Sequential(*layers)
    init_relu_network(model)
    return model


def init_relu_network(model: nn.Module) -> None:
    """He (Kaiming) normal initialisation for ReLU networks, zero biases: PyTorch's default
    Linear init shrinks the signal several-fold per layer, which very sparse nets cannot afford."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def save_model(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write weights (and mask buffers) as safetensors, with `meta` as JSON in its header.

    safetensors holds tensors only, so loading a shared file can never run code.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by `save_model`: architecture from its metadata, then weights."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["meta"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path}: no such model file; rerun the rule that makes it"
        ) from err
    except (safetensors.SafetensorError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: not a readable SafeCompress model file ({err}); delete it and rerun"
        ) from err
    model = build_model(meta["model"], tuple(meta["input_shape"]), meta["n_classes"])
    masks = {
        key.removesuffix(f".{MASK_BUFFER}"): value
        for key, value in tensors.items()
        if key.endswith(f".{MASK_BUFFER}")
    }
    if masks:
        SparseEngine.attach(model, masks)
    model.load_state_dict(tensors)
    return model, meta
