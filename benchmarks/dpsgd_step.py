"""Time of one DP-SGD step of the evidence MLP: this project's step against Opacus's.

    PYTHONPATH=workflow python benchmarks/dpsgd_step.py [--batch 64] [--density 0.1]

On one thread, the evidence run's model (MLP 784-512-256-10, ERK masks at `--density`) and
batch size, random inputs; the median over `--repeats` steps after one warm-up step of:

- `sgd`: a plain SGD step (forward, backward, step), the floor;
- `opacus`: Opacus's `GradSampleModule` and `DPOptimizer`, which build every per-sample
  gradient (what `dpsgd` used until its per-sample gradients were computed as below);
- `ghost`: `dpsgd`'s step: `PerSampleClipping` (masked ghost norms, clipped sums by matrix
  products) and `PrivateStep` on the plain SGD optimiser.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from safecompress.compression.defenses.dpsgd import PoissonBatches, PrivateStep
from safecompress.compression.defenses.per_sample import PerSampleClipping
from safecompress.config.specs import DPSGDSpec, TrainSpec
from safecompress.data.splits import Samples
from safecompress.sparse.engine import SparseEngine
from safecompress.training.models import build_model

MODEL = {"arch": "mlp", "hidden": [512, 256]}


def masked_mlp(density: float) -> tuple[nn.Module, SparseEngine]:
    torch.manual_seed(0)
    model = build_model(MODEL, (1, 28, 28), 10)
    engine = SparseEngine.random_init(model, density, "erk", torch.Generator().manual_seed(0))
    return model, engine


def median_ms(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up: allocations, first-call dispatch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))

    def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

        return step

    model, _ = masked_mlp(args.density)
    plain = sgd_step(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))

    model, _ = masked_mlp(args.density)
    private = GradSampleModule(model, strict=False)
    opacus = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=args.batch,
    )

    model, engine = masked_mlp(args.density)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    members = Samples(torch.zeros(10 * args.batch, 1, 28, 28), torch.zeros(10 * args.batch))
    spec = TrainSpec(1, args.batch, 0.05, 0.9, False, 0.0, (0.5,), 0.1)
    batches = PoissonBatches(members, spec, torch.device("cpu"))  # its batch size, sample rate
    step = PrivateStep(PerSampleClipping(model), engine, DPSGDSpec(), batches, torch.Generator())
    sgd.register_step_pre_hook(step)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        times = {
            "sgd": median_ms(plain, args.repeats),
            "opacus": median_ms(sgd_step(private, opacus), args.repeats),
            "ghost": median_ms(sgd_step(model, sgd), args.repeats),
        }
    print(f"MLP 784-512-256-10, density {args.density}, batch {args.batch}, one thread")
    for name, ms in times.items():
        print(f"{name:>7}: {ms:7.1f} ms a step ({ms / times['sgd']:5.1f} x plain SGD)")


if __name__ == "__main__":
    main()
