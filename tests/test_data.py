"""The split: disjoint, sized as configured, reproducible, refused when broken."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import FRACTIONS, HUNG_STEP_S, REPO
from safecompress.data.sources import load_pool
from safecompress.data.splits import (
    SPLIT_SETS,
    SplitError,
    check_split,
    make_split,
    set_indices,
    shadow_partition,
    split_sizes,
)


def test_digits_pool_is_the_real_bundled_data():
    pool = load_pool({"source": "sklearn", "name": "digits"})
    assert pool.x.shape == (1797, 1, 8, 8)
    assert pool.n_classes == 10
    assert pool.x.min() >= 0.0 and pool.x.max() <= 1.0
    assert np.bincount(pool.y).min() > 170  # every digit is present


def test_digits_are_scikit_learns_read_without_importing_it():
    from sklearn.datasets import load_digits

    pool = load_pool({"source": "sklearn", "name": "digits"})
    digits = load_digits()
    np.testing.assert_array_equal(pool.x[:, 0], (digits.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(pool.y, digits.target)
    assert pool.y.dtype == np.int64
    # in a fresh process: the import (with scipy) costs every training job a second
    code = (
        "import sys; from safecompress.data.sources import load_pool; "
        "load_pool({'source': 'sklearn', 'name': 'digits'}); "
        "assert 'sklearn' not in sys.modules and 'scipy' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=HUNG_STEP_S)


def test_split_sets_are_disjoint_and_sized():
    split = make_split(1797, FRACTIONS, seed=0)
    sizes = split["set"].value_counts()
    for name in SPLIT_SETS:
        assert sizes[name] == int(np.floor(FRACTIONS[name] * 1797))
    assert split["index"].is_unique
    assert split["index"].between(0, 1796).all()


def test_split_is_reproducible_and_seed_dependent():
    a = make_split(500, FRACTIONS, seed=3)
    b = make_split(500, FRACTIONS, seed=3)
    c = make_split(500, FRACTIONS, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert set_indices(a, "target_train").tolist() != set_indices(c, "target_train").tolist()


def test_overlapping_members_and_nonmembers_are_refused():
    split = make_split(500, FRACTIONS, seed=0)
    leaked = split.copy()
    member = set_indices(split, "target_train")[0]
    leaked.loc[leaked["set"] == "target_out", "index"] = np.r_[
        member, set_indices(split, "target_out")[1:]
    ]
    with pytest.raises(SplitError, match="appear twice"):
        check_split(leaked, 500, FRACTIONS)


def test_wrong_sizes_and_out_of_range_indices_are_refused():
    split = make_split(500, FRACTIONS, seed=0)
    with pytest.raises(SplitError, match="expected"):
        check_split(split.iloc[1:], 500, FRACTIONS)
    with pytest.raises(SplitError, match=r"lie in \[0, 400\)"):
        check_split(split, 400, FRACTIONS)


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({**FRACTIONS, "reference": 0.3}, "sum to at most 1"),
        ({**FRACTIONS, "reference": 0.0}, "> 0"),
        ({k: v for k, v in FRACTIONS.items() if k != "reference"}, "missing"),
    ],
)
def test_bad_fractions_are_refused(fractions, message):
    with pytest.raises(SplitError, match=message):
        split_sizes(1000, fractions)


def test_shadow_partitions_stay_in_the_shadow_pool():
    split = make_split(1000, FRACTIONS, seed=0)
    pool = set(set_indices(split, "shadow_train")) | set(set_indices(split, "shadow_out"))
    first_members, _ = shadow_partition(split, 0)
    assert set(first_members) == set(set_indices(split, "shadow_train"))
    members, nonmembers = shadow_partition(split, 1)
    assert set(members) | set(nonmembers) == pool
    assert not set(members) & set(nonmembers)
    assert len(members) == len(first_members)
    assert set(members) != set(first_members)
