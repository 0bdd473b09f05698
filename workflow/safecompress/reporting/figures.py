"""Figures for the SafeCompress experiments.

Every figure is drawn under one style (`STYLE`) with one fixed colour and marker per method
(`METHOD_STYLE`), so a method looks the same in every panel. Each function takes the pipeline's
pandas tables and returns a `matplotlib.figure.Figure`; `save_figure` writes it as PNG and PDF.
Figures are built without pyplot (rendered by the Agg and PDF backends), so they hold no global
state and need no closing.

Error bars are 95 % intervals read from the paper table (`safecompress.steps.summarize`): the
Student-t interval over seeds, or with a single seed the model's own bootstrap (Wilson, for
task accuracy) interval. ROC bands are pointwise stratified bootstrap intervals of TPR at each
resolvable FPR (`roc_band`). A metric that is NaN (an FPR the non-members cannot resolve) is
left out of every figure, never drawn as 0.
"""

from __future__ import annotations

import math
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
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from safecompress.config.methods import STYLES, Style
from safecompress.config.settings import STRONGEST_ATTACK
from safecompress.io import atomic_path
from safecompress.privacy.bootstrap import BATCH_CELLS
from safecompress.privacy.metrics import (
    TPR_AT_FPR,
    membership_scores,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)

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
    "hatch.linewidth": 0.6,
    "pdf.fonttype": 42,  # embed TrueType fonts so the PDF text stays editable
}

# One style per method, from its record: the same in every panel.
METHOD_STYLE: Final = STYLES

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

# Methods without a style of their own (METHOD_STYLE) take these, in name order.
SPARE_STYLES: Final = (
    ("#F0E442", "p"),
    ("#44AA99", "<"),
    ("#AA4499", ">"),
    ("#DDCC77", "8"),
)

# The tidy table of `safecompress.steps.summarize.seed_statistics` (paper_table.csv).
PAPER_TABLE_COLUMNS: Final = (
    "dataset",
    "method",
    "density",
    "attack",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
)
HISTORY_COLUMNS: Final = ("epoch", "train_loss", "val_loss", "train_acc", "val_acc")
LAYER_COLUMNS: Final = ("model", "method", "layer", "start", "end")
SPLIT_LINESTYLE: Final = {"train": "-", "val": "--"}
SPLIT_LABEL: Final = {"train": "train", "val": "validation"}
MODEL_COLORS: Final = mpl.colormaps["tab10"].colors
CHANCE_STYLE: Final = {"color": "0.55", "linestyle": ":", "linewidth": 1.2, "label": "Chance"}
DENSE_REFERENCE_STYLE: Final = {"color": METHOD_STYLE["dense"].color, "linestyle": "--"}
INTERVAL_STYLE: Final = {"fmt": "none", "elinewidth": 1.0, "capsize": 2.5}
BAND_ALPHA: Final = 0.15
DENSE_BAND_ALPHA: Final = 0.08
NOTE_STYLE: Final = {"ha": "center", "va": "center", "fontsize": "small", "color": "0.35"}
UNRESOLVED_NOTE: Final = "not resolvable:\ntoo few non-members for this FPR"

DENSITY_LABEL: Final = "Density, fraction of weights kept (log; sparser →)"
ACCURACY_LABEL: Final = "Task accuracy (%)"
INTERVAL_NOTE: Final = "bars: 95 % intervals"
PANEL_SIZE: Final = (4.2, 3.2)  # inches per subplot
ROC_PANEL_SIZE: Final = (4.4, 4.4)  # square log-log axes above a one-column legend
MAX_PANEL_COLUMNS: Final = 4  # more panels wrap onto further rows
LEGEND_ENTRY_WIDTH: Final = 2.0  # inches a typical legend entry needs
# Methods at the same density sit side by side, this factor apart on the log density axis,
# so that their error bars do not hide each other.
DODGE: Final = 1.07
DENSITY_MARGIN: Final = 1.25  # room beyond the densest and sparsest model on the density axis
ROC_GRID_POINTS: Final = 60  # resolvable FPRs of the ROC band, spaced evenly on a log scale
ROC_CONFIDENCE: Final = 0.95
ROC_TPR_METRIC: Final = "tpr_at_1pct_fpr"  # the low-FPR number each ROC legend entry gives
LAYER_ROW_HEIGHT: Final = 0.3  # inches per layer (one bar pair) of the layer-density figure
LAYER_TEXT_INSIDE: Final = 0.25  # layer densities above this are written inside their bar
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
    """The methods present in `table`: those of `METHOD_STYLE` in its order, then any other
    in name order."""
    present = set(map(str, table["method"]))
    return [m for m in METHOD_STYLE if m in present] + sorted(present - METHOD_STYLE.keys())


def method_styles(methods: Iterable[str]) -> dict[str, Style]:
    """The style of each method: its fixed one, or for a method without one (a defense added
    later, say) a spare colour and marker in name order, so that it is drawn, not refused."""
    names = sorted(set(map(str, methods)))
    spare = cycle(SPARE_STYLES)
    return {name: METHOD_STYLE.get(name) or Style(name, *next(spare)) for name in names}


def _paper_rows(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The paper table's rows of `metrics` (the default variant of each method), checked."""
    _require_columns(table, PAPER_TABLE_COLUMNS)
    rows = table[table["metric"].isin(metrics)]
    if "variant" in rows.columns:
        rows = rows[rows["variant"] == "default"]
    absent = [metric for metric in metrics if not (rows["metric"] == metric).any()]
    if absent:
        found = ", ".join(map(str, pd.unique(table["metric"])))
        raise ValueError(f"no rows for metric(s) {', '.join(absent)}; found {found}")
    return rows


def _metric(rows: pd.DataFrame, metric: str, scale: float = 1.0) -> pd.DataFrame:
    """One metric's mean and interval per method and density, scaled (e.g. to percent)."""
    mine = rows[rows["metric"] == metric]
    mine = mine.drop_duplicates(["dataset", "method", "density"])  # task_acc repeats per attack
    values = mine[["mean", "ci_low", "ci_high"]].astype(float) * scale
    return pd.concat([mine[["method", "density"]], values], axis=1).reset_index(drop=True)


def _attacks_in(rows: pd.DataFrame) -> list[str]:
    return list(pd.unique(rows["attack"]))


def _attack_name(attack: str) -> str:
    return "each model's strongest attack" if attack == STRONGEST_ATTACK else f"{attack} attack"


def _rows_of_attack(table: pd.DataFrame, attack: str) -> pd.DataFrame:
    rows = table[table["attack"] == attack]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(table["attack"])))
        raise ValueError(f"no rows for attack {attack!r}; available attacks: {known}")
    return rows


def pareto_front(auc: Sequence[float], accuracy: Sequence[float]) -> pd.DataFrame:
    """Points no other point beats on both axes (lower AUC, higher accuracy), sorted by AUC.

    Points with a NaN coordinate take no part (an unresolvable metric ranks nowhere).
    """
    points = pd.DataFrame({"auc": auc, "accuracy": accuracy}).dropna()
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


def _wrapped_panels(
    blocks: Sequence[str], n_panels: int, panel_size: tuple[float, float] = PANEL_SIZE
) -> tuple[Figure, list[list[Axes]]]:
    """Per block (a data set), `n_panels` axes that wrap after `MAX_PANEL_COLUMNS` columns and
    share one y axis, so that a block's panels compare at a glance; empty cells removed."""
    columns = min(n_panels, MAX_PANEL_COLUMNS)
    rows_per_block = math.ceil(n_panels / columns)
    figure, grid = _panels(len(blocks) * rows_per_block, columns, panel_size)
    panels = []
    for block in range(len(blocks)):
        cells = grid[block * rows_per_block : (block + 1) * rows_per_block].ravel()
        for unused in cells[n_panels:]:
            unused.remove()
        mine = list(cells[:n_panels])
        for index, axes in enumerate(mine[1:], start=1):
            axes.sharey(mine[0])
            if index % columns:
                axes.tick_params(labelleft=False)
        panels.append(mine)
    return figure, panels


def _has_panel_below(index: int, n_panels: int) -> bool:
    """Whether panel `index` of a wrapped block has another panel under it."""
    return index + min(n_panels, MAX_PANEL_COLUMNS) < n_panels


def _style_density_axis(axes: Axes, densities: Iterable[float], label: bool = True) -> None:
    """Log density axis, sparsest model on the right, ticks at the densities studied (the
    limits leave room for the methods' side-by-side offsets, and hold without any data)."""
    densities = sorted(set(densities))
    axes.set_xscale("log")
    axes.set_xlim(densities[-1] * DENSITY_MARGIN, densities[0] / DENSITY_MARGIN)
    axes.xaxis.set_major_locator(FixedLocator(densities))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda density, _: f"{density:g}"))
    axes.xaxis.set_minor_locator(NullLocator())
    if label:
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


def _interval_bars(
    axes: Axes,
    x: np.ndarray,
    y: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    color: str,
    vertical: bool = True,
) -> None:
    """Bars from `low` to `high` at each point (vertical: at x, else horizontal at y), exactly
    the interval's ends whether or not it is centred on the point; NaN intervals are skipped."""
    x, y, low, high = (np.asarray(values, dtype=float) for values in (x, y, low, high))
    shown = np.isfinite(x) & np.isfinite(y) & np.isfinite(low) & np.isfinite(high)
    if not shown.any():
        return
    centre, half = (low + high)[shown] / 2, (high - low)[shown] / 2
    if vertical:
        axes.errorbar(x[shown], centre, yerr=half, ecolor=color, **INTERVAL_STYLE)
    else:
        axes.errorbar(centre, y[shown], xerr=half, ecolor=color, **INTERVAL_STYLE)


def _note_if_empty(axes: Axes, values: Iterable[float], note: str = UNRESOLVED_NOTE) -> None:
    """Say so in the panel when it has no value to draw (every mean NaN)."""
    if not np.isfinite(np.asarray(list(values), dtype=float)).any():
        axes.text(0.5, 0.5, note, transform=axes.transAxes, **NOTE_STYLE)


def _plot_against_density(axes: Axes, points: pd.DataFrame, styles: dict[str, Style]) -> None:
    """Mean and 95 % interval per compressed method vs density, methods side by side; dense as
    a dashed line over its shaded interval. NaN means break the line and draw nothing."""
    methods = _methods_in(points)
    compressed = [method for method in methods if method != "dense"]
    for method in methods:
        style = styles[method]
        mine = points[points["method"] == method].sort_values("density")
        mean, low, high = (mine[column].to_numpy(float) for column in ("mean", "ci_low", "ci_high"))
        if method == "dense":
            if np.isfinite(mean[0]):
                axes.axhline(mean[0], **DENSE_REFERENCE_STYLE, label=style.label)
            if np.isfinite(low[0]) and np.isfinite(high[0]):
                axes.axhspan(
                    low[0], high[0], color=style.color, alpha=DENSE_BAND_ALPHA, linewidth=0
                )
            continue
        x = mine["density"].to_numpy(float) * DODGE ** (
            compressed.index(method) - (len(compressed) - 1) / 2
        )
        axes.plot(x, mean, color=style.color, marker=style.marker, label=style.label)
        _interval_bars(axes, x, mean, low, high, style.color)


def _compressed_densities(table: pd.DataFrame) -> pd.Series:
    return table.loc[table["method"] != "dense", "density"]


@mpl.rc_context(STYLE)
def accuracy_vs_density(table: pd.DataFrame) -> Figure:
    """Task accuracy vs density, one panel per data set, from the paper table: mean and 95 %
    interval (t over seeds, or one model's Wilson interval); dense as a reference band."""
    rows = _paper_rows(table, ["task_acc"])
    datasets = list(pd.unique(rows["dataset"]))
    figure, axes_grid = _panels(1, len(datasets))
    for axes, dataset in zip(axes_grid[0], datasets, strict=True):
        points = _metric(rows[rows["dataset"] == dataset], "task_acc", 100)
        _plot_against_density(axes, points, method_styles(rows["method"]))
        _style_density_axis(axes, _compressed_densities(rows))
        axes.set(title=dataset, ylabel=ACCURACY_LABEL)
    figure.suptitle(f"Task accuracy vs density\n({INTERVAL_NOTE}; band: dense model's)")
    _legend_below(figure)
    return figure


@mpl.rc_context(STYLE)
def attack_vs_density(table: pd.DataFrame, metric: str = "auc") -> Figure:
    """Attack `metric` vs density from the paper table, a panel per data set and attack (wrapped
    after four columns, one y axis per data set); bars are 95 % intervals, dotted line chance.
    An unresolvable (NaN) value is left out; a panel without any says so."""
    if metric not in METRIC_LABEL:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRIC_LABEL)}")
    rows = _paper_rows(table, [metric])
    datasets, attacks = list(pd.unique(rows["dataset"])), _attacks_in(rows)
    figure, panels = _wrapped_panels(datasets, len(attacks))
    for dataset, block in zip(datasets, panels, strict=True):
        for index, (axes, attack) in enumerate(zip(block, attacks, strict=True)):
            selected = (rows["dataset"] == dataset) & (rows["attack"] == attack)
            points = _metric(rows[selected], metric)
            _plot_against_density(axes, points, method_styles(rows["method"]))
            axes.axhline(CHANCE_LEVEL[metric], **CHANCE_STYLE)
            _note_if_empty(axes, points["mean"])
            _style_density_axis(
                axes, _compressed_densities(rows), label=not _has_panel_below(index, len(attacks))
            )
            axes.set(title=f"{dataset}, {attack} attack")
            if index % MAX_PANEL_COLUMNS == 0:
                axes.set_ylabel(METRIC_LABEL[metric])
    figure.suptitle(
        f"{METRIC_LABEL[metric]} vs density ({INTERVAL_NOTE}, band: dense model's; lower is safer)"
    )
    _legend_below(figure)
    return figure


TRADEOFF_AXES: Final = (("auc", "Attack AUC"), ("tpr_at_1pct_fpr", "Attack TPR at 1% FPR"))
# An ablation variant drawn on the frontier is the "method" VARIANT_PREFIX + its variant name.
VARIANT_PREFIX: Final = "variant:"
VARIANT_LABEL: Final = "SafeCompress variants (ablation)"


@mpl.rc_context(STYLE)
def tradeoff(table: pd.DataFrame, attack: str, variants: pd.DataFrame | None = None) -> Figure:
    """The safety-accuracy frontier: task accuracy vs the `attack`'s AUC (left) and TPR at 1%
    FPR (right), one row of panels per data set and density, one marker per method (the
    dense model in every row) with 95 % intervals on both axes; the Pareto set (lower leakage,
    higher accuracy) is ringed and joined. `attack` may be `strongest`: each model's strongest
    attack by AUC. `variants`, the seed statistics of the ablation (same form as the paper
    table), adds each SafeCompress variant (the lambda and setting sweeps) to its density's
    panels as a hollow marker named by its variant; they take part in the Pareto set."""
    metrics = ["task_acc", *(metric for metric, _ in TRADEOFF_AXES)]
    rows = _paper_rows(_rows_of_attack(table, attack), metrics)
    if variants is not None:
        _require_columns(variants, PAPER_TABLE_COLUMNS)
        extra = _rows_of_attack(variants, attack)
        extra = extra[extra["metric"].isin(metrics)]
        rows = pd.concat([rows, extra.assign(method=VARIANT_PREFIX + extra["variant"])])
    cells = []  # (data set, density) of each row of panels; dense alone: density 1
    for dataset in pd.unique(rows["dataset"]):
        densities = set(_compressed_densities(rows[rows["dataset"] == dataset])) or {1.0}
        cells += [(dataset, density) for density in sorted(densities, reverse=True)]
    styles = method_styles(rows.loc[~rows["method"].str.startswith(VARIANT_PREFIX), "method"])
    named = _attack_name(attack)
    figure, axes_grid = _panels(len(cells), len(TRADEOFF_AXES))
    for row, (dataset, density) in enumerate(cells):
        mine = rows[
            (rows["dataset"] == dataset)
            & ((rows["density"] == density) | (rows["method"] == "dense"))
        ]
        accuracy = _metric(mine, "task_acc", 100)
        for column, (metric, label) in enumerate(TRADEOFF_AXES):
            axes = axes_grid[row, column]
            points = _metric(mine, metric).merge(
                accuracy, on=["method", "density"], suffixes=("_x", "_y")
            )
            _plot_tradeoff_points(axes, points, styles)
            front = pareto_front(points["mean_x"], points["mean_y"])
            axes.step(front["auc"], front["accuracy"], where="post", color="0.4", zorder=1)
            axes.scatter(
                front["auc"],
                front["accuracy"],
                s=130,
                facecolors="none",
                edgecolors="0.3",
                linewidths=1.1,
                label="Pareto set",
                zorder=4,
            )
            axes.axvline(CHANCE_LEVEL[metric], **CHANCE_STYLE)
            _note_if_empty(axes, points["mean_x"])
            axes.set(
                title=f"{dataset}, density {density:g}: {label.removeprefix('Attack ')}",
                xlabel=f"{label} ({named})",
                ylabel=ACCURACY_LABEL if column == 0 else None,
            )
    figure.suptitle(
        f"Accuracy vs. membership leakage, {named}\n"
        f"(up-left is better; numbers are densities; {INTERVAL_NOTE})"
    )
    _legend_below(figure)
    return figure


def _plot_tradeoff_points(axes: Axes, points: pd.DataFrame, styles: dict[str, Style]) -> None:
    """Each method's (leakage, accuracy) points with both intervals, labelled by density (an
    ablation variant: hollow, labelled by its name); a point whose leakage is NaN is left
    out."""
    variant_style = METHOD_STYLE["safecompress"]
    for method in _methods_in(points):
        variant = method.startswith(VARIANT_PREFIX)
        style = variant_style if variant else styles[method]
        mine = points[(points["method"] == method) & np.isfinite(points["mean_x"])]
        if mine.empty:
            continue
        x, y = mine["mean_x"].to_numpy(float), mine["mean_y"].to_numpy(float)
        axes.plot(
            x,
            y,
            color=style.color,
            marker=style.marker,
            markerfacecolor="none" if variant else style.color,
            linestyle="none",
            label=VARIANT_LABEL if variant else style.label,
        )
        _interval_bars(axes, x, y, mine["ci_low_x"], mine["ci_high_x"], style.color, False)
        _interval_bars(axes, x, y, mine["ci_low_y"], mine["ci_high_y"], style.color, True)
        for point in mine.itertuples():
            axes.annotate(
                method.removeprefix(VARIANT_PREFIX) if variant else f"{point.density:g}",
                (point.mean_x, point.mean_y),
                xytext=(7, 4),
                textcoords="offset points",
                fontsize="x-small",
                color=style.color,
            )


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


class RocBand(NamedTuple):
    """TPR at each FPR of a grid: the point estimate and a pointwise bootstrap interval."""

    fpr: np.ndarray
    tpr: np.ndarray
    low: np.ndarray
    high: np.ndarray


def roc_fpr_grid(n_nonmembers: int, n_points: int = ROC_GRID_POINTS) -> np.ndarray:
    """FPRs that `n_nonmembers` resolve, k / n_nonmembers for k from 1 to all of them, spaced
    evenly on a log scale (about `n_points` of them; fewer when there are few non-members)."""
    if n_nonmembers < 1:
        raise ValueError(f"the ROC needs non-members, got {n_nonmembers}")
    false_positives = np.unique(np.rint(np.geomspace(1, n_nonmembers, n_points)).astype(int))
    return false_positives / n_nonmembers


def resampled_tpr_curve(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    member_idx: np.ndarray,
    nonmember_idx: np.ndarray,
    fprs: np.ndarray,
) -> np.ndarray:
    """TPR at FPR <= f for each f of `fprs` (columns) in each resample (a row of each index
    matrix): `metrics.tpr_at_fpr` for many resamples and FPRs at once.

    With k false positives allowed, the best ROC point flags every score strictly above the
    (k+1)-th largest non-member score (all of them when k is every non-member). Scores become
    integer codes of their rank among the distinct values, so each row is sorted once and one
    `searchsorted` over all rows (offset by row) counts the members at or below each threshold.
    """
    member_idx, nonmember_idx = np.atleast_2d(member_idx), np.atleast_2d(nonmember_idx)
    n_resamples, n_members = member_idx.shape
    n_nonmembers = nonmember_idx.shape[1]
    _, codes = np.unique(np.r_[member_scores, nonmember_scores], return_inverse=True)
    n_values = int(codes.max()) + 1
    member_codes, nonmember_codes = codes[: len(member_scores)], codes[len(member_scores) :]
    # k allowed false positives per FPR, computed as the ROC's FPRs are (k / n_nonmembers).
    allowed = np.searchsorted(np.arange(n_nonmembers + 1) / n_nonmembers, fprs, side="right") - 1
    nonmembers = np.sort(nonmember_codes[nonmember_idx], axis=1)
    column = np.clip(n_nonmembers - 1 - allowed, 0, None)
    # Codes shift by one so that "flag everyone" is threshold -1 -> 0, below every member.
    thresholds = np.where(allowed < n_nonmembers, nonmembers[:, column] + 1, 0)
    row = np.arange(n_resamples)[:, None]
    offsets = row * (n_values + 1)  # rows occupy disjoint ranges of one sorted array
    members = (np.sort(member_codes[member_idx], axis=1) + 1 + offsets).ravel()
    found = np.searchsorted(members, (thresholds + offsets).ravel(), side="right")
    at_or_below = found.reshape(n_resamples, len(allowed)) - row * n_members
    return 1 - at_or_below / n_members


def roc_band(
    is_member: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = ROC_CONFIDENCE,
    fprs: np.ndarray | None = None,
) -> RocBand:
    """TPR at each FPR of `fprs` (default: `roc_fpr_grid`) and its pointwise percentile
    bootstrap interval, members and non-members resampled separately (stratified, as
    `safecompress.privacy.bootstrap` does), so every resample resolves the same FPRs. An FPR below
    1 / (number of non-members) cannot be measured and is refused."""
    is_member, scores = membership_scores(is_member, scores)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    members, nonmembers = scores[is_member], scores[~is_member]
    n_members, n_nonmembers = len(members), len(nonmembers)
    fprs = roc_fpr_grid(n_nonmembers) if fprs is None else np.asarray(fprs, dtype=float)
    if (fprs < 1 / n_nonmembers).any() or (fprs > 1).any():
        raise ValueError(
            f"FPRs must lie in [1/{n_nonmembers}, 1]: {n_nonmembers} non-members resolve no "
            "smaller FPR"
        )
    point = resampled_tpr_curve(
        members, nonmembers, np.arange(n_members), np.arange(n_nonmembers), fprs
    )[0]
    rng = np.random.default_rng(seed)
    batch = max(1, BATCH_CELLS // (n_members + n_nonmembers))
    curves = []
    for start in range(0, n_resamples, batch):
        size = min(batch, n_resamples - start)
        member_idx = rng.integers(0, n_members, (size, n_members))
        nonmember_idx = rng.integers(0, n_nonmembers, (size, n_nonmembers))
        curves.append(resampled_tpr_curve(members, nonmembers, member_idx, nonmember_idx, fprs))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(curves), [tail, 1 - tail], axis=0)
    return RocBand(fprs, point, low, high)


def _format_rate(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


@mpl.rc_context(STYLE)
def roc_curves(
    scores: pd.DataFrame,
    attacks: str | Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
) -> Figure:
    """Log-log ROC of each attack (a panel each) per method and density, from the per-sample
    scores through `safecompress.privacy.metrics`, over its shaded pointwise 95 % bootstrap band.

    The FPR axis starts at 1 / (number of non-members), the smallest FPR they resolve; below
    it nothing is measured and nothing is drawn. Each panel's legend gives every curve's AUC
    and TPR at 1% FPR (n/a where the non-members cannot resolve it).
    """
    attacks = [attacks] if isinstance(attacks, str) else list(attacks)
    if not attacks:
        raise ValueError("no attack to draw; give at least one")
    _require_columns(scores, ["method", "density", "set", *(f"score_{a}" for a in attacks)])
    unknown_sets = sorted(set(scores["set"]) - {"member", "non-member"})
    if unknown_sets:
        raise ValueError(f"column set has {unknown_sets}; expected 'member' or 'non-member'")
    models = [
        (method, density)
        for method in _methods_in(scores)
        for density in sorted(pd.unique(scores.loc[scores["method"] == method, "density"]))[::-1]
    ]
    styles = method_styles(scores["method"])
    figure, panels = _wrapped_panels(["roc"], len(attacks), ROC_PANEL_SIZE)
    for index, (axes, attack) in enumerate(zip(panels[0], attacks, strict=True)):
        smallest_fpr, smallest_tpr = 1.0, 1.0
        for method, density in models:
            model = scores[(scores["method"] == method) & (scores["density"] == density)]
            is_member = (model["set"] == "member").to_numpy()
            values = model[f"score_{attack}"].to_numpy()
            n_nonmembers, n_members = np.count_nonzero(~is_member), np.count_nonzero(is_member)
            smallest_fpr = min(smallest_fpr, 1 / n_nonmembers)
            smallest_tpr = min(smallest_tpr, 1 / n_members)
            fpr, tpr, _ = roc_curve(is_member, values)
            measured = fpr >= 1 / n_nonmembers
            band = roc_band(is_member, values, n_resamples, seed)
            style = styles[method]
            low_fpr_tpr = tpr_at_fpr(is_member, values, TPR_AT_FPR[ROC_TPR_METRIC])
            axes.fill_between(
                band.fpr, band.low, band.high, color=style.color, alpha=BAND_ALPHA, linewidth=0
            )
            axes.plot(
                fpr[measured],
                tpr[measured],
                color=style.color,
                marker=style.marker,
                markevery=0.1,
                label=(
                    f"{style.label}, d={density:g}: AUC {roc_auc(is_member, values):.3f}, "
                    f"TPR@1%FPR {_format_rate(low_fpr_tpr)}"
                ),
            )
        axes.plot([smallest_fpr, 1], [smallest_fpr, 1], **CHANCE_STYLE)
        axes.set(
            xscale="log",
            yscale="log",
            xlim=(smallest_fpr, 1.0),
            ylim=(smallest_tpr / 2, 1.0),
            title=f"{attack} attack",
            xlabel=f"False positive rate (log, from 1/{round(1 / smallest_fpr)})",
            ylabel="True positive rate (log)" if index == 0 else None,
        )
        axes.tick_params(labelleft=True)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")
    figure.suptitle("Log-log ROC of membership inference (shaded: pointwise 95 % bootstrap band)")
    return figure


def _layer_names(layers: Sequence[str]) -> list[str]:
    """Layer names without the dotted prefix they all share (e.g. `network.`)."""
    parts = [str(layer).split(".") for layer in layers]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return [".".join(p[shared:]) for p in parts]


def _annotate_layer(axes: Axes, y: float, start: float, end: float) -> None:
    """The pair's densities as text: beside the longer bar, or inside it near density 1."""
    text = f"{end:.3g}" if f"{start:.3g}" == f"{end:.3g}" else f"{start:.3g} → {end:.3g}"
    longest = max(start, end)
    inside = longest > LAYER_TEXT_INSIDE
    axes.annotate(
        text,
        (longest, y),
        xytext=(-3 if inside else 3, 0),
        textcoords="offset points",
        ha="right" if inside else "left",
        va="center",
        fontsize="x-small",
        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.7, "linewidth": 0},
    )


@mpl.rc_context(STYLE)
def layer_density(layers: pd.DataFrame) -> Figure:
    """Every prunable layer's density at the start (hatched, the ERK allocation) and at the
    end of training (solid), one panel per model, first layer on top, on a log axis; the
    dashed line is the model's overall density when given (`overall` column).

    `layers` has one row per model and layer: model (its label), method, layer, start, end,
    and optionally `shape` (e.g. "64x256", shown with the layer name) and `overall`.
    """
    _require_columns(layers, LAYER_COLUMNS)
    models = list(pd.unique(layers["model"]))
    if not models:
        raise ValueError("no layers to draw")
    densities = layers[["start", "end"]].astype(float).to_numpy()
    if not ((densities > 0) & (densities <= 1)).all():
        raise ValueError("layer densities must lie in (0, 1]")
    per_model = [layers[layers["model"] == model] for model in models]
    n_layers = max(len(rows) for rows in per_model)
    same_layers = all(
        rows["layer"].tolist() == per_model[0]["layer"].tolist() for rows in per_model
    )
    height = max(2.4, 1.2 + LAYER_ROW_HEIGHT * n_layers)
    figure, panels = _wrapped_panels(["layers"], len(models), (4.2, height))
    lowest = float(densities.min())
    styles = method_styles(layers["method"])
    for index, (axes, model, rows) in enumerate(zip(panels[0], models, per_model, strict=True)):
        style = styles[str(rows["method"].iloc[0])]
        y = np.arange(len(rows))
        axes.barh(y - 0.2, rows["start"], height=0.4, color=style.color, alpha=0.3, hatch="///")
        axes.barh(y + 0.2, rows["end"], height=0.4, color=style.color)
        for position, start, end in zip(y, rows["start"], rows["end"], strict=True):
            _annotate_layer(axes, position, float(start), float(end))
        names = _layer_names(rows["layer"])
        if "shape" in rows.columns:
            names = [f"{name} ({shape})" for name, shape in zip(names, rows["shape"], strict=True)]
        axes.set_yticks(y, names)
        axes.set_ylim(len(rows) - 0.5, -0.5)  # first layer on top
        axes.tick_params(axis="y", which="both", length=0, labelleft=index == 0 or not same_layers)
        axes.grid(axis="y", visible=False)
        if "overall" in rows.columns:
            axes.axvline(float(rows["overall"].iloc[0]), **DENSE_REFERENCE_STYLE, linewidth=1.2)
        axes.set(
            xscale="log",
            xlim=(10 ** math.floor(math.log10(lowest / 1.5)), 1.0),
            title=str(model),
            xlabel="Layer density (fraction kept, log)",
            ylabel="Prunable layer (weight shape)" if index == 0 else None,
        )
        axes.xaxis.set_major_formatter(FuncFormatter(lambda density, _: f"{density:g}"))
    handles: list[Artist] = [
        Patch(facecolor="0.5", alpha=0.3, hatch="///", label="start of training (ERK)"),
        Patch(facecolor="0.4", label="end of training"),
    ]
    if "overall" in layers.columns:
        handles.append(Line2D([], [], **DENSE_REFERENCE_STYLE, label="overall density"))
    figure.suptitle("Layer-wise density of the final sparse models")
    _legend_below(figure, handles)
    return figure


ABLATION_SWEEPS: Final = {
    "lambda": "Safety weight λ",
    "n": "Number of candidates N",
    "set": "Strategy set",
    "setting": "Setting",
}


@mpl.rc_context(STYLE)
def ablation(table: pd.DataFrame, attack: str) -> Figure:
    """SafeCompress variants: task accuracy (top) and attack AUC (bottom), one column per
    sweep; variants are named `<sweep>_<value>` (lambda_2.0, n_4, set_prune_scales)."""
    _require_columns(table, ["variant", "attack", "seed", "task_acc", "auc"])
    if attack == STRONGEST_ATTACK:
        _require_columns(table, ["strongest"])
        rows = table[table["strongest"]].drop_duplicates(["variant", "density", "seed"])
    else:
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
        categorical = sweep in ("set", "setting")
        if not categorical:  # numeric sweeps in numeric order
            stats = stats.assign(x=stats["value"].astype(float)).sort_values("x")
        else:
            stats = stats.assign(x=stats["value"])
        for row, (value, scale, label) in enumerate(
            (("task_acc", 100, ACCURACY_LABEL), ("auc", 1, f"Attack AUC ({_attack_name(attack)})"))
        ):
            axes = axes_grid[row, column]
            axes.errorbar(
                stats["x"],
                scale * stats[f"{value}_mean"],
                yerr=scale * stats[f"{value}_std"],
                color=style.color,
                marker=style.marker,
                label=style.label,
                linestyle="none" if categorical else "-",
            )
            axes.set(xlabel=ABLATION_SWEEPS[sweep], ylabel=label if column == 0 else None)
            if categorical:  # variant names are long: slanted, so neighbours do not overlap
                axes.tick_params(axis="x", labelrotation=20)
                for tick in axes.get_xticklabels():
                    tick.set_horizontalalignment("right")
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
