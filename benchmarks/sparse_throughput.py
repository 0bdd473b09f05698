"""Training throughput of dense vs SafeCompress training of CIFAR ResNet-18 (images/s).

    PYTHONPATH=workflow python benchmarks/sparse_throughput.py [--config config/paper.yaml]
        [--steps 20] [--batch 128] [--workers 0]

Times, on CIFAR-shaped inputs (3x32x32, 10 classes; throughput does not depend on the pixel
values, so no data set is needed), (a) dense training steps, (b) sparse training steps with
the masks re-applied after each step, and (c) one SafeCompress mask update (N candidates, each
trained `candidate_steps` steps and safety-tested on a probe), all through the training code
of the workflow (batches, augmentation, candidate selection). Batch size, augmentation,
loader workers, update interval, strategies, candidate steps, safety attack and probe size
come from the config's `train`, `sparse` and `safecompress` sections (those of the paper
grid by default). The SafeCompress epoch is steps x (b) + updates x (c), with one update
every `update_interval` steps; the target is SafeCompress epoch <= 1.2 x dense epoch. Runs on
CUDA when present (bf16 autocast, channels-last), else on the CPU, and says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import time

import torch

from safecompress.compression.safety import SafetyTest
from safecompress.compression.updates import SafeCompressUpdate, Schedule
from safecompress.config.settings import load_yaml
from safecompress.config.specs import Strategy, TrainSpec, read
from safecompress.data.batches import SharedBatches, TrainBatches
from safecompress.data.splits import Samples
from safecompress.sparse.engine import SparseEngine
from safecompress.training.devices import pick_device, to_device
from safecompress.training.loop import make_optimizer, train_step
from safecompress.training.models import build_model

CIFAR_TRAIN = 50_000
TARGET_RATIO = 1.2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(model, optimizer, batches: TrainBatches, steps: int, after_step) -> float:
    """Mean wall time of `steps` training steps after two warm-up steps."""
    generator = torch.Generator().manual_seed(0)
    stream = itertools.chain.from_iterable(batches.epoch(generator) for _ in itertools.count())
    for x, y in itertools.islice(stream, 2):  # warm-up: kernels, allocator, workers
        train_step(model, optimizer, x, y)
        after_step()
    synchronize(batches.device)
    start = time.perf_counter()
    for x, y in itertools.islice(stream, steps):
        train_step(model, optimizer, x, y)
        after_step()
    synchronize(batches.device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/paper.yaml", help="train/sparse/safecompress")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's)")
    parser.add_argument("--workers", type=int, help="loader workers (default: the config's)")
    parser.add_argument("--density", type=float, default=0.1)
    args = parser.parse_args()
    config = load_yaml(args.config)
    spec = dataclasses.replace(read(TrainSpec, "train", config["train"]), epochs=1)
    spec = dataclasses.replace(
        spec,
        batch_size=args.batch or spec.batch_size,
        workers=spec.workers if args.workers is None else args.workers,
    )
    section, sparse = config["safecompress"], config["sparse"]
    interval, lookahead = sparse["update_interval"], tuple(section["lookahead"])
    strategies = [Strategy(**s) for s in section["strategies"]]
    probe = section["probe_size"] if isinstance(section["probe_size"], int) else 1000
    device = pick_device()
    torch.manual_seed(0)
    n = max(4 * spec.batch_size, 2 * probe)
    data = Samples(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    batches = SharedBatches(data, spec, device)

    def resnet18() -> torch.nn.Module:
        return to_device(build_model({"arch": "resnet18"}, (3, 32, 32), 10), device)

    dense = resnet18()
    dense_step = seconds_per_step(
        dense, make_optimizer(dense, spec)[0], batches, args.steps, lambda: None
    )

    model = resnet18()
    engine = SparseEngine.random_init(model, args.density, "erk", torch.Generator().manual_seed(0))
    optimizer = make_optimizer(model, spec)[0]
    sparse_step = seconds_per_step(model, optimizer, batches, args.steps, engine.apply)
    safety = SafetyTest(
        section["safety_score"],
        Samples(data.x[:probe], data.y[:probe]),
        Samples(data.x[-probe:], data.y[-probe:]),
    )
    update = SafeCompressUpdate(
        model,
        engine,
        optimizer,
        Schedule(interval, sparse["prune_fraction"], 10**9, sparse["prune_floor"]),
        strategies,
        lookahead,
        safety,
        section["lambda"],
        batches,
        10**9,
        {name: torch.Generator().manual_seed(i) for i, name in enumerate(("updates", "selection"))},
        section["min_z"],
    )
    # One update spreads over its look-ahead: time the steps from the update to its decision
    # with the hook, minus the same number of plain sparse steps.
    step = iter(itertools.count(interval - 2))  # the two warm-up steps come first

    def hooked() -> None:
        engine.apply()
        update.after_step(next(step))

    window = lookahead[-1] + 1
    update_seconds = window * (
        seconds_per_step(model, optimizer, batches, window, hooked) - sparse_step
    )

    steps = math.ceil(CIFAR_TRAIN / spec.batch_size)
    dense_epoch = steps * dense_step
    safe_epoch = steps * sparse_step + (steps / interval) * update_seconds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"device: {name} ({device}); CIFAR ResNet-18, batch {spec.batch_size}, augment "
        f"{spec.augment}, workers {spec.workers}, density {args.density}, N = "
        f"{len(strategies)}, look-ahead {lookahead}, update every {interval} steps, "
        f"{section['safety_score']} safety score on {probe} + {probe} samples"
    )
    for label, seconds in (("dense step ", dense_step), ("sparse step", sparse_step)):
        images_per_s = spec.batch_size / seconds
        print(f"{label}     {1000 * seconds:8.1f} ms  {images_per_s:8.0f} images/s")
    print(f"one mask update {1000 * update_seconds:8.1f} ms (all candidates and safety tests)")
    ratio = safe_epoch / dense_epoch
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"epoch of {CIFAR_TRAIN} images: dense {dense_epoch:.1f} s, SafeCompress "
        f"{safe_epoch:.1f} s; ratio {ratio:.3f} ({verdict} the {TARGET_RATIO} target)"
    )


if __name__ == "__main__":
    main()
