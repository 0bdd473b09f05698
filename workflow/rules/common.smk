# Shared by all rules: config validation, output paths, the experiment grid.
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The steps are modules of the package in workflow/: importable here and, through
# PYTHONPATH, in every job (locally, on a cluster node, in a conda environment).
PACKAGE_ROOT = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_ROOT)
# (Set here, not required from the user, so no `envvars:` assertion applies.)
os.environ.update(PYTHONPATH=PACKAGE_ROOT)
from safecompress.config import ConfigError, check_config

try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

ENV = "../../envs/safecompress.yaml"
METHODS = config["methods"]


def results(path):
    """A path under the configured results directory."""
    return f"{config['results']}/{path}"


def section_json(*names, dataset=None):
    """Config sections as one JSON object per section, for a step's --<section> arguments."""
    sections = {name: config[name] for name in names}
    if dataset is not None:
        sections["data"] = {dataset: config["data"][dataset]}
    return {name: json.dumps(value, sort_keys=True) for name, value in sections.items()}


def model_dir(method, density, seed):
    return results(f"{{dataset}}/{method}/density{density}/seed{seed}")


def all_models(dataset):
    """(method, density, seed) of every target model of a data set, dense first."""
    dense = [("dense", 1.0, seed) for seed in config["seeds"]]
    sparse = [
        (method, density, seed)
        for method in METHODS
        for density in config["densities"]
        for seed in config["seeds"]
    ]
    return dense + sparse


def attack_tables(wildcards=None):
    return [
        results(f"{dataset}/{method}/density{density}/seed{seed}/attacks.csv")
        for dataset in config["datasets"]
        for method, density, seed in all_models(dataset)
    ]


def dense_model_if_pruned(wildcards):
    """Static magnitude pruning starts from the trained dense model; DST methods do not."""
    if wildcards.method != "magnitude":
        return []
    return results(
        f"{wildcards.dataset}/dense/density1.0/seed{wildcards.seed}/model.safetensors"
    )


def shadow_signals(wildcards):
    return [
        results(f"{wildcards.dataset}/shadow/{k}/signals.csv")
        for k in range(config["shadow"]["n_models"])
    ]


def final_outputs():
    tables = [results(f"tables/{name}") for name in TABLES]
    figures = [results(f"figures/{name}.png") for name in SUMMARY_FIGURES]
    per_dataset = [
        results(f"figures/{dataset}/{name}.png")
        for dataset in config["datasets"]
        for name in ("training_curves", "roc")
    ]
    return tables + figures + per_dataset


TABLES = ["summary.csv", "paper_table.csv", "paper_table.md"]
SUMMARY_FIGURES = [
    "accuracy_vs_density",
    "auc_vs_density",
    "tpr_vs_density",
    "tradeoff",
]


def figure_outputs(name, caption):
    return {
        "png": report(
            results(f"figures/{name}.png"),
            caption=f"../report/{caption}.rst",
            category="Figures",
        ),
        "pdf": results(f"figures/{name}.pdf"),
    }


def model_labels(dataset):
    """Training curves of the dense model and each method at the ROC density, first seed."""
    density, seed = config["evaluation"]["roc_density"], config["seeds"][0]
    models = [("dense", 1.0)] + [(method, density) for method in METHODS]
    return [(method, d, seed, f"{method} d={d}") for method, d in models]
