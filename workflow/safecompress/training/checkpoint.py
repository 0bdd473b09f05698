"""Training checkpoints: written atomically at the end of an epoch, at most every
`SAVE_SECONDS`, and loaded without unpickling code.

A checkpoint holds only tensors and plain Python values, so it is read with
`torch.load(weights_only=True)`: a crafted pickle that would run code is refused. It carries a
fingerprint of what produced it; one from another config or code version is not resumed.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from safecompress.io import atomic_path

log = logging.getLogger(__name__)

# A killed run loses about this much training at most. Saving at every epoch cost the small
# default's DST 15 % of its time (40 epochs of 16 steps); a longer epoch is saved every time.
SAVE_SECONDS = 30.0


class Checkpoint:
    """The resumable state of one training run, at `path`, valid for one `fingerprint`; saved
    when at least `every` seconds have passed since the last save (or the start; 0: always)."""

    def __init__(self, path: str | os.PathLike, fingerprint: str, every: float = SAVE_SECONDS):
        self.path, self.fingerprint, self.every = Path(path), fingerprint, every
        self.saved_at = time.monotonic()

    def due(self) -> bool:
        """Whether the state is to be saved now (`save` saves it whenever it is called)."""
        return time.monotonic() - self.saved_at >= self.every

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, **state}, tmp)
        self.saved_at = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it belongs to another run."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise ValueError(
                f"{self.path}: corrupt or unsafe checkpoint ({str(err).splitlines()[0]}); "
                "delete it to train from the start"
            ) from err
        if state.get("fingerprint") != self.fingerprint:
            log.warning("%s is from another config or code version; starting over", self.path)
            return None
        log.info("resuming from %s (epoch %d)", self.path, state["epoch"])
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
