"""What the defenses share: the sparse start and the DST training of `methods`, with room for a
defense's own loss (a `loop.Regularizer`), optimiser or batches.

`methods.sparse_start` + `fit_dst` is `methods._sparse_training` with the DST update of
`methods.dst`, opened up for a defense's regulariser, optimiser or batches; `fit_dst_with` is
the common case, `dst` with a defense's own loss term (RelaxLoss, distillation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from ..batches import TrainBatches
from ..loop import Regularizer, make_optimizer
from ..mask_updates import DSTUpdate
from ..sparse import SparseEngine
from ..specs import DSTSpec, ScheduleSpec

if TYPE_CHECKING:  # methods will list the defenses: no import cycle at run time
    from ..methods import Job

# What every defense returns: the sparse model, its per-epoch history, its mask-update log, its
# layer densities at the start, and the per-model numbers it reports (DP-SGD's epsilon).
DefenseResult = tuple[nn.Module, pd.DataFrame, pd.DataFrame, dict[str, float], dict[str, float]]
Optimizer = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.MultiStepLR]


def fit_dst(
    job: Job,
    sparse: ScheduleSpec,
    growth: str,
    model: nn.Module,
    engine: SparseEngine,
    optimizer: Optimizer,
    train: TrainBatches,
    regularizer: Regularizer | None = None,
    stateful: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dynamic sparse training of `model` (whose masks `engine` owns) with `growth` regrowth on
    `sparse`'s schedule, resumable from the job's checkpoint. `model` may wrap the engine's
    model (Opacus); returns the history and the mask-update log."""
    from ..methods import _schedule, train_with_updates  # here: methods imports the defenses

    schedule = _schedule(sparse, job.train.epochs * train.steps_per_epoch)
    update = DSTUpdate(engine, optimizer[0], schedule, growth, job.generator("updates"))
    history = train_with_updates(
        job, model, engine, train, optimizer, update, regularizer, stateful
    )
    return history, update.table()


def fit_dst_with(
    job: Job, sparse: DSTSpec, regularizer: Callable[[TrainBatches], Regularizer]
) -> DefenseResult:
    """`dst` itself (the same sparse start, batches and mask updates) trained with a defense's
    own loss term, which `regularizer` builds from the training batches once the start is
    drawn."""
    from ..methods import sparse_start  # here: methods imports the defenses

    model, engine, start = sparse_start(job, sparse)
    batches = TrainBatches(job.members(), job.train, job.device)
    history, updates = fit_dst(
        job,
        sparse,
        sparse.growth,
        model,
        engine,
        make_optimizer(model, job.train),
        batches,
        regularizer=regularizer(batches),
    )
    return model, history, updates, start, {}
