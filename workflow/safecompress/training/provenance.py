"""What produced a result: config hash, code revision, library versions, device."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from safecompress import __version__
from safecompress.io import config_hash

PACKAGE_DIR = Path(__file__).resolve().parent


@functools.cache
def code_revision() -> str:
    """The git commit of the code (`+dirty` when tracked files differ from it) when the package
    runs from a git checkout, else the installed package's version."""
    try:
        top = _git("rev-parse", "--show-toplevel")
        if PACKAGE_DIR.is_relative_to(Path(top).resolve()):
            commit = _git("rev-parse", "HEAD")
            dirty = _git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_DIR))
            return f"git:{commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        return f"package:{metadata.version('safecompress')}"
    except metadata.PackageNotFoundError:
        return f"package:{__version__}"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(PACKAGE_DIR), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def provenance(config_sections: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Recorded with every model, checkpoint and result table."""
    return {
        "config_hash": config_hash(config_sections),
        "code_version": code_revision(),
        "torch_version": torch.__version__,
        "device": str(device),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
    }
