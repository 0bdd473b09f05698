"""Step 3b: the K reference models of one recipe, trained by that recipe, in one job.

    python -m safecompress.steps.references --dataset digits \\
        --split results/digits/split0/split.csv \\
        --method relaxloss --density 0.1 \\
        --shadows results/digits/split0/shadow/0 results/digits/split0/shadow/1 \\
        --out-dir results/digits/split0/references/relaxloss/density0.1

Reference k trains exactly as the recipe's targets do (method, density, variant, every
section), on draw k of the attacker's pool standing in for the target's sets: its members,
known members and defender's held-out data (`data.splits.stand_in_split`), and, for the
methods that start from the dense model, dense shadow model k (trained on the same draw) as
its dense model. Calibrated on such references, an attack scores a sparse or defended target
on its own scale (Carlini et al., S&P 2022; Aerni, Zhang, Tramèr, CCS 2024); dense references
mis-scale it. Each reference k writes what a shadow model writes (k<k>/signals.csv,
features.npy, queries.csv); references.csv lists them and is written last. A killed job
resumes: a finished reference is kept, the one in training restarts from its last epoch.

With --attackers (the configured network attacks: nasr, whitebox), the job then fits each
one's attacker on the K references, as steps.fit_attackers fits it on the dense shadow
models, and writes it to attackers/<attack>.safetensors (whole or not at all) before
references.csv: every target of the recipe, of every seed, is attacked with the same one, so
it is fitted with one fixed seed (ATTACKER_SEED), not a target's. A rerun fits it again (the
workflow removes a job's outputs before running it); the fit is deterministic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from safecompress.compression.job import Job
from safecompress.data.splits import (
    MEMBER_SETS,
    QUERIED_SETS,
    Data,
    load_data,
    reference_seed,
    set_indices,
    stand_in_split,
)
from safecompress.io import atomic_path, config_hash, write_csv
from safecompress.privacy.attacks import NETWORK_ATTACKS
from safecompress.privacy.attacks.learned import save_adversary
from safecompress.privacy.signals import save_reference_signals
from safecompress.sparse.engine import measured_density
from safecompress.steps import cli
from safecompress.steps.fit_attackers import fit_adversaries
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.devices import pick_device
from safecompress.training.loop import seed_everything
from safecompress.training.provenance import code_revision

log = logging.getLogger(__name__)
DONE = "reference.json"  # written last in each reference's directory, with its fingerprint
ATTACKER_SEED = 0  # a recipe's attackers serve the targets of every seed


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser(__spec__.name, __doc__)
    cli.add_recipe(p)
    cli.add_shadows(p)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument(
        "--attackers",
        nargs="*",
        default=[],
        choices=NETWORK_ATTACKS,
        help="network attacks whose attacker to fit on the references (attackers/<attack>)",
    )
    args = p.parse_args(argv)
    recipe = cli.read_recipe(args)

    device = pick_device()
    data = load_data(recipe.read["data"], args.split)
    queried = set_indices(data.split, *QUERIED_SETS)
    rows = []
    for k, shadow in enumerate(args.shadows):
        out = args.out_dir / f"k{k}"
        recipe_id = {key: getattr(args, key) for key in ("dataset", "method", "density")}
        fingerprint = config_hash({**recipe.read, **recipe_id, "k": k, "code": code_revision()})
        done = out / DONE
        if done.exists() and json.loads(done.read_text())["fingerprint"] == fingerprint:
            log.info("reference %d of %d: done before, kept", k + 1, len(args.shadows))
        else:
            log.info("reference %d of %d: training", k + 1, len(args.shadows))
            summary = _train(recipe, data, k, shadow, out, fingerprint, device, queried)
            with atomic_path(done) as path:
                path.write_text(json.dumps({"fingerprint": fingerprint, **summary}))
        rows.append({"k": k, "directory": str(out), **json.loads(done.read_text())})
    if args.attackers:
        directories = [args.out_dir / f"k{k}" for k in range(len(args.shadows))]
        fitted = fit_adversaries(directories, args.attackers, ATTACKER_SEED)
        for attack, adversary in fitted.items():
            save_adversary(adversary, args.out_dir / "attackers" / f"{attack}.safetensors")
        log.info("attackers %s: fitted on the %d references", ", ".join(fitted), len(rows))
    write_csv(pd.DataFrame(rows).drop(columns="fingerprint"), args.out_dir / "references.csv")


def _train(
    recipe: cli.Recipe,
    data: Data,
    k: int,
    shadow: Path,
    out: Path,
    fingerprint: str,
    device: torch.device,
    queried: np.ndarray,
) -> dict[str, float]:
    """Train reference k of the recipe and save its signals; returns what references.csv lists."""
    stand_in = Data(data.x, data.y, stand_in_split(data.split, k), data.n_classes)
    seed = reference_seed(k)
    seed_everything(seed)
    checkpoint = Checkpoint(out / "checkpoint.pt", fingerprint)
    job = Job(
        stand_in,
        recipe.read["model"],
        recipe.read["train"],
        recipe.density,
        seed,
        device,
        checkpoint,
    )
    dense = {"dense": str(shadow / "model.safetensors")} if recipe.method.from_dense else {}
    result = recipe.method.function()(job, **recipe.sections, **dense)
    sets = {
        "member": set_indices(stand_in.split, *MEMBER_SETS),
        "non-member": set_indices(stand_in.split, "target_out"),
    }
    save_reference_signals(result.model, data, sets, queried, k, out)
    checkpoint.remove()
    return {
        "seed": seed,
        "density_measured": measured_density(result.model),
        "val_acc": float(result.history["val_acc"].iloc[-1]),
        "n_members": len(sets["member"]),
        "n_nonmembers": len(sets["non-member"]),
    }


if __name__ == "__main__":
    cli.run(main)
