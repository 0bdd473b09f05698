"""Step 3: compress to one density with one method (see `safecompress.config.methods`).

    python -m safecompress.steps.compress --dataset digits --split results/digits/split.csv \\
        --method safecompress --density 0.1 --seed 0 \\
        --out-dir results/digits/safecompress/density0.1/seed0

The methods that start from the dense target (magnitude, advreg, miapruning, distill) also
need `--dense`, its model file. Writes model.safetensors (with what the method reports, e.g.
DP-SGD's epsilon, in its metadata), history.csv and updates.csv (every mask update; for
safecompress every candidate with its accuracy, leakage and whether it was selected). A killed
run restarts from its last epoch; a finished one leaves no checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safecompress.compression.job import Job
from safecompress.config import specs
from safecompress.config.methods import METHOD_SECTIONS, METHODS, REGISTRY
from safecompress.config.settings import check_section
from safecompress.data.splits import load_data
from safecompress.io import config_hash, write_csv
from safecompress.sparse.engine import SparseEngine, measured_density
from safecompress.steps import cli
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import pick_device
from safecompress.training.loop import seed_everything
from safecompress.training.models import save_model
from safecompress.training.provenance import code_revision, provenance


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    p.add_argument("--dataset", required=True, help="data set name (a key of the config's data)")
    p.add_argument("--split", required=True, help="split table written by steps.split")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--density", type=float, required=True, help="fraction of weights kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dense", help="trained dense model (needed by --method magnitude)")
    p.add_argument("--variant", default="default", help="name of an ablation variant, if any")
    p.add_argument("--out-dir", required=True, type=Path)
    cli.add_sections(p, "data", "model", "train", *METHOD_SECTIONS)
    args = p.parse_args(argv)
    if not 0.0 < args.density < 1.0:
        raise ValueError(f"--density must be in (0, 1), got {args.density}")
    method = REGISTRY[args.method]
    extra = {}
    if method.from_dense:
        if not args.dense:
            raise ValueError(f"--method {args.method} needs --dense, the trained dense model")
        extra["dense"] = args.dense
    entry = cli.data_entry(args, args.dataset)
    model_section = cli.dataset_section(args, args.dataset, "model")
    check_section("model", model_section)
    train = specs.read(specs.TrainSpec, "train", cli.dataset_section(args, args.dataset, "train"))
    sections = {
        name: specs.read(spec, name, cli.section(args, name))
        for name, spec in method.sections.items()
    }

    device = pick_device()
    data = load_data(entry, args.split)
    seed_everything(args.seed)
    read = {"data": entry, "model": model_section, "train": train, **sections}
    job_id = {key: getattr(args, key) for key in ("dataset", "method", "density", "seed", "dense")}
    checkpoint = Checkpoint(
        args.out_dir / "checkpoint.pt",
        config_hash({**read, **job_id, "code": code_revision()}),
    )
    job = Job(data, model_section, train, args.density, args.seed, device, checkpoint)
    result = method.function()(job, **sections, **extra)
    model, history = result.model, result.history

    meta = {
        "dataset": args.dataset,
        "role": "target",
        "method": args.method,
        "variant": args.variant,
        "density": args.density,
        "density_measured": measured_density(model),
        "layer_density_start": result.start_density,
        "report": result.report,
        "layer_density_end": SparseEngine(model).layer_density(),
        "seed": args.seed,
        "model": model_section,
        "input_shape": list(data.x.shape[1:]),
        "n_classes": data.n_classes,
        **provenance(read, device),
    }
    write_csv(history, args.out_dir / "history.csv")
    write_csv(result.updates, args.out_dir / "updates.csv")
    save_model(model, args.out_dir / "model.safetensors", meta)
    checkpoint.remove()
    print(
        f"{args.method} d={args.density}: measured density {meta['density_measured']:.4f}, "
        f"val acc {history['val_acc'].iloc[-1]:.3f}"
    )


if __name__ == "__main__":
    cli.run(main)
