"""What every pipeline step shares: config sections on the command line, logging, errors."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from safecompress.config.settings import (
    ConfigError,
    check_config,
    check_section,
    for_dataset,
    load_yaml,
)

DEFAULT_CONFIG = "config/config.yaml"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the step's docstring (its usage example) as written."""


def parser(module: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, formatter_class=_HelpFormatter
    )


def _json(text: str) -> Any:
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
            type=_json,
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


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a step: progress to stderr; a bad input ends in one line naming it and exit code 2."""
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
