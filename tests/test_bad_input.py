"""Bad input stops the workflow with one message naming the key or file and the fix, before
any training, leaving nothing under results/."""

import subprocess

import pandas as pd
import pytest
import yaml

from helpers import HUNG_STEP_S, REPO, TINY, changed, snakemake_command, workflow_env
from safecompress.config.settings import ConfigError, check_config
from safecompress.io import read_csv
from safecompress.privacy.signals import SIGNAL_COLUMNS
from safecompress.steps import attack, cli, summarize

TINY_CONFIG = yaml.safe_load(TINY.read_text())


BAD_CONFIGS = [
    ("epochz", 10, "epochz"),
    ("train.epochs", -3, "train.epochs"),
    ("densities", [0.0, 0.1], "densities.0"),
    ("densities", [], "densities"),
    ("methods", ["lottery"], "methods.0"),
    ("safecompress.lambda", -1, "safecompress.lambda"),
    ("data.digits.split.target_out", 0.9, "data.digits.split"),
    ("datasets", ["cifar10"], "data.cifar10"),
    ("seeds", [-1], "seeds.0"),
    ("densities", [1.5], "densities.0"),
    ("model.arch", "gpt5", "model.arch"),
    ("train.lr", "fast", "train.lr"),
    ("train.batch_size", 0, "train.batch_size"),
    ("evaluation.attacks", ["oracle"], "evaluation.attacks.0"),
    ("evaluation.roc_density", 0.33, "evaluation.roc_density"),
    ("safecompress.strategies", [], "safecompress.strategies"),
    ("safecompress.safety_score", "lira", "safecompress.safety_score"),
    ("sparse.growth", "magic", "sparse.growth"),
    ("shadow.n_models", 0, "shadow.n_models"),
    ("ablation.n_candidates", [7], "ablation.n_candidates"),
    ("data.digits.name", 7, "data.digits.name"),
]


def one_message(text: str, named: str) -> None:
    """`config key <key>: <problem>; <what to do>`, naming the key."""
    assert text.startswith("config key") and named in text, text
    problem, _, fix = text.rpartition("; ")
    assert problem and fix


@pytest.mark.parametrize("path, value, named", BAD_CONFIGS)
def test_bad_config_is_one_message_naming_the_key(path, value, named):
    """What the Snakefile checks first (common.smk), before it plans any job."""
    with pytest.raises(ConfigError) as refused:
        check_config(changed(TINY_CONFIG, path, value))
    assert "\n" not in str(refused.value)
    one_message(str(refused.value), named)


# The workflow stops with that message: one case of each kind of check (the schema, a check
# across keys, the ablation sweeps against the strategies); the others take the same path.
THROUGH_THE_WORKFLOW = ("epochz", "data.digits.split.target_out", "ablation.n_candidates")


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, value, named", [case for case in BAD_CONFIGS if case[0] in THROUGH_THE_WORKFLOW]
)
def test_bad_config_stops_the_workflow_before_any_work(tmp_path, path, value, named):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(changed(TINY_CONFIG, path, value)))
    result = subprocess.run(
        snakemake_command(tmp_path, [config], "--cores", "1"),
        capture_output=True,
        text=True,
        env=workflow_env(),
        timeout=HUNG_STEP_S,
    )
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("config key")]
    assert len(message) == 1, result.stderr[-2000:]
    one_message(message[0], named)
    assert not (tmp_path / "results").exists()


def test_truncated_signals_file_names_the_file(tmp_path):
    signals = tmp_path / "signals.csv"
    rows = [f"0,{i},member,1,0.25,0.5,1.5" for i in range(5)]
    text = "\n".join(["shadow,index,set,label,loss,logit_0,logit_1", *rows]) + "\n"
    signals.write_text(text[: len(text) - 8])  # the writer died mid-row
    with pytest.raises(ValueError, match=f"{signals}: missing values from line 6"):
        read_csv(signals, required=("shadow", *SIGNAL_COLUMNS), complete=True)


def test_evaluate_refuses_a_corrupt_model_in_one_line(tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"not a model")
    split = tmp_path / "split.csv"
    pd.DataFrame({"index": [0], "set": ["target_train"]}).to_csv(split, index=False)
    with pytest.raises(SystemExit) as stopped:
        cli.run(
            attack.main,
            [
                "--dataset",
                "digits",
                "--split",
                str(split),
                "--model",
                str(model),
                "--shadows",
                str(tmp_path),
                "--out-dir",
                str(tmp_path / "out"),
                "--config",
                str(REPO / ".test/config/config.yaml"),
            ],
        )
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith(f"error: {model}: not a readable SafeCompress model file")
    assert not (tmp_path / "out").exists()


def test_summarize_with_no_table_to_write_says_so(capsys):
    with pytest.raises(SystemExit) as stop:
        summarize.main(["--inputs", "attacks.csv"])
    assert stop.value.code == 2
    assert "nothing to write" in capsys.readouterr().err
