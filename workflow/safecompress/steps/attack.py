"""Step 4: attack one target model with every evaluation attack.

    python -m safecompress.steps.attack --dataset digits \\
        --split results/digits/split0/split.csv \\
        --model results/digits/split0/dst/density0.1/seed0/model.safetensors \\
        --shadows results/digits/split0/shadow/0 results/digits/split0/shadow/1 \\
        --adversaries results/digits/split0/attackers/seed0/nasr.safetensors \\
        --out-dir results/digits/split0/dst/density0.1/seed0

The evaluated members are the target's `target_train` set (never the defender's known
members), the evaluated non-members its `target_out` set. The attacker knows its own pool
and the shadow models trained on it (each shadow directory: signals.csv, features.npy and
queries.csv, written by steps.train), and queries the target. The network attacks' fitted
attackers depend on the shadow models alone, so the workflow fits each once and passes it as
--adversaries: once per seed on the dense shadow models (steps.fit_attackers), or once per
recipe on its references (steps.references, matched references). Writes signals.csv (per
evaluated sample: set, label, loss, logits), scores.csv (per sample and attack: score and
prediction) and attacks.csv (one row per attack: task accuracy and every attack metric with
its 95 % bootstrap interval).

With canaries in the split, both per-sample files go on with a row per canary (set
`canary-member`: one of the half this target's seed trained on; `canary-non-member`: held
out), and attacks.csv with the worst-case metrics (`worst_case_auc`, ...) on the canaries
alone. Every attack scores the canaries as a set of their own, with the same signals (the
references' logits on them included), so the evaluated samples' scores do not depend on
them (LiRA's variance, pooled over the scored samples with few references, would).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from safecompress.config import specs
from safecompress.config.settings import REFERENCE_KINDS
from safecompress.data.splits import (
    CANARY,
    Data,
    inserted_canaries,
    load_data,
    rmia_population,
    set_indices,
)
from safecompress.io import write_csv
from safecompress.privacy import attacks
from safecompress.privacy.attacks.learned import load_adversary
from safecompress.privacy.bootstrap import accuracy_interval, attack_report, worst_case_report
from safecompress.privacy.signals import (
    CANARY_SETS,
    POPULATION,
    aligned_queries,
    feature_matrix,
    logits_of,
    population,
    read_shadows,
    rmia_calibration,
    signal_table,
)
from safecompress.sparse.engine import measured_density
from safecompress.steps import cli
from safecompress.training.devices import pick_device, to_device
from safecompress.training.models import load_model


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    evaluation = specs.read(specs.EvaluationSpec, "evaluation", cli.section(args, "evaluation"))
    entry = cli.data_entry(args, args.dataset)

    model, meta = load_model(args.model)
    to_device(model, pick_device())
    data = load_data(entry, args.split)
    needs_features = "whitebox" in evaluation.attacks
    shadow_signals, shadow_features, queries = read_shadows(args.shadows, needs_features)
    # every signal of the target, once: the evaluated samples, RMIA's population, the canaries
    computed = signal_table(model, data, _queried_sets(data, meta["seed"]))
    signals = computed[computed["set"] != POPULATION].reset_index(drop=True)
    on_population = computed[computed["set"] == POPULATION]
    is_canary = signals["set"].isin(CANARY_SETS).to_numpy()
    evaluated = signals[~is_canary]
    inputs = attacks.with_adversaries(
        attacks.AttackInputs(
            target=_target(model, data, evaluated, needs_features),
            shadow=attacks.read_signals(shadow_signals, "shadow", shadow_features),
            references=aligned_queries(queries, evaluated),
            population=population(
                on_population, rmia_calibration(on_population["index"], shadow_signals)
            ),
            adversaries=dict(load_adversary(path) for path in args.adversaries),
        ),
        evaluation.attacks,
        args.seed,
    )
    results = attacks.run_attacks(inputs, evaluation.attacks, args.seed)
    canaries = signals[is_canary].replace({"set": CANARY_SETS})
    canary_results = {}
    if len(canaries):
        canary_inputs = dataclasses.replace(
            inputs,
            target=_target(model, data, canaries, needs_features),
            references=aligned_queries(queries, canaries),
        )
        canary_results = attacks.run_attacks(canary_inputs, evaluation.attacks, args.seed)

    scores = signals[["index", "set", "label"]].copy()
    for attack, (score, predicted) in results.items():
        if canary_results:
            score = np.concatenate([score, canary_results[attack][0]])
            predicted = np.concatenate([predicted, canary_results[attack][1]])
        scores[f"score_{attack}"] = score
        scores[f"pred_{attack}"] = predicted.astype(int)
    paths = {name: args.out_dir / f"{name}.csv" for name in ("signals", "scores")}
    table = _attack_table(args, meta, model, inputs, evaluated, results, evaluation)
    if canary_results:
        worst = [
            worst_case_report(
                canary_inputs.target.is_member, score, predicted, evaluation.bootstrap, args.seed
            )
            for score, predicted in canary_results.values()
        ]
        table = pd.concat([table, pd.DataFrame(worst)], axis=1)
    table = table.assign(**{f"{name}_path": str(path) for name, path in paths.items()})
    table = table.assign(
        **{key: meta[key] for key in ("config_hash", "code_version", "device")},
    )
    write_csv(signals, paths["signals"])
    write_csv(scores, paths["scores"])
    write_csv(table, args.out_dir / "attacks.csv")
    print(table[["method", "density", "attack", "task_acc", "auc", "tpr_at_1pct_fpr"]].to_string())


def _parser() -> argparse.ArgumentParser:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by steps.split")
    p.add_argument("--model", required=True, help="model.safetensors of the target model")
    cli.add_shadows(p)
    p.add_argument(
        "--adversaries",
        nargs="*",
        default=[],
        type=Path,
        help="fitted network attackers (steps.fit_attackers or steps.references); one not "
        "given is fitted here on the shadow models, with --seed",
    )
    p.add_argument(
        "--references",
        choices=REFERENCE_KINDS,
        default="dense",
        help="what --shadows are, for the table: the target recipe's own references "
        "(steps.references) or dense shadow models",
    )
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of --split (steps.split), for the table"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the attackers and the bootstrap")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "evaluation")
    return p


def _attack_table(
    args: argparse.Namespace,
    meta: dict,
    model: nn.Module,
    inputs: attacks.AttackInputs,
    signals: pd.DataFrame,
    results: dict[str, attacks.Result],
    evaluation: specs.EvaluationSpec,
) -> pd.DataFrame:
    """One row per attack: the model, its task accuracy on the non-members and the attack's
    metrics, each with its 95 % interval (and RMIA's offline a, tuned on the references)."""
    target = inputs.target
    is_member, held_out = target.is_member, ~target.is_member
    correct = logits_of(signals)[held_out].argmax(1) == target.labels[held_out]
    description = pd.DataFrame(
        [
            {
                "dataset": args.dataset,
                "split": args.split_seed,
                "method": meta["method"],
                "variant": meta.get("variant", "default"),
                "density": meta["density"],
                "density_measured": measured_density(model),
                "seed": meta["seed"],
                "references": args.references,
                **accuracy_interval(correct),
                # what a method reports of itself, empty for every other method: DP-SGD's
                # (epsilon, delta) guarantee, MIA-Pruning's ADMM residual (near 0: W met the
                # sparsity constraint before the hard prune; large: it was magnitude pruning)
                **{
                    key: meta.get("report", {}).get(key, float("nan"))
                    for key in ("epsilon", "delta", "admm_residual")
                },
                "n_members": int(is_member.sum()),
                "n_nonmembers": int(held_out.sum()),
            }
        ]
    )
    rows = [
        {
            "attack": attack,
            **attack_report(is_member, score, predicted, evaluation.bootstrap, args.seed),
            "rmia_offline_a": inputs.population.offline_a if attack == "rmia" else float("nan"),
        }
        for attack, (score, predicted) in results.items()
    ]
    return description.merge(pd.DataFrame(rows), how="cross")


def _queried_sets(data: Data, seed: int) -> dict[str, np.ndarray]:
    """The target's samples to compute signals on, by `set`: the evaluated members and
    non-members, RMIA's population, and (if the split has canaries) the canaries that this
    target's training seed inserted and the held-out ones."""
    sets = {
        "member": set_indices(data.split, "target_train"),
        "non-member": set_indices(data.split, "target_out"),
        POPULATION: rmia_population(data.split),
    }
    canaries = set_indices(data.split, CANARY)
    if len(canaries):
        inserted = inserted_canaries(data.split, seed)
        member, nonmember = CANARY_SETS
        sets |= {member: inserted, nonmember: np.setdiff1d(canaries, inserted)}
    return sets


def _target(model: nn.Module, data: Data, signals: pd.DataFrame, features: bool) -> attacks.Signals:
    """The target's signals on these samples, with their features if an attack needs them."""
    matrix = feature_matrix(model, data, signals["index"].to_numpy()) if features else None
    return attacks.read_signals(signals, "target", matrix)


if __name__ == "__main__":
    cli.run(main)
