"""`dpsgd`: DP-SGD (Abadi et al., "Deep learning with differential privacy", CCS 2016) inside
dynamic sparse training, with Opacus's accountant and per-layer samplers.

Trained sparse from the start, as DP-SGD trains from scratch: the DST of `compression.dst` in which
every optimiser step is a DP-SGD step. Per step:

1. a Poisson-sampled batch: each member joins independently with probability q = B / n
   (Opacus's `DPDataLoader`; the sampling the RDP analysis assumes);
2. per-sample gradients (`per_sample.PerSampleClipping`: ghost norms for linear layers,
   Opacus's samplers for the rest); those of pruned weights are zeroed *before* clipping, so
   the clipping norm C is spent on the weights that exist;
3. each sample's gradient clipped to norm <= C, the sum plus N(0, sigma^2 C^2) noise, divided
   by B (as Opacus's `DPOptimizer` does);
4. the noise drawn for pruned weights is dropped and the masks re-applied after the step, so
   noise never revives a pruned weight (nor fills its momentum).

Mask updates are SET's: drop the smallest magnitudes, regrow at random. Both read only the
released weights (post-processing, no privacy cost); RigL's gradient regrowth would need the
gradients of pruned weights, which step 2 never computes. The Opacus RDP accountant counts
every step; the model reports epsilon at `dpsgd.delta` (default 1e-5, well below 1/n).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from opacus.accountants import RDPAccountant
from opacus.validators import ModuleValidator
from torch import nn

from safecompress.compression.defenses.per_sample import PerSampleClipping
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


class PrivateStep(Callback):
    """DP-SGD's step, as a pre-step hook of the SGD optimiser: each parameter's gradient becomes
    the clipped sum of its masked per-sample gradients (`PerSampleClipping`) plus
    N(0, sigma^2 C^2) noise, dropped on pruned weights, over the expected batch size, as
    Opacus's `DPOptimizer` forms it; the accountant counts the step. A fit callback too, so the
    accountant and the noise's own generator resume exactly, on a GPU as well (fit restores
    only the CPU's global generator)."""

    def __init__(
        self,
        clipping: PerSampleClipping,
        engine: SparseEngine,
        spec: DPSGDSpec,
        batches: PoissonBatches,
        noise: torch.Generator,
    ):
        self.clipping, self.engine, self.spec, self.noise = clipping, engine, spec, noise
        self.batch_size, self.sample_rate = batches.batch_size, batches.sample_rate
        self.accountant = RDPAccountant()

    def __call__(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        masks = self.engine.weight_masks()
        sums, _ = self.clipping.clipped_sum(self.spec.max_grad_norm, masks)
        std = self.spec.noise_multiplier * self.spec.max_grad_norm
        for group in optimizer.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                noisy = sums[p] + torch.normal(
                    0.0, std, p.shape, device=p.device, generator=self.noise
                )
                p.grad = (noisy * masks[p] if p in masks else noisy) / self.batch_size
        self.accountant.step(
            noise_multiplier=self.spec.noise_multiplier, sample_rate=self.sample_rate
        )

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
    # the noise's own generator, checkpointed (see PrivateStep), seeded by a draw from the
    # run's stream after the model's initialisation: it replays no other generator's numbers
    noise = torch.Generator(device=job.device).manual_seed(int(torch.randint(2**62, ())))
    clipping = PerSampleClipping(model)
    step = PrivateStep(clipping, engine, dpsgd, batches, noise)
    sgd.register_step_pre_hook(step)
    history, updates = fit_dst(
        job, sparse, GROWTH, model, engine, (sgd, scheduler), batches, [step]
    )
    clipping.remove()
    report = {
        "epsilon": step.accountant.get_epsilon(dpsgd.delta),
        "delta": dpsgd.delta,
        "noise_multiplier": dpsgd.noise_multiplier,
        "max_grad_norm": dpsgd.max_grad_norm,
        "sample_rate": batches.sample_rate,
    }
    return Compressed(model, history, start, updates, report)
