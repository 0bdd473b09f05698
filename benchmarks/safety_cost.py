"""Wall-time cost of SafeCompress's safety test: SafeCompress vs DST without a test.

    python benchmarks/safety_cost.py [--config config/config.yaml] [--density 0.1] [--repeats 7]

Both methods train the same model for the same epochs on the default data, in this process
(no interpreter or import start-up in the timing), alternating, `--repeats` times; the median
of the per-repeat ratios is compared. SafeCompress's kept candidate takes exactly DST's SGD
steps; the cost is the losing candidates' look-ahead steps and the safety tests.
Target: ratio <= 1.3 with the config's strategies and look-ahead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

from safecompress.compression.job import Job
from safecompress.compression.safety import SafetyTest
from safecompress.compression.updates import SafeCompressUpdate, _Copy
from safecompress.config import specs
from safecompress.config.methods import REGISTRY
from safecompress.config.settings import load_yaml
from safecompress.data.batches import SharedBatches
from safecompress.data.sources import load_pool
from safecompress.data.splits import load_data, make_split
from safecompress.io import write_csv
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.loop import seed_everything

TARGET_RATIO = 1.3
# SafeCompress's extra work, timed apart: what each part's calls add up to in a run.
PARTS = {
    "look-ahead steps": (_Copy, "step"),
    "safety tests": (SafetyTest, "run"),
    "making candidates": (SafeCompressUpdate, "_make_candidates"),
    "logged logits (log_candidates)": (SafeCompressUpdate, "_watch"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    config = load_yaml(args.config)
    spec = config["data"][args.dataset]
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        split_path = Path(tmp) / "split.csv"
        split = make_split(len(load_pool(spec).y), spec["split"], config["split_seeds"][0])
        write_csv(split, split_path)
        data = load_data(spec, split_path)
        train = specs.read(specs.TrainSpec, "train", config["train"])
        runs: dict[str, list[float]] = {"dst": [], "safecompress": []}
        logs: dict[str, pd.DataFrame] = {}
        parts: list[dict[str, float]] = []
        for repeat in range(args.repeats):
            for method, times in runs.items():  # alternating, so drift hits both alike
                checkpoint = Checkpoint(Path(tmp) / f"{method}{repeat}.pt", "benchmark")
                seed_everything(repeat)  # as the compress step does: both start from one init
                totals = dict.fromkeys(PARTS, 0.0)
                start = time.perf_counter()
                job = Job(
                    data, config["model"], train, args.density, 0, torch.device("cpu"), checkpoint
                )
                sections = {
                    name: specs.read(spec, name, config[name])
                    for name, spec in REGISTRY[method].sections.items()
                }
                with timed_parts(totals):
                    logs[method] = REGISTRY[method].function()(job, **sections).updates
                times.append(time.perf_counter() - start)
                if method == "safecompress":
                    parts.append(totals)
        steps = train.epochs * SharedBatches(job.members(), train, job.device).steps_per_epoch

    section = config["safecompress"]
    n = len(section["strategies"])
    ratio = statistics.median(
        safe / dst for safe, dst in zip(runs["safecompress"], runs["dst"], strict=True)
    )
    print(
        f"data {args.dataset}, density {args.density}, {config['train']['epochs']} epochs, "
        f"N = {n} candidates, lookahead = {section['lookahead']}, safety score "
        f"{section['safety_score']} on {section['probe_size']} samples, "
        f"update_interval = {config['sparse']['update_interval']}"
    )
    for method, times in runs.items():
        print(f"{method:>12}: {statistics.median(times):6.2f} s (median of {args.repeats})")
    dst = statistics.median(runs["dst"])
    shares = [
        f"{label} {statistics.median(p[label] for p in parts):.3f} s "
        f"({100 * statistics.median(p[label] for p in parts) / dst:.0f} %)"
        for label in PARTS
    ]
    print("where the extra time goes (median s, % of DST's): " + ", ".join(shares))
    extra, tests = lookahead_steps(logs["safecompress"]), len(logs["safecompress"])
    print(
        f"SafeCompress's extra work: {extra} SGD steps of the losing candidates "
        f"(+{100 * extra / steps:.0f} % of DST's {steps}), {tests} safety tests, "
        f"{logs['safecompress']['step'].nunique()} mask updates"
    )
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"safecompress / dst wall time, median of per-repeat ratios: {ratio:.3f} "
        f"({verdict} the {TARGET_RATIO} target)"
    )


@contextmanager
def timed_parts(totals: dict[str, float]) -> Iterator[None]:
    """Add the wall time of every call of each of PARTS to `totals`, for the block."""
    originals = {label: getattr(owner, name) for label, (owner, name) in PARTS.items()}

    def timer(label: str):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return originals[label](*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start

        return call

    for label, (owner, name) in PARTS.items():
        setattr(owner, name, timer(label))
    try:
        yield
    finally:
        for label, (owner, name) in PARTS.items():
            setattr(owner, name, originals[label])


def lookahead_steps(updates: pd.DataFrame) -> int:
    """The losing candidates' SGD steps in a SafeCompress log: at each rung of an update, every
    tested candidate but the loop's own trained since the previous rung."""
    steps = 0
    for _, selection in updates.groupby("step"):
        previous = 0
        for _, rung in selection.groupby("rung"):
            ahead = int(rung["lookahead"].iloc[0])
            steps += (len(rung) - 1) * (ahead - previous)
            previous = ahead
    return steps


if __name__ == "__main__":
    main()
