"""Real on-disk formats through the whole workflow: Fashion-MNIST from Debian's package and a text
set in Hugging Face's save_to_disk format read by MiniLM-L6 from its pip package, up to the
summary and each data set's figures (the summary figures, drawn from the paper table whatever
the data, run in test_workflow.py); and the paper-scale config's whole grid as a dry run, with
no data on disk."""

import json
import re
import subprocess

import datasets
import numpy as np
import pandas as pd
import pytest
import safetensors
import yaml

from helpers import HUNG_RUN_S, snakemake_command, workflow_env
from safecompress.config.settings import ConfigError, check_config
from safecompress.data.sources import DEBIAN_FASHION_MNIST
from test_workflow import REPO, snakemake

FORMATS = REPO / ".test" / "config" / "formats.yaml"
PAPER = REPO / "config" / "paper.yaml"
N_REVIEWS = 400
TARGETS = ["results/tables/summary.csv"] + [
    f"results/figures/{dataset}/{figure}.png"
    for dataset in yaml.safe_load(FORMATS.read_text())["datasets"]
    for figure in ("training_curves", "roc", "layer_density", "candidates")
]


def write_reviews(folder, n: int, seed: int = 0) -> None:
    """A two-class review set in `save_to_disk` format: a few sentiment words among filler."""
    rng = np.random.default_rng(seed)
    words = {0: ["dull", "awful", "boring", "weak"], 1: ["great", "moving", "superb", "fun"]}
    filler = ["the", "film", "plot", "cast", "was", "and", "a", "story", "with", "music"]
    labels = rng.integers(0, 2, n)
    texts = [
        " ".join(rng.choice(filler, 6).tolist() + rng.choice(words[int(y)], 2).tolist())
        for y in labels
    ]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    table = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    table.train_test_split(test_size=0.25, seed=seed).save_to_disk(str(folder))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.fail("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    workdir = tmp_path_factory.mktemp("formats")
    write_reviews(workdir / "data" / "reviews", N_REVIEWS)
    command = snakemake_command(workdir, [FORMATS], "--cores", "2", *TARGETS)
    result = subprocess.run(
        command, capture_output=True, text=True, env=workflow_env(), timeout=HUNG_RUN_S
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def read_meta(path) -> dict:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["meta"])


@pytest.mark.workflow
def test_both_formats_give_a_full_summary(run):
    summary = pd.read_csv(run / "results/tables/summary.csv")
    assert set(summary["dataset"]) == {"fashion", "reviews"}
    assert summary[["task_acc", "attack_acc", "auc"]].apply(lambda c: c.between(0, 1)).all().all()
    fashion = summary[summary["dataset"] == "fashion"]
    assert fashion["task_acc"].min() > 0.3  # 10 classes: chance is 0.1
    sparse = summary[summary["method"] != "dense"]
    assert np.allclose(sparse["density_measured"], 0.2, atol=0.01)


@pytest.mark.workflow
def test_each_data_set_trains_its_own_model(run):
    for dataset, n_pool, arch in (("fashion", 1600, "cnn"), ("reviews", N_REVIEWS, "transformer")):
        split = pd.read_csv(run / f"results/{dataset}/split0/split.csv")
        fractions = yaml.safe_load(FORMATS.read_text())["data"][dataset]["split"]
        assert split["index"].max() < n_pool
        assert len(split) == sum(int(f * n_pool) for f in fractions.values())
        for method in ("dense", "safecompress"):
            density = "1.0" if method == "dense" else "0.2"
            meta = read_meta(
                run / f"results/{dataset}/split0/{method}/density{density}/seed0/model.safetensors"
            )
            assert meta["model"]["arch"] == arch
    meta = read_meta(run / "results/reviews/split0/dense/density1.0/seed0/model.safetensors")
    assert meta["input_shape"] == [32] and meta["hf_config"]["model_type"] == "bert"


@pytest.mark.slow
def test_paper_config_dry_run_shows_the_whole_grid(tmp_path):
    """No data on disk and no download: building the DAG must not touch the data."""
    result = snakemake(tmp_path, "--configfile", str(PAPER), "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    config = yaml.safe_load(PAPER.read_text())
    n_datasets, n_seeds = len(config["datasets"]), len(config["seeds"])
    assert int(counts["split"]) == n_datasets == 5
    assert int(counts["train_dense"]) == n_datasets * n_seeds
    grid = n_datasets * len(config["methods"]) * len(config["densities"]) * n_seeds
    assert int(counts["compress"]) >= grid
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("path", [PAPER, FORMATS])
def test_new_configs_are_valid(path):
    check_config(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "entry, key",
    [
        ({"source": "sklearn", "name": "digits", "tokenizer": "x"}, "tokenizer"),
        ({"source": "sklearn", "name": "digits", "root": "data"}, "root"),
        ({"source": "torchvision", "name": "mnist"}, "name"),
        ({"source": "torchvision", "name": "cifar10", "max_length": 8}, "max_length"),
        ({"source": "huggingface", "name": "imdb"}, "tokenizer"),
        ({"source": "sklearn", "name": "digits", "model": {"arch": "transformer"}}, "checkpoint"),
    ],
)
def test_schema_refuses_keys_that_do_not_fit_the_source(entry, key):
    config = yaml.safe_load(FORMATS.read_text())
    split = config["data"]["fashion"]["split"]
    config["data"]["fashion"] = {"split": split, **entry}
    with pytest.raises(ConfigError, match=rf"data\.fashion.*{key}|{key}.*data\.fashion"):
        check_config(config)
