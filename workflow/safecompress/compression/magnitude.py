"""Static baseline: one-shot layer-wise magnitude pruning of the trained dense model, then
fine-tuning with the masks fixed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from safecompress.compression.job import Compressed, Job
from safecompress.config.specs import MagnitudeSpec
from safecompress.data.batches import TrainBatches
from safecompress.sparse.engine import SparseEngine
from safecompress.training.devices import to_device
from safecompress.training.loop import Callback, KeepMasks, fit
from safecompress.training.models import load_model

# A defense's loss term for the fine-tuning: (model, steps per epoch) -> its callback.
Defense = Callable[[nn.Module, int], Callback]


def magnitude(
    job: Job, sparse: MagnitudeSpec, dense: str, defense: Defense | None = None
) -> Compressed:
    """Prune the dense model `dense` by magnitude, fine-tune it (under a `defense`'s penalty, if
    one is given)."""
    model, _ = load_model(dense)
    to_device(model, job.device)
    engine = SparseEngine.magnitude_init(model, job.density, sparse.distribution)
    start = engine.layer_density()
    spec = dataclasses.replace(job.train, epochs=sparse.finetune_epochs)
    train = TrainBatches(job.members(), spec, job.device)
    callbacks = [defense(model, train.steps_per_epoch)] if defense else []
    history = fit(
        model,
        train,
        job.heldout(),
        spec,
        job.seed_of("batches"),
        [*callbacks, KeepMasks(engine)],
        checkpoint=job.checkpoint,
    )
    return Compressed(model, history, start)
