"""scripts/selection_report.py: what it reads off a candidate log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).parents[1] / "scripts" / "selection_report.py"


def load_report():
    spec = importlib.util.spec_from_file_location("selection_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(step, rung, candidate, score, score_z, leakage, selected=False, val_acc=0.8):
    return {
        "step": step,
        "rung": rung,
        "candidate": candidate,
        "strategy": f"s{candidate}",
        "selected": selected,
        "score": score,
        "score_z": score_z,
        "leakage": leakage,
        "leakage_diff_se": 0.01,
        "val_acc": val_acc,
    }


def test_the_first_rung_decision_is_compared_with_the_kept_candidate(tmp_path):
    log = pd.DataFrame(
        [
            # step 40: candidate 1 leads at the first rung by z 3, DST's own is kept at the end
            row(40, 0, 0, 0.5, 0.0, 0.20),
            row(40, 0, 1, 0.6, 3.0, 0.10, val_acc=0.7),
            row(40, 1, 0, 0.6, 0.0, 0.20, selected=True),
            row(40, 1, 1, 0.5, -1.0, 0.25),
            # step 80: candidate 1 leads at the first rung by z 1 (kept there: DST's), and is
            # kept at the end
            row(80, 0, 0, 0.5, 0.0, 0.20),
            row(80, 0, 1, 0.55, 1.0, 0.15),
            row(80, 1, 0, 0.5, 0.0, 0.20),
            row(80, 1, 1, 0.7, 2.5, 0.05, selected=True),
        ]
    )
    path = tmp_path / "updates.csv"
    log.to_csv(path, index=False)
    rows = load_report().update_rows(path, min_z=2.0)
    assert [r["first_rung_same"] for r in rows] == [False, False]
    assert [r["kept_dst"] for r in rows] == [True, False]
    assert rows[1]["leakage_gain"] == 0.20 - 0.05
    # with the paper's argmax rule, step 80's first rung already keeps candidate 1
    assert [r["first_rung_same"] for r in load_report().update_rows(path, 0.0)] == [False, True]
    # with an accuracy floor of 5 points, step 40's first rung refuses candidate 1 (10 points
    # less accurate than DST's), as the whole look-ahead did
    assert [r["first_rung_same"] for r in load_report().update_rows(path, 2.0, 0.05)] == [
        True,
        False,
    ]
