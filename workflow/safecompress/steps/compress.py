"""Step 3: compress to one density with one method (see `safecompress.config.methods`).

    python -m safecompress.steps.compress --dataset digits \\
        --split results/digits/split0/split.csv \\
        --method safecompress --density 0.1 --seed 0 \\
        --out-dir results/digits/split0/safecompress/density0.1/seed0

The methods that start from the dense target (magnitude, advreg, miapruning, distill) also
need `--dense`, its model file. Writes model.safetensors (with what the method reports, e.g.
DP-SGD's epsilon, in its metadata), history.csv and updates.csv (every mask update; for
safecompress every candidate with its accuracy, leakage and whether it was selected), and with
safecompress.log_candidates candidates.npz: `index` (pool indices of the evaluated samples and
RMIA's population), `step`, `rung`, `candidate` and `logits` (one row per row of updates.csv,
float32, rows x samples x classes), for steps.validity. A killed
run restarts from its last epoch; a finished one leaves no checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safecompress.compression.job import Job
from safecompress.data.splits import load_data
from safecompress.io import config_hash, write_arrays, write_csv
from safecompress.sparse.engine import SparseEngine, measured_density
from safecompress.steps import cli
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import pick_device
from safecompress.training.loop import seed_everything
from safecompress.training.models import save_model
from safecompress.training.provenance import code_revision, provenance


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    cli.add_recipe(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dense", help="trained dense model (needed by the methods that start from it)")
    p.add_argument("--out-dir", required=True, type=Path)
    args = p.parse_args(argv)
    recipe = cli.read_recipe(args)
    extra = {}
    if recipe.method.from_dense:
        if not args.dense:
            raise ValueError(f"--method {args.method} needs --dense, the trained dense model")
        extra["dense"] = args.dense

    device = pick_device()
    data = load_data(recipe.read["data"], args.split)
    seed_everything(args.seed)
    job_id = {key: getattr(args, key) for key in ("dataset", "method", "density", "seed", "dense")}
    checkpoint = Checkpoint(
        args.out_dir / "checkpoint.pt",
        config_hash({**recipe.read, **job_id, "code": code_revision()}),
    )
    model_section, train = recipe.read["model"], recipe.read["train"]
    job = Job(data, model_section, train, args.density, args.seed, device, checkpoint)
    result = recipe.method.function()(job, **recipe.sections, **extra)
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
        **provenance(recipe.read, device),
    }
    write_csv(history, args.out_dir / "history.csv")
    write_csv(result.updates, args.out_dir / "updates.csv")
    if result.arrays:
        write_arrays(result.arrays, args.out_dir / "candidates.npz")
    save_model(model, args.out_dir / "model.safetensors", meta)
    checkpoint.remove()
    print(
        f"{args.method} d={args.density}: measured density {meta['density_measured']:.4f}, "
        f"val acc {history['val_acc'].iloc[-1]:.3f}"
    )


if __name__ == "__main__":
    cli.run(main)
