"""Step 4: attack one target model with every evaluation attack, calibrated on shadow models.

    python -m safecompress.steps.attack --dataset digits --split results/digits/split.csv \\
        --model results/digits/dst/density0.1/seed0/model.safetensors \\
        --shadow-signals results/digits/shadow/0/signals.csv results/digits/shadow/1/signals.csv \\
        --out-dir results/digits/dst/density0.1/seed0

Members are the target's evaluated members (target_train; never the defender's known
members), non-members the held-out target_out set. Writes
signals.csv (per sample: set, label, loss, logits), scores.csv (per sample and attack: score
and prediction) and attacks.csv (one row per attack: task accuracy and attack metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import attacks, specs
from ..devices import pick_device, to_device
from ..io import read_csv, write_csv
from ..models import load_model
from ..signals import SIGNAL_COLUMNS, logits_of, signal_table
from ..sparse import measured_density
from ..splits import load_data, set_indices
from . import cli


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by steps.split")
    p.add_argument("--model", required=True, help="model.safetensors of the target model")
    p.add_argument(
        "--shadow-signals",
        nargs="+",
        required=True,
        help="signals.csv of each shadow model (written by steps.train)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the attack classifier")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "evaluation")
    args = p.parse_args(argv)
    evaluation = specs.read(specs.EvaluationSpec, "evaluation", cli.section(args, "evaluation"))
    entry = cli.data_entry(args, args.dataset)

    device = pick_device()
    model, meta = load_model(args.model)
    to_device(model, device)
    data = load_data(entry, args.split)
    signals = signal_table(
        model,
        data,
        {
            "member": set_indices(data.split, "target_train"),
            "non-member": set_indices(data.split, "target_out"),
        },
    )
    shadow = pd.concat(
        [
            read_csv(path, required=("shadow", *SIGNAL_COLUMNS), complete=True)
            for path in args.shadow_signals
        ],
        ignore_index=True,
    )
    metrics, scores = attacks.run_attacks(signals, shadow, evaluation.attacks, args.seed)

    held_out = signals[signals["set"] == "non-member"]
    task_acc = float((logits_of(held_out).argmax(1) == held_out["label"].to_numpy()).mean())
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
                "task_acc": task_acc,
            }
        ]
    )
    table = description.merge(metrics, how="cross").assign(
        signals_path=str(signals_path),
        scores_path=str(scores_path),
        config_hash=meta["config_hash"],
        code_version=meta["code_version"],
        device=meta["device"],
    )
    write_csv(signals, signals_path)
    write_csv(scores, scores_path)
    write_csv(table, args.out_dir / "attacks.csv")
    print(table[["method", "density", "attack", "task_acc", "attack_acc", "auc"]].to_string())


if __name__ == "__main__":
    cli.run(main)
