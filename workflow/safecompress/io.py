"""Files that are either complete or absent (atomic writes), checked tables, config hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A killed or failing writer therefore never leaves a file that looks complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o644)  # mkstemp makes owner-only files; results are for every reader
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically, without the pandas index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)  # shortest repr that round-trips every float exactly


def read_csv(
    path: str | os.PathLike, required: tuple[str, ...] = (), complete: bool = False
) -> pd.DataFrame:
    """Read a table and check it has the `required` columns, naming the file if not.

    With `complete`, a missing value anywhere (as a file cut off mid-row has) is refused too.
    """
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such file; rerun the rule that makes it") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV table ({err}); delete it and rerun") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; delete it and rerun")
    if complete and frame.isna().any(axis=None):
        row = int(frame.isna().any(axis=1).to_numpy().argmax()) + 2  # 1-based, after header
        raise ValueError(
            f"{path}: missing values from line {row} (truncated?); delete it and rerun"
        )
    return frame


def config_hash(section: dict[str, Any]) -> str:
    """Short stable hash of a configuration section, recorded with every result."""
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def write_features(matrix: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (n, d) float32 feature matrix atomically (NumPy's .npy format)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(matrix, dtype=np.float32))


def read_features(path: str | os.PathLike, n_rows: int) -> np.ndarray:
    """Read a feature matrix and check it has one row per signal, naming the file if not."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such file; rerun the rule that makes it") from err
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{path}: not a readable .npy matrix ({err}); delete it and rerun"
        ) from err
    if matrix.ndim != 2 or len(matrix) != n_rows:
        raise ValueError(
            f"{path}: shape {matrix.shape}, expected {n_rows} rows of features; delete it and rerun"
        )
    return matrix


def write_arrays(arrays: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write named arrays atomically (NumPy's .npz format, uncompressed)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_arrays(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read named arrays and check the `names` are there, naming the file if not."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such file; rerun the rule that makes it") from err
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err}); delete it and rerun") from err
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}; delete it and rerun")
    return arrays
