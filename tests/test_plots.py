"""Figures: each renders to a readable PNG and PDF with labelled axes and a legend, and the
pipeline step refuses bad inputs with one line naming the problem and exit code 2."""

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from safecompress import plots
from safecompress.steps import figures
from safecompress.steps.cli import run

WORKFLOW = Path(__file__).resolve().parent.parent / "workflow"
DATASETS = ("digits", "cifar10")
ATTACKS = ("loss", "entropy")
DENSITIES = (0.5, 0.1, 0.01)
HISTORY_LABELS = ("dense d=1.0", "safecompress d=0.1")

needs_metrics = pytest.mark.skipif(
    importlib.util.find_spec("safecompress.metrics") is None,
    reason="safecompress.metrics (roc_curve, roc_auc) is not written yet",
)


def make_summary(seeds: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """A summary table shaped like results/tables/summary.csv, with plausible numbers."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in DATASETS:
        for method in plots.METHOD_STYLE:
            for density in (1.0,) if method == "dense" else DENSITIES:
                for seed in seeds:
                    task_acc = 0.9 * density**0.05 + rng.normal(0, 0.005)
                    for attack in ATTACKS:
                        auc = 0.5 + 0.2 * density**0.3 + rng.normal(0, 0.01)
                        rows.append(
                            {
                                "dataset": dataset,
                                "method": method,
                                "density": density,
                                "seed": seed,
                                "attack": attack,
                                "task_acc": task_acc,
                                "attack_acc": 0.5 + (auc - 0.5) / 2,
                                "advantage": auc - 0.5,
                                "auc": auc,
                                "tpr_at_1pct_fpr": 0.01 + (auc - 0.5) / 5,
                                "tpr_at_0.1pct_fpr": 0.001 + (auc - 0.5) / 20,
                                "signals_path": "signals.csv",
                                "scores_path": "scores.csv",
                            }
                        )
    return pd.DataFrame(rows)


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


def make_scores(separation: float, n: int = 400) -> pd.DataFrame:
    """One model's per-sample scores, as steps.attack writes them (members score higher)."""
    rng = np.random.default_rng(1)
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


def assert_readable(figure: Figure) -> None:
    """Outer panels carry axis labels, every panel a title, and the figure has a legend."""
    for axes in figure.axes:
        spec = axes.get_subplotspec()
        assert axes.get_title()
        if spec.is_last_row():
            assert axes.get_xlabel()
        if spec.is_first_col():
            assert axes.get_ylabel()
    assert len(figure.legends) == 1
    assert figure.legends[0].get_texts()


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


FIGURES: dict[str, Callable[[], Figure]] = {
    "accuracy": lambda: plots.accuracy_vs_density(make_summary()),
    "attack_auc": lambda: plots.attack_vs_density(make_summary()),
    "attack_tpr": lambda: plots.attack_vs_density(make_summary(), "tpr_at_1pct_fpr"),
    "tradeoff": lambda: plots.tradeoff(make_summary(), "loss"),
    "tradeoff_one_seed": lambda: plots.tradeoff(make_summary(seeds=(0,)), "entropy"),
    "training": lambda: plots.training_curves(make_histories()),
}


@pytest.mark.parametrize("name", [*FIGURES, pytest.param("roc", marks=needs_metrics)], ids=str)
def test_figure_is_labelled_and_saved_as_png_and_pdf(name, tmp_path):
    draw = FIGURES.get(name, lambda: plots.roc_curves(make_roc_scores(), "loss"))
    figure = draw()
    assert isinstance(figure, Figure)
    assert_readable(figure)
    plots.save_figure(figure, tmp_path / f"{name}.png")
    assert_png_and_pdf(tmp_path / f"{name}.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"{name}.pdf", f"{name}.png"]


def test_accuracy_has_a_log_density_axis_and_dense_reference():
    summary = make_summary()
    figure = plots.accuracy_vs_density(summary)
    assert len(figure.axes) == len(DATASETS)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.xaxis_inverted()
    assert axes.get_ylabel() == "Task accuracy (%)"
    assert legend_labels(figure) == [style.label for style in plots.METHOD_STYLE.values()]
    dense = summary[(summary["dataset"] == DATASETS[0]) & (summary["method"] == "dense")]
    dense_per_seed = dense.drop_duplicates("seed")["task_acc"]
    reference = [line for line in axes.get_lines() if line.get_label() == "Dense"]
    assert reference[0].get_ydata()[0] == pytest.approx(100 * dense_per_seed.mean())


def test_attack_grid_has_a_row_per_dataset_a_column_per_attack_and_chance():
    figure = plots.attack_vs_density(make_summary())
    grid = figure.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (len(DATASETS), len(ATTACKS))
    assert figure.axes[0].get_ylabel() == "Attack AUC"
    assert "Chance" in legend_labels(figure)
    chance = [line for line in figure.axes[0].get_lines() if line.get_label() == "Chance"]
    assert chance[0].get_ydata()[0] == 0.5


def test_attack_metric_names_the_y_axis():
    figure = plots.attack_vs_density(make_summary(), metric="tpr_at_1pct_fpr")
    assert figure.axes[0].get_ylabel() == "Attack TPR at 1% FPR"


def test_tradeoff_marks_every_model_and_says_which_way_is_better():
    figure = plots.tradeoff(make_summary(), "loss")
    assert "up-left is better" in figure.get_suptitle()
    n_models = 1 + (len(plots.METHOD_STYLE) - 1) * len(DENSITIES)
    assert len(figure.axes[0].texts) == n_models
    assert "Pareto front" in legend_labels(figure)


def test_pareto_front_keeps_only_undominated_points():
    auc = [0.60, 0.55, 0.70, 0.52, 0.65]
    accuracy = [90.0, 88.0, 92.0, 80.0, 85.0]  # (0.65, 85) is beaten by (0.60, 90)
    front = plots.pareto_front(auc, accuracy)
    assert front["auc"].tolist() == [0.52, 0.55, 0.60, 0.70]
    assert front["accuracy"].tolist() == [80.0, 88.0, 90.0, 92.0]


def test_training_curves_draw_train_solid_and_validation_dashed():
    figure = plots.training_curves(make_histories())
    loss_axes, accuracy_axes = figure.axes
    assert accuracy_axes.get_ylabel() == "Accuracy (%)"
    assert [line.get_linestyle() for line in loss_axes.get_lines()] == ["-", "--", "-", "--"]
    assert max(accuracy_axes.get_lines()[0].get_ydata()) > 1  # fractions shown as percent
    assert legend_labels(figure) == [*HISTORY_LABELS, "train", "validation"]


@needs_metrics
def test_roc_curves_are_log_log_with_auc_in_the_legend():
    figure = plots.roc_curves(make_roc_scores(), "loss")
    axes = figure.axes[0]
    assert axes.get_xscale() == axes.get_yscale() == "log"
    assert axes.get_xlim() == pytest.approx(plots.ROC_FPR_RANGE)
    assert all("AUC" in label for label in legend_labels(figure) if label != "Chance")


@pytest.mark.parametrize(
    "draw",
    [
        plots.accuracy_vs_density,
        plots.attack_vs_density,
        lambda summary: plots.tradeoff(summary, "loss"),
    ],
)
def test_missing_column_is_named(draw):
    with pytest.raises(ValueError, match="missing column.*task_acc|missing column.*auc"):
        draw(make_summary().drop(columns=["task_acc", "auc"]))


def test_missing_history_column_is_named():
    with pytest.raises(ValueError, match="missing column.*val_acc"):
        plots.training_curves(make_histories().drop(columns="val_acc"))


def test_unknown_method_metric_and_attack_are_refused():
    summary = make_summary()
    with pytest.raises(ValueError, match="unknown method.*pruned"):
        plots.accuracy_vs_density(summary.replace({"method": {"dst": "pruned"}}))
    with pytest.raises(ValueError, match="unknown metric 'precision'"):
        plots.attack_vs_density(summary, metric="precision")
    with pytest.raises(ValueError, match="no rows for attack 'lira'.*loss, entropy"):
        plots.tradeoff(summary, "lira")


def test_save_figure_needs_a_png_path(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.png"):
        plots.save_figure(plots.training_curves(make_histories()), tmp_path / "curves.pdf")


# --- the pipeline step ---


@pytest.fixture
def summary_csv(tmp_path) -> Path:
    path = tmp_path / "summary.csv"
    make_summary().to_csv(path, index=False)
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


@pytest.mark.parametrize(
    "options",
    [["accuracy"], ["attack", "--metric", "advantage"], ["tradeoff", "--attack", "entropy"]],
    ids=lambda options: options[0],
)
def test_step_draws_summary_figures(options, summary_csv, tmp_path):
    out = tmp_path / "figures" / "figure.png"
    figures.main([*options, "--summary", str(summary_csv), "--out", str(out)])
    assert_png_and_pdf(out)


def test_step_draws_training_curves(history_csvs, tmp_path):
    out = tmp_path / "training.png"
    history = [str(path) for path in history_csvs]
    figures.main(["training", "--history", *history, "--label", *HISTORY_LABELS, "--out", str(out)])
    assert_png_and_pdf(out)


@needs_metrics
def test_step_draws_roc_curves(scores_csvs, tmp_path):
    out = tmp_path / "roc.png"
    scores = [str(path) for path in scores_csvs]
    figures.main(
        ["roc", "--scores", *scores, "--method", "dense", "safecompress"]
        + ["--density", "1.0", "0.1", "--attack", "loss", "--out", str(out)]
    )
    assert_png_and_pdf(out)


def error_line(argv: list[str], capsys) -> str:
    """Run the step as the pipeline does; it must exit 2 with exactly one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run(figures.main, argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_step_names_a_missing_file(tmp_path, capsys):
    missing = tmp_path / "nowhere.csv"
    line = error_line(
        ["accuracy", "--summary", str(missing), "--out", str(tmp_path / "a.png")], capsys
    )
    assert str(missing) in line and "no such file" in line


def test_step_names_the_file_and_column_it_lacks(summary_csv, tmp_path, capsys):
    make_summary().drop(columns="auc").to_csv(summary_csv, index=False)
    argv = ["tradeoff", "--summary", str(summary_csv), "--attack", "loss"]
    line = error_line([*argv, "--out", str(tmp_path / "t.png")], capsys)
    assert str(summary_csv) in line and "missing column(s) auc" in line


def test_step_names_a_history_without_a_column(history_csvs, tmp_path, capsys):
    make_history().drop(columns="train_loss").to_csv(history_csvs[1], index=False)
    history = [str(path) for path in history_csvs]
    argv = ["training", "--history", *history, "--label", *HISTORY_LABELS]
    line = error_line([*argv, "--out", str(tmp_path / "h.png")], capsys)
    assert str(history_csvs[1]) in line and "train_loss" in line


def test_step_lists_the_attacks_a_file_has(summary_csv, scores_csvs, tmp_path, capsys):
    argv = ["tradeoff", "--summary", str(summary_csv), "--attack", "lira"]
    line = error_line([*argv, "--out", str(tmp_path / "t.png")], capsys)
    assert "'lira'" in line and "loss, entropy" in line
    argv = ["roc", "--scores", str(scores_csvs[0]), "--method", "dense", "--density", "1"]
    line = error_line([*argv, "--attack", "lira", "--out", str(tmp_path / "r.png")], capsys)
    assert str(scores_csvs[0]) in line and "score_lira" in line and "loss, entropy" in line


def test_step_wants_one_label_per_history(history_csvs, tmp_path, capsys):
    history = [str(path) for path in history_csvs]
    argv = ["training", "--history", *history, "--label", "dense"]
    line = error_line([*argv, "--out", str(tmp_path / "h.png")], capsys)
    assert "2 --history, 1 --label" in line


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
    for figure in ("accuracy", "attack", "tradeoff", "training", "roc"):
        assert figure in result.stdout


def test_module_runs_and_fails_with_exit_code_2(summary_csv, tmp_path):
    out = tmp_path / "accuracy.png"
    assert run_module("accuracy", "--summary", str(summary_csv), "--out", str(out)).returncode == 0
    assert_png_and_pdf(out)
    failed = run_module("accuracy", "--summary", str(tmp_path / "none.csv"), "--out", str(out))
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ")
