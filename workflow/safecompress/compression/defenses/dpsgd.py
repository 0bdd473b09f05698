"""`dpsgd`: DP-SGD (Abadi et al., "Deep learning with differential privacy", CCS 2016) through
Opacus, inside dynamic sparse training.

Trained sparse from the start, as DP-SGD trains from scratch: the DST of `compression.dst` in which
every optimiser step is a DP-SGD step. Per step:

1. a Poisson-sampled batch: each member joins independently with probability q = B / n
   (Opacus's `DPDataLoader`; the sampling the RDP analysis assumes);
2. per-sample gradients (Opacus `GradSampleModule`); those of pruned weights are zeroed
   *before* clipping, so the clipping norm C is spent on the weights that exist;
3. each sample's gradient clipped to norm <= C, the sum plus N(0, sigma^2 C^2) noise, divided
   by B (Opacus `DPOptimizer`);
4. the noise drawn for pruned weights is dropped and the masks re-applied after the step, so
   noise never revives a pruned weight (nor fills its momentum).

Mask updates are SET's: drop the smallest magnitudes, regrow at random. Both read only the
released weights (post-processing, no privacy cost); RigL's gradient regrowth would need the
gradients of pruned weights, which step 2 never computes. The Opacus RDP accountant counts
every step; the model reports epsilon at `dpsgd.delta` (default 1e-5, well below 1/n).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn

from safecompress.compression.dst import fit_dst, sparse_start
from safecompress.compression.job import Compressed, Job
from safecompress.config.specs import DPSGDSpec, ScheduleSpec
from safecompress.data.batches import TrainBatches
from safecompress.sparse.engine import SparseEngine
from safecompress.training.loop import Callback, make_optimizer

# SET regrowth: the only criterion that needs no gradient of a pruned weight (see above).
GROWTH = "random"


class PoissonBatches(TrainBatches):
    """The members as DP-SGD samples them: every step's batch takes each member independently
    with probability `sample_rate` = batch_size / n, so its size varies around batch_size (and
    is empty with probability (1 - q)^n, e^-32 at the default: a noise-only step, whose
    cross-entropy the history records as NaN)."""

    @property
    def sample_rate(self) -> float:
        return self.batch_size / len(self)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps_per_epoch):
            rows = (torch.rand(len(self), generator=generator) < self.sample_rate).nonzero()[:, 0]
            rows = rows.to(self.split.x.device)
            yield self._prepare(self.split.x[rows], self.split.y[rows], generator)


class MaskedDPOptimizer(DPOptimizer):
    """Opacus's DP-SGD step for a model whose masks `engine` owns: per-sample gradients of
    pruned weights are zeroed before clipping, and their noise is dropped before the step."""

    def __init__(self, optimizer: torch.optim.Optimizer, engine: SparseEngine, **kwargs: Any):
        super().__init__(optimizer, **kwargs)
        self.engine = engine

    def _masked_weights(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for name, mask in self.engine.masks().items():
            yield self.engine.layers[name].weight, mask

    def clip_and_accumulate(self) -> None:
        for weight, mask in self._masked_weights():
            weight.grad_sample.mul_(mask)  # (batch, *shape) x (*shape)
        super().clip_and_accumulate()

    def add_noise(self) -> None:
        super().add_noise()
        for weight, mask in self._masked_weights():
            weight.grad.mul_(mask)


class Accounting(Callback):
    """The privacy accountant and the noise's own generator, as `fit`'s checkpoint holds
    state: epsilon counts every step and the noise stream resumes exactly, on a GPU too (fit
    restores only the CPU's global generator)."""

    def __init__(self, accountant: RDPAccountant, noise: torch.Generator):
        self.accountant, self.noise = accountant, noise

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self.accountant.state_dict(), "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.load_state_dict(state["accountant"])
        self.noise.set_state(state["noise"])


def check_private(model: nn.Module) -> None:
    """Refuse a model whose per-sample gradients are not per sample (BatchNorm mixes a batch's
    samples), in Opacus's own words. The mask buffers are per-weight constants: allowed."""
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(
            "dpsgd needs per-sample gradients, which this model.arch cannot give: "
            + "; ".join(str(error).split(". ")[0] for error in errors)
        )


def dpsgd(job: Job, sparse: ScheduleSpec, dpsgd: DPSGDSpec) -> Compressed:
    """DP-SGD inside SET-style dynamic sparse training; reports epsilon at `dpsgd.delta`."""
    if dpsgd.noise_multiplier <= 0 or dpsgd.max_grad_norm <= 0 or not 0 < dpsgd.delta < 1:
        raise ValueError(
            f"dpsgd.noise_multiplier and dpsgd.max_grad_norm must be > 0 and dpsgd.delta in "
            f"(0, 1), got {dpsgd.noise_multiplier}, {dpsgd.max_grad_norm} and {dpsgd.delta}"
        )
    model, engine, start = sparse_start(job, sparse)
    check_private(model)
    batches = PoissonBatches(job.members(), job.train, job.device)
    sgd, scheduler = make_optimizer(model, job.train)
    # the noise's own generator, checkpointed (see Accounting), seeded by a draw from the
    # run's stream after the model's initialisation: it replays no other generator's numbers
    noise = torch.Generator(device=job.device).manual_seed(int(torch.randint(2**62, ())))
    # strict=False: strict mode refuses every buffer, the masks included (see check_private)
    private = GradSampleModule(model, strict=False)
    optimizer = MaskedDPOptimizer(
        sgd,
        engine,
        noise_multiplier=dpsgd.noise_multiplier,
        max_grad_norm=dpsgd.max_grad_norm,
        expected_batch_size=job.train.batch_size,
        generator=noise,
    )
    accountant = RDPAccountant()
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(batches.sample_rate))
    with warnings.catch_warnings():
        # Opacus's hooks on the first layer, whose input needs no gradient: harmless
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        history, updates = fit_dst(
            job,
            sparse,
            GROWTH,
            private,
            engine,
            (optimizer, scheduler),
            batches,
            [Accounting(accountant, noise)],
        )
    private.to_standard_module()
    report = {
        "epsilon": accountant.get_epsilon(dpsgd.delta),
        "delta": dpsgd.delta,
        "noise_multiplier": dpsgd.noise_multiplier,
        "max_grad_norm": dpsgd.max_grad_norm,
        "sample_rate": batches.sample_rate,
    }
    return Compressed(model, history, start, updates, report)
