"""What every pipeline step shares: config sections on the command line, logging, errors."""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safecompress.config import specs
from safecompress.config.methods import METHOD_SECTIONS, METHODS, REGISTRY, Method
from safecompress.config.settings import (
    ConfigError,
    check_config,
    check_section,
    for_dataset,
    load_yaml,
)
from safecompress.steps import COLLECT_AFTER_IMPORTS

DEFAULT_CONFIG = "config/config.yaml"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the step's docstring (its usage example) as written."""


def parser(module: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, formatter_class=_HelpFormatter
    )


def json_argument(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None


def add_shadows(p: argparse.ArgumentParser) -> None:
    """`--shadows DIR...`: the shadow models an attack step reads."""
    p.add_argument(
        "--shadows",
        nargs="+",
        required=True,
        type=Path,
        help="directory of each shadow model (written by steps.train --role shadow)",
    )


def add_sections(p: argparse.ArgumentParser, *sections: str) -> None:
    """`--config FILE` plus one `--<section> JSON` override per config section the step reads."""
    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help="workflow config file to read the sections below from",
    )
    for name in sections:
        p.add_argument(
            f"--{name}",
            type=json_argument,
            metavar="JSON",
            help=f"the config's `{name}` section as JSON (replaces the file's); "
            "the keys this step reads are enough",
        )


@functools.cache
def _config_file(path: str) -> dict[str, Any]:
    config = load_yaml(path)
    try:
        check_config(config)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def section(args: argparse.Namespace, name: str) -> Any:
    """A config section: from its JSON argument, else from the (checked) config file."""
    given = getattr(args, name)
    return _config_file(args.config)[name] if given is None else given


def data_entry(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """The checked `data.<dataset>` entry."""
    data = section(args, "data")
    if not isinstance(data, dict) or dataset not in data:
        raise ConfigError(f"config key data: no entry for data set {dataset!r}; add data.{dataset}")
    check_section("data", {dataset: data[dataset]})
    return data[dataset]


def dataset_section(args: argparse.Namespace, dataset: str, name: str) -> Any:
    """A section as the data set sees it: its own `model` / `train` replace the global ones."""
    own = for_dataset(data_entry(args, dataset), name, None)
    return section(args, name) if own is None else own


def add_recipe(p: argparse.ArgumentParser) -> None:
    """What names a recipe (data set, split, method, density, ablation variant) and every config
    section a method may read."""
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by steps.split")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--density", type=float, required=True, help="fraction of weights kept")
    p.add_argument("--variant", default="default", help="name of an ablation variant, if any")
    add_sections(p, "data", "model", "train", *METHOD_SECTIONS)


@dataclass(frozen=True)
class Recipe:
    """A compression recipe as a step reads it: the method's record and the checked sections it
    reads (`read`: the data entry, model, train and the method's own sections)."""

    method: Method
    density: float
    read: dict[str, Any]

    @property
    def sections(self) -> dict[str, Any]:
        """The method's own sections, as its function takes them."""
        return {name: self.read[name] for name in self.method.sections}


def read_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe of `add_recipe`'s arguments, every section checked against the schema."""
    if not 0.0 < args.density < 1.0:
        raise ValueError(f"--density must be in (0, 1), got {args.density}")
    method = REGISTRY[args.method]
    model_section = dataset_section(args, args.dataset, "model")
    check_section("model", model_section)
    read = {
        "data": data_entry(args, args.dataset),
        "model": model_section,
        "train": specs.read(specs.TrainSpec, "train", dataset_section(args, args.dataset, "train")),
        **{
            name: specs.read(spec, name, section(args, name))
            for name, spec in method.sections.items()
        },
    }
    return Recipe(method, args.density, read)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a step: progress to stderr; a bad input ends in one line naming it and exit code 2."""
    if COLLECT_AFTER_IMPORTS:  # the collector was off for the start-up's imports
        gc.freeze()  # what they created is never scanned again
        gc.enable()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        main(argv)
    except (FileNotFoundError, ValueError) as err:  # ConfigError and SplitError included
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
