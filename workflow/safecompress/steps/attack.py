"""Step 4: attack one target model with every evaluation attack.

    python -m safecompress.steps.attack --dataset digits --split results/digits/split.csv \\
        --model results/digits/dst/density0.1/seed0/model.safetensors \\
        --shadows results/digits/shadow/0 results/digits/shadow/1 \\
        --adversaries results/digits/attackers/seed0/nasr.safetensors \\
        --out-dir results/digits/dst/density0.1/seed0

The evaluated members are the target's `target_train` set (never the defender's known
members), the evaluated non-members its `target_out` set. The attacker knows its own pool
and the shadow models trained on it (each shadow directory: signals.csv, features.npy and
queries.csv, written by steps.train), and queries the target. The network attacks' fitted
attackers depend on the shadow models alone, so the workflow fits each once per seed
(steps.fit_attackers) and passes it as --adversaries. Writes signals.csv (per
evaluated sample: set, label, loss, logits), scores.csv (per sample and attack: score and
prediction) and attacks.csv (one row per attack: task accuracy and every attack metric with
its 95 % bootstrap interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from .. import attacks, specs
from ..attacks.learned import load_adversary
from ..attacks.scores import confidence, softmax
from ..devices import pick_device, predict_logits, to_device
from ..intervals import accuracy_interval, attack_report
from ..io import write_csv
from ..models import load_model
from ..signals import feature_matrix, logits_of, read_shadows, signal_table
from ..sparse import measured_density
from ..splits import Data, load_data, set_indices
from . import cli


def main(argv: Sequence[str] | None = None) -> None:
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
        help="fitted network attackers (steps.fit_attackers, this seed); one not given is "
        "fitted here on the shadow models",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the attackers and the bootstrap")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "evaluation")
    args = p.parse_args(argv)
    evaluation = specs.read(specs.EvaluationSpec, "evaluation", cli.section(args, "evaluation"))
    entry = cli.data_entry(args, args.dataset)

    model, meta = load_model(args.model)
    to_device(model, pick_device())
    data = load_data(entry, args.split)
    evaluated = {
        "member": set_indices(data.split, "target_train"),
        "non-member": set_indices(data.split, "target_out"),
    }
    signals = signal_table(model, data, evaluated)
    needs_features = "whitebox" in evaluation.attacks
    shadow_signals, shadow_features, queries = read_shadows(args.shadows, needs_features)
    inputs = attacks.AttackInputs(
        target=attacks.read_signals(
            signals,
            "target",
            feature_matrix(model, data, signals["index"].to_numpy()) if needs_features else None,
        ),
        shadow=attacks.read_signals(shadow_signals, "shadow", shadow_features),
        references=np.stack([_aligned(logits, signals) for logits in queries]),
        population=_population(model, data, shadow_signals),
        adversaries=dict(load_adversary(path) for path in args.adversaries),
    )
    results = attacks.run_attacks(inputs, evaluation.attacks, args.seed)

    is_member = inputs.target.is_member
    held_out = ~is_member
    correct = logits_of(signals)[held_out].argmax(1) == inputs.target.labels[held_out]
    scores = signals[["index", "set", "label"]].copy()
    rows = []
    for attack, (score, predicted) in results.items():
        scores[f"score_{attack}"] = score
        scores[f"pred_{attack}"] = predicted.astype(int)
        report = attack_report(is_member, score, predicted, evaluation.bootstrap, args.seed)
        rows.append({"attack": attack, **report})
    signals_path, scores_path = args.out_dir / "signals.csv", args.out_dir / "scores.csv"
    description = pd.DataFrame(
        [
            {
                "dataset": args.dataset,
                "method": meta["method"],
                "variant": meta.get("variant", "default"),
                "density": meta["density"],
                "density_measured": measured_density(model),
                "seed": meta["seed"],
                **accuracy_interval(correct),
                # DP-SGD's privacy guarantee at delta = 1/n; empty for every other method
                "epsilon": meta.get("report", {}).get("epsilon", float("nan")),
                "n_members": int(is_member.sum()),
                "n_nonmembers": int(held_out.sum()),
            }
        ]
    )
    table = description.merge(pd.DataFrame(rows), how="cross").assign(
        signals_path=str(signals_path),
        scores_path=str(scores_path),
        config_hash=meta["config_hash"],
        code_version=meta["code_version"],
        device=meta["device"],
    )
    write_csv(signals, signals_path)
    write_csv(scores, scores_path)
    write_csv(table, args.out_dir / "attacks.csv")
    print(table[["method", "density", "attack", "task_acc", "auc", "tpr_at_1pct_fpr"]].to_string())


def _aligned(queries: pd.DataFrame, signals: pd.DataFrame) -> np.ndarray:
    """A reference model's logits on the evaluated samples, in the target signals' order."""
    by_index = queries.set_index("index")
    missing = np.setdiff1d(signals["index"], by_index.index)
    if len(missing):
        raise ValueError(f"queries.csv lacks {len(missing)} evaluated samples; rerun the shadows")
    return logits_of(by_index.loc[signals["index"]])


def _population(model: nn.Module, data: Data, shadow: pd.DataFrame) -> attacks.Population:
    """RMIA's population: every sample of the attacker's pool that some shadow model did not
    train on, with the mean true-class probability of those shadow models (OUT references)."""
    out = shadow[shadow["set"] == "non-member"]
    labels = out["label"].to_numpy()
    probability = pd.Series(confidence(softmax(logits_of(out)), labels), index=out["index"])
    reference = probability.groupby(level=0).mean()
    indices = reference.index.to_numpy()
    samples = data.take(indices)
    logits = predict_logits(model, samples.x, autocast=False).double().numpy()
    return attacks.Population(logits, samples.y.numpy(), reference.to_numpy())


if __name__ == "__main__":
    cli.run(main)
