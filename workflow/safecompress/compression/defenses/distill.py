"""`distill`: a sparse student distilled from the dense target model, as the SafeCompress
reference code's knowledge-distillation baseline (JiePKU/MIA-SafeCompress, `train.py`
`kd_train`).

Trained sparse from the start, as the reference trains its student: the student is the sparse
model of dynamic sparse training (`compression.dst`, the reference's `Masking` around `kd_train`),
the teacher the trained dense model, frozen in evaluation mode. The reference's loss is

    (cross_entropy(student, y) + KD_loss(teacher, student)) / 2,
    KD_loss = mean over the batch of -sum_c softmax(teacher)_c * log_softmax(student)_c,

a soft cross-entropy at temperature 1. Here, with Hinton et al.'s temperature T and weight
alpha of the soft term, `(1 - alpha) * cross_entropy + alpha * T^2 * KD_loss(./T)`: T = 1 and
alpha = 1/2, the defaults, are the reference's loss exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from safecompress.compression.dst import dst_with
from safecompress.compression.job import Compressed, Job
from safecompress.config.specs import DistillSpec, DSTSpec
from safecompress.data.batches import TrainBatches
from safecompress.training.devices import forward, to_device
from safecompress.training.loop import Callback, Penalty
from safecompress.training.models import load_model


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The reference's `KD_loss` at temperature T, times T^2 (Hinton et al.: keeps the soft
    term's gradients on the scale of the hard term's as T grows)."""
    teacher = (teacher_logits / temperature).softmax(1)
    student = (student_logits / temperature).log_softmax(1)
    return -(teacher * student).sum(1).mean() * temperature**2


class Distillation(Callback):
    """The teacher's soft labels as a `loop.Callback`: its penalty turns the step's
    cross-entropy into the distillation loss. The batch reaches the teacher through a hook on
    the student's forward pass inside `penalty` (the penalty is given logits and labels only)."""

    def __init__(self, teacher: nn.Module, spec: DistillSpec):
        if spec.temperature <= 0 or not 0 <= spec.alpha <= 1:
            raise ValueError(
                f"distill.temperature must be > 0 and distill.alpha in [0, 1], got "
                f"{spec.temperature} and {spec.alpha}"
            )
        self.teacher, self.spec = teacher.eval().requires_grad_(False), spec

    @contextmanager
    def penalty(self, model: nn.Module) -> Iterator[Penalty]:
        batch: dict[str, torch.Tensor] = {}
        handle = model.register_forward_pre_hook(lambda _module, inputs: batch.update(x=inputs[0]))
        try:

            def penalty(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    teacher_logits = forward(self.teacher, batch["x"])
                soft = soft_cross_entropy(logits, teacher_logits, self.spec.temperature)
                return self.spec.alpha * (soft - F.cross_entropy(logits, labels))

            yield penalty
        finally:
            handle.remove()


def distill(job: Job, sparse: DSTSpec, distill: DistillSpec, dense: str) -> Compressed:
    """Dynamic sparse training of a student on the dense model `dense`'s soft labels."""

    def distillation(_model: nn.Module, _train: TrainBatches) -> Distillation:
        # the teacher is built after the student's start, so that start is `dst`'s
        teacher, _ = load_model(dense)
        to_device(teacher, job.device)
        return Distillation(teacher, distill)

    return dst_with(job, sparse, distillation)
