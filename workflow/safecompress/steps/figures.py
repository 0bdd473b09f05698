"""Step 6: draw one figure of the paper from the result tables and model files.

    python -m safecompress.steps.figures accuracy \\
        --paper-table results/tables/paper_table.csv --out results/figures/accuracy.png
    python -m safecompress.steps.figures attack --paper-table results/tables/paper_table.csv \\
        --metric auc --out results/figures/attack_auc.png
    python -m safecompress.steps.figures tradeoff --paper-table results/tables/paper_table.csv \\
        --attack strongest --ablation results/tables/ablation.csv \\
        --curves '{"dpsgd": [["noise_multiplier_0.02", "default"]]}' \\
        --out results/figures/tradeoff.png
    python -m safecompress.steps.figures training --history DENSE/history.csv SAFE/history.csv \\
        --label "dense d=1.0" "safecompress d=0.1" --out results/figures/training.png
    python -m safecompress.steps.figures roc --scores DENSE/scores.csv SAFE/scores.csv \\
        --method dense safecompress --density 1.0 0.1 --attack rmia lira \\
        --out results/figures/roc.png
    python -m safecompress.steps.figures layer_density --models SAFE/model.safetensors \\
        --label "safecompress d=0.1" --out results/figures/layer_density.png
    python -m safecompress.steps.figures ablation --table results/tables/ablation.csv \\
        --attack loss --out results/figures/ablation.png
    python -m safecompress.steps.figures candidates --updates SAFE/updates.csv \\
        --out results/figures/candidates.png

The paper table (safecompress.steps.summarize) gives each mean its 95 % interval: the t-interval
over seeds, or with one seed the model's bootstrap interval; the figures draw those as bars.
The ablation's seed statistics and the ROC curves with their bootstrap bands are computed here
by safecompress.reporting.tables, then drawn by safecompress.reporting.figures.
Every figure is written twice: the --out PNG (150 dpi) and a PDF with the same stem.
A missing file or column, or an attack the tables lack, ends in one line naming it (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import safetensors
from matplotlib.figure import Figure

from safecompress.io import read_csv
from safecompress.privacy.signals import CANARY_SETS
from safecompress.reporting import figures, tables
from safecompress.steps import cli

LAYER_DENSITY_KEYS = ("layer_density_start", "layer_density_end")


def _from_table(path: Path, draw: Callable[..., Figure], *options: Any) -> Figure:
    """Draw from a result table, naming the file in any complaint about its content."""
    table = read_csv(path)
    try:
        return draw(table, *options)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _require_one_per_file(**values: Sequence) -> None:
    """Options that describe the input files must each give one value per file."""
    counts = {f"--{name}": len(given) for name, given in values.items()}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"{count} {name}" for name, count in counts.items())
        raise ValueError(f"got {given}; give one value per input file to each")


def _read_scores(path: Path, attacks: Sequence[str]) -> pd.DataFrame:
    """One model's per-sample attack scores on the evaluated samples (the canaries' rows left
    out), refusing an attack the file does not score."""
    scores = read_csv(path, ("set",))
    scores = scores[~scores["set"].isin(CANARY_SETS)]
    absent = [attack for attack in attacks if f"score_{attack}" not in scores.columns]
    if absent:
        scored = [name.removeprefix("score_") for name in scores if name.startswith("score_")]
        columns = ", ".join(f"score_{attack}" for attack in absent)
        raise ValueError(f"{path}: no column {columns}; pass --attack of {', '.join(scored)}")
    return scores


def read_layer_density(path: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """A compressed model's metadata and the shape of each layer's weight, from the header of
    its safetensors file (no weights are loaded)."""
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            meta = json.loads(handle.metadata()["meta"])
            shapes = {
                key.removesuffix(".weight"): handle.get_slice(key).get_shape()
                for key in handle.keys()  # noqa: SIM118 (a handle, not a dict)
                if key.endswith(".weight")
            }
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path}: no such model file; rerun the rule that makes it"
        ) from err
    except (safetensors.SafetensorError, KeyError, TypeError, json.JSONDecodeError) as err:
        reason = " ".join(str(err).split())  # one line, whatever the library says
        raise ValueError(
            f"{path}: not a readable SafeCompress model file ({reason}); delete it and rerun"
        ) from err
    absent = [key for key in LAYER_DENSITY_KEYS if not isinstance(meta.get(key), dict)]
    if absent:
        raise ValueError(
            f"{path}: no {' or '.join(absent)} in its metadata; pass a compressed model's file"
        )
    start, end = (meta[key] for key in LAYER_DENSITY_KEYS)
    if start.keys() != end.keys():
        raise ValueError(f"{path}: layer_density_start and layer_density_end name other layers")
    return meta, shapes


def layer_table(path: Path, label: str) -> pd.DataFrame:
    """One row per prunable layer of the model file: its density at the start and the end."""
    meta, shapes = read_layer_density(path)
    start, end = (meta[key] for key in LAYER_DENSITY_KEYS)
    rows = [
        {
            "model": label,
            "method": meta.get("method", ""),
            "layer": layer,
            "shape": "×".join(map(str, shapes.get(layer, []))),
            "start": start[layer],
            "end": end[layer],
            "overall": meta.get("density_measured", float("nan")),
        }
        for layer in start
    ]
    return pd.DataFrame(rows)


def draw_accuracy(args: argparse.Namespace) -> Figure:
    return _from_table(args.paper_table, figures.accuracy_vs_density)


def draw_attack(args: argparse.Namespace) -> Figure:
    return _from_table(args.paper_table, figures.attack_vs_density, args.metric)


def _ablation_statistics(path: Path) -> pd.DataFrame:
    """The ablation's per-seed rows (ablation.csv) as seed statistics, as the paper table has
    them."""
    return tables.replicate_statistics(read_csv(path, required=tables.SUMMARY_COLUMNS))


def draw_tradeoff(args: argparse.Namespace) -> Figure:
    variants = None if args.ablation is None else _ablation_statistics(args.ablation)
    return _from_table(args.paper_table, figures.tradeoff, args.attack, variants, args.curves)


def draw_training(args: argparse.Namespace) -> Figure:
    _require_one_per_file(history=args.history, label=args.label)
    histories = [
        read_csv(path, figures.HISTORY_COLUMNS).assign(model=label)
        for path, label in zip(args.history, args.label, strict=True)
    ]
    return figures.training_curves(pd.concat(histories, ignore_index=True))


def draw_roc(args: argparse.Namespace) -> Figure:
    _require_one_per_file(scores=args.scores, method=args.method, density=args.density)
    per_model = [
        _read_scores(path, args.attack).assign(method=method, density=density)
        for path, method, density in zip(args.scores, args.method, args.density, strict=True)
    ]
    scores = pd.concat(per_model, ignore_index=True)
    return figures.roc_curves(tables.roc_table(scores, args.attack, args.bootstrap, args.seed))


def draw_layer_density(args: argparse.Namespace) -> Figure:
    _require_one_per_file(models=args.models, label=args.label)
    layers = [layer_table(path, label) for path, label in zip(args.models, args.label, strict=True)]
    return figures.layer_density(pd.concat(layers, ignore_index=True))


def draw_ablation(args: argparse.Namespace) -> Figure:
    try:
        return figures.ablation(_ablation_statistics(args.table), args.attack)
    except ValueError as err:
        raise ValueError(f"{args.table}: {err}") from err


def draw_candidates(args: argparse.Namespace) -> Figure:
    return figures.candidate_trajectory(read_csv(args.updates))


def draw_validity(args: argparse.Namespace) -> Figure:
    return figures.validity(read_csv(args.candidates), read_csv(args.table))


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(__spec__.name, __doc__)
    subparsers = p.add_subparsers(title="figures", dest="figure", required=True, metavar="FIGURE")

    def figure(name: str, draw: Callable[[argparse.Namespace], Figure], summary: str):
        sub = subparsers.add_parser(
            name, help=summary, description=summary, formatter_class=p.formatter_class
        )
        sub.set_defaults(draw=draw)
        sub.add_argument(
            "--out", required=True, type=Path, help="PNG to write; the PDF goes beside it"
        )
        return sub

    def paper_table(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--paper-table",
            required=True,
            type=Path,
            help="paper_table.csv written by safecompress.steps.summarize (means, intervals)",
        )

    accuracy = figure("accuracy", draw_accuracy, "task accuracy vs density, per data set")
    paper_table(accuracy)

    attack = figure("attack", draw_attack, "attack metric vs density, per data set and attack")
    paper_table(attack)
    attack.add_argument(
        "--metric", default="auc", choices=list(figures.METRIC_LABEL), help="attack metric to plot"
    )

    tradeoff = figure(
        "tradeoff",
        draw_tradeoff,
        "task accuracy vs attack AUC and TPR at 1%% FPR (and on the canaries, if any), Pareto set",
    )
    paper_table(tradeoff)
    tradeoff.add_argument(
        "--attack",
        required=True,
        help="attack whose leakage is the x axis, or 'strongest' (each model's strongest)",
    )
    tradeoff.add_argument(
        "--ablation",
        type=Path,
        help="ablation.csv: draw every SafeCompress variant at its density as well",
    )
    tradeoff.add_argument(
        "--curves",
        type=cli.json_argument,
        help="the lines joining curve points, per method in order of strength (JSON, e.g. "
        '\'{"dpsgd": [["noise_multiplier_0.02", "default"]]}\')',
    )

    training = figure("training", draw_training, "loss and accuracy per epoch, per model")
    training.add_argument(
        "--history", required=True, nargs="+", type=Path, help="history.csv of each model"
    )
    training.add_argument(
        "--label", required=True, nargs="+", help="legend label of each model, in order"
    )

    roc = figure("roc", draw_roc, "log-log ROC curves with bootstrap bands, a panel per attack")
    roc.add_argument(
        "--scores", required=True, nargs="+", type=Path, help="scores.csv of each model"
    )
    roc.add_argument(
        "--method",
        required=True,
        nargs="+",
        help="method of each model, in order (sets its colour and marker)",
    )
    roc.add_argument(
        "--density", required=True, nargs="+", type=float, help="density of each model, in order"
    )
    roc.add_argument(
        "--attack", required=True, nargs="+", help="attacks whose scores to plot, a panel each"
    )
    roc.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples of the pointwise ROC band"
    )
    roc.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")

    layers = figure(
        "layer_density", draw_layer_density, "per-layer density at start and end, per model"
    )
    layers.add_argument(
        "--models", required=True, nargs="+", type=Path, help="model.safetensors of each model"
    )
    layers.add_argument(
        "--label", required=True, nargs="+", help="panel title of each model, in order"
    )

    ablation = figure("ablation", draw_ablation, "SafeCompress ablations: lambda, N, strategies")
    ablation.add_argument(
        "--table",
        required=True,
        type=Path,
        help="ablation table written by safecompress.steps.summarize",
    )
    ablation.add_argument("--attack", required=True, help="attack whose AUC is plotted")

    candidates = figure(
        "candidates", draw_candidates, "every safety-tested candidate: accuracy vs advantage"
    )
    candidates.add_argument(
        "--updates", required=True, type=Path, help="updates.csv of a safecompress model"
    )

    validity = figure(
        "validity", draw_validity, "every candidate: safety-test leakage vs evaluation AUC"
    )
    validity.add_argument(
        "--candidates",
        required=True,
        type=Path,
        help="validity_candidates.csv written by safecompress.steps.validity",
    )
    validity.add_argument(
        "--table", required=True, type=Path, help="validity.csv: the pooled correlations"
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatters
    figures.save_figure(args.draw(args), args.out)


if __name__ == "__main__":
    cli.run(main)
