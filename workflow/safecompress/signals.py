"""Per-sample signals of a model — computed once, saved, and the only input of the attacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from .attacks.scores import cross_entropy
from .devices import predict_logits
from .splits import Data

SIGNAL_COLUMNS = ("index", "set", "label", "loss")


def signal_table(model: nn.Module, data: Data, sets: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per sample: pool `index`, `set` name, true `label`, `loss`, `logit_0..C-1`.
    The loss is the one the `loss` attack scores (`attacks.scores.cross_entropy`)."""
    parts = []
    for name, indices in sets.items():
        samples = data.take(indices)
        logits = predict_logits(model, samples.x).double().numpy()
        labels = samples.y.cpu().numpy()
        part = pd.DataFrame(
            {
                "index": indices,
                "set": name,
                "label": labels,
                "loss": cross_entropy(logits, labels),
            }
        )
        logit_columns = pd.DataFrame(logits, columns=[f"logit_{c}" for c in range(logits.shape[1])])
        parts.append(pd.concat([part, logit_columns], axis=1))
    return pd.concat(parts, ignore_index=True)


def logits_of(signals: pd.DataFrame) -> np.ndarray:
    """The logit columns of a signal table as an (n, C) array."""
    columns = [c for c in signals.columns if c.startswith("logit_")]
    return signals[columns].to_numpy(dtype=np.float64)
