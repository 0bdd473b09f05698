"""The workflow configuration: schema validation plus the checks a schema cannot express."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration key has a wrong value; the message names the key and the fix."""


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


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the first offending key, before any work starts."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(config)
    )
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"config key {key}: {error.message}; see config/README.md")
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
    too_many = [n for n in config["ablation"]["n_candidates"] if n > n_strategies]
    if too_many:
        raise ConfigError(
            f"config key ablation.n_candidates: {too_many} exceed the {n_strategies} "
            "safecompress.strategies; add strategies or lower N"
        )
    roc = config["evaluation"]["roc_density"]
    if roc not in config["densities"]:
        raise ConfigError(
            f"config key evaluation.roc_density: {roc} is not one of densities "
            f"{config['densities']}; pick one of them"
        )
