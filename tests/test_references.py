"""Matched references: the stand-in split a recipe's reference model k trains on, and the step
that trains a recipe's K references in one job and resumes per reference."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import FRACTIONS
from safecompress.data.splits import (
    MEMBER_SETS,
    make_split,
    rmia_population,
    set_indices,
    shadow_partition,
    stand_in_split,
)
from safecompress.io import read_csv, write_csv
from safecompress.privacy.attacks import NETWORK_ATTACKS
from safecompress.privacy.attacks.learned import load_adversary
from safecompress.steps import references
from safecompress.steps.fit_attackers import fit_adversaries

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".test" / "config" / "config.yaml"


@pytest.mark.parametrize("k", [0, 1, 3])
def test_stand_in_sets_come_from_draw_k_with_the_targets_proportions(k):
    split = make_split(1797, FRACTIONS, 0)
    stand_in = stand_in_split(split, k)
    members, nonmembers = shadow_partition(split, k)
    sets = {name: set_indices(stand_in, name) for name in stand_in["set"].unique()}
    assert set(sets) == {"target_train", "known_members", "target_out", "reference"}
    assert sorted(np.concatenate([sets[name] for name in MEMBER_SETS])) == sorted(members)
    assert sorted(np.concatenate([sets["reference"], sets["target_out"]])) == sorted(nonmembers)
    assert stand_in["index"].is_unique
    # only the attacker's pool: never a sample the target trained on or is judged on
    target = set_indices(split, "target_train", "known_members", "target_out", "reference")
    assert not set(stand_in["index"]) & set(target)
    sizes, real = stand_in["set"].value_counts(), split["set"].value_counts()
    known_share = real["known_members"] / (real["known_members"] + real["target_train"])
    held_share = real["reference"] / (real["reference"] + real["target_out"])
    assert sizes["known_members"] / len(members) == pytest.approx(known_share, abs=0.01)
    assert sizes["reference"] / len(nonmembers) == pytest.approx(held_share, abs=0.01)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_no_reference_trains_on_or_holds_out_rmias_population(k):
    split = make_split(1797, FRACTIONS, 0)
    population = set(rmia_population(split))
    assert population <= set(set_indices(split, "shadow_out")) and len(population) > 100
    stand_in = stand_in_split(split, k)
    used = set_indices(stand_in, *MEMBER_SETS, "reference")
    assert not population & set(used)
    assert population <= set(set_indices(stand_in, "target_out"))


def test_stand_ins_differ_between_references():
    split = make_split(1797, FRACTIONS, 0)
    first, second = (set_indices(stand_in_split(split, k), "target_train") for k in (1, 2))
    assert set(first) != set(second)


def run_references(tmp_path, out, shadows=2, attackers=()):
    split = tmp_path / "split.csv"
    if not split.exists():
        write_csv(make_split(1797, FRACTIONS, 0), split)
    references.main(
        [
            "--config",
            str(CONFIG),
            "--dataset",
            "digits",
            "--split",
            str(split),
            "--method",
            "dst",
            "--density",
            "0.2",
            "--shadows",
            *(str(tmp_path / "shadow" / str(k)) for k in range(shadows)),
            "--out-dir",
            str(out),
            "--attackers",
            *attackers,
        ]
    )
    return read_csv(out / "references.csv")


@pytest.mark.slow
def test_a_recipes_references_are_trained_like_it_and_written_as_shadows(tmp_path):
    out = tmp_path / "references" / "dst" / "density0.2"
    table = run_references(tmp_path, out, attackers=NETWORK_ATTACKS)
    assert table["k"].tolist() == [0, 1]
    assert (table["density_measured"] < 0.25).all()  # sparse, as the recipe's targets
    split = read_csv(tmp_path / "split.csv")
    queried = set_indices(split, "target_train", "target_out")
    for k in (0, 1):
        signals = read_csv(out / f"k{k}" / "signals.csv")
        assert set(signals["set"]) == {"member", "non-member"} and (signals["shadow"] == k).all()
        members = set_indices(stand_in_split(split, k), *MEMBER_SETS)
        assert sorted(signals.loc[signals["set"] == "member", "index"]) == sorted(members)
        queries = read_csv(out / f"k{k}" / "queries.csv")
        assert sorted(queries["index"]) == sorted(queried)
        assert np.load(out / f"k{k}" / "features.npy").shape[0] == len(signals)
        assert not (out / f"k{k}" / "checkpoint.pt").exists()
    # the recipe's attackers: fitted on its references with the fixed seed, before the table
    directories = [out / "k0", out / "k1"]
    fitted = fit_adversaries(directories, NETWORK_ATTACKS, references.ATTACKER_SEED)
    for attack, expected in fitted.items():
        path = out / "attackers" / f"{attack}.safetensors"
        assert path.stat().st_mtime_ns <= (out / "references.csv").stat().st_mtime_ns
        kind, saved = load_adversary(path)
        assert kind == attack
        for name, tensor in expected.state_dict().items():
            assert torch.equal(saved.state_dict()[name], tensor), name


@pytest.mark.slow
def test_a_rerun_keeps_finished_references(tmp_path, caplog):
    out = tmp_path / "references"
    first = run_references(tmp_path, out)
    (out / "references.csv").unlink()  # as a job killed after its references
    signals = (out / "k1" / "signals.csv").read_bytes()
    (out / "k1" / references.DONE).unlink()  # reference 1 unfinished
    with caplog.at_level(logging.INFO, logger="safecompress.steps.references"):
        again = run_references(tmp_path, out)
    assert "reference 1 of 2: done before, kept" in caplog.text
    assert "reference 2 of 2: training" in caplog.text
    assert (out / "k1" / "signals.csv").read_bytes() == signals  # retrained identically
    pd.testing.assert_frame_equal(first, again)
