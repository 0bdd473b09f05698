"""The workflow configuration: the schema, the checks across keys it cannot express, and the
check of one section given to a step by hand. Every failure is one ConfigError naming the key."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"
# Sections a data set's entry may hold its own copy of, replacing the global one for it.
DATASET_SECTIONS = ("model", "train")
# The pseudo-attack of the tables and the frontier: each model's attack with the highest AUC.
STRONGEST_ATTACK = "strongest"
# What attacks are calibrated on: references trained by each target's recipe, or dense ones.
REFERENCE_KINDS = ("matched", "dense")


class ConfigError(ValueError):
    """A configuration key has a wrong value; the message names the key and the fix."""


@functools.cache
def schema() -> dict[str, Any]:
    """The config schema (read once; callers get copies where they change it)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def for_dataset(entry: dict[str, Any], name: str, global_section: Any) -> Any:
    """Section `name` as a data set sees it: its own copy if its entry has one."""
    return entry[name] if name in DATASET_SECTIONS and name in entry else global_section


def _validate(instance: dict[str, Any], against: dict[str, Any]) -> None:
    import jsonschema  # on first use: steps that read no config (summarize, figures) skip it

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(against).iter_errors(instance)
    )
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"config key {key}: {error.message}; see config/README.md")


def check_section(name: str, value: Any, fields: Iterable[str] | None = None) -> None:
    """Check one top-level section as the whole-file check would, e.g. a step's `--train JSON`.

    With `fields`, the section may hold just those keys (what a step reads of it): the
    schema's other required keys of the section are not asked for.
    """
    section_schema = copy.deepcopy(schema())
    section_schema["required"] = [name]
    section_schema["additionalProperties"] = True
    if fields is not None:
        own = section_schema["properties"][name]
        own["required"] = [key for key in own.get("required", []) if key in set(fields)]
    _validate({name: value}, section_schema)


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the first offending key, before any work starts."""
    _validate(config, schema())
    for name in config["datasets"]:
        if name not in config["data"]:
            raise ConfigError(
                f"config key datasets: {name!r} has no entry under data; add data.{name}"
            )
    for name, spec in config["data"].items():
        total = sum(spec["split"].values())
        if total > 1.0 + 1e-9:
            raise ConfigError(
                f"config key data.{name}.split: fractions sum to {total:.3f} > 1; lower them"
            )
        key = f"data.{name}.train" if "train" in spec else "train"
        augment = spec.get("train", config["train"]).get("augment", "none")
        images = spec["source"] == "torchvision" or spec["name"] == "digits"
        if augment != "none" and not images:
            raise ConfigError(
                f"config key {key}.augment: {augment} augments images, data.{name} is not "
                f"images; give data.{name} its own train section with `augment: none`"
            )
    n_strategies = len(config["safecompress"]["strategies"])
    swept = config["ablation"]["n_candidates"] if config["ablation"] else []
    too_many = [n for n in swept if n > n_strategies]
    if too_many:
        raise ConfigError(
            f"config key ablation.n_candidates: {too_many} exceed the {n_strategies} "
            "safecompress.strategies; add strategies or lower N"
        )
    relaxed = [s for s in config["safecompress"]["strategies"] if s.get("relax", 0)]
    if relaxed and "safecompress_relaxloss" in config["methods"]:
        raise ConfigError(
            "config key safecompress.strategies[].relax: safecompress_relaxloss trains every "
            "candidate on RelaxLoss's objective already; drop relax from the strategies or "
            "safecompress_relaxloss from methods"
        )
    evaluation = config["evaluation"]
    if evaluation["roc_density"] not in config["densities"]:
        raise ConfigError(
            f"config key evaluation.roc_density: {evaluation['roc_density']} is not one of "
            f"densities {config['densities']}; pick one of them"
        )
    if "lira" in evaluation["attacks"] and config["shadow"]["n_models"] < 2:
        raise ConfigError(
            "config key shadow.n_models: lira needs at least 2 reference (shadow) models; "
            "raise it or remove lira from evaluation.attacks"
        )
    if evaluation["tradeoff_attack"] not in [*evaluation["attacks"], STRONGEST_ATTACK]:
        raise ConfigError(
            f"config key evaluation.tradeoff_attack: {evaluation['tradeoff_attack']!r} is not "
            f"one of evaluation.attacks {evaluation['attacks']}; add it there, pick one of "
            f"them or {STRONGEST_ATTACK!r}"
        )
