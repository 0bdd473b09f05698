"""SafeCompress: dynamic sparse training where, at every mask update, N candidate masks are
made, trained beside each other on the loop's batches and safety-tested (a simulated
membership inference attack on the defender's own data) by successive halving; the best
`val_acc - lambda * leakage` is kept (`updates.SafeCompressUpdate`). With `adversarial`, the
model also trains against the simulated attackers: the TSE extension. With `relaxloss`, the
selection wraps RelaxLoss's training (`safecompress_relaxloss`): the candidates then differ in
leakage around a model that already leaks less, which the plain loss gap cannot offer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from safecompress.compression.adversarial import regularizer_for
from safecompress.compression.defenses.relaxloss import RelaxLoss
from safecompress.compression.dst import sparse_start, train_sparse
from safecompress.compression.job import Compressed, Job
from safecompress.compression.safety import SafetyTest
from safecompress.compression.updates import CANDIDATE_KEYS, SafeCompressUpdate, Schedule
from safecompress.config.specs import (
    AdversarialSpec,
    RelaxLossSpec,
    SafeCompressSpec,
    ScheduleSpec,
)
from safecompress.data.batches import SharedBatches
from safecompress.data.splits import (
    EVALUATED_SETS,
    MEMBER_SETS,
    Data,
    Samples,
    rmia_population,
    set_indices,
)
from safecompress.training.loop import make_optimizer

# The safety test's members (config key safecompress.probe_members): every sample the
# defender trains on, or its known members only.
PROBE_MEMBERS = {"all": MEMBER_SETS, "known": ("known_members",)}


def safecompress(
    job: Job,
    sparse: ScheduleSpec,
    safecompress: SafeCompressSpec,
    adversarial: AdversarialSpec | None = None,
    relaxloss: RelaxLossSpec | None = None,
) -> Compressed:
    """Dynamic sparse training with safety-test-driven candidate selection (with adversarial
    training or RelaxLoss's objective, if given: the candidates train under the same term)."""
    if relaxloss is not None and any(s.relax for s in safecompress.strategies):
        raise ValueError("candidates with their own RelaxLoss target (relax) under RelaxLoss")
    train = SharedBatches(job.members(), job.train, job.device)
    model, engine, start = sparse_start(job, sparse)
    optimizer, scheduler = make_optimizer(model, job.train)
    probes = job.generator("probes")
    safety = SafetyTest(
        score=safecompress.safety_score,
        members=_probe(
            job.data, PROBE_MEMBERS[safecompress.probe_members], safecompress.probe_size, probes
        ),
        nonmembers=_probe(job.data, ("reference",), safecompress.probe_size, probes),
        two_sided=safecompress.two_sided,
    )
    total_steps = job.train.epochs * train.steps_per_epoch
    update = SafeCompressUpdate(
        model,
        engine,
        optimizer,
        Schedule.of(sparse, total_steps),
        list(safecompress.strategies),
        safecompress.lookahead,
        safety,
        safecompress.safety_weight,
        train,
        total_steps,
        {name: job.generator(name) for name in ("updates", "selection")},
        safecompress.min_z,
        safecompress.max_acc_drop,
    )
    callbacks = [update]
    if adversarial is not None:
        callbacks.append(regularizer_for(job, adversarial, model, train.steps_per_epoch))
    if relaxloss is not None:
        callbacks.append(RelaxLoss(relaxloss, train.steps_per_epoch))
    # candidates train under the loop's terms, which only the loop's steps move (the
    # attackers take as many steps as in dst_adv; RelaxLoss's epoch parity is the loop's)
    update.penalties = tuple(term.frozen() for term in callbacks[1:])
    watched = watched_indices(job.data.split)
    if safecompress.log_candidates:
        # For the validity analysis only (steps.validity): the evaluation's samples must never
        # influence training, so the selection does not read these logits.
        update.watched = job.data.take(watched)
    history = train_sparse(job, model, engine, train, (optimizer, scheduler), callbacks)
    update.clipped.set(0.0)  # the model leaves without the clipping candidates' hooks
    table, arrays = update.table(), {}
    if safecompress.log_candidates:
        arrays = {
            "index": watched,
            **{key: table[key].to_numpy(np.int64) for key in CANDIDATE_KEYS},
            "logits": update.watched_logits(),
        }
    return Compressed(model, history, start, table, arrays=arrays)


def watched_indices(split: pd.DataFrame) -> np.ndarray:
    """The pool indices whose logits the candidates log: the evaluated samples and RMIA's
    population, everything the evaluation's attacks read of a target."""
    return np.concatenate([set_indices(split, *EVALUATED_SETS), rmia_population(split)])


def _probe(
    data: Data, names: tuple[str, ...], size: int | str, generator: torch.Generator
) -> Samples:
    """The samples of the named sets for the safety test: all (`size` "all"), or a seeded
    random subset of at most `size`."""
    indices = set_indices(data.split, *names)
    if size != "all":
        indices = np.sort(indices[torch.randperm(len(indices), generator=generator)[:size].numpy()])
    return data.take(indices)
