"""Figures: each renders to a readable PNG and PDF with labelled axes and a legend and no two
text labels on top of each other (at the evidence run's size too), draws the paper table's
intervals (and no unresolvable value) and the ROC table's bands, the layer-density figure reads
model files, and the pipeline step refuses bad inputs with one line naming the problem and
exit code 2."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from helpers import SWEEPS
from safecompress.config.curves import curve_lines, curve_points
from safecompress.config.methods import METHODS
from safecompress.config.settings import load_yaml
from safecompress.privacy import bootstrap, metrics
from safecompress.reporting import figures, tables
from safecompress.sparse.engine import prunable_layers
from safecompress.steps import figures as figure_step
from safecompress.steps.cli import run
from safecompress.training.models import build_model, save_model

WORKFLOW = Path(__file__).resolve().parent.parent / "workflow"
CONFIG = WORKFLOW.parent / "config"
DATASETS = ("digits", "cifar10")
ATTACKS = ("loss", "entropy")
DENSITIES = (0.5, 0.1, 0.01)
HISTORY_LABELS = ("dense d=1.0", "safecompress d=0.1")
TPR = "tpr_at_1pct_fpr"


def model_grid(
    datasets: tuple[str, ...] = DATASETS, densities: tuple[float, ...] = DENSITIES
) -> list[tuple[str, str, str, float]]:
    """(dataset, method, variant, density) of every model a run of the pipeline compares: the
    dense model and every method at each density, per data set."""
    return [
        (dataset, method, "default", density)
        for dataset in datasets
        for method in figures.METHOD_STYLE
        for density in ((1.0,) if method == "dense" else densities)
    ]


def make_summary(
    seeds: tuple[int, ...] = (0, 1),
    attacks: tuple[str, ...] = ATTACKS,
    models: list[tuple[str, str, str, float]] | None = None,
) -> pd.DataFrame:
    """A summary table shaped like results/tables/summary.csv (every metric with a bootstrap
    interval) of `models` (default: `model_grid()`), with plausible numbers: models at one
    density crowd together, as compressed models do."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset, method, variant, density in model_grid() if models is None else models:
        for seed in seeds:
            task_acc = 0.9 * density**0.05 + rng.normal(0, 0.005)
            for attack in attacks:
                auc = 0.5 + 0.2 * density**0.3 + rng.normal(0, 0.01)
                values = {
                    "task_acc": task_acc,
                    "attack_acc": 0.5 + (auc - 0.5) / 2,
                    "advantage": auc - 0.5,
                    "auc": auc,
                    TPR: 0.01 + (auc - 0.5) / 5,
                    "tpr_at_0.1pct_fpr": 0.001 + (auc - 0.5) / 20,
                    "tpr_at_0fpr": (auc - 0.5) / 40,
                }
                rows.append(
                    {
                        "dataset": dataset,
                        "split": 0,
                        "method": method,
                        "variant": variant,
                        "density": density,
                        "seed": seed,
                        "attack": attack,
                        **values,
                        **{f"{m}_ci_low": v - 0.02 for m, v in values.items()},
                        **{f"{m}_ci_high": v + 0.03 for m, v in values.items()},
                        "signals_path": "signals.csv",
                        "scores_path": "scores.csv",
                    }
                )
    summary = pd.DataFrame(rows)
    best = summary.groupby(tables.MODEL)["auc"].transform("max")
    return summary.assign(strongest=summary["auc"] == best)


def make_paper_table(summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """paper_table.csv of the summary, computed by the summarize step itself."""
    return tables.replicate_statistics(make_summary() if summary is None else summary)


def make_history(gap: float = 0.0) -> pd.DataFrame:
    """One model's per-epoch history, as written by safecompress.steps.train."""
    epoch = np.arange(1, 21)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": 2.0 * np.exp(-epoch / 5) + gap,
            "val_loss": 2.0 * np.exp(-epoch / 6) + 0.3 + gap,
            "train_acc": 1 - 0.9 * np.exp(-epoch / 4),
            "val_acc": 0.85 - 0.75 * np.exp(-epoch / 5) - gap,
        }
    )


def make_histories() -> pd.DataFrame:
    gaps = (0.0, 0.1)
    histories = [
        make_history(gap).assign(model=label)
        for gap, label in zip(gaps, HISTORY_LABELS, strict=True)
    ]
    return pd.concat(histories, ignore_index=True)


def make_scores(separation: float, n: int = 400, seed: int = 1) -> pd.DataFrame:
    """One model's per-sample scores, as steps.attack writes them (members score higher)."""
    rng = np.random.default_rng(seed)
    member = np.repeat([True, False], n)
    score = rng.normal(separation * member, 1.0)
    return pd.DataFrame(
        {
            "index": np.arange(2 * n),
            "set": np.where(member, "member", "non-member"),
            "label": rng.integers(0, 10, 2 * n),
            "score_loss": score,
            "score_entropy": score / 2,
            "pred_loss": score > 0,
        }
    )


def make_roc_scores() -> pd.DataFrame:
    return pd.concat(
        [
            make_scores(1.0).assign(method="dense", density=1.0),
            make_scores(0.3).assign(method="safecompress", density=0.1),
        ],
        ignore_index=True,
    )


def make_roc_table(scores: pd.DataFrame | None = None, attacks=("loss", "entropy")) -> pd.DataFrame:
    """The ROC table of the scores, computed as the figures step does."""
    scores = make_roc_scores() if scores is None else scores
    return tables.roc_table(scores, list(attacks), n_resamples=50)


def make_layers(n_layers: int, models: tuple[str, ...] = ("dst", "safecompress")) -> pd.DataFrame:
    """The layer table of `figure_step.layer_table`, for models with `n_layers` prunable layers."""
    rng = np.random.default_rng(2)
    start = rng.uniform(0.02, 1.0, n_layers)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "model": f"{method} d=0.05",
                    "method": method,
                    "layer": [f"features.{i}" for i in range(n_layers)],
                    "shape": "64×64×3×3",
                    "start": start,
                    "end": start * rng.uniform(0.5, 1.0, n_layers),
                    "overall": 0.05,
                }
            )
            for method in models
        ],
        ignore_index=True,
    )


def write_model(path: Path, compressed: bool = True) -> dict[str, dict[str, float]]:
    """A real model file (MLP 64-16-8-10) written by models.save_model; a compressed one has
    each layer's start and end density in its metadata, which is returned."""
    model = build_model({"arch": "mlp", "hidden": [16, 8]}, (64,), 10)
    layers = list(prunable_layers(model))
    meta = {"method": "safecompress", "density": 0.1, "density_measured": 0.1}
    densities = {}
    if compressed:
        densities = {
            "layer_density_start": {name: 0.05 * (i + 1) for i, name in enumerate(layers)},
            "layer_density_end": {name: 0.04 * (i + 1) for i, name in enumerate(layers)},
        }
    save_model(model, path, {**meta, **densities})
    return densities


def assert_readable(figure: Figure) -> None:
    """Outer panels carry axis labels, every panel a title, and the figure (or every panel)
    has a legend."""
    for axes in figure.axes:
        spec = axes.get_subplotspec()
        assert axes.get_title()
        if spec.is_last_row():
            assert axes.get_xlabel()
        if spec.is_first_col():
            assert axes.get_ylabel()
    if figure.legends:
        assert len(figure.legends) == 1 and figure.legends[0].get_texts()
    else:
        assert all(axes.get_legend() and axes.get_legend().get_texts() for axes in figure.axes)


def legend_labels(figure: Figure) -> list[str]:
    return [text.get_text() for text in figure.legends[0].get_texts()]


def assert_png_and_pdf(png: Path) -> None:
    """Both files exist and are non-empty, and the PNG reads back as an RGBA image."""
    pdf = png.with_suffix(".pdf")
    assert png.stat().st_size > 0
    assert pdf.stat().st_size > 0
    assert pdf.read_bytes().startswith(b"%PDF")
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[2] == 4
    assert image.shape[0] > 300 and image.shape[1] > 300


def error_segments(axes) -> list[np.ndarray]:
    """The (2, 2) end points of every error bar drawn in `axes`."""
    return [
        np.asarray(segment)
        for collection in axes.collections
        if isinstance(collection, LineCollection)
        for segment in collection.get_segments()
    ]


def vertical_bars(axes) -> dict[float, tuple[float, float]]:
    """{x: (low, high)} of the vertical error bars of `axes`."""
    bars = {}
    for segment in error_segments(axes):
        (x0, y0), (x1, y1) = segment
        if x0 == x1:
            bars[x0] = (min(y0, y1), max(y0, y1))
    return bars


def method_line(axes, method: str):
    label = figures.METHOD_STYLE[method].label
    return next(line for line in axes.get_lines() if line.get_label() == label)


def panel(figure: Figure, title: str):
    return next(axes for axes in figure.axes if axes.get_title() == title)


def shown_texts(figure: Figure) -> list[Text]:
    """Every text the figure shows once drawn on the Agg canvas: titles, axis labels, the tick
    labels of ticks in view, annotations, legend entries and titles."""
    FigureCanvasAgg(figure).draw()
    tick_labels, in_view = set(), []
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * (high - low)
            for ticks, locations in (
                (axis.get_major_ticks(), axis.get_majorticklocs()),
                (axis.get_minor_ticks(), axis.get_minorticklocs()),
            ):
                for tick, location in zip(ticks, locations, strict=False):
                    labels = (tick.label1, tick.label2)
                    tick_labels.update(map(id, labels))
                    if low - slack <= location <= high + slack:
                        in_view += labels
    texts = [text for text in figure.findobj(Text) if id(text) not in tick_labels] + in_view
    return [text for text in texts if text.get_visible() and text.get_text().strip()]


def overlapping_labels(figure: Figure) -> list[tuple[str, str]]:
    """Pairs of texts of the figure whose boxes overlap by more than half a pixel each way."""
    texts = shown_texts(figure)
    renderer = figure.canvas.get_renderer()
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts]
    return [
        (text, other)
        for i, (text, box) in enumerate(boxes)
        for other, other_box in boxes[i + 1 :]
        if min(box.x1, other_box.x1) - max(box.x0, other_box.x0) > 0.5
        and min(box.y1, other_box.y1) - max(box.y0, other_box.y0) > 0.5
    ]


def method_points(axes) -> list:
    """The marker lines of the methods (not the variants, rings or reference lines)."""
    labels = {style.label for style in figures.METHOD_STYLE.values()}
    return [line for line in axes.get_lines() if line.get_label() in labels]


FIGURES: dict[str, Callable[[], Figure]] = {
    "accuracy": lambda: figures.accuracy_vs_density(make_paper_table()),
    "attack_auc": lambda: figures.attack_vs_density(make_paper_table()),
    "attack_tpr": lambda: figures.attack_vs_density(make_paper_table(), TPR),
    "tradeoff": lambda: figures.tradeoff(make_paper_table(), "loss"),
    "tradeoff_one_seed": lambda: figures.tradeoff(
        make_paper_table(make_summary(seeds=(0,))), "entropy"
    ),
    "training": lambda: figures.training_curves(make_histories()),
    "roc": lambda: figures.roc_curves(make_roc_table()),
    "layer_density": lambda: figures.layer_density(make_layers(3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", FIGURES)
def test_figure_is_labelled_and_saved_as_png_and_pdf(name, tmp_path):
    figure = FIGURES[name]()
    assert isinstance(figure, Figure)
    assert_readable(figure)
    figures.save_figure(figure, tmp_path / f"{name}.png")
    assert_png_and_pdf(tmp_path / f"{name}.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{name}.pdf", f"{name}.png"]


# --- summary figures: paper-table intervals ---


def test_accuracy_has_a_log_density_axis_and_dense_reference_band():
    table = make_paper_table()
    figure = figures.accuracy_vs_density(table)
    assert len(figure.axes) == len(DATASETS)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.xaxis_inverted()
    assert axes.get_ylabel() == "Task accuracy (%)"
    assert legend_labels(figure) == [style.label for style in figures.METHOD_STYLE.values()]
    dense = table[
        (table["dataset"] == DATASETS[0])
        & (table["method"] == "dense")
        & (table["metric"] == "task_acc")
    ].iloc[0]
    reference = [line for line in axes.get_lines() if line.get_label() == "Dense"]
    assert reference[0].get_ydata()[0] == pytest.approx(100 * dense["mean"])
    band = [patch for patch in axes.patches if isinstance(patch, Rectangle)]
    assert [band[0].get_y(), band[0].get_y() + band[0].get_height()] == pytest.approx(
        [100 * dense["ci_low"], 100 * dense["ci_high"]]
    )


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [(0, 1, 2), (0,)], ids=["t over seeds", "one seed"])
def test_error_bars_are_the_paper_table_intervals(seeds):
    """Several seeds: the t-interval over seeds; one seed: the model's bootstrap interval."""
    summary = make_summary(seeds)
    figure = figures.attack_vs_density(make_paper_table(summary))
    axes = panel(figure, f"{DATASETS[0]}, {ATTACKS[0]} attack")
    rows = summary[
        (summary["dataset"] == DATASETS[0])
        & (summary["attack"] == ATTACKS[0])
        & (summary["method"] == "safecompress")
    ]
    line = method_line(axes, "safecompress")
    bars = vertical_bars(axes)
    for x, mean in zip(line.get_xdata(), line.get_ydata(), strict=True):
        density = min(DENSITIES, key=lambda d, x=x: abs(np.log(d / x)))
        values = rows.loc[rows["density"] == density, "auc"].to_numpy()
        assert mean == pytest.approx(values.mean())
        if len(seeds) > 1:
            expected = scipy.stats.t.interval(
                0.95, len(values) - 1, values.mean(), scipy.stats.sem(values)
            )
        else:
            model = rows[rows["density"] == density].iloc[0]
            expected = (model["auc_ci_low"], model["auc_ci_high"])
        assert bars[x] == pytest.approx(expected)


def test_methods_at_one_density_stand_apart():
    figure = figures.attack_vs_density(make_paper_table())
    axes = figure.axes[0]
    xs = [method_line(axes, m).get_xdata()[0] for m in ("magnitude", "dst", "safecompress")]
    assert len(set(xs)) == 3
    assert max(xs) / min(xs) < 1.2  # still read as the same density


def nan_tpr_table(method: str = "dst", density: float = 0.1) -> pd.DataFrame:
    """A paper table whose TPR at 1% FPR of one method and density is unresolved (NaN)."""
    summary = make_summary()
    unresolved = (summary["method"] == method) & (summary["density"] == density)
    summary.loc[unresolved, [TPR, f"{TPR}_ci_low", f"{TPR}_ci_high"]] = np.nan
    return make_paper_table(summary)


def test_an_unresolved_tpr_is_left_out_not_drawn_as_zero():
    figure = figures.attack_vs_density(nan_tpr_table(), TPR)
    axes = figure.axes[0]
    line = method_line(axes, "dst")
    y = np.asarray(line.get_ydata(), dtype=float)
    assert np.isnan(y).sum() == 1  # the line breaks there
    assert (y[np.isfinite(y)] > 0).all()
    dst_x = set(np.asarray(line.get_xdata())[np.isfinite(y)])
    drawn = set(vertical_bars(axes)) & set(line.get_xdata())
    assert drawn == dst_x  # no bar at the unresolved density either
    assert not axes.texts  # the panel still has values


def test_a_panel_without_any_resolved_value_says_so():
    summary = make_summary()
    summary[[TPR, f"{TPR}_ci_low", f"{TPR}_ci_high"]] = np.nan
    figure = figures.attack_vs_density(make_paper_table(summary), TPR)
    for axes in figure.axes:
        assert "not resolvable" in axes.texts[0].get_text()
        assert not any(np.isfinite(line.get_ydata()).any() for line in axes.get_lines()[:-1])


@pytest.mark.slow
def test_attack_panels_wrap_after_four_columns_per_dataset():
    attacks = tuple(f"attack{i}" for i in range(6))
    figure = figures.attack_vs_density(make_paper_table(make_summary(attacks=attacks)))
    grid = figure.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (2 * len(DATASETS), 4)
    assert len(figure.axes) == len(DATASETS) * (len(attacks) + 1)  # and the strongest
    first, second = figure.axes[0], figure.axes[1]
    assert first.get_shared_y_axes().joined(first, second)


@pytest.mark.slow
def test_attack_grid_has_a_row_per_dataset_a_column_per_attack_and_chance():
    figure = figures.attack_vs_density(make_paper_table())
    grid = figure.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (len(DATASETS), len(ATTACKS) + 1)  # and the strongest
    assert figure.axes[0].get_ylabel() == "Attack AUC"
    assert "Chance" in legend_labels(figure)
    chance = [line for line in figure.axes[0].get_lines() if line.get_label() == "Chance"]
    assert chance[0].get_ydata()[0] == 0.5


def test_attack_metric_names_the_y_axis():
    figure = figures.attack_vs_density(make_paper_table(), metric=TPR)
    assert figure.axes[0].get_ylabel() == "Attack TPR at 1% FPR"


@pytest.mark.slow
def test_tradeoff_has_auc_and_tpr_panels_with_bars_on_both_axes():
    table = make_paper_table()
    figure = figures.tradeoff(table, "loss")
    assert "up-left is better" in figure.get_suptitle()
    assert len(figure.axes) == 2 * len(DATASETS) * len(DENSITIES)  # a row per data set, density
    auc_axes, tpr_axes = figure.axes[:2]
    assert "AUC" in auc_axes.get_xlabel() and "TPR at 1% FPR" in tpr_axes.get_xlabel()
    assert f"density {max(DENSITIES):g}" in auc_axes.get_title()
    n_models = len(figures.METHOD_STYLE)  # every method at the row's density, and dense
    assert len(method_points(auc_axes)) == len(method_points(tpr_axes)) == n_models
    assert not auc_axes.texts  # the row's title gives the density; points carry no labels
    segments = error_segments(auc_axes)
    horizontal = [s for s in segments if s[0, 1] == s[1, 1]]
    vertical = [s for s in segments if s[0, 0] == s[1, 0]]
    assert len(horizontal) == len(vertical) == n_models
    assert "Pareto set" in legend_labels(figure)


@pytest.mark.slow
def test_tradeoff_rings_the_pareto_set():
    table = make_paper_table()
    figure = figures.tradeoff(table, "loss")
    axes = figure.axes[0]  # the first data set at its largest density
    mine = table[
        (table["dataset"] == DATASETS[0])
        & (table["attack"] == "loss")
        & ((table["density"] == max(DENSITIES)) | (table["method"] == "dense"))
    ]
    means = mine.pivot_table(index=["method", "density"], columns="metric", values="mean")
    front = figures.pareto_front(means["auc"], 100 * means["task_acc"])
    rings = next(c for c in axes.collections if c.get_label() == "Pareto set")
    ringed = np.asarray(sorted(map(tuple, rings.get_offsets())))
    np.testing.assert_allclose(ringed, front[["auc", "accuracy"]].to_numpy())


@pytest.mark.slow
def test_tradeoff_leaves_out_an_unresolved_tpr():
    figure = figures.tradeoff(nan_tpr_table(density=0.1), "loss")
    auc_axes, tpr_axes = figure.axes[2:4]  # density 0.1: the second row
    assert len(method_points(tpr_axes)) == len(method_points(auc_axes)) - 1
    assert np.isfinite(method_line(auc_axes, "dst").get_xdata()).all()
    dst = figures.METHOD_STYLE["dst"].label
    assert dst not in [line.get_label() for line in tpr_axes.get_lines()]


def with_canaries(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with the canaries' worst-case metrics, a little above its AUC."""
    worst = {metric: summary["auc"] + 0.1 for metric in metrics.WORST_CASE_METRICS}
    worst |= {f"{m}_ci_{end}": worst[m] for m in worst for end in ("low", "high")}
    return summary.assign(**worst)


@pytest.mark.slow
def test_tradeoff_adds_the_canaries_worst_case_panels_where_the_table_has_them():
    figure = figures.tradeoff(make_paper_table(with_canaries(make_summary())), "loss")
    assert len(figure.axes) == 4 * len(DATASETS) * len(DENSITIES)
    labels = [axes.get_xlabel() for axes in figure.axes[:4]]
    assert labels[2].startswith("Worst-case AUC") and labels[3].startswith("Worst-case TPR")
    n_models = len(figures.METHOD_STYLE)
    assert len(method_points(figure.axes[2])) == n_models


@pytest.mark.slow
def test_tradeoff_of_the_strongest_attack_reads_each_models_strongest():
    summary = make_summary()
    table = make_paper_table(summary)
    strongest = table[table["attack"] == "strongest"]
    per_model = summary[summary["strongest"]].drop_duplicates(
        ["dataset", "method", "density", "seed"]
    )
    expected = per_model.groupby(["dataset", "method", "density"])["auc"].mean()
    got = strongest[strongest["metric"] == "auc"].set_index(["dataset", "method", "density"])
    np.testing.assert_allclose(got["mean"].sort_index(), expected.sort_index())
    assert (
        summary.groupby(["dataset", "method", "density", "seed"])["auc"]
        .max()
        .groupby(["dataset", "method", "density"])
        .mean()
        .sort_index()
        == expected.sort_index()
    ).all()
    figure = figures.tradeoff(table, "strongest")
    assert "strongest attack" in figure.axes[0].get_xlabel()


@pytest.mark.slow
def test_tradeoff_numbers_ablation_variants_at_their_density_with_a_key():
    summary = make_summary()
    variants = summary[(summary["method"] == "safecompress") & (summary["density"] == 0.1)]
    variants = pd.concat(
        [
            variants.assign(variant=name, auc=variants["auc"] - shift)
            for name, shift in (("setting_adv_weight_1", 0.02), ("lambda_3.0", 0.01))
        ]
    )
    variant_table = make_paper_table(variants)
    figure = figures.tradeoff(make_paper_table(), "loss", variant_table)
    by_density = {axes.get_title().splitlines()[0]: axes for axes in figure.axes[::2]}
    panel = by_density[f"{DATASETS[0]}, density 0.1"]
    badges = {text.get_text(): text for text in panel.texts if text.get_text()}
    assert set(badges) == {"1", "2"}  # sweep by sweep: lambda first
    lambda_3 = variant_table[
        (variant_table["dataset"] == DATASETS[0])
        & (variant_table["variant"] == "lambda_3.0")
        & (variant_table["attack"] == "loss")
    ].set_index("metric")["mean"]
    assert badges["1"].xy == pytest.approx((lambda_3["auc"], 100 * lambda_3["task_acc"]))
    key = figure.axes[1].get_legend()  # beside the first row
    assert "ablation variants" in key.get_title().get_text()
    assert [text.get_text() for text in key.get_texts()] == ["λ = 3.0", "setting: adv weight 1"]
    assert not by_density[f"{DATASETS[0]}, density 0.5"].texts
    assert "numbered" in figure.get_suptitle()


def evidence_curves() -> tuple[list[tuple[str, str]], dict[str, list[list[str]]]]:
    """(method, variant) of an evidence-sized sweep's curve points (helpers.SWEEPS), and
    their lines."""
    config = load_yaml(CONFIG / "config.yaml")
    config["curves"] = SWEEPS
    points = curve_points(config)
    return [(p.method, p.variant) for p in points], curve_lines(points, config)


def with_curves(models, points) -> list[tuple[str, str, str, float]]:
    """`models` and, at each of their compressed densities, the curve `points`."""
    densities = {(dataset, density) for dataset, method, _, density in models if method != "dense"}
    return models + [
        (dataset, method, variant, density)
        for dataset, density in sorted(densities)
        for method, variant in points
    ]


@pytest.mark.slow
def test_tradeoff_joins_each_methods_curve_in_order_of_strength():
    points, lines = evidence_curves()
    table = make_paper_table(make_summary(models=with_curves(model_grid(), points)))
    figure = figures.tradeoff(table, "loss", curves=lines)
    assert "order of strength" in figure.get_suptitle()
    axes = figure.axes[0]  # the first data set at its largest density
    color = figures.METHOD_STYLE["dpsgd"].color
    joined = [line for line in axes.get_lines() if line.get_color() == color]
    markers = [line for line in joined if line.get_linestyle() == "None"]
    curve = [line for line in joined if line.get_linestyle() != "None"]
    assert len(markers) == 1 and len(markers[0].get_xdata()) == 4  # default and three sigmas
    assert len(curve) == 1 and not curve[0].get_label().startswith(("DP", "Pareto"))
    mine = table[
        (table["dataset"] == DATASETS[0])
        & (table["method"] == "dpsgd")
        & (table["density"] == max(DENSITIES))
        & (table["attack"] == "loss")
        & (table["metric"] == "auc")
    ].set_index("variant")["mean"]
    assert lines["dpsgd"] == [
        ["noise_multiplier_0.005", "noise_multiplier_0.02", "noise_multiplier_0.3", "default"]
    ]
    np.testing.assert_allclose(curve[0].get_xdata(), mine.loc[lines["dpsgd"][0]])
    # every defense swept has its line, one per panel; no line without curves
    n_lines = {
        method: sum(
            line.get_color() == figures.METHOD_STYLE[method].color
            and line.get_linestyle() != "None"
            for line in axes.get_lines()
        )
        for method in lines
    }
    assert n_lines == dict.fromkeys(lines, 1)
    plain = figures.tradeoff(table, "loss")
    assert "order of strength" not in plain.get_suptitle()
    assert all(line.get_linestyle() == "None" for line in method_points(plain.axes[0]))


def test_variants_are_numbered_sweep_by_sweep_in_value_order():
    variants = ["setting_b", "lambda_10.0", "set_x", "lambda_2.0", "n_4", "other_y"]
    assert figures.ablation_order(variants) == [
        "lambda_2.0",
        "lambda_10.0",
        "n_4",
        "set_x",
        "setting_b",
        "other_y",
    ]
    assert figures.variant_label("set_no_global_budget") == "strategy set: no global budget"
    assert figures.variant_label("n_4") == "N = 4"
    assert figures.variant_label("other_y") == "other_y"


def test_pareto_front_keeps_only_undominated_points():
    auc = [0.60, 0.55, 0.70, 0.52, 0.65, np.nan]
    accuracy = [90.0, 88.0, 92.0, 80.0, 85.0, 99.0]  # (0.65, 85) is beaten by (0.60, 90)
    front = figures.pareto_front(auc, accuracy)
    assert front["auc"].tolist() == [0.52, 0.55, 0.60, 0.70]
    assert front["accuracy"].tolist() == [80.0, 88.0, 90.0, 92.0]


def test_training_curves_draw_train_solid_and_validation_dashed():
    figure = figures.training_curves(make_histories())
    loss_axes, accuracy_axes = figure.axes
    assert accuracy_axes.get_ylabel() == "Accuracy (%)"
    assert [line.get_linestyle() for line in loss_axes.get_lines()] == ["-", "--", "-", "--"]
    assert max(accuracy_axes.get_lines()[0].get_ydata()) > 1  # fractions shown as percent
    assert legend_labels(figure) == [*HISTORY_LABELS, "train", "validation"]


# --- ROC ---


def test_roc_table_holds_each_models_roc_band_and_numbers():
    scores = make_roc_scores()
    table = make_roc_table(scores)
    assert list(table.columns) == list(tables.ROC_COLUMNS)
    dense = scores[scores["method"] == "dense"]
    is_member, values = (dense["set"] == "member").to_numpy(), dense["score_loss"].to_numpy()
    mine = table[(table["attack"] == "loss") & (table["method"] == "dense")]
    roc, band = (mine[mine["curve"] == curve] for curve in ("roc", "band"))
    fpr, tpr, _ = metrics.roc_curve(is_member, values)
    measured = fpr >= 1 / 400
    np.testing.assert_array_equal(roc["fpr"], fpr[measured])
    np.testing.assert_array_equal(roc["tpr"], tpr[measured])
    expected = bootstrap.roc_band(is_member, values, n_resamples=50, seed=0)
    np.testing.assert_array_equal(band[["fpr", "tpr", "ci_low", "ci_high"]].T, expected)
    assert (mine["auc"] == metrics.roc_auc(is_member, values)).all()
    assert (mine[TPR] == metrics.tpr_at_fpr(is_member, values, 0.01)).all()
    assert (mine["n_members"] == 400).all() and (mine["n_nonmembers"] == 400).all()


def test_roc_has_a_log_log_panel_per_attack_from_the_resolvable_fpr():
    scores = make_roc_scores()
    figure = figures.roc_curves(make_roc_table(scores))
    assert [axes.get_title() for axes in figure.axes] == ["loss attack", "entropy attack"]
    n_nonmembers = int((scores["method"] == "dense").sum() / 2)
    for axes, attack in zip(figure.axes, ["loss", "entropy"], strict=True):
        assert axes.get_xscale() == axes.get_yscale() == "log"
        assert axes.get_xlim() == pytest.approx((1 / n_nonmembers, 1.0))
        curves = [line for line in axes.get_lines() if line.get_label() != "Chance"]
        assert len(curves) == 2
        assert all(min(line.get_xdata()) >= 1 / n_nonmembers for line in curves)
        chance = next(line for line in axes.get_lines() if line.get_label() == "Chance")
        assert list(chance.get_xdata()) == list(chance.get_ydata())
        bands = [c for c in axes.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 2
        dense = scores[scores["method"] == "dense"]
        is_member = (dense["set"] == "member").to_numpy()
        auc = metrics.roc_auc(is_member, dense[f"score_{attack}"].to_numpy())
        tpr = metrics.tpr_at_fpr(is_member, dense[f"score_{attack}"].to_numpy(), 0.01)
        label = axes.get_legend().get_texts()[0].get_text()
        assert f"AUC {auc:.3f}" in label and f"TPR@1%FPR {tpr:.3f}" in label


def test_roc_says_na_for_a_tpr_too_few_non_members_resolve():
    scores = make_scores(1.0, n=50).assign(method="dst", density=0.1)
    figure = figures.roc_curves(make_roc_table(scores, ["loss"]))
    assert "TPR@1%FPR n/a" in figure.axes[0].get_legend().get_texts()[0].get_text()


# --- layer density ---


def bar_widths(axes) -> list[float]:
    return [patch.get_width() for patch in axes.patches if isinstance(patch, Rectangle)]


def test_layer_density_draws_one_bar_pair_per_layer_from_a_model_file(tmp_path):
    path = tmp_path / "model.safetensors"
    densities = write_model(path)
    table = figure_step.layer_table(path, "safecompress d=0.1")
    figure = figures.layer_density(table)
    (axes,) = figure.axes
    start, end = densities["layer_density_start"], densities["layer_density_end"]
    assert len(start) == 3
    assert len(bar_widths(axes)) == 2 * len(start)
    assert bar_widths(axes) == pytest.approx([*start.values(), *end.values()])
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert labels == ["1 (16×64)", "3 (8×16)", "5 (10×8)"]
    assert axes.get_title() == "safecompress d=0.1"


def test_layer_density_stays_readable_with_twenty_layers():
    figure = figures.layer_density(make_layers(20))
    assert len(figure.axes) == 2
    for axes in figure.axes:
        assert len(bar_widths(axes)) == 40
    points_per_layer = 72 * figure.axes[0].get_position().height * figure.get_figheight() / 20
    assert points_per_layer > 1.5 * figures.STYLE["ytick.labelsize"]
    # the same layers in every panel: names once, on the left
    first, second = (axes.yaxis.get_major_ticks()[0].label1 for axes in figure.axes)
    assert first.get_visible() and not second.get_visible()


def test_layer_names_lose_their_common_prefix():
    assert figures._layer_names(["network.a.q", "network.a.k", "network.head"]) == [
        "a.q",
        "a.k",
        "head",
    ]
    assert figures._layer_names(["1", "3"]) == ["1", "3"]


# --- the pipeline step ---


@pytest.fixture
def paper_csv(tmp_path) -> Path:
    path = tmp_path / "paper_table.csv"
    make_paper_table().to_csv(path, index=False)
    return path


@pytest.fixture
def history_csvs(tmp_path) -> list[Path]:
    paths = [tmp_path / f"history{i}.csv" for i in range(2)]
    for gap, path in zip((0.0, 0.1), paths, strict=True):
        make_history(gap).to_csv(path, index=False)
    return paths


@pytest.fixture
def scores_csvs(tmp_path) -> list[Path]:
    paths = [tmp_path / f"scores{i}.csv" for i in range(2)]
    for separation, path in zip((1.0, 0.3), paths, strict=True):
        make_scores(separation).to_csv(path, index=False)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ["accuracy"],
        ["attack", "--metric", "advantage"],
        ["attack", "--metric", TPR],
        ["tradeoff", "--attack", "entropy"],
    ],
    ids=lambda options: options[-1],
)
def test_step_draws_paper_table_figures(options, paper_csv, tmp_path):
    out = tmp_path / "figures" / "figure.png"
    figure_step.main([*options, "--paper-table", str(paper_csv), "--out", str(out)])
    assert_png_and_pdf(out)


def test_step_draws_training_curves(history_csvs, tmp_path):
    out = tmp_path / "training.png"
    history = [str(path) for path in history_csvs]
    figure_step.main(
        ["training", "--history", *history, "--label", *HISTORY_LABELS, "--out", str(out)]
    )
    assert_png_and_pdf(out)


def test_step_draws_roc_curves_of_several_attacks(scores_csvs, tmp_path):
    out = tmp_path / "roc.png"
    scores = [str(path) for path in scores_csvs]
    figure_step.main(
        ["roc", "--scores", *scores, "--method", "dense", "safecompress"]
        + ["--density", "1.0", "0.1", "--attack", "loss", "entropy", "--bootstrap", "50"]
        + ["--out", str(out)]
    )
    assert_png_and_pdf(out)


def test_step_draws_layer_density(tmp_path):
    paths = [tmp_path / f"model{i}.safetensors" for i in range(2)]
    for path in paths:
        write_model(path)
    out = tmp_path / "layer_density.png"
    figure_step.main(
        ["layer_density", "--models", *map(str, paths), "--label", "dst d=0.1", "sc d=0.1"]
        + ["--out", str(out)]
    )
    assert_png_and_pdf(out)


def error_line(argv: list[str], capsys) -> str:
    """Run the step as the pipeline does; it must exit 2 with exactly one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run(figure_step.main, argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("figure", ["accuracy", "attack", "tradeoff"])
def test_step_names_a_missing_paper_table(figure, tmp_path, capsys):
    missing = tmp_path / "nowhere.csv"
    argv = [figure, "--paper-table", str(missing), "--out", str(tmp_path / "a.png")]
    line = error_line(argv + (["--attack", "loss"] if figure == "tradeoff" else []), capsys)
    assert str(missing) in line and "no such file" in line


@pytest.mark.slow
@pytest.mark.parametrize("figure", ["accuracy", "attack", "tradeoff"])
def test_step_names_the_file_and_column_it_lacks(figure, paper_csv, tmp_path, capsys):
    make_paper_table().drop(columns="ci_high").to_csv(paper_csv, index=False)
    argv = [figure, "--paper-table", str(paper_csv), "--out", str(tmp_path / "t.png")]
    line = error_line(argv + (["--attack", "loss"] if figure == "tradeoff" else []), capsys)
    assert str(paper_csv) in line and "missing column(s) ci_high" in line


@pytest.mark.slow
def test_step_names_a_metric_the_table_lacks(paper_csv, tmp_path, capsys):
    table = make_paper_table()
    table[table["metric"] != TPR].to_csv(paper_csv, index=False)
    argv = ["attack", "--paper-table", str(paper_csv), "--metric", TPR]
    line = error_line([*argv, "--out", str(tmp_path / "t.png")], capsys)
    assert str(paper_csv) in line and f"no rows for metric(s) {TPR}" in line


def test_step_names_a_history_without_a_column(history_csvs, tmp_path, capsys):
    make_history().drop(columns="train_loss").to_csv(history_csvs[1], index=False)
    history = [str(path) for path in history_csvs]
    argv = ["training", "--history", *history, "--label", *HISTORY_LABELS]
    line = error_line([*argv, "--out", str(tmp_path / "h.png")], capsys)
    assert str(history_csvs[1]) in line and "train_loss" in line


def test_step_lists_the_attacks_a_file_has(paper_csv, scores_csvs, tmp_path, capsys):
    argv = ["tradeoff", "--paper-table", str(paper_csv), "--attack", "lira"]
    line = error_line([*argv, "--out", str(tmp_path / "t.png")], capsys)
    assert "'lira'" in line and "loss, entropy" in line
    argv = ["roc", "--scores", str(scores_csvs[0]), "--method", "dense", "--density", "1"]
    argv += ["--attack", "loss", "lira", "rmia", "--out", str(tmp_path / "r.png")]
    line = error_line(argv, capsys)
    assert str(scores_csvs[0]) in line and "score_lira, score_rmia" in line
    assert "loss, entropy" in line


def test_step_wants_one_label_per_file(history_csvs, tmp_path, capsys):
    history = [str(path) for path in history_csvs]
    argv = ["training", "--history", *history, "--label", "dense"]
    line = error_line([*argv, "--out", str(tmp_path / "h.png")], capsys)
    assert "2 --history, 1 --label" in line
    argv = ["layer_density", "--models", *history, "--label", "dense"]
    line = error_line([*argv, "--out", str(tmp_path / "l.png")], capsys)
    assert "2 --models, 1 --label" in line


def test_step_names_a_missing_or_unfit_model_file(tmp_path, capsys):
    def layer_error(path: Path) -> str:
        argv = ["layer_density", "--models", str(path), "--label", "m"]
        return error_line([*argv, "--out", str(tmp_path / "l.png")], capsys)

    missing = tmp_path / "nowhere.safetensors"
    line = layer_error(missing)
    assert str(missing) in line and "no such model file" in line
    dense = tmp_path / "dense.safetensors"
    write_model(dense, compressed=False)
    line = layer_error(dense)
    assert str(dense) in line and "no layer_density_start or layer_density_end" in line
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json\n at all}")
    line = layer_error(broken)
    assert str(broken) in line and "not a readable SafeCompress model file" in line
    mismatched = tmp_path / "mismatched.safetensors"
    write_model(mismatched)
    text = mismatched.read_bytes()
    size = int.from_bytes(text[:8], "little")
    header = json.loads(text[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["meta"])
    meta["layer_density_end"].pop("1")
    header["__metadata__"]["meta"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    mismatched.write_bytes(len(blob).to_bytes(8, "little") + blob + text[8 + size :])
    line = layer_error(mismatched)
    assert "name other layers" in line


def test_save_figure_needs_a_png_path(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.png"):
        figures.save_figure(figures.training_curves(make_histories()), tmp_path / "curves.pdf")


@pytest.mark.slow
def test_a_method_without_a_style_is_drawn_in_a_spare_one():
    table = make_paper_table().replace({"method": {"dst": "newdefense"}})
    figure = figures.attack_vs_density(table)
    assert "newdefense" in legend_labels(figure)
    styles = figures.method_styles(table["method"])
    assert styles["newdefense"].color not in {s.color for s in figures.METHOD_STYLE.values()}
    line = next(line for line in figure.axes[0].get_lines() if line.get_label() == "newdefense")
    assert line.get_color() == styles["newdefense"].color


def test_every_method_has_its_own_style():
    assert set(figures.METHOD_STYLE) == {"dense", *METHODS}
    styles = [(style.color, style.marker) for style in figures.METHOD_STYLE.values()]
    assert len(set(styles)) == len(styles)
    assert len({style.label for style in figures.METHOD_STYLE.values()}) == len(styles)


def test_unknown_metric_and_attack_are_refused():
    table = make_paper_table()
    with pytest.raises(ValueError, match="unknown metric 'precision'"):
        figures.attack_vs_density(table, metric="precision")
    with pytest.raises(ValueError, match="no rows for attack 'lira'.*loss, entropy"):
        figures.tradeoff(table, "lira")


def run_module(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(WORKFLOW)}
    return subprocess.run(
        [sys.executable, "-m", "safecompress.steps.figures", *argv],
        capture_output=True,
        text=True,
        env=env,
    )


def test_module_help_lists_every_figure():
    result = run_module("--help")
    assert result.returncode == 0
    for figure in ("accuracy", "attack", "tradeoff", "training", "roc", "layer_density"):
        assert figure in result.stdout


@pytest.mark.slow
def test_module_runs_and_fails_with_exit_code_2(paper_csv, tmp_path):
    out = tmp_path / "accuracy.png"
    assert (
        run_module("accuracy", "--paper-table", str(paper_csv), "--out", str(out)).returncode == 0
    )
    assert_png_and_pdf(out)
    failed = run_module("accuracy", "--paper-table", str(tmp_path / "none.csv"), "--out", str(out))
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ")


def make_ablation_table(variants, density=0.1, seeds=(0, 1), attacks=ATTACKS) -> pd.DataFrame:
    """ablation.csv's seed statistics: each SafeCompress variant at the ablation density."""
    models = [(DATASETS[0], "safecompress", variant, density) for variant in variants]
    return make_paper_table(make_summary(seeds, attacks, models))


def test_ablation_figure_draws_each_sweep_in_value_order_with_intervals():
    """A column per sweep, its values evenly spaced in numeric (lambda, N) or name order,
    long names wrapped; the bars are the seed statistics' 95 % intervals."""
    variants = ["lambda_10.0", "lambda_2.0", "n_1", "set_growth_criteria", "setting_loss_gap"]
    stats = make_ablation_table(variants)
    figure = figures.ablation(stats, "loss")
    top = figure.axes[:4]
    assert [axes.get_xlabel() for axes in top] == list(figures.ABLATION_SWEEPS.values())
    ticks = [[label.get_text() for label in axes.get_xticklabels()] for axes in top]
    assert ticks == [["2.0", "10.0"], ["1"], ["growth\ncriteria"], ["loss gap"]]
    lambda_auc = stats[
        (stats["variant"] == "lambda_10.0")
        & (stats["attack"] == "loss")
        & (stats["metric"] == "auc")
    ].iloc[0]
    assert vertical_bars(figure.axes[4])[1.0] == pytest.approx(
        (lambda_auc["ci_low"], lambda_auc["ci_high"])
    )
    strongest = figures.ablation(stats, "strongest")
    assert any("strongest attack" in axes.get_ylabel() for axes in strongest.axes)


# --- no text on top of other text ---

EVIDENCE_ATTACKS = ("loss", "entropy", "modified_entropy", "nn", "nasr", "whitebox", "lira", "rmia")
# config/evidence.yaml's ablation (and an N sweep): a dozen variants at density 0.1
EVIDENCE_VARIANTS = (
    "lambda_0.0",
    "lambda_3.0",
    "lambda_10.0",
    "n_2",
    "set_no_global_budget",
    "set_no_leakage_growth",
    "set_no_leakage_prune",
    "set_random_init",
    "setting_loss_gap",
    "setting_no_lookahead",
    "setting_rigl_schedule",
    "setting_adv_weight_1",
)

OVERLAP_FIGURES: dict[str, Callable[[], Figure]] = {
    **FIGURES,
    "tradeoff_variants": lambda: figures.tradeoff(
        make_paper_table(), "loss", make_ablation_table(EVIDENCE_VARIANTS)
    ),
    "ablation": lambda: figures.ablation(make_ablation_table(EVIDENCE_VARIANTS), "loss"),
    "layer_density_twenty_layers": lambda: figures.layer_density(make_layers(20)),
    "candidates": lambda: figures.candidate_trajectory(
        pd.DataFrame(
            {
                "step": np.repeat(np.arange(0, 400, 40), 4),
                "val_acc": np.linspace(0.7, 0.8, 40),
                "advantage": np.linspace(0.3, 0.0, 40),
                "selected": np.tile([True, False, False, False], 10),
            }
        )
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", OVERLAP_FIGURES)
def test_no_two_labels_overlap(name):
    assert overlapping_labels(OVERLAP_FIGURES[name]()) == []


@pytest.mark.slow
def test_evidence_sized_tradeoff_has_no_overlapping_labels(tmp_path):
    """The evidence run's trade-off (config/evidence.yaml): dense and every method at
    densities 0.1 and 0.05, every defense's curve points, five seeds, eight attacks, the
    canaries' panels, a dozen ablation variants crowding the density-0.1 panels; every text,
    the variants' numbers and the panels' titles included, stands clear of the rest."""
    seeds = tuple(range(5))
    points, lines = evidence_curves()
    models = with_curves(model_grid(("fashion_mnist",), (0.1, 0.05)), points)
    assert {method for _, method, _, _ in models} == {"dense", *METHODS}
    variants = [("fashion_mnist", "safecompress", variant, 0.1) for variant in EVIDENCE_VARIANTS]
    figure = figures.tradeoff(
        make_paper_table(with_canaries(make_summary(seeds, EVIDENCE_ATTACKS, models))),
        "strongest",
        make_paper_table(with_canaries(make_summary(seeds, EVIDENCE_ATTACKS, variants))),
        lines,
    )
    assert figure.axes[2].get_xlabel().startswith("Worst-case AUC")  # four panels a row
    crowded = figure.axes[0]
    numbers = [int(text.get_text()) for text in crowded.texts if text.get_text()]
    assert sorted(numbers) == list(range(1, 13))
    assert overlapping_labels(figure) == []
    figures.save_figure(figure, tmp_path / "tradeoff.png")
    assert_png_and_pdf(tmp_path / "tradeoff.png")
