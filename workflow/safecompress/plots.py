"""Figures for the SafeCompress experiments.

Every figure is drawn under one style (`STYLE`) with one fixed colour and marker per method
(`METHOD_STYLE`), so a method looks the same in every panel. Each function takes the pipeline's
pandas tables and returns a `matplotlib.figure.Figure`; `save_figure` writes it as PNG and PDF.
Figures are built without pyplot (rendered by the Agg and PDF backends), so they hold no global
state and need no closing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import cycle
from pathlib import Path
from typing import Final, NamedTuple

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from .io import atomic_path
from .metrics import roc_auc, roc_curve


class MethodStyle(NamedTuple):
    """How one method is drawn in every figure."""

    label: str
    color: str
    marker: str


STYLE: Final = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.alpha": 0.35,
    "grid.linestyle": ":",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "errorbar.capsize": 2.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType fonts so the PDF text stays editable
}

# Okabe-Ito colours: distinguishable with colour-vision deficiency; markers survive greyscale.
METHOD_STYLE: Final = {
    "dense": MethodStyle("Dense", "#000000", "s"),
    "magnitude": MethodStyle("Magnitude pruning", "#E69F00", "o"),
    "dst": MethodStyle("DST (no safety test)", "#0072B2", "^"),
    "safecompress": MethodStyle("SafeCompress", "#D55E00", "D"),
}

METRIC_LABEL: Final = {
    "auc": "Attack AUC",
    "attack_acc": "Attack accuracy",
    "advantage": "Membership advantage",
    "tpr_at_1pct_fpr": "Attack TPR at 1% FPR",
    "tpr_at_0.1pct_fpr": "Attack TPR at 0.1% FPR",
}

# What a guessing attacker scores (member and non-member sets are balanced).
CHANCE_LEVEL: Final = {
    "auc": 0.5,
    "attack_acc": 0.5,
    "advantage": 0.0,
    "tpr_at_1pct_fpr": 0.01,
    "tpr_at_0.1pct_fpr": 0.001,
}

HISTORY_COLUMNS: Final = ("epoch", "train_loss", "val_loss", "train_acc", "val_acc")
SPLIT_LINESTYLE: Final = {"train": "-", "val": "--"}
SPLIT_LABEL: Final = {"train": "train", "val": "validation"}
MODEL_COLORS: Final = mpl.colormaps["tab10"].colors
CHANCE_STYLE: Final = {"color": "0.55", "linestyle": ":", "linewidth": 1.2, "label": "Chance"}
DENSE_REFERENCE_STYLE: Final = {"color": METHOD_STYLE["dense"].color, "linestyle": "--"}

DENSITY_LABEL: Final = "Density, fraction of weights kept (log; sparser →)"
ACCURACY_LABEL: Final = "Task accuracy (%)"
PANEL_SIZE: Final = (4.2, 3.2)  # inches per subplot
ROC_PANEL_SIZE: Final = (4.4, 4.4)  # square log-log axes above a one-column legend
LEGEND_ENTRY_WIDTH: Final = 2.0  # inches a typical legend entry needs
ROC_FPR_RANGE: Final = (1e-3, 1.0)
PNG_DPI: Final = 150
# No timestamp in the PDF, so redrawing the same results gives the same bytes.
SAVE_METADATA: Final = {"png": None, "pdf": {"CreationDate": None}}


def _require_columns(table: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise ValueError naming the columns that `table` lacks."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(
            f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}"
        )


def _methods_in(table: pd.DataFrame) -> list[str]:
    """The methods present in `table`, in the fixed order of `METHOD_STYLE`."""
    unknown = sorted(set(table["method"]) - METHOD_STYLE.keys())
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)}; expected {', '.join(METHOD_STYLE)}"
        )
    return [method for method in METHOD_STYLE if (table["method"] == method).any()]


def pareto_front(auc: Sequence[float], accuracy: Sequence[float]) -> pd.DataFrame:
    """Points no other point beats on both axes (lower AUC, higher accuracy), sorted by AUC."""
    points = pd.DataFrame({"auc": auc, "accuracy": accuracy})
    points = points.sort_values(["auc", "accuracy"], ascending=[True, False])
    best_before = points["accuracy"].cummax().shift(fill_value=-np.inf)
    return points[points["accuracy"] > best_before]


def _seed_mean_sd(table: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Mean and sample sd over seeds of `values` per `keys`; sd is NaN for a single seed."""
    stats = table.groupby(keys, sort=True)[values].agg(["mean", "std"])
    stats.columns = [f"{value}_{stat}" for value, stat in stats.columns]
    return stats.reset_index()


def _panels(
    nrows: int, ncols: int, panel_size: tuple[float, float] = PANEL_SIZE, **share: bool | str
) -> tuple[Figure, np.ndarray]:
    """A figure with an `nrows` x `ncols` grid of axes, room for a legend below."""
    width, height = panel_size
    figure = Figure(figsize=(width * ncols, height * nrows + 0.5), layout="constrained")
    return figure, figure.subplots(nrows, ncols, squeeze=False, **share)


def _style_density_axis(axes: Axes, densities: Iterable[float]) -> None:
    """Log density axis, sparsest model on the right, ticks at the densities studied."""
    axes.set_xscale("log")
    axes.xaxis.set_inverted(True)
    axes.xaxis.set_major_locator(FixedLocator(sorted(set(densities))))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda density, _: f"{density:g}"))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel(DENSITY_LABEL)


def _legend_below(
    figure: Figure, handles: list[Artist] | None = None, max_columns: int = 6
) -> None:
    """One legend for the whole figure, below the panels so it never covers data.

    Without `handles`, it lists every labelled artist of every panel once, methods first.
    """
    if handles is None:
        by_label: dict[str, Artist] = {}
        for axes in figure.axes:
            for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
                by_label.setdefault(label, handle)
        method_labels = [style.label for style in METHOD_STYLE.values()]
        labels = sorted(
            by_label,
            key=lambda label: (
                method_labels.index(label) if label in method_labels else len(method_labels)
            ),
        )
        handles = [by_label[label] for label in labels]
    else:
        labels = [handle.get_label() for handle in handles]
    fitting = int(figure.get_figwidth() // LEGEND_ENTRY_WIDTH)
    columns = max(1, min(len(labels), fitting, max_columns))
    figure.legend(handles, labels, loc="outside lower center", ncols=columns)


def _plot_against_density(axes: Axes, rows: pd.DataFrame, value: str) -> None:
    """Seed mean ± sd of `value` per compressed method vs density; dense as a dashed line
    with a shaded ± sd band."""
    for method in _methods_in(rows):
        style = METHOD_STYLE[method]
        stats = _seed_mean_sd(rows[rows["method"] == method], ["density"], [value])
        if method == "dense":
            mean, sd = stats[f"{value}_mean"].iloc[0], stats[f"{value}_std"].iloc[0]
            axes.axhline(mean, **DENSE_REFERENCE_STYLE, label=style.label)
            if np.isfinite(sd):
                axes.axhspan(mean - sd, mean + sd, color=style.color, alpha=0.08, linewidth=0)
        else:
            axes.errorbar(
                stats["density"],
                stats[f"{value}_mean"],
                yerr=stats[f"{value}_std"],
                color=style.color,
                marker=style.marker,
                label=style.label,
            )


def _compressed_densities(summary: pd.DataFrame) -> pd.Series:
    return summary.loc[summary["method"] != "dense", "density"]


@mpl.rc_context(STYLE)
def accuracy_vs_density(summary: pd.DataFrame) -> Figure:
    """Task accuracy vs density, one panel per dataset; error bars are sd over seeds."""
    _require_columns(summary, ["dataset", "method", "density", "seed", "task_acc"])
    # The summary repeats each model's accuracy once per attack: keep one row per model.
    models = summary.drop_duplicates(["dataset", "method", "density", "seed"])
    models = models.assign(task_acc=100 * models["task_acc"])
    datasets = list(pd.unique(models["dataset"]))
    figure, axes_grid = _panels(1, len(datasets))
    for axes, dataset in zip(axes_grid[0], datasets, strict=True):
        _plot_against_density(axes, models[models["dataset"] == dataset], "task_acc")
        _style_density_axis(axes, _compressed_densities(summary))
        axes.set(title=dataset, ylabel=ACCURACY_LABEL)
    _legend_below(figure)
    return figure


@mpl.rc_context(STYLE)
def attack_vs_density(summary: pd.DataFrame, metric: str = "auc") -> Figure:
    """Attack `metric` vs density: rows are datasets, columns attacks; dotted line is chance."""
    if metric not in METRIC_LABEL:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRIC_LABEL)}")
    _require_columns(summary, ["dataset", "method", "density", "seed", "attack", metric])
    datasets, attacks = list(pd.unique(summary["dataset"])), list(pd.unique(summary["attack"]))
    figure, axes_grid = _panels(len(datasets), len(attacks), sharex=True, sharey="row")
    for row, dataset in enumerate(datasets):
        for column, attack in enumerate(attacks):
            axes = axes_grid[row, column]
            selected = (summary["dataset"] == dataset) & (summary["attack"] == attack)
            _plot_against_density(axes, summary[selected], metric)
            axes.axhline(CHANCE_LEVEL[metric], **CHANCE_STYLE)
            _style_density_axis(axes, _compressed_densities(summary))
            axes.set(title=f"{dataset}, {attack} attack", ylabel=METRIC_LABEL[metric])
            axes.label_outer()
    _legend_below(figure)
    return figure


@mpl.rc_context(STYLE)
def tradeoff(summary: pd.DataFrame, attack: str) -> Figure:
    """Task accuracy vs `attack` AUC per method and density (seed means), with the Pareto front."""
    _require_columns(summary, ["dataset", "method", "density", "seed", "attack", "task_acc", "auc"])
    rows = summary[summary["attack"] == attack]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(summary["attack"])))
        raise ValueError(f"no rows for attack {attack!r}; available attacks: {known}")
    rows = rows.assign(task_acc=100 * rows["task_acc"])
    datasets = list(pd.unique(rows["dataset"]))
    figure, axes_grid = _panels(1, len(datasets))
    for axes, dataset in zip(axes_grid[0], datasets, strict=True):
        points = _seed_mean_sd(
            rows[rows["dataset"] == dataset], ["method", "density"], ["auc", "task_acc"]
        )
        for method in _methods_in(points):
            style = METHOD_STYLE[method]
            mine = points[points["method"] == method]
            axes.plot(
                mine["auc_mean"],
                mine["task_acc_mean"],
                color=style.color,
                marker=style.marker,
                linestyle="none",
                label=style.label,
                zorder=3,
            )
            for point in mine.itertuples():
                axes.annotate(
                    f"{point.density:g}",
                    (point.auc_mean, point.task_acc_mean),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize="x-small",
                    color=style.color,
                )
        front = pareto_front(points["auc_mean"], points["task_acc_mean"])
        axes.step(front["auc"], front["accuracy"], where="post", color="0.4", label="Pareto front")
        axes.axvline(CHANCE_LEVEL["auc"], **CHANCE_STYLE)
        axes.set(title=dataset, xlabel=f"Attack AUC ({attack} attack)", ylabel=ACCURACY_LABEL)
    figure.suptitle(
        f"Accuracy vs. membership leakage, {attack} attack\n"
        "(up-left is better; numbers are densities)"
    )
    _legend_below(figure)
    return figure


@mpl.rc_context(STYLE)
def training_curves(histories: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, one colour per model; solid = train, dashed = validation."""
    _require_columns(histories, ["model", *HISTORY_COLUMNS])
    figure, axes_grid = _panels(1, 2)
    loss_axes, accuracy_axes = axes_grid[0]
    handles: list[Artist] = []
    for color, model in zip(cycle(MODEL_COLORS), pd.unique(histories["model"])):
        history = histories[histories["model"] == model].sort_values("epoch")
        for split, linestyle in SPLIT_LINESTYLE.items():
            line = {"color": color, "linestyle": linestyle}
            loss_axes.plot(history["epoch"], history[f"{split}_loss"], **line)
            accuracy_axes.plot(history["epoch"], 100 * history[f"{split}_acc"], **line)
        handles.append(Line2D([], [], color=color, label=str(model)))
    handles += [
        Line2D([], [], color="0.3", linestyle=linestyle, label=SPLIT_LABEL[split])
        for split, linestyle in SPLIT_LINESTYLE.items()
    ]
    loss_axes.set(title="Loss", xlabel="Epoch", ylabel="Cross-entropy loss (nats)")
    accuracy_axes.set(title="Accuracy", xlabel="Epoch", ylabel="Accuracy (%)")
    _legend_below(figure, handles)
    return figure


@mpl.rc_context(STYLE)
def roc_curves(scores: pd.DataFrame, attack: str) -> Figure:
    """Log-log ROC of the `attack` per method and density, scored by `safecompress.metrics`."""
    score = f"score_{attack}"
    _require_columns(scores, ["method", "density", "set", score])
    unknown_sets = sorted(set(scores["set"]) - {"member", "non-member"})
    if unknown_sets:
        raise ValueError(f"column set has {unknown_sets}; expected 'member' or 'non-member'")
    figure, axes_grid = _panels(1, 1, ROC_PANEL_SIZE)
    axes = axes_grid[0, 0]
    for method in _methods_in(scores):
        style = METHOD_STYLE[method]
        by_method = scores[scores["method"] == method]
        for density in sorted(pd.unique(by_method["density"]), reverse=True):
            model = by_method[by_method["density"] == density]
            is_member = (model["set"] == "member").to_numpy()
            fpr, tpr, _ = roc_curve(is_member, model[score].to_numpy())
            auc = roc_auc(is_member, model[score].to_numpy())
            axes.plot(
                fpr,
                tpr,
                color=style.color,
                marker=style.marker,
                markevery=0.1,
                label=f"{style.label}, d={density:g} (AUC {auc:.3f})",
            )
    axes.plot(ROC_FPR_RANGE, ROC_FPR_RANGE, **CHANCE_STYLE)
    axes.set(
        xscale="log",
        yscale="log",
        xlim=ROC_FPR_RANGE,
        ylim=ROC_FPR_RANGE,
        aspect="equal",
        title=f"ROC, {attack} attack",
        xlabel="False positive rate (log)",
        ylabel="True positive rate (log)",
    )
    _legend_below(figure, max_columns=1)
    return figure


ABLATION_SWEEPS: Final = {
    "lambda": "Safety weight λ",
    "n": "Number of candidates N",
    "set": "Strategy set",
}


@mpl.rc_context(STYLE)
def ablation(table: pd.DataFrame, attack: str) -> Figure:
    """SafeCompress variants: task accuracy (top) and attack AUC (bottom), one column per
    sweep; variants are named `<sweep>_<value>` (lambda_2.0, n_4, set_prune_scales)."""
    _require_columns(table, ["variant", "attack", "seed", "task_acc", "auc"])
    rows = table[table["attack"] == attack]
    if rows.empty:
        raise ValueError(f"no rows for attack {attack!r}")
    parts = rows["variant"].str.partition("_")
    rows = rows.assign(sweep=parts[0], value=parts[2])
    sweeps = [sweep for sweep in ABLATION_SWEEPS if (rows["sweep"] == sweep).any()]
    figure, axes_grid = _panels(2, len(sweeps), sharey="row")
    style = METHOD_STYLE["safecompress"]
    for column, sweep in enumerate(sweeps):
        stats = _seed_mean_sd(rows[rows["sweep"] == sweep], ["value"], ["task_acc", "auc"])
        if sweep != "set":  # numeric sweeps in numeric order
            stats = stats.assign(x=stats["value"].astype(float)).sort_values("x")
        else:
            stats = stats.assign(x=stats["value"])
        for row, (value, scale, label) in enumerate(
            (("task_acc", 100, ACCURACY_LABEL), ("auc", 1, f"Attack AUC ({attack} attack)"))
        ):
            axes = axes_grid[row, column]
            axes.errorbar(
                stats["x"],
                scale * stats[f"{value}_mean"],
                yerr=scale * stats[f"{value}_std"],
                color=style.color,
                marker=style.marker,
                label=style.label,
                linestyle="none" if sweep == "set" else "-",
            )
            axes.set(xlabel=ABLATION_SWEEPS[sweep], ylabel=label if column == 0 else None)
        if sweep == "n":  # whole numbers of candidates only
            for axes in axes_grid[:, column]:
                axes.xaxis.set_major_locator(FixedLocator(stats["x"].tolist()))
    for axes in axes_grid[1]:
        axes.axhline(CHANCE_LEVEL["auc"], **CHANCE_STYLE)
    density = ", ".join(f"{d:g}" for d in sorted(rows["density"].unique()))
    figure.suptitle(f"SafeCompress ablations at density {density} (mean ± sd over seeds)")
    _legend_below(figure)
    return figure


@mpl.rc_context(STYLE)
def candidate_trajectory(updates: pd.DataFrame) -> Figure:
    """Every candidate of every mask update: accuracy on the probe's non-members vs simulated
    attack advantage, coloured by training step; the selected candidate of each update is
    circled."""
    _require_columns(updates, ["step", "val_acc", "advantage", "selected"])
    figure, axes_grid = _panels(1, 1, ROC_PANEL_SIZE)
    axes = axes_grid[0, 0]
    points = axes.scatter(
        updates["advantage"],
        100 * updates["val_acc"],
        c=updates["step"],
        cmap="viridis",
        s=18,
        label="candidate",
    )
    chosen = updates[updates["selected"].astype(bool)].sort_values("step")
    axes.plot(
        chosen["advantage"],
        100 * chosen["val_acc"],
        color="0.4",
        linewidth=0.8,
        zorder=1,
        label="selected, in step order",
    )
    axes.scatter(
        chosen["advantage"],
        100 * chosen["val_acc"],
        s=80,
        facecolors="none",
        edgecolors=METHOD_STYLE["safecompress"].color,
        linewidths=1.4,
        label="selected",
    )
    figure.colorbar(points, ax=axes, label="Training step")
    axes.set(
        title="SafeCompress safety test, every candidate",
        xlabel="Simulated attack advantage on the probe (2·acc − 1)",
        ylabel="Accuracy on the probe's non-members (%)",
    )
    _legend_below(figure, max_columns=1)
    return figure


@mpl.rc_context(STYLE)
def save_figure(figure: Figure, path_png: str | os.PathLike) -> None:
    """Write `figure` to `path_png` (150 dpi) and to a PDF of the same stem, each atomically."""
    png = Path(path_png)
    if png.suffix.lower() != ".png":
        raise ValueError(f"{png}: figure path must end in .png (a .pdf is written beside it)")
    for path, file_format in ((png, "png"), (png.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            figure.savefig(
                tmp,
                format=file_format,
                dpi=PNG_DPI,
                bbox_inches="tight",
                metadata=SAVE_METADATA[file_format],
            )
