"""Every pipeline step runs by hand: `python -m safecompress.steps.<step> --help`, and bad input
ends with exit code 2 and one line naming the problem."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import HUNG_STEP_S, SHORT_TRAINING
from safecompress.data.batches import TrainBatches
from safecompress.data.splits import Samples
from safecompress.privacy.attacks.learned import ATTACKER_LR
from safecompress.training import loop
from safecompress.training.loop import fit, seed_everything
from safecompress.training.models import build_model

REPO = Path(__file__).resolve().parent.parent
STEPS = sorted(
    path.stem
    for path in (REPO / "workflow" / "safecompress" / "steps").glob("*.py")
    if path.stem not in ("__init__", "cli")
)


def step(name, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run(
        [sys.executable, "-m", f"safecompress.steps.{name}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=HUNG_STEP_S,
    )


# Every step's `--help` in one interpreter (one start-up of torch instead of one per step):
# each module run as `python -m` runs it (runpy, as __main__), its exit code and output kept.
ALL_HELPS = """
import contextlib, io, json, runpy, sys
shown = {}
for name in sys.argv[1:]:
    sys.argv, out, err = ["-m", "--help"], io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(f"safecompress.steps.{name}", run_name="__main__", alter_sys=True)
            code = None
        except SystemExit as exit:
            code = exit.code
    shown[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
json.dump(shown, sys.__stdout__)
"""


@pytest.fixture(scope="module")
def helps():
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    shown = subprocess.run(
        [sys.executable, "-c", ALL_HELPS, *STEPS],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=HUNG_STEP_S,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    return json.loads(shown.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", STEPS)
def test_every_step_has_a_help(helps, name):
    shown = helps[name]
    assert shown["code"] == 0, shown["stderr"]
    assert f"python -m safecompress.steps.{name}" in shown["stdout"]


def test_the_collector_is_off_only_while_a_step_starts():
    """Run as `python -m`, a step imports with the garbage collector off; `cli.run` turns it
    back on before the step's work, and an import by a library user leaves it alone."""
    program = (
        "import gc, sys; from safecompress.steps import cli; before = gc.isenabled(); "
        "cli.run(lambda argv: print(before, gc.isenabled()), [])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    for argv0, shown in (("-m", "False True"), ("-c", "True True")):
        code = program.replace("import gc, sys;", f"import gc, sys; sys.argv[0] = {argv0!r};")
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.stdout.strip() == shown, done.stderr


@pytest.fixture(scope="module")
def split_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("split") / "split.csv"
    assert step("split", "--dataset", "digits", "--out", str(path)).returncode == 0
    return path


@pytest.mark.slow
def test_unknown_data_set_is_one_clear_line(tmp_path):
    result = step("split", "--dataset", "mnist", "--out", str(tmp_path / "split.csv"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key data")
    assert not (tmp_path / "split.csv").exists()


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("sparse", {"growth": "random"}, "config key sparse: 'distribution' is a required"),
        ("sparse", {"distribution": "erk", "finetune_epochs": "2"}, "sparse.finetune_epochs"),
        ("train", {"epochs": 2}, "config key train: 'batch_size' is a required property"),
        ("model", {"arch": "lstm"}, "config key model.arch: 'lstm' is not one of"),
    ],
)
def test_a_partial_or_wrong_section_by_hand_is_one_clear_line(
    split_file, tmp_path, section, value, message
):
    """A section given as JSON is checked like the config file: one line naming the key."""
    result = step(
        "compress",
        *("--dataset", "digits", "--split", str(split_file), "--method", "magnitude"),
        *("--density", "0.1", "--dense", "no-model.safetensors"),
        *("--out-dir", str(tmp_path / "out"), f"--{section}", json.dumps(value)),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.slow
def test_bad_json_is_one_clear_line(tmp_path):
    result = step("split", "--dataset", "digits", "--out", "x.csv", "--data", "{digits: 1}")
    assert result.returncode == 2
    assert "argument --data: not valid JSON" in result.stderr


@pytest.mark.slow
def test_split_files_are_byte_identical_across_runs(split_file, tmp_path):
    again = tmp_path / "again.csv"
    assert step("split", "--dataset", "digits", "--out", str(again)).returncode == 0
    assert again.read_bytes() == split_file.read_bytes()


def test_training_is_deterministic_for_a_seed():
    spec = SHORT_TRAINING
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    data = Samples(x, (x.sum((1, 2, 3)) > 0).long())

    def trained(seed):
        seed_everything(seed)
        model = build_model({"arch": "mlp", "hidden": [16]}, (1, 4, 4), 2)
        history = fit(model, TrainBatches(data, spec, torch.device("cpu")), data, spec, seed)
        return model.state_dict(), history

    (a, history_a), (b, history_b), (c, _) = trained(1), trained(1), trained(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert history_a.equals(history_b)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_optimisers_foreach_steps_equal_the_per_tensor_loop_bit_for_bit():
    """make_optimizer's SGD and the attackers' Adam run torch's foreach kernels for speed; the
    weights they train must be those of the CPU default (a loop over the tensors) exactly."""
    x = torch.randn(32, 10, generator=torch.Generator().manual_seed(0))
    y = (x.sum(1) > 0).long()

    def trained(make, foreach):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)
        )
        optimizer = make(model, foreach=foreach)
        for _ in range(20):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    sgd = loop.make_optimizer(torch.nn.Linear(1, 1), SHORT_TRAINING)[0].defaults
    assert sgd["foreach"]
    for make in (
        lambda m, **kw: torch.optim.SGD(m.parameters(), **{**sgd, **kw}),
        lambda m, **kw: torch.optim.Adam(m.parameters(), lr=ATTACKER_LR, **kw),
    ):
        fast, slow = trained(make, True), trained(make, False)
        assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))


def test_long_epochs_log_progress_at_a_bounded_rate(caplog, monkeypatch):
    """Within an epoch: steps done, samples per second, time left; at most once per period."""
    clock = iter([0.0, 10.0, 20.0, 70.0, 80.0, 140.0])
    monkeypatch.setattr(loop.time, "monotonic", lambda: next(clock))
    progress = loop.Progress(epoch=3, epochs=200, steps=100, every=60.0)
    with caplog.at_level(logging.INFO, logger="safecompress.training.loop"):
        for done in (10, 20, 70, 80, 140):
            progress.update(done, samples=done * 128)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2  # at 70 s and at 140 s, not every step
    assert lines[0].startswith("epoch 3/200  step 70/100  128 samples/s")
    assert lines[0].endswith("00:00:30 left in the epoch")
