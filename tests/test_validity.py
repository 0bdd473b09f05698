"""Validity of the safety test: the evaluation's attacks on every logged candidate, the rank
correlation per update pooled with a bootstrap interval, and its figure."""

import numpy as np
import pandas as pd
import pytest

from safecompress.privacy.validity import VALIDITY_ATTACKS, candidate_table
from safecompress.reporting import figures
from safecompress.reporting.tables import ALL_RUNGS, validity_correlations, validity_table
from test_plots import assert_png_and_pdf, assert_readable


def logged(n_updates, n_candidates, evaluation, seed=0):
    """Candidates of `n_updates` updates at two rungs, with random safety leakage and the
    evaluation AUC `evaluation(leakage, rng)`, under two attacks."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(n_updates):
        for rung in (0, 1):
            leakage = rng.uniform(0, 0.5, n_candidates)
            for attack in ("loss", "rmia"):
                auc = evaluation(leakage, rng)
                for candidate in range(n_candidates):
                    rows.append(
                        {
                            "dataset": "toy",
                            "split": 0,
                            "method": "safecompress",
                            "density": 0.1,
                            "seed": 0,
                            "step": 10 * step,
                            "rung": rung,
                            "candidate": candidate,
                            "attack": attack,
                            "leakage": leakage[candidate],
                            "auc": auc[candidate],
                            "selected": candidate == 0,
                        }
                    )
    return pd.DataFrame(rows)


def pooled(candidates):
    return validity_table(validity_correlations(candidates), n_resamples=500)


def test_a_test_that_equals_the_judge_correlates_perfectly():
    candidates = logged(12, 4, lambda leakage, rng: 0.5 + leakage / 2)
    tests = validity_correlations(candidates)
    assert len(tests) == 12 * 2 * 2 and (tests["n_candidates"] == 4).all()
    assert (tests["spearman"] == 1.0).all()
    table = pooled(candidates)
    assert set(table["rung"]) == {ALL_RUNGS, "0", "1"}
    assert (table["n_updates"] == 12).all()
    assert table.loc[table["rung"] == ALL_RUNGS, "n_candidates"].eq(12 * 2 * 4).all()
    assert np.allclose(table[["spearman", "ci_low", "ci_high"]], 1.0)


def test_an_independent_test_correlates_about_zero_with_an_interval_around_it():
    candidates = logged(40, 4, lambda leakage, rng: rng.uniform(0.5, 0.8, len(leakage)))
    table = pooled(candidates)
    assert (table["ci_low"] < 0).all() and (table["ci_high"] > 0).all()
    assert (table["spearman"].abs() < 0.3).all()
    assert (table["ci_low"] < table["spearman"]).all() and (
        table["spearman"] < table["ci_high"]
    ).all()


def test_tied_candidates_have_no_correlation_and_one_update_no_interval():
    candidates = logged(1, 3, lambda leakage, rng: np.full(len(leakage), 0.6))
    tests = validity_correlations(candidates)
    assert tests["spearman"].isna().all()
    table = pooled(candidates)
    assert (table["n_updates"] == 0).all() and table["spearman"].isna().all()


def toy_attack_inputs(seed=0, n=60, classes=3, k=3):
    """A split of 4n samples (members, non-members, shadow pool), references' queries and
    signals on it, and the logged indices: evaluated samples, then a population."""
    rng = np.random.default_rng(seed)
    sets = ["target_train"] * n + ["target_out"] * n + ["shadow_train"] * n + ["shadow_out"] * n
    split = pd.DataFrame({"index": np.arange(4 * n), "set": sets})
    labels = rng.integers(0, classes, 4 * n)

    def frame(indices, logits, **columns):
        table = pd.DataFrame({**columns, "index": indices, "label": labels[indices]})
        return table.assign(**{f"logit_{c}": logits[:, c] for c in range(classes)})

    evaluated, population = np.arange(2 * n), np.arange(3 * n, 4 * n)
    queries = [frame(evaluated, rng.normal(size=(2 * n, classes))) for _ in range(k)]
    own = np.r_[np.arange(2 * n, 3 * n), population]
    shadow = pd.concat(
        frame(
            own,
            rng.normal(size=(2 * n, classes)),
            shadow=j,
            set=np.repeat(["member", "non-member"], n),
        )
        for j in range(k)
    )
    index = np.r_[evaluated, population]
    return rng, split, labels, shadow, queries, index


def test_every_candidate_is_judged_by_every_attack_and_a_memorising_one_leaks_more():
    rng, split, labels, shadow, queries, index = toy_attack_inputs()
    classes, n = 3, 60
    # candidate 0 leaks nothing; candidate 1 is confident on its members only
    plain = rng.normal(size=(len(index), classes))
    memorising = plain.copy()
    members = np.arange(n)
    memorising[members, labels[index[members]]] += 4.0
    table = candidate_table(
        index, np.stack([plain, memorising]), split, shadow, queries, VALIDITY_ATTACKS, 0
    )
    assert len(table) == 2 * len(VALIDITY_ATTACKS)
    auc = table.pivot(index="attack", columns="row", values="auc")
    assert (auc[1] > 0.9).all() and (auc[0] < 0.7).all()


@pytest.mark.slow
def test_the_validity_figure_renders_with_the_pooled_correlation_in_its_titles(tmp_path):
    candidates = logged(8, 4, lambda leakage, rng: 0.5 + leakage / 2)
    figure = figures.validity(candidates, pooled(candidates))
    assert_readable(figure)
    assert len(figure.axes) == 2
    assert all("ρ = 1.00 [1.00, 1.00], 8 updates" in axes.get_title() for axes in figure.axes)
    figures.save_figure(figure, tmp_path / "validity.png")
    assert_png_and_pdf(tmp_path / "validity.png")
