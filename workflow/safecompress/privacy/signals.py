"""Per-sample signals of a model: computed once, saved, and the only input of the attacks.

Float32 on every device (no bf16 autocast on a GPU), so a signal does not depend on where
the model ran: a bf16 logit has 8 bits of mantissa, coarser than the differences the
low-FPR attacks read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from safecompress.data.splits import Data
from safecompress.io import read_csv, read_features, write_csv, write_features

if TYPE_CHECKING:  # torch and the attacks are imported where used: the steps that only read
    # saved signals (summarize, figures) import no torch
    from torch import nn

    from safecompress.privacy.attacks import Population

SIGNAL_COLUMNS = ("index", "set", "label", "loss")
# The `set` of the target's rows on RMIA's population (never saved: not evaluated samples).
POPULATION = "population"
# The `set` of the target's rows on the canaries (data.splits.CANARY), saved after the
# evaluated rows: the ones it trained on and the held-out ones, each with its membership.
CANARY_SETS = {"canary-member": "member", "canary-non-member": "non-member"}


def signal_table(model: nn.Module, data: Data, sets: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per sample: pool `index`, `set` name, true `label`, `loss`, `logit_0..C-1`.
    The loss is the one the `loss` attack scores (`attacks.scores.cross_entropy`)."""
    from safecompress.privacy.attacks.scores import cross_entropy
    from safecompress.training.devices import predict_logits

    parts = []
    for name, indices in sets.items():
        samples = data.take(indices)
        logits = predict_logits(model, samples.x, autocast=False).double().numpy()
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


def feature_matrix(model: nn.Module, data: Data, indices: np.ndarray) -> np.ndarray:
    """(n, d) float32: the input of the model's output layer for these pool samples."""
    from safecompress.privacy.features import penultimate_features

    return penultimate_features(model, data.take(indices).x).numpy()


def logits_of(signals: pd.DataFrame) -> np.ndarray:
    """The logit columns of a signal table, in class order, as an (n, C) array."""
    columns = [c for c in signals.columns if re.fullmatch(r"logit_\d+", c)]
    columns.sort(key=lambda c: int(c.removeprefix("logit_")))
    return signals[columns].to_numpy(dtype=np.float64)


def aligned_queries(queries: Sequence[pd.DataFrame], signals: pd.DataFrame) -> np.ndarray:
    """(K, n, C): each reference model's logits on the evaluated samples (its queries.csv), in
    the order of the target's `signals`."""
    aligned = []
    for frame in queries:
        by_index = frame.set_index("index")
        missing = np.setdiff1d(signals["index"], by_index.index)
        if len(missing):
            raise ValueError(f"queries.csv lacks {len(missing)} queried samples; rerun the shadows")
        aligned.append(logits_of(by_index.loc[signals["index"]]))
    return np.stack(aligned)


def save_reference_signals(
    model: nn.Module,
    data: Data,
    sets: dict[str, np.ndarray],
    queried: np.ndarray,
    k: int,
    out_dir: Path,
) -> None:
    """What the attacks read of reference (shadow) model k, written to `out_dir`: its signals on
    its own `member` and `non-member` samples (signals.csv, written last: its presence marks
    the reference done), the features of those rows (features.npy) and its logits on the
    samples the attacker asks about (queries.csv)."""
    signals = signal_table(model, data, sets)
    signals.insert(0, "shadow", k)
    queries = signal_table(model, data, {"query": queried}).drop(columns="set")
    write_features(
        feature_matrix(model, data, signals["index"].to_numpy()), out_dir / "features.npy"
    )
    write_csv(queries, out_dir / "queries.csv")
    write_csv(signals, out_dir / "signals.csv")


def read_shadows(
    directories: Sequence[Path], features: bool
) -> tuple[pd.DataFrame, np.ndarray | None, list[pd.DataFrame]]:
    """What the shadow models saved (steps.train --role shadow): their signals on their own
    pools, pooled; the features of those rows (if `features`); and each one's logits on the
    samples the attacker asks about."""
    signals, matrices, queries = [], [], []
    for directory in directories:
        frame = read_csv(
            directory / "signals.csv", required=("shadow", *SIGNAL_COLUMNS), complete=True
        )
        signals.append(frame)
        if features:
            matrices.append(read_features(directory / "features.npy", len(frame)))
        queries.append(
            read_csv(directory / "queries.csv", required=("index", "label"), complete=True)
        )
    matrix = np.concatenate(matrices) if features else None
    return pd.concat(signals, ignore_index=True), matrix, queries


class RmiaCalibration(NamedTuple):
    """What RMIA reads off the references for one population, the same for every target
    attacked on it: the population samples (pool indices, ascending), each one's mean
    true-class probability under the references, none of which trained on it, and the offline
    a tuned on the references (`reference.tune_rmia_offline_a`)."""

    index: np.ndarray
    reference_probability: np.ndarray
    offline_a: float


def rmia_calibration(population_index: np.ndarray, shadow: pd.DataFrame) -> RmiaCalibration:
    """`RmiaCalibration` of the references' signals `shadow` for the population samples
    `population_index` (`data.splits.rmia_population`): computed once per set of references."""
    from safecompress.privacy.attacks.reference import tune_rmia_offline_a
    from safecompress.privacy.attacks.scores import confidence, softmax

    shadow = shadow.assign(
        probability=confidence(softmax(logits_of(shadow)), shadow["label"]),
        member=(shadow["set"] == "member").astype(float),  # numbers: one block to pivot
    )
    out = shadow[(shadow["set"] == "non-member") & shadow["index"].isin(population_index)]
    reference = out.groupby("index")["probability"].mean()
    # NaN where a reference has no signal: a matched one's held-out `reference` stand-in
    probs = shadow.pivot(index="shadow", columns="index", values="probability")
    is_member = shadow.pivot(index="shadow", columns="index", values="member").to_numpy() == 1
    offline_a, _ = tune_rmia_offline_a(
        probs.to_numpy(), is_member, probs.columns.isin(reference.index)
    )
    return RmiaCalibration(reference.index.to_numpy(), reference.to_numpy(), offline_a)


def population(target: pd.DataFrame, calibration: RmiaCalibration) -> Population:
    """RMIA's population: the target's rows on it (signals of the population samples) with
    the references' `calibration` of them."""
    from safecompress.privacy.attacks import Population

    rows = target.set_index("index").loc[calibration.index]
    return Population(
        logits_of(rows),
        rows["label"].to_numpy(),
        calibration.reference_probability,
        calibration.offline_a,
    )
