"""A compression job killed with SIGKILL mid-training resumes from its last checkpoint and
ends exactly as an uninterrupted run; checkpoints that could run code are refused."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from safecompress.training.checkpoint import Checkpoint

REPO = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((REPO / ".test/config/config.yaml").read_text())


def compress_command(split, out_dir):
    train = {**TINY["train"], "epochs": 40}  # long enough to be killed mid-way
    return [
        sys.executable,
        "-m",
        "safecompress.steps.compress",
        "--dataset",
        "digits",
        "--split",
        str(split),
        "--method",
        "safecompress",
        "--density",
        "0.1",
        "--seed",
        "0",
        "--out-dir",
        str(out_dir),
        "--config",
        str(REPO / ".test/config/config.yaml"),
        "--train",
        json.dumps(train),
    ]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "split.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "safecompress.steps.split",
            "--dataset",
            "digits",
            "--out",
            str(path),
            "--config",
            str(REPO / ".test/config/config.yaml"),
        ],
        check=True,
        env=ENV,
        timeout=120,
        capture_output=True,
    )
    return path


ENV = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}


def test_killed_run_resumes_to_the_same_result(split, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(
        compress_command(split, reference), check=True, env=ENV, timeout=300, capture_output=True
    )

    process = subprocess.Popen(
        compress_command(split, resumed),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = resumed / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (resumed / "model.safetensors").exists()  # nothing half-written looks complete
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 5 <= killed_at < 40

    rerun = subprocess.run(
        compress_command(split, resumed), env=ENV, timeout=300, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(epoch {killed_at})" in rerun.stderr  # it resumed, it did not start over
    assert not checkpoint.exists()

    a, b = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for table in ("history.csv", "updates.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(reference / table), pd.read_csv(resumed / table))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with path.open("wb") as handle:
        pickle.dump({"fingerprint": "x", "epoch": 1, "payload": RunsCode()}, handle)
    with pytest.raises(ValueError, match="corrupt or unsafe checkpoint.*delete it"):
        Checkpoint(path, "x").load()
    assert not (Path.cwd() / "pwned").exists()


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    Checkpoint(path, "x").save({"epoch": 1, "weights": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{path}: corrupt or unsafe checkpoint"):
        Checkpoint(path, "x").load()


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    Checkpoint(path, "config-a").save({"epoch": 3})
    assert Checkpoint(path, "config-b").load() is None
    assert Checkpoint(path, "config-a").load()["epoch"] == 3
