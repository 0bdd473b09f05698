"""The whole workflow on the tiny config, in a temporary directory: every output exists and
every number in summary.csv can be recomputed from the saved per-sample files."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from helpers import HUNG_RUN_S, HUNG_STEP_S, REPO, TINY, snakemake_command, workflow_env
from safecompress.data.splits import CANARY, check_split, inserted_canaries
from safecompress.privacy.attacks.reference import RMIA_A_GRID

ATTACKS = yaml.safe_load(TINY.read_text())["evaluation"]["attacks"]
DENSITIES = yaml.safe_load(TINY.read_text())["densities"]
# The tiny config's one curve point: DP-SGD at sigma 0.3 besides its own 1.0.
CURVE_VARIANT = "noise_multiplier_0.3"

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
    tables = ("summary", "paper_table", "paired", "frontier", "ablation", "ablation_paired")
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
    n_points = sum(
        len(values) for sweeps in config["curves"].values() for values in sweeps.values()
    )
    n_models = 1 + (len(config["methods"]) + n_points) * len(config["densities"])
    assert len(summary) == n_models * len(ATTACKS)
    model = ["dataset", "method", "variant", "density", "seed"]
    assert not summary.duplicated([*model, "attack"]).any()
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
    strongest = summary[summary["strongest"]].groupby(model)["auc"]
    assert (strongest.max() == summary.groupby(model)["auc"].max()).all()


def test_methods_report_themselves_in_their_own_columns(run):
    """DP-SGD's epsilon and delta, MIA-Pruning's ADMM residual: filled for that method only."""
    summary = pd.read_csv(run / "results/tables/summary.csv")
    for column, method in (
        ("epsilon", "dpsgd"),
        ("delta", "dpsgd"),
        ("admm_residual", "miapruning"),
    ):
        own = summary["method"] == method
        assert (summary.loc[own, column] >= 0).all() and summary.loc[own, column].notna().all()
        assert summary.loc[~own, column].isna().all(), column
    # RMIA's offline a, tuned on each target's references: on RMIA's rows only, from the grid
    rmia = summary["attack"] == "rmia"
    assert summary.loc[rmia, "rmia_offline_a"].isin(RMIA_A_GRID).all()
    assert summary.loc[~rmia, "rmia_offline_a"].isna().all()


def test_paired_table_compares_every_method_with_dst_on_the_same_samples(run):
    paired = pd.read_csv(run / "results/tables/paired.csv")
    methods = set(yaml.safe_load(TINY.read_text())["methods"])
    assert set(paired.loc[paired["baseline"] == "dst", "method"]) == methods - {"dst"}
    assert set(paired["baseline"]) == {"dst", "safecompress", "dst_adv"}
    # a selecting method is also paired with the method it wraps: the selection's own effect
    assert set(paired.loc[paired["baseline"] == "dst_adv", "method"]) == {"safecompress_adv"}
    per_replicate = paired[paired["scope"] == "replicate"]
    assert set(per_replicate["attack"]) == {"task", *ATTACKS}
    assert CURVE_VARIANT in set(per_replicate.loc[per_replicate["method"] == "dpsgd", "variant"])
    summary = pd.read_csv(run / "results/tables/summary.csv").set_index(
        ["method", "variant", "density", "attack"]
    )
    for row in per_replicate[per_replicate["metric"] == "auc"].itertuples():
        own = summary.loc[(row.method, row.variant, row.density, row.attack), "auc"]
        baseline = summary.loc[(row.baseline, "default", row.density, row.attack), "auc"]
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
        scores = scores[scores["set"].isin(["member", "non-member"])]  # not the canaries
        is_member = scores["set"] == "member"
        auc = roc_auc_score(is_member, scores[f"score_{row['attack']}"])
        assert auc == pytest.approx(row["auc"], abs=1e-9)
        predicted = scores[f"pred_{row['attack']}"].astype(bool)
        balanced = 0.5 * (predicted[is_member].mean() + (~predicted[~is_member]).mean())
        assert balanced == pytest.approx(row["attack_acc"], abs=1e-9)


def test_canaries_are_scored_apart_on_each_seeds_inserted_half(run):
    summary = pd.read_csv(run / "results/tables/summary.csv")
    split = pd.read_csv(run / "results/digits/split0/split.csv")
    n_canaries = yaml.safe_load(TINY.read_text())["evaluation"]["canaries"]
    assert (split["set"] == CANARY).sum() == n_canaries
    for _, row in summary.iterrows():
        scores = pd.read_csv(run / row["scores_path"])
        canaries = scores[scores["set"].str.startswith("canary")]
        inserted = set(inserted_canaries(split, row["seed"]))
        assert set(canaries.loc[canaries["set"] == "canary-member", "index"]) == inserted
        assert set(canaries["index"]) == set(split.loc[split["set"] == CANARY, "index"])
        is_member = canaries["set"] == "canary-member"
        auc = roc_auc_score(is_member, canaries[f"score_{row['attack']}"])
        assert auc == pytest.approx(row["worst_case_auc"], abs=1e-9)
        # 4 held-out canaries resolve neither FPR
        assert np.isnan(row["worst_case_tpr_at_1pct_fpr"])
    paired = pd.read_csv(run / "results/tables/paired.csv")
    assert {"worst_case_auc", "worst_case_tpr_at_1pct_fpr"} <= set(paired["metric"])
    stats = pd.read_csv(run / "results/tables/paper_table.csv")
    assert "worst_case_auc" in set(stats["metric"])


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
    # lambda = 0 keeps the most accurate candidate of an update when its advantage is
    # resolved (decisive), else DST's own (candidate 0)
    neutral = pd.read_csv(root / "lambda_0.0/density0.05/seed0/updates.csv")
    for _, group in neutral.groupby("step"):
        last = group[group["rung"] == group["rung"].max()]
        kept = last.loc[last["selected"]].iloc[0]
        if kept["decisive"]:
            assert kept["val_acc"] == last["val_acc"].max()
        else:
            assert kept["candidate"] == 0


def test_a_curve_point_is_a_model_of_its_method_on_the_frontier(run):
    summary = pd.read_csv(run / "results/tables/summary.csv")
    point = summary[summary["variant"] == CURVE_VARIANT]
    assert set(point["method"]) == {"dpsgd"} and set(point["density"]) == set(DENSITIES)
    for density in DENSITIES:  # its own model, trained with its setting, and references
        root = run / f"results/digits/split0/curve/dpsgd/{CURVE_VARIANT}/density{density}"
        assert (root / "seed0/attacks.csv").stat().st_size > 0
        recipe = run / f"results/digits/split0/references/curve/dpsgd/{CURVE_VARIANT}"
        assert (recipe / f"density{density}/references.csv").stat().st_size > 0
    paper = pd.read_csv(run / "results/tables/paper_table.csv")
    assert CURVE_VARIANT in set(paper.loc[paper["method"] == "dpsgd", "variant"])
    frontier = pd.read_csv(run / "results/tables/frontier.csv", keep_default_na=False)
    n_points = len(point.drop_duplicates(["variant", "density"])) + len(
        summary.drop_duplicates(["method", "density"])
    )
    # every point at its density (dense in each) for AUC and TPR at 1 % FPR
    assert len(frontier) == 2 * (n_points + (len(DENSITIES) - 1))
    assert set(frontier["attack"]) == {"rmia"}  # the tiny config's tradeoff_attack
    assert frontier["pareto"].astype(str).isin(["True", "False"]).all()
    methods = set(summary["method"])
    for names in frontier["dominated_by"]:
        assert set(names.split()) <= methods


def test_report_has_every_figure_and_table_with_its_caption(run):
    result = snakemake(run, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (run / "report.html").read_text()
    for caption in sorted((REPO / "workflow/report").glob("*.rst")):
        first_words = " ".join(caption.read_text().split()[:3])
        if "{{" not in first_words:  # the workflow description is a template
            assert first_words in report, caption.name


def dry_run(workdir: Path, tmp_path: Path, overlay: dict | None = None, **changes) -> str:
    """What a dry run with the tiny config, changed, says it would run (a mapping adds to the
    section's keys; an empty one empties it), with `overlay` given after it as a config file
    of its own (Snakemake merges it in)."""
    config = yaml.safe_load(TINY.read_text())
    for section, values in changes.items():
        merge = isinstance(values, dict) and values
        config[section] = config[section] | values if merge else values
    paths = [tmp_path / "changed.yaml", tmp_path / "overlay.yaml"][: 1 + (overlay is not None)]
    for path, content in zip(paths, (config, overlay), strict=False):
        path.write_text(yaml.safe_dump(content))
    command = snakemake_command(workdir, paths, "--cores", "1", "--dry-run", "--printshellcmds")
    result = subprocess.run(
        command, capture_output=True, text=True, env=workflow_env(), timeout=HUNG_STEP_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


WILDCARDS = re.compile(r"wildcards: ([^\n]*)")


def dry_run_methods(
    workdir: Path, tmp_path: Path, overlay: dict | None = None, **changes
) -> set[str]:
    """The `method` wildcards of the jobs a dry run with the tiny config, changed, would run."""
    return set(re.findall(r"method=([^,\s]+)", dry_run(workdir, tmp_path, overlay, **changes)))


def test_a_config_change_reruns_only_the_jobs_that_read_it(run, tmp_path):
    rerun = dry_run_methods(run, tmp_path, safecompress={"lambda": 3.0})
    assert "safecompress" in rerun
    assert not rerun & {"dst", "magnitude", "dense"}
    # a figure setting reruns figures only, no attack or training job
    assert dry_run_methods(run, tmp_path, evaluation={"tradeoff_attack": "nn"}) == set()


def test_a_method_added_to_moved_results_is_run(run, tmp_path):
    """Results moved to where Snakemake has no record of them (no .snakemake): a method
    added to `methods` is still trained and attacked, and the tables are redone."""
    moved = tmp_path / "moved"
    shutil.copytree(run / "results", moved / "results")
    methods = [*yaml.safe_load(TINY.read_text())["methods"], "safecompress_relaxloss"]
    plan = dry_run(moved, tmp_path, methods=methods)
    assert set(re.findall(r"method=([^,\s]+)", plan)) == {"safecompress_relaxloss"}
    rules = set(re.findall(r"^rule (\w+):", plan, re.M))
    assert {"compress_logged", "attack", "summarize"} <= rules  # it logs its candidates


def dry_run_rules(workdir: Path, tmp_path: Path, **changes) -> set[str]:
    """The rules of the jobs a dry run with the tiny config, changed, would run."""
    return set(re.findall(r"^rule (\w+):", dry_run(workdir, tmp_path, **changes), re.MULTILINE))


def test_the_validity_analysis_runs_where_candidates_are_logged(tmp_path):
    validity = {"compress_logged", "attack_candidates", "validity", "figure_validity"}
    assert validity <= dry_run_rules(tmp_path, tmp_path)
    assert not validity & dry_run_rules(tmp_path, tmp_path, safecompress={"log_candidates": False})
    assert not validity & dry_run_rules(tmp_path, tmp_path, methods=["dst"], curves={})


def test_ablations_run_only_with_safecompress(tmp_path):
    planned = dry_run_methods(tmp_path, tmp_path, methods=["dst"], curves={})
    assert planned == {"dense", "dst"}


def test_null_in_an_overlay_switches_off_its_bases_curves_and_ablation(tmp_path):
    """An overlay's mapping is merged into its base's (an empty one changes nothing): null is
    how config/evidence_two_candidates.yaml leaves out config/evidence.yaml's curves and
    ablations."""
    methods = yaml.safe_load(TINY.read_text())["methods"]
    merged = dry_run_methods(tmp_path, tmp_path, overlay={"curves": {}, "ablation": {}})
    off = dry_run_methods(tmp_path, tmp_path, overlay={"curves": None, "ablation": None})
    assert off == {"dense", *methods} < merged


def test_curve_points_run_at_every_density_and_replicate_with_their_references(tmp_path):
    curves = {
        "dpsgd": {"dpsgd.noise_multiplier": [0.02, 0.3]},
        "advreg": {"adversarial.weight": [0.3]},
    }
    planned = dry_run(
        tmp_path,
        tmp_path,
        densities=[0.1, 0.05],
        seeds=[0, 1],
        methods=["dst", "dpsgd", "advreg"],
        curves=curves,
    )
    blocks = [block.partition(":") for block in planned.split("\nrule ")[1:]]
    jobs = {(name, found.group(1)) for name, _, rest in blocks if (found := WILDCARDS.search(rest))}
    wildcards = {"compress": "seed", "attack": "seed", "train_references": "density"}
    for point in ("dpsgd/noise_multiplier_0.02", "dpsgd/noise_multiplier_0.3", "advreg/weight_0.3"):
        for density in (0.1, 0.05):
            for rule in wildcards:
                mine = {
                    found
                    for name, found in jobs
                    if name == rule and f"method=curve/{point}, density={density}" in found
                }
                assert len(mine) == (2 if wildcards[rule] == "seed" else 1), (rule, point, density)
    assert "--method dpsgd --variant noise_multiplier_0.02" in planned
    assert '--dpsgd \'{"max_grad_norm": 1.0, "noise_multiplier": 0.02}\'' in planned
    assert '"weight": 0.3' in planned and "--variant weight_0.3" in planned


@pytest.mark.parametrize("attacks", [["loss", "nasr", "whitebox", "rmia"], ["loss", "rmia"]])
def test_matched_targets_are_attacked_with_their_recipes_attackers(tmp_path, attacks):
    """Under matched references a recipe's attackers come from its train_references job,
    fitted once; only the dense target's come from fit_attacker (per seed)."""
    path = tmp_path / "config.yaml"
    config = yaml.safe_load(TINY.read_text())
    config["evaluation"]["attacks"] = attacks
    path.write_text(yaml.safe_dump(config))
    command = snakemake_command(tmp_path, [path], "--cores", "1", "--dry-run")
    result = subprocess.run(
        command, capture_output=True, text=True, env=workflow_env(), timeout=HUNG_STEP_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n((?:    .*\n)+)", result.stdout, re.MULTILINE)
    network = [attack for attack in attacks if attack in ("nasr", "whitebox")]
    recipe = "results/digits/split0/references/dst/density0.05"
    (dst_attack,) = [body for rule, body in jobs if rule == "attack" and "method=dst," in body]
    (dst_references,) = [
        body for rule, body in jobs if rule == "train_references" and "method=dst," in body
    ]
    (dense_attack,) = [body for rule, body in jobs if rule == "attack" and "method=dense" in body]
    for attack in network:
        attacker = f"{recipe}/attackers/{attack}.safetensors"
        assert attacker in dst_attack and attacker in dst_references
        assert f"results/digits/split0/attackers/seed0/{attack}.safetensors" in dense_attack
    fits = [body for rule, body in jobs if rule == "fit_attacker"]
    assert len(fits) == len(network)  # the dense target's, one per network attack
