"""Step 3: compress to one density with one method — magnitude, dst or safecompress.

    python -m safecompress.compress --dataset digits --split results/digits/split.csv \\
        --method safecompress --density 0.1 --seed 0 \\
        --dense results/digits/dense/density1.0/seed0/model.safetensors \\
        --out-dir results/digits/safecompress/density0.1/seed0

magnitude:     prune the trained dense model once by weight magnitude, then fine-tune.
dst:           dynamic sparse training from a random ERK mask, one prune/grow strategy.
safecompress:  dynamic sparse training where, at every mask update, N candidate masks are
               made, each passes the safety test (a simulated membership inference attack on
               the defender's own data), and the best `val_acc - lambda * advantage` is kept.

Writes model.safetensors, history.csv and updates.csv (every mask update; for safecompress
every candidate with its accuracy, attack numbers and whether it was selected).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import __version__, cli
from .batches import TrainBatches
from .checkpoint import Checkpoint
from .compression import (
    DSTUpdate,
    LoggedUpdate,
    SafeCompressUpdate,
    SafetyTest,
    Schedule,
    Strategy,
)
from .data import Data, Split, load_data, set_indices
from .io import config_hash, write_csv
from .models import build_model, load_model, save_model
from .sparse import SparseEngine, measured_density
from .training import (
    TrainSpec,
    fit,
    make_optimizer,
    pick_device,
    provenance,
    seed_everything,
    to_device,
)

METHODS = ("magnitude", "dst", "safecompress")


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by safecompress.split")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--density", type=float, required=True, help="fraction of weights kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dense", help="trained dense model (needed by --method magnitude)")
    p.add_argument("--variant", default="default", help="name of an ablation variant, if any")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "model", "train", "sparse", "safecompress")
    args = p.parse_args(argv)
    if not 0.0 < args.density < 1.0:
        raise ValueError(f"--density must be in (0, 1), got {args.density}")
    if args.method == "magnitude" and not args.dense:
        raise ValueError("--method magnitude needs --dense, the trained dense model to prune")
    spec, config = cli.dataset_sections(
        args, args.dataset, "model", "train", "sparse", "safecompress"
    )

    device = pick_device()
    data = load_data(spec, args.split)
    seed_everything(args.seed)
    compressor = {"magnitude": magnitude, "dst": dst, "safecompress": safecompress}[args.method]
    # Resumable: a killed run restarts from its last epoch; a finished one leaves no checkpoint.
    job = {key: getattr(args, key) for key in ("dataset", "method", "density", "seed", "dense")}
    checkpoint = Checkpoint(
        args.out_dir / "checkpoint.pt",
        config_hash({"data": spec, **config, **job, "v": __version__}),
    )
    model, history, updates, start_density = compressor(data, args, config, device, checkpoint)

    meta = {
        "dataset": args.dataset,
        "role": "target",
        "method": args.method,
        "variant": args.variant,
        "density": args.density,
        "density_measured": measured_density(model),
        "layer_density_start": start_density,
        "layer_density_end": SparseEngine(model).layer_density(),
        "seed": args.seed,
        "model": config["model"],
        "input_shape": list(data.x.shape[1:]),
        "n_classes": data.n_classes,
        **provenance({"data": spec, **config}, device),
    }
    write_csv(history, args.out_dir / "history.csv")
    write_csv(updates, args.out_dir / "updates.csv")
    save_model(model, args.out_dir / "model.safetensors", meta)
    checkpoint.remove()
    print(
        f"{args.method} d={args.density}: measured density {meta['density_measured']:.4f}, "
        f"val acc {history['val_acc'].iloc[-1]:.3f}"
    )


Result = tuple[torch.nn.Module, pd.DataFrame, pd.DataFrame, dict[str, float]]


def magnitude(
    data: Data, args: Any, config: dict[str, Any], device: torch.device, checkpoint: Checkpoint
) -> Result:
    """Static baseline: one-shot layer-wise magnitude pruning of the dense model, fine-tuning."""
    model, _ = load_model(args.dense)
    to_device(model, device)
    engine = SparseEngine.magnitude_init(model, args.density, config["sparse"]["distribution"])
    start = engine.layer_density()
    spec = TrainSpec.from_config(config["train"], epochs=config["sparse"]["finetune_epochs"])
    history = fit(
        model,
        TrainBatches(data.set("target_train"), spec, device),
        data.set("reference"),
        spec,
        args.seed,
        after_step=lambda step: engine.apply(),
        checkpoint=checkpoint,
    )
    return model, history, pd.DataFrame(columns=["step"]), start


def dst(
    data: Data, args: Any, config: dict[str, Any], device: torch.device, checkpoint: Checkpoint
) -> Result:
    """Dynamic sparse training without a safety test."""

    def make_update(model, engine, optimizer, train: TrainBatches) -> DSTUpdate:
        generator = torch.Generator().manual_seed(args.seed)
        schedule = _schedule(train.steps_per_epoch, config)
        return DSTUpdate(engine, optimizer, schedule, config["sparse"]["growth"], generator)

    return _sparse_training(data, args, config, device, checkpoint, make_update)


def safecompress(
    data: Data, args: Any, config: dict[str, Any], device: torch.device, checkpoint: Checkpoint
) -> Result:
    """Dynamic sparse training with safety-test-driven candidate selection."""
    section = config["safecompress"]

    def make_update(model, engine, optimizer, train: TrainBatches) -> SafeCompressUpdate:
        generator = torch.Generator().manual_seed(args.seed)
        safety = SafetyTest(
            attack=section["safety_attack"],
            members=_probe(data, "target_train", section["probe_size"], generator),
            nonmembers=_probe(data, "reference", section["probe_size"], generator),
        )
        return SafeCompressUpdate(
            model,
            engine,
            optimizer,
            _schedule(train.steps_per_epoch, config),
            [Strategy(s["scale"], s["growth"]) for s in section["strategies"]],
            safety,
            section["lambda"],
            section["candidate_steps"],
            train,
            generator,
        )

    return _sparse_training(data, args, config, device, checkpoint, make_update)


def _sparse_training(
    data: Data,
    args: Any,
    config: dict[str, Any],
    device: torch.device,
    checkpoint: Checkpoint,
    make_update: Callable[..., LoggedUpdate],
) -> Result:
    """Random ERK masks, then training with mask updates from `make_update`'s hook."""
    spec = TrainSpec.from_config(config["train"])
    train = TrainBatches(data.set("target_train"), spec, device)
    model = build_model(config["model"], tuple(data.x.shape[1:]), data.n_classes)
    to_device(model, device)
    engine = SparseEngine.random_init(
        model,
        args.density,
        config["sparse"]["distribution"],
        torch.Generator().manual_seed(args.seed),
        # the 1/sqrt(density) rescaling suits fresh weights, not a pretrained transformer's
        rescale=config["model"]["arch"] != "transformer",
    )
    start = engine.layer_density()
    optimizer, scheduler = make_optimizer(model, spec)
    update = make_update(model, engine, optimizer, train)

    def after_step(step: int) -> None:
        engine.apply()
        update(step)

    history = fit(
        model,
        train,
        data.set("reference"),
        spec,
        args.seed,
        after_step,
        (optimizer, scheduler),
        checkpoint=checkpoint,
        stateful={"update": update},
    )
    return model, history, update.table(), start


def _schedule(steps_per_epoch: int, config: dict[str, Any]) -> Schedule:
    sparse = config["sparse"]
    return Schedule(
        interval=sparse["update_interval"],
        prune_fraction=sparse["prune_fraction"],
        end_step=int(sparse["stop_fraction"] * config["train"]["epochs"] * steps_per_epoch),
    )


def _probe(data: Data, name: str, size: int, generator: torch.Generator) -> Split:
    """A seeded random subset of at most `size` samples of one set for the safety test."""
    indices = set_indices(data.split, name)
    return data.take(indices[torch.randperm(len(indices), generator=generator)[:size].numpy()])


if __name__ == "__main__":
    cli.run(main)
