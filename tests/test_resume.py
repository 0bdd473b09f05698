"""A compression job killed with SIGKILL mid-training resumes from its last checkpoint and
ends exactly as an uninterrupted run; checkpoints that could run code are refused."""

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import HUNG_STEP_S
from safecompress.steps import split as split_step
from safecompress.training.checkpoint import Checkpoint

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / ".test/config/config.yaml"
TINY = yaml.safe_load(CONFIG.read_text())
KILL_AFTER_EPOCH = 3  # of the tiny config's 8; its first learning-rate drop comes after 4
ENV = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}

# `python -m safecompress.steps.compress ARGS`, except that the process sends itself SIGKILL
# two optimiser steps into the epoch after the checkpoint of epoch KILL_AFTER_EPOCH: killed
# mid-training at the same point however fast or busy the machine (a kill timed from outside
# lands wherever the run happens to be, or after it has ended).
KILLED_MID_EPOCH = f"""
import os, runpy, signal
from safecompress.training import loop
from safecompress.training.checkpoint import Checkpoint

save, train_step, steps_after = Checkpoint.save, loop.train_step, []

def save_and_count(self, state):
    save(self, state)
    if state["epoch"] == {KILL_AFTER_EPOCH}:
        steps_after.append(0)

def step_or_die(*args, **kwargs):
    if steps_after:
        steps_after[0] += 1
        if steps_after[0] > 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return train_step(*args, **kwargs)

Checkpoint.save, loop.train_step = save_and_count, step_or_die
Checkpoint.due = lambda self: True  # every epoch, not every SAVE_SECONDS
runpy.run_module("safecompress.steps.compress", run_name="__main__", alter_sys=True)
"""


def compress_args(split, out_dir):
    return [
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
        str(CONFIG),
    ]


def compress_command(split, out_dir):
    return [sys.executable, "-m", "safecompress.steps.compress", *compress_args(split, out_dir)]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "split.csv"
    split_step.main(["--dataset", "digits", "--out", str(path), "--config", str(CONFIG)])
    return path


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(split, tmp_path):
    epochs = TINY["train"]["epochs"]
    assert epochs > KILL_AFTER_EPOCH
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    checkpoint = resumed / "checkpoint.pt"
    # The uninterrupted run and the run to be killed, side by side.
    uninterrupted = subprocess.Popen(
        compress_command(split, reference),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_MID_EPOCH, *compress_args(split, resumed)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=HUNG_STEP_S,
        )
        _, reference_log = uninterrupted.communicate(timeout=HUNG_STEP_S)
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
            uninterrupted.wait()
    assert uninterrupted.returncode == 0, reference_log[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"epoch {KILL_AFTER_EPOCH}/{epochs}  train loss" in killed.stderr
    assert f"epoch {KILL_AFTER_EPOCH + 1}/{epochs}  train loss" not in killed.stderr  # in it
    assert not (resumed / "model.safetensors").exists()  # nothing half-written looks complete
    assert torch.load(checkpoint, weights_only=True)["epoch"] == KILL_AFTER_EPOCH

    rerun = subprocess.run(
        compress_command(split, resumed),
        env=ENV,
        timeout=HUNG_STEP_S,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(epoch {KILL_AFTER_EPOCH})" in rerun.stderr  # it resumed, it did not start over
    assert not checkpoint.exists()

    a, b = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for table in ("history.csv", "updates.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(reference / table), pd.read_csv(resumed / table))
    # the updates straddle the kill: some before, some after
    steps = pd.read_csv(resumed / "history.csv").set_index("epoch")["step"]
    updates = pd.read_csv(resumed / "updates.csv")["step"]
    assert (updates <= steps[KILL_AFTER_EPOCH]).any() and (updates > steps[KILL_AFTER_EPOCH]).any()


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
