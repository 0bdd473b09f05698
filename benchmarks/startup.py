"""Start-up cost of each pipeline step: what a job pays before it does any work.

    python benchmarks/startup.py [--runs 7] [--steps train attack ...] [--importtime]
    python benchmarks/startup.py --before /tmp/old/workflow     # before/after a change

For each step, the wall time of `python -m safecompress.steps.<step> --help` (imports and
argument parsing, no work) against `python -c "import torch"`, each the median of --runs fresh
processes, run interleaved (one of each per round, after one discarded warm-up round) so that
a slow moment of the machine hits all of them alike. The excess over torch is what the step
imports beyond torch (negative: the step imports no torch at all). For the steps that train
(train, references, compress, fit_attackers) it also times building the first optimizer after
importing the step: torch.optim imports torch._dynamo the first time an optimizer is built or
stepped (its methods are wrapped in torch._disable_dynamo and its step in a graph break, both
of which import torch._dynamo on the first call).

--before DIR also times the package in DIR (a folder holding a `safecompress` package, e.g.
the workflow/ folder of a checkout of an earlier commit), interleaved with the current one,
and prints both side by side.

--importtime adds, per step, the packages it imports beyond `import torch` and their own
import time, from `python -X importtime` (one run; its times are inflated by the tracing).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Every step module (a new one is timed too), in pipeline order where known.
ORDER = ("split", "train", "references", "fit_attackers", "compress", "attack", "summarize")
STEPS = tuple(
    sorted(
        (
            path.stem
            for path in (REPO / "workflow" / "safecompress" / "steps").glob("*.py")
            if path.stem not in ("__init__", "cli")
        ),
        key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name),
    )
)
# Steps that build an optimizer, and the one they build first.
TRAINING = {"train": "SGD", "references": "SGD", "compress": "SGD", "fit_attackers": "Adam"}
TORCH = ("-c", "import torch")
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}

# In a fresh process: import the step (as its job would), then build its first optimizer.
OPTIMIZER = """
import importlib, sys, time
import torch
importlib.import_module("safecompress.steps.{step}")
already = "torch._dynamo" in sys.modules
start = time.perf_counter()
torch.optim.{optimizer}([torch.zeros(4, requires_grad=True)], lr=0.1)
print(time.perf_counter() - start, int(already))
"""


def step_command(step: str) -> tuple[str, ...]:
    return ("-m", f"safecompress.steps.{step}", "--help")


def environment(package_dir: Path | None) -> dict[str, str]:
    """The environment of a run: the package in `package_dir` first on the path, if given."""
    if package_dir is None:
        return ENV
    path = os.pathsep.join(filter(None, (str(package_dir), ENV.get("PYTHONPATH"))))
    return {**ENV, "PYTHONPATH": path}


def wall(args: tuple[str, ...], env: dict[str, str]) -> float:
    """Seconds one fresh `python <args>` takes, output discarded."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - start


def optimizer_cost(step: str) -> tuple[float, bool]:
    """Seconds to build the step's first optimizer, and whether the step already had dynamo."""
    code = OPTIMIZER.format(step=step, optimizer=TRAINING[step])
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True, env=ENV
    ).stdout.split()
    return float(out[0]), out[1] == "1"


def imported(args: tuple[str, ...]) -> dict[str, int]:
    """Module -> its own import time (us) under `python -X importtime <args>`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    )
    times = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if match:
            times[match[3]] = int(match[1])
    return times


def beyond_torch(step: str, torch_modules: set[str], top: int) -> str:
    """The packages the step imports beyond torch, largest own import time first."""
    modules = imported(step_command(step))
    per_package: dict[str, int] = defaultdict(int)
    for module, us in modules.items():
        if module not in torch_modules:
            package = module.split(".")[0]
            if package == "safecompress":
                package = ".".join(module.split(".")[:3])
            per_package[package] += us
    ranked = sorted(per_package.items(), key=lambda item: -item[1])
    total = sum(per_package.values()) / 1e6
    shown = ", ".join(f"{name} {us / 1e6:.2f}" for name, us in ranked[:top])
    torch_note = "" if "torch" in modules else " (imports no torch)"
    return f"{step:<14} {total:5.2f} s beyond torch{torch_note}: {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command")
    parser.add_argument(
        "--steps", nargs="+", choices=STEPS, default=STEPS, metavar="STEP", help="steps to time"
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also time the safecompress package in DIR (put first on PYTHONPATH), interleaved",
    )
    parser.add_argument(
        "--importtime",
        action="store_true",
        help="also list what each step imports beyond torch (python -X importtime)",
    )
    parser.add_argument(
        "--top", type=int, default=8, help="packages to list per step with --importtime"
    )
    args = parser.parse_args()
    if args.before is not None and not (args.before / "safecompress").is_dir():
        parser.error(f"--before {args.before}: no safecompress package in it")

    variants = {"now": environment(None)}
    if args.before is not None:
        variants = {"before": environment(args.before.resolve()), **variants}
    commands = {("torch", "now"): (TORCH, ENV)}
    for step in args.steps:
        for variant, env in variants.items():
            commands[step, variant] = (step_command(step), env)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for round_ in range(args.runs + 1):  # round 0 warms the file cache and writes .pyc files
        for key, (command, env) in commands.items():
            seconds = wall(command, env)
            if round_:
                times[key].append(seconds)
    median = {key: statistics.median(values) for key, values in times.items()}
    optimizer = {
        step: [optimizer_cost(step) for _ in range(args.runs)]
        for step in args.steps
        if step in TRAINING
    }

    torch_s = median["torch", "now"]
    print(f"python {sys.version.split()[0]}, cpu cores: {os.cpu_count()}, median of {args.runs}")
    print(f"import torch: {torch_s:.2f} s")
    header = [f"{'step':<14}"]
    for variant in variants:
        header += [f"{variant + ' (s)':>12}", f"{'over torch':>11}"]
    print(" ".join([*header, f"{'first optimizer (s)':>20}"]))
    for step in args.steps:
        row = [f"{step:<14}"]
        for variant in variants:
            seconds = median[step, variant]
            row += [f"{seconds:12.2f}", f"{seconds - torch_s:11.2f}"]
        first = ""
        if step in optimizer:
            first = f"{statistics.median(cost for cost, _ in optimizer[step]):.2f}"
            if any(already for _, already in optimizer[step]):
                first += " (dynamo already in)"
        print(" ".join([*row, f"{first:>20}"]))

    if args.importtime:
        print("\nown import time (s, under -X importtime) of what each step imports beyond torch:")
        torch_modules = set(imported(TORCH))
        for step in args.steps:
            print(beyond_torch(step, torch_modules, args.top))


if __name__ == "__main__":
    main()
