"""Training throughput of dense vs SafeCompress training of CIFAR ResNet-18 (images/s).

    PYTHONPATH=workflow python benchmarks/sparse_throughput.py [--steps 20] [--batch 128]

Times, on CIFAR-shaped inputs (3x32x32, 10 classes; throughput does not depend on the pixel
values, so no data set is needed), (a) dense training steps, (b) sparse training steps with
the masks re-applied after each step, and (c) one SafeCompress mask update (N candidates, each
trained `candidate_steps` steps and safety-tested on a probe). The SafeCompress epoch is
steps x (b) + updates x (c), with one update every `update_interval` steps; the target is
SafeCompress epoch <= 1.2 x dense epoch. Runs on CUDA when present (bf16 autocast,
channels-last), else on the CPU, and says which.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from safecompress.compression import SafeCompressUpdate, SafetyTest, Schedule, Strategy
from safecompress.data import Split
from safecompress.models import build_model
from safecompress.sparse import SparseEngine
from safecompress.training import TrainSpec, make_optimizer, pick_device, to_device, train_step

CIFAR_TRAIN = 50_000
TARGET_RATIO = 1.2
STRATEGIES = [
    Strategy(1.0, "gradient"),
    Strategy(0.5, "gradient"),
    Strategy(1.5, "random"),
    Strategy(1.0, "momentum"),
]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(model, optimizer, data: Split, batch: int, steps: int, after_step) -> float:
    device = data.x.device
    for _ in range(2):  # warm-up: kernels, allocator, channels-last conversion
        train_step(model, optimizer, data.x[:batch], data.y[:batch])
        after_step()
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        rows = slice((step * batch) % (len(data) - batch), None)
        train_step(model, optimizer, data.x[rows][:batch], data.y[rows][:batch])
        after_step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--update-interval", type=int, default=100)
    parser.add_argument("--candidate-steps", type=int, default=4)
    parser.add_argument("--probe", type=int, default=512, help="probe samples per side")
    args = parser.parse_args()
    device = pick_device()
    torch.manual_seed(0)
    n = max(4 * args.batch, 2 * args.probe)
    data = Split(
        torch.randn(n, 3, 32, 32, device=device), torch.randint(0, 10, (n,), device=device)
    )
    spec = TrainSpec(
        epochs=1,
        batch_size=args.batch,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        milestones=(0.5,),
        gamma=0.1,
    )

    dense = to_device(build_model({"arch": "resnet18"}, (3, 32, 32), 10), device)
    dense_step = seconds_per_step(
        dense, make_optimizer(dense, spec)[0], data, args.batch, args.steps, lambda: None
    )

    model = to_device(build_model({"arch": "resnet18"}, (3, 32, 32), 10), device)
    engine = SparseEngine.random_init(model, args.density, "erk", torch.Generator().manual_seed(0))
    optimizer = make_optimizer(model, spec)[0]
    sparse_step = seconds_per_step(model, optimizer, data, args.batch, args.steps, engine.apply)
    probe = Split(data.x[: args.probe], data.y[: args.probe])
    safety = SafetyTest("loss", probe, probe, Split(data.x[-args.probe :], data.y[-args.probe :]))
    update = SafeCompressUpdate(
        model,
        engine,
        optimizer,
        Schedule(1, 0.5, 10**9),
        STRATEGIES,
        safety,
        1.0,
        args.candidate_steps,
        data,
        args.batch,
        torch.Generator().manual_seed(0),
    )
    update(1)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    update(2)
    synchronize(device)
    update_seconds = time.perf_counter() - start

    steps = math.ceil(CIFAR_TRAIN / args.batch)
    dense_epoch = steps * dense_step
    safe_epoch = steps * sparse_step + (steps / args.update_interval) * update_seconds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"device: {name} ({device}); CIFAR ResNet-18, batch {args.batch}, density "
        f"{args.density}, N = {len(STRATEGIES)}, candidate_steps = {args.candidate_steps}, "
        f"update every {args.update_interval} steps, probe {args.probe} per side"
    )
    print(f"dense step      {1000 * dense_step:8.1f} ms  {args.batch / dense_step:8.0f} images/s")
    print(f"sparse step     {1000 * sparse_step:8.1f} ms  {args.batch / sparse_step:8.0f} images/s")
    print(f"one mask update {1000 * update_seconds:8.1f} ms (all candidates and safety tests)")
    ratio = safe_epoch / dense_epoch
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(
        f"epoch of {CIFAR_TRAIN} images: dense {dense_epoch:.1f} s, SafeCompress "
        f"{safe_epoch:.1f} s; ratio {ratio:.3f} ({verdict} the {TARGET_RATIO} target)"
    )


if __name__ == "__main__":
    main()
