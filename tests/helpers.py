"""Shared by the tests: the snakemake command line, config edits, a small training spec."""

import copy
import os
import sys
from pathlib import Path
from typing import Any

from safecompress.config.specs import TrainSpec

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / ".test" / "config" / "config.yaml"
# Subprocess timeouts are safety nets for a hung process (a daemon that never answers, a
# snakemake that waits forever), never budgets: each is far above what the command takes on a
# slow, busy 2-core machine, so that no verdict depends on the machine's speed.
HUNG_STEP_S = 600  # one step, one dry run or config check: seconds to a minute there
HUNG_RUN_S = 3600  # one workflow run: a few minutes there
# Two short epochs of small batches: enough to see training change a model.
SHORT_TRAINING = TrainSpec(
    epochs=2,
    batch_size=8,
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    milestones=(0.5,),
    gamma=0.1,
)


def snakemake_command(workdir: Path, configfiles: list[Path], *options: str) -> list[str]:
    """Run this repository's workflow in `workdir` with `configfiles` (merged in order)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        *map(str, configfiles),
        *options,  # after the variadic --configfile
    ]


def workflow_env() -> dict[str, str]:
    """This interpreter's environment first on PATH (the jobs run `python`), hub offline."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def changed(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `config` with the dotted `key` set to `value` (deleted if value is KeyError)."""
    config = copy.deepcopy(config)
    *parents, last = key.split(".")
    node = config
    for name in parents:
        node = node[name]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return config


# The default config's split of a data pool (config/config.yaml, data.digits.split).
FRACTIONS = {
    "target_train": 0.2,
    "known_members": 0.07,
    "target_out": 0.2,
    "shadow_train": 0.27,
    "shadow_out": 0.17,
    "reference": 0.08,
}

# A long sweep of every defense's strength (as config/evidence.yaml's `curves` once was), for
# the tests of curves and their figures: independent of how many points the evidence run
# can afford.
SWEEPS = {
    "dpsgd": {"dpsgd.noise_multiplier": [0.005, 0.02, 0.3]},
    "relaxloss": {"relaxloss.alpha": [0.2, 1.0]},
    "advreg": {"adversarial.weight": [0.3, 1.0]},
    "distill": {"distill.temperature": [4.0, 10.0]},
}
