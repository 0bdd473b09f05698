"""Step 2: train a dense model: the target (on its members) or shadow model k.

    python -m safecompress.steps.train --dataset digits \\
        --split results/digits/split0/split.csv \\
        --role target --seed 0 --out-dir results/digits/split0/dense/density1.0/seed0

Writes model.safetensors and history.csv (per-epoch train/validation loss and accuracy).
A shadow model is also the attacker's reference model and writes what the attacks read:
signals.csv (its logits on its own members and non-members) with features.npy (the input of
its output layer, row for row), and queries.csv (its logits on the samples the attacker asks
about: the target's target_train, target_out and canaries, whose membership it does not
know). A
killed run restarts from its last epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safecompress.config import specs
from safecompress.config.settings import check_section
from safecompress.data.batches import TrainBatches
from safecompress.data.splits import (
    QUERIED_SETS,
    load_data,
    reference_seed,
    set_indices,
    shadow_partition,
    target_members,
)
from safecompress.io import config_hash, write_csv
from safecompress.privacy.signals import save_reference_signals
from safecompress.steps import cli
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import pick_device, to_device
from safecompress.training.loop import fit, seed_everything
from safecompress.training.models import build_model, save_model
from safecompress.training.provenance import code_revision, provenance


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by steps.split")
    p.add_argument("--role", choices=("target", "shadow"), required=True)
    p.add_argument("--seed", type=int, default=0, help="target: training seed; shadow: model k")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "model", "train")
    args = p.parse_args(argv)
    entry = cli.data_entry(args, args.dataset)
    model_section = cli.dataset_section(args, args.dataset, "model")
    check_section("model", model_section)
    train_spec = specs.read(
        specs.TrainSpec, "train", cli.dataset_section(args, args.dataset, "train")
    )

    device = pick_device()
    data = load_data(entry, args.split)
    if args.role == "target":
        members, seed = target_members(data.split, args.seed), args.seed
    else:
        members, nonmembers = shadow_partition(data.split, args.seed)
        seed = reference_seed(args.seed)
    train = data.take(members)

    seed_everything(seed)
    input_shape = tuple(train.x.shape[1:])
    model = to_device(build_model(model_section, input_shape, data.n_classes), device)
    read = {"data": entry, "model": model_section, "train": train_spec}
    job = {"dataset": args.dataset, "role": args.role, "seed": args.seed}
    checkpoint = Checkpoint(
        args.out_dir / "checkpoint.pt", config_hash({**read, **job, "code": code_revision()})
    )
    history = fit(
        model,
        TrainBatches(train, train_spec, device),
        data.set("reference"),
        train_spec,
        seed,
        checkpoint=checkpoint,
    )

    meta = {
        "dataset": args.dataset,
        "role": args.role,
        "method": "dense",
        "density": 1.0,
        "seed": args.seed,
        "model": model_section,
        "input_shape": list(input_shape),
        "n_classes": data.n_classes,
        **provenance(read, device),
    }
    write_csv(history, args.out_dir / "history.csv")
    if args.role == "shadow":
        save_reference_signals(
            model,
            data,
            {"member": members, "non-member": nonmembers},
            set_indices(data.split, *QUERIED_SETS),
            args.seed,
            args.out_dir,
        )
    save_model(model, args.out_dir / "model.safetensors", meta)
    checkpoint.remove()


if __name__ == "__main__":
    cli.run(main)
