"""Canaries (evaluation.canaries): flipped-label samples cut from target_out, a seeded half
inserted into each target, scored apart as the attacks' worst case."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import FRACTIONS, SHORT_TRAINING
from safecompress.compression.job import Job
from safecompress.data.sources import load_pool
from safecompress.data.splits import (
    CANARY,
    CANARY_LABEL,
    MEMBER_SETS,
    SplitError,
    add_canaries,
    check_split,
    inserted_canaries,
    load_data,
    make_split,
    set_indices,
    shadow_partition,
    stand_in_split,
    target_members,
)
from safecompress.io import write_csv
from safecompress.privacy import paired
from safecompress.privacy.bootstrap import worst_case_report
from safecompress.privacy.metrics import WORST_CASE_METRICS, roc_auc
from safecompress.reporting import tables

DIGITS = {"source": "sklearn", "name": "digits", "split": FRACTIONS}
N_POOL, N_CLASSES = 1797, 10


@pytest.fixture(scope="module")
def labels():
    return load_pool(DIGITS).y


def canary_split(labels, count=40, seed=0):
    return add_canaries(make_split(N_POOL, FRACTIONS, seed), labels, N_CLASSES, count, seed)


def test_canaries_come_from_target_out_with_a_flipped_label(labels):
    plain = make_split(N_POOL, FRACTIONS, 0)
    split = canary_split(labels)
    check_split(split, N_POOL, FRACTIONS)  # sized: the canaries count towards target_out
    canaries = set_indices(split, CANARY)
    assert len(canaries) == 40
    assert set(canaries) <= set(set_indices(plain, "target_out"))
    assert not set(canaries) & set(set_indices(split, "target_out"))
    assert set(canaries) | set(set_indices(split, "target_out")) == set(
        set_indices(plain, "target_out")
    )
    for name in ("target_train", "known_members", "shadow_train", "shadow_out", "reference"):
        assert set_indices(split, name).tolist() == set_indices(plain, name).tolist()
    rows = split[split["set"] == CANARY]
    flipped = rows[CANARY_LABEL].to_numpy(dtype=int)
    assert ((flipped >= 0) & (flipped < N_CLASSES)).all()
    assert (flipped != labels[rows["index"].to_numpy()]).all()
    assert split.loc[split["set"] != CANARY, CANARY_LABEL].isna().all()


def test_canaries_are_deterministic_per_split_and_differ_between_splits(labels):
    pd.testing.assert_frame_equal(canary_split(labels), canary_split(labels))
    other = canary_split(labels, seed=7)
    assert set(set_indices(canary_split(labels), CANARY)) != set(set_indices(other, CANARY))


def test_no_canaries_leave_the_split_as_it_was(labels, tmp_path):
    plain = make_split(N_POOL, FRACTIONS, 0)
    assert add_canaries(plain, labels, N_CLASSES, 0, 0) is plain
    write_csv(plain, tmp_path / "split.csv")
    assert load_data(DIGITS, tmp_path / "split.csv").y.tolist() == labels.tolist()
    assert target_members(plain, 3).tolist() == set_indices(plain, *MEMBER_SETS).tolist()


@pytest.mark.parametrize("count", [3, 10_000])
def test_an_odd_or_too_large_count_is_refused(labels, count):
    with pytest.raises(SplitError, match="even and at most"):
        canary_split(labels, count)


def test_a_canary_without_its_label_is_refused(labels):
    split = canary_split(labels)
    split.loc[split["set"] == CANARY, CANARY_LABEL] = pd.NA
    with pytest.raises(SplitError, match="canary_label"):
        check_split(split, N_POOL, FRACTIONS)


def test_each_seed_inserts_its_own_half_the_same_for_every_method(labels):
    split = canary_split(labels)
    canaries = set_indices(split, CANARY)
    halves = {seed: inserted_canaries(split, seed) for seed in range(4)}
    for seed, half in halves.items():
        assert len(half) == len(canaries) // 2 and set(half) <= set(canaries)
        # a function of the split and the seed alone: read again, the same half
        assert inserted_canaries(split.copy(), seed).tolist() == half.tolist()
        members = target_members(split, seed)
        assert set(members) == set(set_indices(split, *MEMBER_SETS)) | set(half)
    assert len({tuple(half) for half in halves.values()}) == len(halves)


def test_canaries_never_reach_known_members_shadows_or_references(labels):
    split = canary_split(labels)
    canaries = set(set_indices(split, CANARY))
    assert not canaries & set(set_indices(split, "known_members", "reference"))
    for k in range(3):
        members, nonmembers = shadow_partition(split, k)
        assert not canaries & (set(members) | set(nonmembers))
        stand_in = stand_in_split(split, k)
        assert not canaries & set(stand_in["index"])
        assert CANARY not in set(stand_in["set"])
    # the references' sets are sized as without canaries: they count in target_out
    plain = make_split(N_POOL, FRACTIONS, 0)
    pd.testing.assert_frame_equal(stand_in_split(split, 1), stand_in_split(plain, 1))


def test_targets_train_on_the_flipped_labels_and_references_on_none(labels, tmp_path):
    split = canary_split(labels)
    path = tmp_path / "split.csv"
    write_csv(split, path)
    data = load_data(DIGITS, path)
    rows = split[split["set"] == CANARY]
    assert data.take(rows["index"].to_numpy()).y.tolist() == rows[CANARY_LABEL].tolist()
    others = split.loc[split["set"] != CANARY, "index"].to_numpy()
    assert data.take(others).y.tolist() == labels[others].tolist()

    def job(seed, data=data):
        return Job(data, {}, SHORT_TRAINING, 0.1, seed, torch.device("cpu"), None)

    members = job(2).members()
    expected = target_members(split, 2)
    assert len(members) == len(expected) == len(set_indices(split, *MEMBER_SETS)) + 20
    assert members.y.tolist() == data.take(expected).y.tolist()
    stand_in = type(data)(data.x, data.y, stand_in_split(split, 0), data.n_classes)
    assert len(job(2, stand_in).members()) == len(set_indices(stand_in.split, *MEMBER_SETS))


def test_worst_case_of_a_perfect_and_a_random_attack():
    is_member = np.arange(200) < 100  # 100 held-out canaries resolve 1 % FPR, not 0.1 %
    perfect = worst_case_report(is_member, is_member + 0.0, is_member, 200, 0)
    assert list(perfect) == [
        f"{metric}{end}" for metric in WORST_CASE_METRICS for end in ("", "_ci_low", "_ci_high")
    ]
    assert perfect["worst_case_auc"] == perfect["worst_case_tpr_at_1pct_fpr"] == 1.0
    assert perfect["worst_case_tpr_at_1pct_fpr_ci_low"] == 1.0
    assert np.isnan(perfect["worst_case_tpr_at_0.1pct_fpr"])
    assert np.isnan(perfect["worst_case_tpr_at_0.1pct_fpr_ci_high"])
    scores = np.random.default_rng(0).random(200)
    guess = worst_case_report(is_member, scores, scores > 0.5, 200, 0)
    assert guess["worst_case_auc"] == pytest.approx(0.5, abs=0.1)
    assert guess["worst_case_auc_ci_low"] < 0.5 < guess["worst_case_auc_ci_high"]


def test_too_few_canaries_leave_the_worst_case_tpr_empty():
    is_member = np.arange(40) < 20
    report = worst_case_report(is_member, is_member + 0.0, is_member, 200, 0)
    assert report["worst_case_auc"] == 1.0
    assert all(np.isnan(report[f"worst_case_tpr_at_{p}_fpr"]) for p in ("1pct", "0.1pct"))


def scored(method, seed, scores, canary_scores, canary_index=None):
    n, c = len(scores), len(canary_scores)
    return paired.ScoredModel(
        dataset="digits",
        split=0,
        method=method,
        variant="default",
        density=0.1,
        seed=seed,
        index=np.arange(n),
        is_member=np.arange(n) < n // 2,
        correct=np.ones(n, bool),
        scores={"loss": scores},
        canaries=paired.Canaries(
            index=np.arange(n, n + c) if canary_index is None else canary_index,
            is_member=np.arange(c) < c // 2,
            scores={"loss": canary_scores},
        ),
    )


def test_paired_rows_compare_the_same_canaries():
    rng = np.random.default_rng(3)
    is_member, canary = np.arange(200) < 100, np.arange(40) < 20
    models = []
    for seed in (0, 1):
        base = rng.normal(size=40) + 3 * canary
        models += [
            scored("dst", seed, rng.normal(size=200) + is_member, base),
            scored("relaxloss", seed, rng.normal(size=200), base + rng.normal(size=40)),
        ]
    rows = pd.DataFrame(paired.paired_rows(models, "dst", n_resamples=200))
    worst = rows[rows["metric"].str.startswith("worst_case_")]
    assert set(worst["metric"]) == {f"worst_case_{m}" for m in paired.PAIRED_METRICS}
    auc = worst[(worst["metric"] == "worst_case_auc") & (worst["scope"] == "replicate")]
    for model, reference, row in zip(models[1::2], models[::2], auc.itertuples(), strict=True):
        expected = roc_auc(canary, model.canaries.scores["loss"]) - roc_auc(
            canary, reference.canaries.scores["loss"]
        )
        assert row.difference == pytest.approx(expected)
    unresolved = worst[worst["metric"] == "worst_case_tpr_at_1pct_fpr"]
    assert unresolved["difference"].isna().all()  # 20 held-out canaries: no 1 % FPR
    other = scored(
        "relaxloss",
        0,
        models[1].scores["loss"],
        models[1].canaries.scores["loss"],
        np.arange(500, 540),
    )
    with pytest.raises(ValueError, match="same canaries"):
        paired.paired_rows([models[0], other], "dst", n_resamples=100)


def test_paper_table_has_worst_case_rows_only_with_canaries():
    metrics = [*tables.METRICS]
    summary = pd.DataFrame(
        [
            {
                "dataset": "digits",
                "split": 0,
                "method": "dst",
                "variant": "default",
                "density": 0.1,
                "seed": seed,
                "attack": "loss",
                "strongest": True,
                **{m: 0.6 + 0.01 * seed for m in metrics},
                **{f"{m}_ci_{e}": 0.5 for m in metrics for e in ("low", "high")},
            }
            for seed in (0, 1)
        ]
    )
    plain = tables.replicate_statistics(summary)
    assert not plain["metric"].str.startswith("worst_case_").any()
    assert "canary" not in tables.markdown_tables(plain)
    worst = {m: [0.7, 0.8] for m in WORST_CASE_METRICS}
    stats = tables.replicate_statistics(summary.assign(**worst))
    rows = stats[stats["metric"].isin(WORST_CASE_METRICS)].set_index(["attack", "metric"])
    assert rows.loc[("loss", "worst_case_auc"), "mean"] == pytest.approx(0.75)
    assert rows.loc[("strongest", "worst_case_auc"), "n_replicates"] == 2
    assert "loss canary AUC (%)" in tables.markdown_tables(stats)
