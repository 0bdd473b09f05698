"""Step 2: train a dense model — the target (on target_train) or shadow model k.

    python -m safecompress.train --dataset digits --split results/digits/split.csv \\
        --role target --seed 0 --out-dir results/digits/dense/density1.0/seed0

Writes model.safetensors and history.csv (per-epoch train/validation loss and accuracy).
A shadow model also writes signals.csv (logits of its own members and non-members), from
which the attacks are calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import __version__, cli
from .batches import TrainBatches
from .checkpoint import Checkpoint
from .data import load_data, shadow_partition
from .io import config_hash, write_csv
from .models import build_model, save_model
from .signals import signal_table
from .training import TrainSpec, fit, pick_device, provenance, seed_everything, to_device

SHADOW_SEED_OFFSET = 10_000  # shadow model k trains with seed offset + k, apart from targets


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by safecompress.split")
    p.add_argument("--role", choices=("target", "shadow"), required=True)
    p.add_argument("--seed", type=int, default=0, help="target: training seed; shadow: model k")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "model", "train")
    args = p.parse_args(argv)
    spec, config = cli.dataset_sections(args, args.dataset, "model", "train")

    device = pick_device()
    data = load_data(spec, args.split)
    if args.role == "target":
        train, seed = data.set("target_train"), args.seed
    else:
        members, nonmembers = shadow_partition(data.split, args.seed)
        train, seed = data.take(members), SHADOW_SEED_OFFSET + args.seed

    seed_everything(seed)
    input_shape = tuple(train.x.shape[1:])
    model = to_device(build_model(config["model"], input_shape, data.n_classes), device)
    job = {"dataset": args.dataset, "role": args.role, "seed": args.seed, "v": __version__}
    checkpoint = Checkpoint(
        args.out_dir / "checkpoint.pt", config_hash({"data": spec, **config, **job})
    )
    spec_train = TrainSpec.from_config(config["train"])
    history = fit(
        model,
        TrainBatches(train, spec_train, device),
        data.set("reference"),
        spec_train,
        seed,
        checkpoint=checkpoint,
    )

    meta = {
        "dataset": args.dataset,
        "role": args.role,
        "method": "dense",
        "density": 1.0,
        "seed": args.seed,
        "model": config["model"],
        "input_shape": list(input_shape),
        "n_classes": data.n_classes,
        **provenance({"data": spec, **config}, device),
    }
    write_csv(history, args.out_dir / "history.csv")
    if args.role == "shadow":
        signals = signal_table(model, data, {"member": members, "non-member": nonmembers})
        signals.insert(0, "shadow", args.seed)
        write_csv(signals, args.out_dir / "signals.csv")
    save_model(model, args.out_dir / "model.safetensors", meta)
    checkpoint.remove()


if __name__ == "__main__":
    cli.run(main)
