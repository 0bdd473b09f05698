"""The conda environment names the same packages and versions as the tested pip environment."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Snakemake and its SLURM plugin run the workflow; they are not needed inside a job's env.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}


def pins(lines):
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            found[name.strip().lower()] = version.strip()
    return found


def test_conda_env_matches_requirements():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs/safecompress.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = pins(pip_section)
    assert conda_pins == {k: v for k, v in required.items() if k not in DRIVER_ONLY}
    assert "python=3.11" in env["dependencies"]


def test_torch_and_torchvision_are_pinned_as_a_pair():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    assert (required["torch"], required["torchvision"]) == ("2.14.1", "0.29.1")


def test_every_rule_names_its_environment():
    rules = (REPO / "workflow/rules").glob("*.smk")
    for path in rules:
        text = path.read_text()
        assert text.count("rule ") == text.count("conda:\n        ENV"), path
