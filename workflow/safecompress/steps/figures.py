"""Step 6: draw one figure of the paper from the result tables.

    python -m safecompress.steps.figures accuracy --summary results/tables/summary.csv \\
        --out results/figures/accuracy.png
    python -m safecompress.steps.figures attack --summary results/tables/summary.csv --metric auc \\
        --out results/figures/attack_auc.png
    python -m safecompress.steps.figures tradeoff --summary results/tables/summary.csv \\
        --attack loss --out results/figures/tradeoff_loss.png
    python -m safecompress.steps.figures training --history DENSE/history.csv SAFE/history.csv \\
        --label "dense d=1.0" "safecompress d=0.1" --out results/figures/training.png
    python -m safecompress.steps.figures roc --scores DENSE/scores.csv SAFE/scores.csv \\
        --method dense safecompress --density 1.0 0.1 --attack loss \\
        --out results/figures/roc_loss.png
    python -m safecompress.steps.figures ablation --table results/tables/ablation.csv \\
        --attack loss --out results/figures/ablation.png
    python -m safecompress.steps.figures candidates --updates SAFE/updates.csv \\
        --out results/figures/candidates.png

Every figure is written twice: the --out PNG (150 dpi) and a PDF with the same stem.
A missing file or column, or an attack the tables lack, ends in one line naming it (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .. import plots
from ..io import read_csv
from . import cli


def _from_summary(path: Path, draw: Callable[..., Figure], *options: str) -> Figure:
    """Draw from the summary table, naming the file in any complaint about its content."""
    summary = read_csv(path)
    try:
        return draw(summary, *options)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _require_one_per_file(**values: Sequence) -> None:
    """Options that describe the input files must each give one value per file."""
    counts = {f"--{name}": len(given) for name, given in values.items()}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"{count} {name}" for name, count in counts.items())
        raise ValueError(f"got {given}; give one value per input file to each")


def _read_scores(path: Path, attack: str) -> pd.DataFrame:
    """One model's per-sample attack scores, refusing an attack the file does not score."""
    scores = read_csv(path, ("set",))
    if f"score_{attack}" not in scores.columns:
        scored = [name.removeprefix("score_") for name in scores if name.startswith("score_")]
        raise ValueError(
            f"{path}: no column score_{attack}; pass --attack one of {', '.join(scored)}"
        )
    return scores


def draw_accuracy(args: argparse.Namespace) -> Figure:
    return _from_summary(args.summary, plots.accuracy_vs_density)


def draw_attack(args: argparse.Namespace) -> Figure:
    return _from_summary(args.summary, plots.attack_vs_density, args.metric)


def draw_tradeoff(args: argparse.Namespace) -> Figure:
    return _from_summary(args.summary, plots.tradeoff, args.attack)


def draw_training(args: argparse.Namespace) -> Figure:
    _require_one_per_file(history=args.history, label=args.label)
    histories = [
        read_csv(path, plots.HISTORY_COLUMNS).assign(model=label)
        for path, label in zip(args.history, args.label, strict=True)
    ]
    return plots.training_curves(pd.concat(histories, ignore_index=True))


def draw_roc(args: argparse.Namespace) -> Figure:
    _require_one_per_file(scores=args.scores, method=args.method, density=args.density)
    tables = [
        _read_scores(path, args.attack).assign(method=method, density=density)
        for path, method, density in zip(args.scores, args.method, args.density, strict=True)
    ]
    return plots.roc_curves(pd.concat(tables, ignore_index=True), args.attack)


def draw_ablation(args: argparse.Namespace) -> Figure:
    return _from_summary(args.table, plots.ablation, args.attack)


def draw_candidates(args: argparse.Namespace) -> Figure:
    return plots.candidate_trajectory(read_csv(args.updates))


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(__spec__.name, __doc__)
    figures = p.add_subparsers(title="figures", dest="figure", required=True, metavar="FIGURE")

    def figure(name: str, draw: Callable[[argparse.Namespace], Figure], summary: str):
        sub = figures.add_parser(
            name, help=summary, description=summary, formatter_class=p.formatter_class
        )
        sub.set_defaults(draw=draw)
        sub.add_argument(
            "--out", required=True, type=Path, help="PNG to write; the PDF goes beside it"
        )
        return sub

    summary_help = "summary table written by safecompress.summarize"
    accuracy = figure("accuracy", draw_accuracy, "task accuracy vs density, per data set")
    accuracy.add_argument("--summary", required=True, type=Path, help=summary_help)

    attack = figure("attack", draw_attack, "attack metric vs density, per data set and attack")
    attack.add_argument("--summary", required=True, type=Path, help=summary_help)
    attack.add_argument(
        "--metric", default="auc", choices=list(plots.METRIC_LABEL), help="attack metric to plot"
    )

    tradeoff = figure("tradeoff", draw_tradeoff, "task accuracy vs attack AUC, Pareto front")
    tradeoff.add_argument("--summary", required=True, type=Path, help=summary_help)
    tradeoff.add_argument("--attack", required=True, help="attack whose AUC is the x axis")

    training = figure("training", draw_training, "loss and accuracy per epoch, per model")
    training.add_argument(
        "--history", required=True, nargs="+", type=Path, help="history.csv of each model"
    )
    training.add_argument(
        "--label", required=True, nargs="+", help="legend label of each model, in order"
    )

    roc = figure("roc", draw_roc, "log-log ROC curves of one attack, per model")
    roc.add_argument(
        "--scores", required=True, nargs="+", type=Path, help="scores.csv of each model"
    )
    roc.add_argument(
        "--method",
        required=True,
        nargs="+",
        choices=list(plots.METHOD_STYLE),
        help="method of each model, in order",
    )
    roc.add_argument(
        "--density", required=True, nargs="+", type=float, help="density of each model, in order"
    )
    roc.add_argument("--attack", required=True, help="attack whose scores to plot")

    ablation = figure("ablation", draw_ablation, "SafeCompress ablations: lambda, N, strategies")
    ablation.add_argument(
        "--table", required=True, type=Path, help="ablation table written by safecompress.summarize"
    )
    ablation.add_argument("--attack", required=True, help="attack whose AUC is plotted")

    candidates = figure(
        "candidates", draw_candidates, "every safety-tested candidate: accuracy vs advantage"
    )
    candidates.add_argument(
        "--updates", required=True, type=Path, help="updates.csv of a safecompress model"
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatters
    plots.save_figure(args.draw(args), args.out)


if __name__ == "__main__":
    cli.run(main)
