"""The whole workflow on the tiny config, in a temporary directory: every output exists and
every number in summary.csv can be recomputed from the saved per-sample files."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from helpers import HUNG_RUN_S, HUNG_STEP_S, REPO, TINY, snakemake_command, workflow_env
from safecompress.data.splits import check_split

ATTACKS = yaml.safe_load(TINY.read_text())["evaluation"]["attacks"]
DENSITIES = yaml.safe_load(TINY.read_text())["densities"]

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = snakemake_command(workdir, [TINY], "--cores", "2", *args)
    return subprocess.run(
        command, capture_output=True, text=True, env=workflow_env(), timeout=HUNG_RUN_S
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_every_output_exists(run):
    results = run / "results"
    tables = ("summary", "paper_table", "paired", "ablation", "ablation_paired")
    for name in [*(f"{table}.csv" for table in tables), "paper_table.md"]:
        assert (results / "tables" / name).stat().st_size > 0
    figures = [
        "accuracy_vs_density",
        "auc_vs_density",
        "tpr_vs_density",
        "tradeoff",
        "digits/training_curves",
        "digits/roc",
        "digits/layer_density",
    ]
    for name in figures:
        for suffix in (".png", ".pdf"):
            assert (results / "figures" / f"{name}{suffix}").stat().st_size > 1000


def test_summary_has_one_row_per_model_and_attack(run):
    summary = pd.read_csv(run / "results/tables/summary.csv")
    config = yaml.safe_load(TINY.read_text())
    n_models = 1 + len(config["methods"]) * len(config["densities"])
    assert len(summary) == n_models * len(ATTACKS)
    assert not summary.duplicated(["dataset", "method", "density", "seed", "attack"]).any()
    required = [
        "dataset",
        "method",
        "density",
        "seed",
        "attack",
        "task_acc",
        "attack_acc",
        "auc",
        "tpr_at_1pct_fpr",
        "tpr_at_0.1pct_fpr",
        "signals_path",
    ]
    assert set(required) <= set(summary.columns)
    assert summary[["task_acc", "attack_acc", "auc"]].apply(lambda c: c.between(0, 1)).all().all()
    # 10 classes: chance is 0.1; every model learnt, but DP-SGD's noise (epsilon ~4 in the
    # tiny config's 8 epochs) may keep its sparsest model at chance
    learnt = summary.loc[summary["method"] != "dpsgd", "task_acc"]
    assert learnt.min() > 0.3
    for metric in ("task_acc", "auc", "tpr_at_1pct_fpr"):
        inside = summary[f"{metric}_ci_low"] <= summary[metric] + 1e-12
        assert (inside & (summary[metric] <= summary[f"{metric}_ci_high"] + 1e-12)).all()
    # 1 / 359 non-members cannot resolve a 0.1 % FPR: left empty, never TPR at zero FPR
    assert summary["tpr_at_0.1pct_fpr"].isna().all() and summary["tpr_at_0fpr"].notna().all()
    strongest = summary[summary["strongest"]].groupby(["method", "density"])["auc"]
    assert (strongest.max() == summary.groupby(["method", "density"])["auc"].max()).all()


def test_paired_table_compares_every_method_with_dst_on_the_same_samples(run):
    paired = pd.read_csv(run / "results/tables/paired.csv")
    methods = set(yaml.safe_load(TINY.read_text())["methods"])
    assert set(paired.loc[paired["baseline"] == "dst", "method"]) == methods - {"dst"}
    assert set(paired["baseline"]) == {"dst", "safecompress"}
    per_replicate = paired[paired["scope"] == "replicate"]
    assert set(per_replicate["attack"]) == {"task", *ATTACKS}
    summary = pd.read_csv(run / "results/tables/summary.csv").set_index(
        ["method", "density", "attack"]
    )
    for row in per_replicate[per_replicate["metric"] == "auc"].itertuples():
        own = summary.loc[(row.method, row.density, row.attack), "auc"]
        baseline = summary.loc[(row.baseline, row.density, row.attack), "auc"]
        assert row.difference == pytest.approx(own - baseline, abs=1e-12)
        assert row.ci_low <= row.difference <= row.ci_high


def test_ablation_variants_are_paired_with_dst_and_safecompress(run):
    paired = pd.read_csv(run / "results/tables/ablation_paired.csv")
    ablation = pd.read_csv(run / "results/tables/ablation.csv")
    assert set(paired["variant"]) == set(ablation["variant"])
    assert set(paired["baseline"]) == {"dst", "safecompress"}
    key = ["method", "variant", "density", "seed", "attack"]
    own = ablation.set_index(key)["auc"]
    summary = pd.read_csv(run / "results/tables/summary.csv").set_index(key)["auc"]
    per_replicate = paired[(paired["scope"] == "replicate") & (paired["metric"] == "auc")]
    assert len(per_replicate)
    for row in per_replicate.itertuples():
        mine = own.loc[(row.method, row.variant, row.density, row.seed, row.attack)]
        baseline = summary.loc[(row.baseline, "default", row.density, row.seed, row.attack)]
        assert row.difference == pytest.approx(mine - baseline, abs=1e-12)


def test_measured_density_matches_the_requested_one(run):
    summary = pd.read_csv(run / "results/tables/summary.csv")
    sparse = summary[summary["method"] != "dense"]
    assert np.allclose(sparse["density_measured"], sparse["density"], atol=0.01)
    assert (summary.loc[summary["method"] == "dense", "density_measured"] > 0.99).all()


def test_numbers_recompute_from_the_saved_per_sample_files(run):
    summary = pd.read_csv(run / "results/tables/summary.csv")
    split = pd.read_csv(run / "results/digits/split0/split.csv")
    check_split(split, 1797, yaml.safe_load(TINY.read_text())["data"]["digits"]["split"])
    for _, row in summary.iterrows():
        signals = pd.read_csv(run / row["signals_path"])
        members = set(split.loc[split["set"] == "target_train", "index"])
        nonmembers = set(split.loc[split["set"] == "target_out", "index"])
        assert set(signals.loc[signals["set"] == "member", "index"]) == members
        assert set(signals.loc[signals["set"] == "non-member", "index"]) == nonmembers
        known = set(split.loc[split["set"] == "known_members", "index"])
        assert not known & set(signals["index"])  # the safety test's samples are never judged
        held_out = signals[signals["set"] == "non-member"]
        logits = held_out.filter(like="logit_").to_numpy()
        assert (logits.argmax(1) == held_out["label"]).mean() == pytest.approx(row["task_acc"])
        scores = pd.read_csv(run / row["scores_path"])
        is_member = scores["set"] == "member"
        auc = roc_auc_score(is_member, scores[f"score_{row['attack']}"])
        assert auc == pytest.approx(row["auc"], abs=1e-9)
        predicted = scores[f"pred_{row['attack']}"].astype(bool)
        balanced = 0.5 * (predicted[is_member].mean() + (~predicted[~is_member]).mean())
        assert balanced == pytest.approx(row["attack_acc"], abs=1e-9)


def test_safecompress_logs_every_candidate_and_one_selection(run):
    for density in DENSITIES:
        log = pd.read_csv(
            run / f"results/digits/split0/safecompress/density{density}/seed0/updates.csv"
        )
        assert len(log) > 0 and log["strategy"].nunique() == 2
        assert (log.groupby("step")["selected"].sum() == 1).all()


def test_every_logged_candidate_is_judged_and_the_correlations_pooled(run):
    for method in ("safecompress", "safecompress_adv"):
        model = run / f"results/digits/split0/{method}/density0.05/seed0"
        log = pd.read_csv(model / "updates.csv")
        judged = pd.read_csv(model / "candidate_attacks.csv")
        assert len(judged) == 3 * len(log) and set(judged["attack"]) == {"loss", "lira", "rmia"}
        assert judged["auc"].between(0, 1).all()
    table = pd.read_csv(run / "results/tables/validity.csv")
    assert set(table["method"]) == {"safecompress", "safecompress_adv"}
    overall = table[table["rung"] == "all"]
    assert len(overall) == 2 * 3 and (overall["n_updates"] > 0).all()
    assert (run / "results/figures/validity.png").stat().st_size > 0


def test_a_second_run_has_nothing_to_do(run):
    result = snakemake(run, "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_ablation_variants_change_only_their_setting(run):
    ablation = pd.read_csv(run / "results/tables/ablation.csv")
    assert set(ablation["variant"]) == {"lambda_0.0", "n_1", "set_growth_criteria"}
    assert (ablation["method"] == "safecompress").all()
    root = run / "results/digits/split0/ablation"
    one = pd.read_csv(root / "n_1/density0.05/seed0/updates.csv")
    assert (one["candidate"] == 0).all() and one["selected"].all()
    growth = pd.read_csv(root / "set_growth_criteria/density0.05/seed0/updates.csv")
    assert set(growth["growth"]) == {"random", "momentum"}
    # lambda = 0 keeps the most accurate candidate of every update
    neutral = pd.read_csv(root / "lambda_0.0/density0.05/seed0/updates.csv")
    for _, group in neutral.groupby("step"):
        assert group.loc[group["selected"], "val_acc"].iloc[0] == group["val_acc"].max()


def test_report_has_every_figure_and_table_with_its_caption(run):
    result = snakemake(run, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (run / "report.html").read_text()
    for caption in sorted((REPO / "workflow/report").glob("*.rst")):
        first_words = " ".join(caption.read_text().split()[:3])
        if "{{" not in first_words:  # the workflow description is a template
            assert first_words in report, caption.name


def dry_run(workdir: Path, tmp_path: Path, **changes) -> str:
    """What a dry run with the tiny config, changed, prints."""
    config = yaml.safe_load(TINY.read_text())
    for section, values in changes.items():
        config[section] = values if not isinstance(values, dict) else config[section] | values
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    command = snakemake_command(workdir, [path], "--cores", "1", "--dry-run")
    result = subprocess.run(
        command, capture_output=True, text=True, env=workflow_env(), timeout=HUNG_STEP_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def dry_run_methods(workdir: Path, tmp_path: Path, **changes) -> set[str]:
    """The `method` wildcards of the jobs a dry run with the tiny config, changed, would run."""
    return set(re.findall(r"method=([^,\s]+)", dry_run(workdir, tmp_path, **changes)))


def test_a_config_change_reruns_only_the_jobs_that_read_it(run, tmp_path):
    rerun = dry_run_methods(run, tmp_path, safecompress={"lambda": 3.0})
    assert "safecompress" in rerun
    assert not rerun & {"dst", "magnitude", "dense"}
    # a figure setting reruns figures only, no attack or training job
    assert dry_run_methods(run, tmp_path, evaluation={"tradeoff_attack": "nn"}) == set()


def dry_run_rules(workdir: Path, tmp_path: Path, **changes) -> set[str]:
    """The rules of the jobs a dry run with the tiny config, changed, would run."""
    return set(re.findall(r"^rule (\w+):", dry_run(workdir, tmp_path, **changes), re.MULTILINE))


def test_the_validity_analysis_runs_where_candidates_are_logged(tmp_path):
    validity = {"compress_logged", "attack_candidates", "validity", "figure_validity"}
    assert validity <= dry_run_rules(tmp_path, tmp_path)
    assert not validity & dry_run_rules(tmp_path, tmp_path, safecompress={"log_candidates": False})
    assert not validity & dry_run_rules(tmp_path, tmp_path, methods=["dst"])


def test_ablations_run_only_with_safecompress(tmp_path):
    planned = dry_run_methods(tmp_path, tmp_path, methods=["dst"])
    assert planned == {"dense", "dst"}
