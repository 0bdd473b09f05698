# Shared by all rules: config validation, output paths, the experiment grid, what each job reads.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The steps are modules of the package in workflow/: importable here and, through
# PYTHONPATH, in every job (locally, on a cluster node, in a conda environment).
PACKAGE_ROOT = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_ROOT)
# (Set here, not required from the user, so no `envvars:` assertion applies.)
os.environ.update(PYTHONPATH=PACKAGE_ROOT)
from safecompress.config import specs
from safecompress.config.curves import curve_lines, curve_points
from safecompress.config.methods import METHOD_SECTIONS, REGISTRY, SELECTING
from safecompress.config.settings import ConfigError, check_config, for_dataset

try:
    check_config(config)
    # Curve points (config `curves`) by method wildcard: one more model of their method each.
    CURVES = {point.wildcard: point for point in curve_points(config)}
except ConfigError as err:
    raise WorkflowError(str(err)) from None

ENV = "../../envs/safecompress.yaml"
METHODS = config["methods"]
# Ablations are SafeCompress variants stored as method "ablation/<sweep>_<value>".
ABLATION = "ablation/"


def compressed(methods):
    """The method wildcard's pattern for these methods, the ablation variants and curve points."""
    return "|".join([*methods, f"{ABLATION}[A-Za-z0-9_.]+", *map(re.escape, CURVES)])


# The method wildcard of every compressed model.
COMPRESSED = compressed(METHODS)
# Rule resources, declared once: training jobs take the configured threads and GPUs.
RESOURCES = {
    "mem_mb": config["resources"]["mem_mb"],
    "runtime": config["resources"]["runtime"],
}
TRAINING_RESOURCES = {**RESOURCES, "gpu": config["resources"]["gpu"]}


def results(path):
    """A path under the configured results directory."""
    return f"{config['results']}/{path}"


def as_json(value):
    return json.dumps(value, sort_keys=True)


def dataset_json(dataset, *names):
    """The data set's entry and the given sections as it sees them (its own `model` / `train`
    replace the global ones), one JSON string each, for a step's --<section> arguments.
    """
    spec = config["data"][dataset]
    sections = {name: for_dataset(spec, name, config[name]) for name in names}
    return {
        "data": as_json({dataset: spec}),
        **{n: as_json(v) for n, v in sections.items()},
    }


def replicates():
    """(split, seed) of every replicate: each training seed on each split."""
    return [
        (split, seed) for split in config["split_seeds"] for seed in config["seeds"]
    ]


def model_dir(dataset, split, method, density, seed):
    return results(f"{dataset}/split{split}/{method}/density{density}/seed{seed}")


def all_models():
    """(method, density) of every target model of each data set and replicate, dense first,
    the curve points (their method wildcards) after the methods."""
    return [("dense", 1.0)] + [
        (method, density)
        for method in [*METHODS, *CURVES]
        for density in config["densities"]
    ]


def attack_tables(wildcards=None):
    return [
        f"{model_dir(dataset, split, method, density, seed)}/attacks.csv"
        for dataset in config["datasets"]
        for method, density in all_models()
        for split, seed in replicates()
    ]


def ablation_variants():
    """One variant per swept value: lambda_<x>, n_<N>, set_<name>, setting_<name>; none
    without safecompress or with `ablation: null`. Each variant's sections are checked here,
    before any work."""
    from safecompress.config.settings import check_section

    if "safecompress" not in METHODS or config["ablation"] is None:
        return []
    sweeps = config["ablation"]
    variants = (
        [f"lambda_{value}" for value in sweeps["lambdas"]]
        + [f"n_{value}" for value in sweeps["n_candidates"]]
        + [f"set_{name}" for name in sweeps["strategy_sets"]]
        + [f"setting_{name}" for name in sweeps["settings"]]
    )
    for variant in variants:
        for name, section in variant_sections(variant).items():
            try:
                check_section(name, section)
            except ConfigError as err:
                problem = str(err).removeprefix("config key ")
                raise WorkflowError(
                    f"config key ablation: variant {variant} sets {problem}"
                ) from None
    return variants


def ablation_tables(wildcards=None):
    density = config["ablation"]["density"]
    return [
        f"{model_dir(dataset, split, ABLATION + variant, density, seed)}/attacks.csv"
        for dataset in config["datasets"]
        for variant in ablation_variants()
        for split, seed in replicates()
    ]


def ablation_baseline_tables(wildcards=None):
    """attacks.csv of DST and SafeCompress at the ablation density: what variants pair with."""
    density = config["ablation"]["density"]
    return [
        f"{model_dir(dataset, split, method, density, seed)}/attacks.csv"
        for dataset in config["datasets"]
        for method in ("dst", "safecompress")
        if method in METHODS and density in config["densities"]
        for split, seed in replicates()
    ]


def compressor(method):
    """(method, variant) that the compress step runs for a method wildcard: a curve point is
    its method; an ablation variant is SafeCompress, with adversarial training when it sets
    `adversarial` keys.
    """
    if method in CURVES:
        return CURVES[method].method, CURVES[method].variant
    if method.startswith(ABLATION):
        variant = method.removeprefix(ABLATION)
        sweep, _, value = variant.partition("_")
        changes = (
            config["ablation"]["settings"].get(value, {}) if sweep == "setting" else {}
        )
        return (
            "safecompress_adv" if "adversarial" in changes else "safecompress"
        ), variant
    return method, "default"


def variant_sections(variant):
    """The method sections (`sparse`, `safecompress`, ...) as an ablation variant changes them."""
    sections = {name: dict(config[name]) for name in METHOD_SECTIONS}
    section = sections["safecompress"]
    sweep, _, value = variant.partition("_")
    if sweep == "lambda":
        section["lambda"] = float(value)
    elif sweep == "n":
        section["strategies"] = section["strategies"][: int(value)]
    elif sweep == "set":
        section["strategies"] = config["ablation"]["strategy_sets"][value]
    if sweep == "setting":
        for name, changes in config["ablation"]["settings"][value].items():
            sections[name].update(changes)
    return sections


# The methods whose compress jobs log every tested candidate (`safecompress.log_candidates`):
# the models of the validity analysis (ablation variants and reference models log nothing).
LOGGED = (
    [m for m in METHODS if m in SELECTING]
    if config["safecompress"].get("log_candidates", False)
    else []
)


def method_sections(method, log_candidates=False):
    """`--sparse` / `--safecompress` arguments: only the keys this method reads (its record in
    safecompress.config.methods), the sections changed as a curve point or an ablation
    variant says; the key `log_candidates` only where asked, so a job that logs nothing never
    reruns for it.
    """
    name, variant = compressor(method)
    given = (
        CURVES[method].sections(config)
        if method in CURVES
        else variant_sections(variant)
    )
    if not log_candidates:
        given["safecompress"].pop("log_candidates", None)
    return " ".join(
        f"--{key} {shlex.quote(as_json(specs.select(spec, given[key])))}"
        for key, spec in REGISTRY[name].sections.items()
    )


def dense_model_if_pruned(wildcards):
    """The trained dense model, for the methods that start from it (`from_dense`)."""
    if not REGISTRY[compressor(wildcards.method)[0]].from_dense:
        return []
    w = wildcards
    return f"{model_dir(w.dataset, w.split, 'dense', 1.0, w.seed)}/model.safetensors"


def shadow_dirs(wildcards):
    return [
        results(f"{wildcards.dataset}/split{wildcards.split}/shadow/{k}")
        for k in range(config["shadow"]["n_models"])
    ]


def shadow_files(wildcards):
    """What the attacks read of every shadow model."""
    return [
        f"{directory}/{name}"
        for directory in shadow_dirs(wildcards)
        for name in ("signals.csv", "features.npy", "queries.csv")
    ]


def shadow_models(wildcards):
    return [f"{directory}/model.safetensors" for directory in shadow_dirs(wildcards)]


def matched(wildcards):
    """Whether a target is attacked with its own recipe's references (the dense target's are
    the dense shadow models)."""
    return (
        config["evaluation"]["references"] == "matched" and wildcards.method != "dense"
    )


def recipe_dir(wildcards):
    w = wildcards
    return results(
        f"{w.dataset}/split{w.split}/references/{w.method}/density{w.density}"
    )


def reference_dirs(wildcards):
    """The reference models an attack reads, k = 0..K-1."""
    if not matched(wildcards):
        return shadow_dirs(wildcards)
    return [
        f"{recipe_dir(wildcards)}/k{k}" for k in range(config["shadow"]["n_models"])
    ]


def reference_files(wildcards):
    if not matched(wildcards):
        return shadow_files(wildcards)
    return f"{recipe_dir(wildcards)}/references.csv"


def network_attacks():
    """The configured attacks that fit an attacker network (nasr, whitebox)."""
    return [a for a in config["evaluation"]["attacks"] if a in specs.NETWORK_ATTACKS]


def recipe_attackers(recipe):
    """The attackers of the configured network attacks, fitted on a recipe's references."""
    return [f"{recipe}/attackers/{attack}.safetensors" for attack in network_attacks()]


def adversary_files(wildcards):
    """The fitted attacker of every configured network attack: the recipe's own, fitted on
    its references (matched), else the data set's for this seed, fitted on the shadow models.
    """
    if matched(wildcards):
        return recipe_attackers(recipe_dir(wildcards))
    w = wildcards
    return [
        results(
            f"{w.dataset}/split{w.split}/attackers/seed{w.seed}/{attack}.safetensors"
        )
        for attack in network_attacks()
    ]


def final_outputs():
    ablations = ["ablation"] if ablation_variants() else []
    tables = [results(f"tables/{name}.{ext}") for name, ext in TABLES]
    tables += [
        results(f"tables/{name}.csv")
        for name in ablations
        for name in (name, f"{name}_paired")
    ]
    validity = ["validity"] if LOGGED else []
    tables += [results(f"tables/{name}.csv") for name in validity]
    figures = [
        results(f"figures/{name}.png")
        for name in SUMMARY_FIGURES + ablations + validity
    ]
    per_dataset = [
        results(f"figures/{dataset}/{name}.png")
        for dataset in config["datasets"]
        for name in ("training_curves", "roc", "layer_density", "candidates")
        if name != "candidates" or "safecompress" in METHODS
    ]
    # every model's attacks too: a method added to `methods` is then run even where Snakemake
    # has no record of the tables' inputs (results copied or moved, .snakemake deleted)
    models = attack_tables() + (ablation_tables() if ablations else [])
    return tables + figures + per_dataset + models


TABLES = [
    ("summary", "csv"),
    ("paper_table", "csv"),
    ("paper_table", "md"),
    ("paired", "csv"),
    ("frontier", "csv"),
]
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


def model_labels(dataset, dense=True):
    """(directory, method, density, label) of the dense model (unless `dense` is False) and
    each method at the ROC density, first replicate: the models of the per-data-set figures.
    """
    density, (split, seed) = config["evaluation"]["roc_density"], replicates()[0]
    models = [("dense", 1.0)] if dense else []
    models += [(method, density) for method in METHODS]
    return [
        (model_dir(dataset, split, method, d, seed), method, d, f"{method} d={d}")
        for method, d in models
    ]


def roc_attacks():
    """A ROC panel each: the trade-off attack (unless `strongest`), LiRA and RMIA where they
    are evaluated; else the first evaluated attack."""
    evaluation = config["evaluation"]
    wanted = dict.fromkeys([evaluation["tradeoff_attack"], "lira", "rmia"])
    return [a for a in wanted if a in evaluation["attacks"]] or evaluation["attacks"][
        :1
    ]


def candidate_log(wildcards):
    """updates.csv of SafeCompress at the ROC density, first replicate: every candidate logged."""
    density, (split, seed) = config["evaluation"]["roc_density"], replicates()[0]
    return f"{model_dir(wildcards.dataset, split, 'safecompress', density, seed)}/updates.csv"


def candidate_attack_tables(wildcards=None):
    """candidate_attacks.csv of every model whose candidates were logged."""
    return [
        f"{model_dir(dataset, split, method, density, seed)}/candidate_attacks.csv"
        for dataset in config["datasets"]
        for method in LOGGED
        for density in config["densities"]
        for split, seed in replicates()
    ]
