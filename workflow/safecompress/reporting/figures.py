"""Figures for the SafeCompress experiments.

Every figure is drawn under one style (`STYLE`) with one fixed colour and marker per method
(`METHOD_STYLE`), so a method looks the same in every panel. Each function takes the pipeline's
pandas tables and returns a `matplotlib.figure.Figure`; `save_figure` writes it as PNG and PDF.
Figures are built without pyplot (rendered by the Agg and PDF backends), so they hold no global
state and need no closing.

Figures draw what they are given and compute no statistic: error bars are the 95 % intervals
of the paper table (`safecompress.reporting.tables.replicate_statistics`), the Student-t interval
over seeds, or with a single seed the model's own bootstrap (Wilson, for task accuracy)
interval; ROC bands are the pointwise bootstrap intervals of the ROC table
(`safecompress.reporting.tables.roc_table`). A metric that is NaN (an FPR the non-members
cannot resolve) is left out of every figure, never drawn as 0. Text never sits on data that
may crowd: points carry no labels, ablation variants are numbered markers with a key, and
long names wrap.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from itertools import cycle
from pathlib import Path
from typing import Final

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from safecompress.config.curves import DEFAULT_VARIANT
from safecompress.config.methods import STYLES, Style
from safecompress.config.settings import STRONGEST_ATTACK
from safecompress.io import atomic_path
from safecompress.reporting.tables import (
    ALL_RUNGS,
    PAPER_TABLE_COLUMNS,
    ROC_COLUMNS,
    ROC_TPR_METRIC,
    pareto_front,
    require_columns,
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
    "worst_case_auc": 0.5,
    "worst_case_tpr_at_1pct_fpr": 0.01,
}

# Methods without a style of their own (METHOD_STYLE) take these, in name order.
SPARE_STYLES: Final = (
    ("#F0E442", "p"),
    ("#44AA99", "<"),
    ("#AA4499", ">"),
    ("#DDCC77", "8"),
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
SQUARE_PANEL_SIZE: Final = (4.4, 4.4)
ROC_PANEL_SIZE: Final = (3.8, 3.8)  # a square log-log panel ...
ROC_LEGEND_WIDTH: Final = 4.8  # ... and its legend beside it (long entries)
MAX_PANEL_COLUMNS: Final = 4  # more panels wrap onto further rows
LEGEND_ENTRY_WIDTH: Final = 2.0  # inches a typical legend entry needs
# Methods at the same density sit side by side, this factor apart on the log density axis,
# so that their error bars do not hide each other.
DODGE: Final = 1.07
DENSITY_MARGIN: Final = 1.25  # room beyond the densest and sparsest model on the density axis
LAYER_ROW_HEIGHT: Final = 0.3  # inches per layer (one bar pair) of the layer-density figure
LAYER_TEXT_INSIDE: Final = 0.25  # layer densities above this are written inside their bar
ABLATION_SWEEPS: Final = {
    "lambda": "Safety weight λ",
    "n": "Number of candidates N",
    "set": "Strategy set",
    "setting": "Setting",
}
NUMERIC_SWEEPS: Final = ("lambda", "n")
# How the key of a figure names a variant of each sweep, from its value.
VARIANT_FORMAT: Final = {
    "lambda": "λ = {}",
    "n": "N = {}",
    "set": "strategy set: {}",
    "setting": "setting: {}",
}
WRAP_WIDTH: Final = 11  # characters per line of a long tick label
ABLATION_VALUE_WIDTH: Final = 1.4  # inches per swept value (and at least 2 per sweep)
PNG_DPI: Final = 150
# No timestamp in the PDF, so redrawing the same results gives the same bytes.
SAVE_METADATA: Final = {"png": None, "pdf": {"CreationDate": None}}


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


def _paper_rows(table: pd.DataFrame, metrics: Sequence[str], curves: bool = False) -> pd.DataFrame:
    """The paper table's rows of `metrics`, checked: the default variant of each method, and
    with `curves` its curve points too."""
    require_columns(table, PAPER_TABLE_COLUMNS)
    rows = table[table["metric"].isin(metrics)]
    if "variant" not in rows.columns:
        rows = rows.assign(variant=DEFAULT_VARIANT)
    if not curves:
        rows = rows[rows["variant"] == DEFAULT_VARIANT]
    absent = [metric for metric in metrics if not (rows["metric"] == metric).any()]
    if absent:
        found = ", ".join(map(str, pd.unique(table["metric"])))
        raise ValueError(f"no rows for metric(s) {', '.join(absent)}; found {found}")
    return rows


def _metric(rows: pd.DataFrame, metric: str, scale: float = 1.0) -> pd.DataFrame:
    """One metric's mean and interval per method, variant and density, scaled (e.g. to
    percent)."""
    model = ["method", "variant", "density"]
    mine = rows[rows["metric"] == metric]
    mine = mine.drop_duplicates(["dataset", *model])  # task_acc repeats per attack
    values = mine[["mean", "ci_low", "ci_high"]].astype(float) * scale
    return pd.concat([mine[model], values], axis=1).reset_index(drop=True)


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


def _panels(
    nrows: int,
    ncols: int,
    panel_size: tuple[float, float] = PANEL_SIZE,
    beside: float = 0.0,
    **grid: object,
) -> tuple[Figure, np.ndarray]:
    """A figure with an `nrows` x `ncols` grid of axes, room for a legend below and `beside`
    inches for legends right of the panels; `grid` goes to `Figure.subplots` (sharey,
    width_ratios)."""
    width, height = panel_size
    figure = Figure(figsize=(width * ncols + beside, height * nrows + 0.5), layout="constrained")
    return figure, figure.subplots(nrows, ncols, squeeze=False, **grid)


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
# Panels the frontier adds where the table has the canaries' worst-case metrics.
WORST_CASE_AXES: Final = (
    ("worst_case_auc", "Worst-case AUC (canaries)"),
    ("worst_case_tpr_at_1pct_fpr", "Worst-case TPR at 1% FPR (canaries)"),
)
# An ablation variant drawn on the frontier is the "method" VARIANT_PREFIX + its variant name.
VARIANT_PREFIX: Final = "variant:"
VARIANT_KEY_TITLE: Final = "SafeCompress ablation variants"
VARIANT_KEY_WIDTH: Final = 2.6  # inches beside the panels for the variants' key
BADGE_SIZE: Final = 13.0  # points across a variant's numbered disc (and a little room)
BADGE_RINGS: Final = 6  # rings of places around its point that a crowded disc may move to
BADGE_TEXT: Final = {"ha": "center", "va": "center", "fontsize": "x-small", "zorder": 6}
PARETO_RING_AREA: Final = 260.0  # points squared: rings a variant's disc too
CURVE_NOTE: Final = "lines: a method's settings in order of strength; "
CURVE_STYLE: Final = {"linewidth": 1.0, "alpha": 0.7, "zorder": 1.5}


@mpl.rc_context(STYLE)
def tradeoff(
    table: pd.DataFrame,
    attack: str,
    variants: pd.DataFrame | None = None,
    curves: Mapping[str, Sequence[Sequence[str]]] | None = None,
) -> Figure:
    """The safety-accuracy frontier: task accuracy vs the `attack`'s AUC (left) and TPR at 1%
    FPR, and where the table has them its worst-case AUC and TPR at 1% FPR on the canaries
    (right), one row of panels per data set and density, one marker per method and setting
    (the dense model in every row) with 95 % intervals on both axes; the Pareto set (lower
    leakage, higher accuracy) is ringed and joined. `attack` may be `strongest`: each model's
    strongest attack by AUC. The paper table's curve points (variants other than `default`)
    are drawn in their method's style; `curves` (`config.curves.curve_lines`: per method,
    lines of variants in order of strength) joins them into lines. `variants`, the seed
    statistics of the ablation (same form as the paper table), adds each SafeCompress variant
    to its density's panels as a numbered marker, named in a key beside the panels; they take
    part in the Pareto set."""
    present = set(table.get("metric", ()))
    panels = [*TRADEOFF_AXES, *(axis for axis in WORST_CASE_AXES if axis[0] in present)]
    metrics = ["task_acc", *(metric for metric, _ in panels)]
    rows = _paper_rows(_rows_of_attack(table, attack), metrics, curves=True)
    numbers: dict[str, int] = {}
    if variants is not None:
        require_columns(variants, [*PAPER_TABLE_COLUMNS, "variant"])
        extra = _rows_of_attack(variants, attack)
        extra = extra[extra["metric"].isin(metrics)]
        numbers = {name: n for n, name in enumerate(ablation_order(extra["variant"]), start=1)}
        rows = pd.concat([rows, extra.assign(method=VARIANT_PREFIX + extra["variant"])])
    cells = []  # (data set, density) of each row of panels; dense alone: density 1
    for dataset in pd.unique(rows["dataset"]):
        densities = set(_compressed_densities(rows[rows["dataset"] == dataset])) or {1.0}
        cells += [(dataset, density) for density in sorted(densities, reverse=True)]
    styles = method_styles(rows.loc[~rows["method"].str.startswith(VARIANT_PREFIX), "method"])
    named = _attack_name(attack)
    beside = VARIANT_KEY_WIDTH if numbers else 0.0
    figure, axes_grid = _panels(len(cells), len(panels), beside=beside)
    badges: dict[Axes, list[tuple[float, float, int]]] = {}
    for row, (dataset, density) in enumerate(cells):
        mine = rows[
            (rows["dataset"] == dataset)
            & ((rows["density"] == density) | (rows["method"] == "dense"))
        ]
        accuracy = _metric(mine, "task_acc", 100)
        for column, (metric, label) in enumerate(panels):
            axes = axes_grid[row, column]
            points = _metric(mine, metric).merge(
                accuracy, on=["method", "variant", "density"], suffixes=("_x", "_y")
            )
            badges[axes] = _plot_tradeoff_points(axes, points, styles, numbers)
            _join_curves(axes, points, styles, curves or {})
            front = pareto_front(points["mean_x"], points["mean_y"])
            axes.step(front["auc"], front["accuracy"], where="post", color="0.4", zorder=1)
            axes.scatter(
                front["auc"],
                front["accuracy"],
                s=PARETO_RING_AREA,
                facecolors="none",
                edgecolors="0.3",
                linewidths=1.1,
                label="Pareto set",
                zorder=4,
            )
            axes.axvline(CHANCE_LEVEL[metric], **CHANCE_STYLE)
            _note_if_empty(axes, points["mean_x"])
            axes.set(
                # two lines: four panels a row leave no room for one
                title=f"{dataset}, density {density:g}\n{label.removeprefix('Attack ')}",
                xlabel=f"{label}\n({named})",
                ylabel=ACCURACY_LABEL if column == 0 else None,
            )
    variant_note = "numbered: SafeCompress ablation variants; " if numbers else ""
    curve_note = CURVE_NOTE if curves else ""
    figure.suptitle(
        f"Accuracy vs. membership leakage, {named}\n"
        f"(up-left is better; {curve_note}{variant_note}{INTERVAL_NOTE})"
    )
    _legend_below(figure)
    if numbers:
        color = METHOD_STYLE["safecompress"].color
        density = ", ".join(f"{d:g}" for d in sorted(set(extra["density"]), reverse=True))
        # beside the first row: a second legend outside the panels would keep constrained
        # layout from settling (it alternates between two layouts)
        axes_grid[0, -1].legend(
            [_badge_handle(number, color) for number in numbers.values()],
            [variant_label(variant) for variant in numbers],
            handler_map={tuple: HandlerTuple(ndivide=1)},
            loc="upper left",
            bbox_to_anchor=(1.03, 1.0),
            title=f"{VARIANT_KEY_TITLE}\n(density {density})",
            alignment="left",
        )
        figure.draw_without_rendering()  # the final layout: where each point lands
        for axes, mine in badges.items():
            _place_badges(axes, mine, color)
    return figure


def _badge_offsets() -> np.ndarray:
    """Where a variant's disc may sit, in points from its point, nearest first: on it, then
    on rings one disc apart, each starting straight up."""
    places = [(0.0, 0.0)]
    for ring in range(1, BADGE_RINGS + 1):
        angles = np.pi / 2 + 2 * np.pi * np.arange(6 * ring) / (6 * ring)
        places += [(ring * BADGE_SIZE * np.cos(a), ring * BADGE_SIZE * np.sin(a)) for a in angles]
    return np.array(places)


def _place_badges(axes: Axes, badges: Sequence[tuple[float, float, int]], color: str) -> None:
    """Each variant's number on a white disc: on its point, or where an earlier disc is in the
    way at the nearest free place inside the panel, joined to its point by a thin line. Reads
    the figure's final layout, so it comes last."""
    points_per_pixel = 72 / axes.figure.dpi
    panel = axes.get_window_extent()
    low = np.array([panel.x0, panel.y0]) * points_per_pixel + BADGE_SIZE / 2
    high = np.array([panel.x1, panel.y1]) * points_per_pixel - BADGE_SIZE / 2
    placed: list[np.ndarray] = []
    for x, y, number in sorted(badges, key=lambda badge: badge[2]):
        point = axes.transData.transform((x, y)) * points_per_pixel
        offset = next(
            (
                offset
                for offset in _badge_offsets()
                if ((point + offset >= low) & (point + offset <= high)).all()
                and all(np.hypot(*(point + offset - other)) >= BADGE_SIZE for other in placed)
            ),
            np.zeros(2),  # nowhere free: on its point
        )
        placed.append(point + offset)
        if offset.any():  # a line from the point to its disc, which covers the line's end
            axes.annotate(
                "",
                (x, y),
                xytext=tuple(offset),
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.7},
                zorder=BADGE_TEXT["zorder"] - 1,
            ).set_in_layout(False)
        axes.annotate(
            str(number),
            (x, y),
            xytext=tuple(offset),
            textcoords="offset points",
            color=color,
            bbox={
                "boxstyle": "circle,pad=0.25",
                "facecolor": "white",
                "edgecolor": color,
                "linewidth": 0.8,
            },
            **BADGE_TEXT,
        ).set_in_layout(False)  # placed for this layout, which it must not change


def _badge_handle(number: int, color: str) -> tuple[Line2D, Line2D]:
    """The key's picture of a variant's disc: a white disc ringed in `color`, its number on it
    (mathtext markers fit their longer side: one digit by its height, more by their width)."""
    disc = Line2D([], [], linestyle="none", marker="o", markersize=BADGE_SIZE - 1)
    disc.set(markerfacecolor="white", markeredgecolor=color, markeredgewidth=0.8)
    digits = Line2D([], [], linestyle="none", marker=f"${number}$", color=color)
    digits.set(markersize=0.4 * BADGE_SIZE * max(1.0, 0.75 * len(str(number))), markeredgewidth=0)
    return disc, digits


def ablation_order(variants: Iterable[str]) -> list[str]:
    """Variants sweep by sweep (`ABLATION_SWEEPS` order), numeric values in numeric order,
    named ones alphabetically; unknown sweeps last."""
    sweeps = list(ABLATION_SWEEPS)

    def key(variant: str) -> tuple:
        sweep, _, value = variant.partition("_")
        numeric = float(value) if sweep in NUMERIC_SWEEPS else 0.0
        return (sweeps.index(sweep) if sweep in sweeps else len(sweeps), sweep, numeric, value)

    return sorted(set(map(str, variants)), key=key)


def variant_label(variant: str) -> str:
    """A variant's name for readers: lambda_3.0 -> "λ = 3.0", set_no_global_budget ->
    "strategy set: no global budget"."""
    sweep, _, value = variant.partition("_")
    if sweep not in VARIANT_FORMAT:
        return variant
    return VARIANT_FORMAT[sweep].format(value.replace("_", " "))


def _plot_tradeoff_points(
    axes: Axes, points: pd.DataFrame, styles: dict[str, Style], numbers: dict[str, int]
) -> list[tuple[float, float, int]]:
    """Each method's (leakage, accuracy) points with both intervals; an ablation variant's as
    a dot, returned as (x, y, its number in `numbers`) for its numbered disc. A point whose
    leakage is NaN is left out."""
    badges = []
    for method in _methods_in(points):
        variant = method.removeprefix(VARIANT_PREFIX) if method.startswith(VARIANT_PREFIX) else None
        style = METHOD_STYLE["safecompress"] if variant else styles[method]
        mine = points[(points["method"] == method) & np.isfinite(points["mean_x"])]
        if mine.empty:
            continue
        x, y = mine["mean_x"].to_numpy(float), mine["mean_y"].to_numpy(float)
        if variant:
            axes.plot(x, y, color=style.color, marker=".", linestyle="none")
            badges += [(xi, yi, numbers[variant]) for xi, yi in zip(x, y, strict=True)]
        else:
            axes.plot(
                x, y, color=style.color, marker=style.marker, linestyle="none", label=style.label
            )
        _interval_bars(axes, x, y, mine["ci_low_x"], mine["ci_high_x"], style.color, False)
        _interval_bars(axes, x, y, mine["ci_low_y"], mine["ci_high_y"], style.color, True)
    return badges


def _join_curves(
    axes: Axes,
    points: pd.DataFrame,
    styles: dict[str, Style],
    curves: Mapping[str, Sequence[Sequence[str]]],
) -> None:
    """Each curve of `curves` as a line in its method's colour through its points, in the
    given order (strength); a point missing or with NaN leakage is left out of the line."""
    for method, lines in curves.items():
        mine = points[points["method"] == method].set_index("variant")
        for line in lines:
            shown = mine.reindex(line).dropna(subset=["mean_x", "mean_y"])
            if len(shown) > 1:
                axes.plot(
                    shown["mean_x"], shown["mean_y"], color=styles[method].color, **CURVE_STYLE
                )


@mpl.rc_context(STYLE)
def training_curves(histories: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, one colour per model; solid = train, dashed = validation."""
    require_columns(histories, ["model", *HISTORY_COLUMNS])
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


def _format_rate(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


@mpl.rc_context(STYLE)
def roc_curves(curves: pd.DataFrame) -> Figure:
    """Log-log ROC of each attack (a panel each, one under the other) per method and density,
    over its shaded pointwise 95 % bootstrap band, from the ROC table
    (`safecompress.reporting.tables.roc_table`).

    The FPR axis starts at 1 / (number of non-members), the smallest FPR they resolve; below
    it nothing is measured and nothing is drawn. Each panel's legend, beside it, gives every
    curve's AUC and TPR at 1% FPR (n/a where the non-members cannot resolve it).
    """
    require_columns(curves, ROC_COLUMNS)
    attacks = list(pd.unique(curves["attack"]))
    if not attacks:
        raise ValueError("no ROC to draw: the ROC table is empty")
    models = [
        (method, density)
        for method in _methods_in(curves)
        for density in sorted(pd.unique(curves.loc[curves["method"] == method, "density"]))[::-1]
    ]
    styles = method_styles(curves["method"])
    figure, axes_grid = _panels(len(attacks), 1, ROC_PANEL_SIZE, beside=ROC_LEGEND_WIDTH)
    for axes, attack in zip(axes_grid[:, 0], attacks, strict=True):
        mine = curves[curves["attack"] == attack]
        for method, density in models:
            model = mine[(mine["method"] == method) & (mine["density"] == density)]
            if model.empty:
                continue
            roc, band = (model[model["curve"] == curve] for curve in ("roc", "band"))
            style, first = styles[method], model.iloc[0]
            axes.fill_between(
                band["fpr"],
                band["ci_low"],
                band["ci_high"],
                color=style.color,
                alpha=BAND_ALPHA,
                linewidth=0,
            )
            axes.plot(
                roc["fpr"],
                roc["tpr"],
                color=style.color,
                marker=style.marker,
                markevery=0.1,
                label=(
                    f"{style.label}, d={density:g}: AUC {first['auc']:.3f}, "
                    f"TPR@1%FPR {_format_rate(first[ROC_TPR_METRIC])}"
                ),
            )
        smallest_fpr, smallest_tpr = (1 / mine[n].max() for n in ("n_nonmembers", "n_members"))
        axes.plot([smallest_fpr, 1], [smallest_fpr, 1], **CHANCE_STYLE)
        axes.set(
            xscale="log",
            yscale="log",
            xlim=(smallest_fpr, 1.0),
            ylim=(smallest_tpr / 2, 1.0),
            title=f"{attack} attack",
            xlabel=f"False positive rate (log, from 1/{round(1 / smallest_fpr)})",
            ylabel="True positive rate (log)",
        )
        axes.set_box_aspect(1)
        axes.legend(loc="center left", bbox_to_anchor=(1.03, 0.5), fontsize="small")
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
    require_columns(layers, LAYER_COLUMNS)
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
        axes.xaxis.set_minor_formatter(NullFormatter())  # within a decade they would crowd
    handles: list[Artist] = [
        Patch(facecolor="0.5", alpha=0.3, hatch="///", label="start of training (ERK)"),
        Patch(facecolor="0.4", label="end of training"),
    ]
    if "overall" in layers.columns:
        handles.append(Line2D([], [], **DENSE_REFERENCE_STYLE, label="overall density"))
    figure.suptitle("Layer-wise density of the final sparse models")
    _legend_below(figure, handles)
    return figure


@mpl.rc_context(STYLE)
def ablation(stats: pd.DataFrame, attack: str) -> Figure:
    """SafeCompress variants: task accuracy (top) and attack AUC (bottom) with 95 % intervals,
    from the ablation's seed statistics (`safecompress.reporting.tables.replicate_statistics`), one
    column per sweep, as wide as its values need, the values evenly spaced (numeric sweeps in
    numeric order, joined); variants are named `<sweep>_<value>` (lambda_2.0, n_4,
    set_prune_scales)."""
    require_columns(stats, [*PAPER_TABLE_COLUMNS, "variant"])
    rows = _rows_of_attack(stats, attack)
    rows = rows.assign(sweep=rows["variant"].str.partition("_")[0])
    sweeps = [sweep for sweep in ABLATION_SWEEPS if (rows["sweep"] == sweep).any()]
    values = {
        sweep: ablation_order(rows.loc[rows["sweep"] == sweep, "variant"]) for sweep in sweeps
    }
    widths = [max(2, len(variants)) for variants in values.values()]
    width = max(ABLATION_VALUE_WIDTH * sum(widths), PANEL_SIZE[0] * len(sweeps))
    figure, axes_grid = _panels(
        2, len(sweeps), (width / len(sweeps), PANEL_SIZE[1]), sharey="row", width_ratios=widths
    )
    style = METHOD_STYLE["safecompress"]
    for column, sweep in enumerate(sweeps):
        mine = rows[rows["sweep"] == sweep]
        names = [variant.partition("_")[2].replace("_", " ") for variant in values[sweep]]
        x = np.arange(len(names))
        for row, (metric, scale, label) in enumerate(
            (
                ("task_acc", 100, ACCURACY_LABEL),
                ("auc", 1, f"Attack AUC ({_attack_name(attack)})"),
            )
        ):
            axes = axes_grid[row, column]
            points = mine[mine["metric"] == metric].set_index("variant").loc[values[sweep]]
            mean, low, high = (
                scale * points[c].to_numpy(float) for c in ("mean", "ci_low", "ci_high")
            )
            axes.plot(
                x,
                mean,
                color=style.color,
                marker=style.marker,
                label=style.label,
                linestyle="-" if sweep in NUMERIC_SWEEPS else "none",
            )
            _interval_bars(axes, x, mean, low, high, style.color)
            # evenly spaced, so close values keep their labels apart; long names wrap
            axes.set_xticks(x, [textwrap.fill(name, WRAP_WIDTH) for name in names])
            axes.set_xlim(-0.5, len(names) - 0.5)
            axes.set(xlabel=ABLATION_SWEEPS[sweep], ylabel=label if column == 0 else None)
    for axes in axes_grid[1]:
        axes.axhline(CHANCE_LEVEL["auc"], **CHANCE_STYLE)
    density = ", ".join(f"{d:g}" for d in sorted(rows["density"].unique()))
    figure.suptitle(f"SafeCompress ablations at density {density} ({INTERVAL_NOTE})")
    _legend_below(figure)
    return figure


@mpl.rc_context(STYLE)
def candidate_trajectory(updates: pd.DataFrame) -> Figure:
    """Every candidate of every mask update: accuracy on the probe's non-members vs simulated
    attack advantage, coloured by training step; the selected candidate of each update is
    circled."""
    require_columns(updates, ["step", "val_acc", "advantage", "selected"])
    figure, axes_grid = _panels(1, 1, SQUARE_PANEL_SIZE)
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


def validity(candidates: pd.DataFrame, pooled: pd.DataFrame) -> Figure:
    """Does the safety test predict the judge: every candidate the safety test scored, its
    safety leakage (x) against the evaluation's AUC of it (y), one panel per attack, one
    colour per method (filled: the candidate the update kept); each panel's title gives the
    pooled rank correlation over updates (all rungs) with its 95 % interval, per method and
    density (`tables.validity_table`)."""
    require_columns(candidates, ["method", "density", "attack", "leakage", "auc", "selected"])
    attacks = _attacks_in(candidates)
    figure, grid = _panels(1, len(attacks), SQUARE_PANEL_SIZE, sharey=False)
    styles = method_styles(_methods_in(candidates))
    overall = pooled[pooled["rung"].astype(str) == ALL_RUNGS]
    for axes, attack in zip(grid[0], attacks, strict=True):
        rows = candidates[candidates["attack"] == attack]
        for method, style in styles.items():
            mine = rows[rows["method"] == method]
            kept = mine["selected"].astype(bool)
            common = {"color": style.color, "marker": style.marker, "s": 16, "alpha": 0.8}
            axes.scatter(mine["leakage"], 100 * mine["auc"], **common, facecolors="none")
            axes.scatter(
                mine.loc[kept, "leakage"], 100 * mine.loc[kept, "auc"], **common, label=style.label
            )
        lines = [
            f"{row.method} d={row.density:g}: ρ = {row.spearman:.2f} "
            f"[{row.ci_low:.2f}, {row.ci_high:.2f}], {row.n_updates} updates"
            for row in overall[overall["attack"] == attack].itertuples()
        ]
        axes.set_title("\n".join([f"Evaluation: {_attack_name(attack)}", *lines]), fontsize=8)
        axes.set(xlabel="Safety-test leakage (its score, defender's data)", ylabel="AUC (%)")
    _legend_below(figure)
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
