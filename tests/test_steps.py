"""Every pipeline step runs by hand: `python -m safecompress.<step> --help`, and bad input
ends with exit code 2 and one line naming the problem."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import SHORT_TRAINING
from safecompress.batches import TrainBatches
from safecompress.data import Split
from safecompress.models import build_model
from safecompress.training import fit, seed_everything

REPO = Path(__file__).resolve().parent.parent
STEPS = ["split", "train", "compress", "evaluate", "summarize", "figures"]


def step(name, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run(
        [sys.executable, "-m", f"safecompress.{name}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("name", STEPS)
def test_every_step_has_a_help(name):
    result = step(name, "--help")
    assert result.returncode == 0, result.stderr
    assert f"python -m safecompress.{name}" in result.stdout


def test_unknown_data_set_is_one_clear_line(tmp_path):
    result = step("split", "--dataset", "mnist", "--out", str(tmp_path / "split.csv"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key data")
    assert not (tmp_path / "split.csv").exists()


def test_missing_split_file_names_the_file(tmp_path):
    result = step(
        "train",
        "--dataset",
        "digits",
        "--split",
        str(tmp_path / "nope.csv"),
        "--role",
        "target",
        "--out-dir",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    assert "nope.csv: no such file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_split_files_are_byte_identical_across_runs(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (first, second):
        assert step("split", "--dataset", "digits", "--out", str(path)).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_training_is_deterministic_for_a_seed():
    spec = SHORT_TRAINING
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    data = Split(x, (x.sum((1, 2, 3)) > 0).long())

    def trained(seed):
        seed_everything(seed)
        model = build_model({"arch": "mlp", "hidden": [16]}, (1, 4, 4), 2)
        history = fit(model, TrainBatches(data, spec, torch.device("cpu")), data, spec, seed)
        return model.state_dict(), history

    (a, history_a), (b, history_b), (c, _) = trained(1), trained(1), trained(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert history_a.equals(history_b)
    assert not all(torch.equal(a[k], c[k]) for k in a)
