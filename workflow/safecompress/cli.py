"""What every pipeline step shares: config sections on the command line, logging, errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import ConfigError, check_config, load_yaml

DEFAULT_CONFIG = "config/config.yaml"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the step's docstring (its usage example) as written."""


def parser(module: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, formatter_class=_HelpFormatter
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
            type=json.loads,
            metavar="JSON",
            help=f"the config's `{name}` section as JSON (replaces the file's)",
        )


def sections(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The requested config sections: from JSON arguments, else from the config file."""
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if len(given) < len(names):
        config = load_yaml(args.config)
        try:
            check_config(config)
        except ConfigError as err:
            raise ConfigError(f"{args.config}: {err}") from None
        given |= {name: config[name] for name in names if name not in given}
    return given


def data_spec(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """The `data.<dataset>` entry."""
    data = sections(args, "data")["data"]
    if dataset not in data:
        raise ConfigError(f"config key data: no entry for data set {dataset!r}; add data.{dataset}")
    return data[dataset]


def dataset_sections(
    args: argparse.Namespace, dataset: str, *names: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data set's entry, and the requested sections with the data set's own `model` /
    `train` (if it has them) replacing the global ones, as the workflow does."""
    spec = data_spec(args, dataset)
    config = sections(args, *names)
    config.update({name: spec[name] for name in names if name in spec})
    return spec, config


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
