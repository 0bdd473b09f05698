"""Mask updates during training: DST, and SafeCompress's candidates, safety test and selection."""

import dataclasses

import pandas as pd
import pytest
import torch

from helpers import SHORT_TRAINING
from safecompress.batches import TrainBatches
from safecompress.loop import fit, make_optimizer
from safecompress.mask_updates import DSTUpdate, SafeCompressUpdate, Schedule
from safecompress.models import build_model
from safecompress.safety import SafetyTest
from safecompress.sparse import SparseEngine
from safecompress.specs import Strategy
from safecompress.splits import Samples

SPEC = dataclasses.replace(SHORT_TRAINING, epochs=4, batch_size=16, lr=0.05)
SCHEDULE = Schedule(interval=5, prune_fraction=0.5, end_step=20)  # 24 steps: 6 x 4 epochs


def toy_data(n, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=generator)
    return Samples(x, (x.sum((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long())


def sparse_setup(seed=0):
    torch.manual_seed(seed)
    model = build_model({"arch": "mlp", "hidden": [32]}, (1, 4, 4), 4)
    engine = SparseEngine.random_init(model, 0.2, "erk", torch.Generator().manual_seed(seed))
    optimizer = make_optimizer(model, SPEC)
    return model, engine, optimizer


def run(update_factory, seed=0):
    model, engine, (optimizer, scheduler) = sparse_setup(seed)
    train, val = toy_data(96, 1), toy_data(48, 2)
    batches = TrainBatches(train, SPEC, torch.device("cpu"))
    update = update_factory(model, engine, optimizer, batches, val)

    def after_step(step):
        engine.apply()
        update(step)

    fit(model, batches, val, SPEC, seed, after_step, (optimizer, scheduler))
    return model, engine, update


def dst_factory(model, engine, optimizer, train, val):
    return DSTUpdate(engine, optimizer, SCHEDULE, "gradient", torch.Generator().manual_seed(0))


def safecompress_factory(strategies, safety_weight=1.0, candidate_steps=0):
    def factory(model, engine, optimizer, train, val):
        members = Samples(train.split.x[:32], train.split.y[:32])
        safety = SafetyTest("loss", members, Samples(val.x[:32], val.y[:32]))
        return SafeCompressUpdate(
            model,
            engine,
            optimizer,
            SCHEDULE,
            strategies,
            safety,
            safety_weight,
            candidate_steps,
            train,
            torch.Generator().manual_seed(0),
        )

    return factory


def test_schedule_updates_every_interval_until_the_end():
    steps = [s for s in range(1, 40) if SCHEDULE.fraction_at(s) is not None]
    assert steps == [5, 10, 15]
    assert SCHEDULE.fraction_at(5) > SCHEDULE.fraction_at(15) > 0


def test_one_candidate_without_extra_steps_is_exactly_dst():
    """SafeCompress with DST's single strategy and no candidate training reduces to DST."""
    dst_model, _, _ = run(dst_factory)
    safe_model, _, update = run(safecompress_factory([Strategy(1.0, "gradient")]))
    for (name, a), (_, b) in zip(
        dst_model.state_dict().items(), safe_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert len(update.records) == 3 and all(r["selected"] for r in update.records)


def test_every_candidate_is_logged_and_the_best_score_is_kept():
    strategies = [Strategy(1.0, "gradient"), Strategy(0.5, "random"), Strategy(1.5, "momentum")]
    _, engine, update = run(safecompress_factory(strategies, candidate_steps=2))
    log = pd.DataFrame(update.records)
    assert len(log) == 3 * len(strategies)
    assert set(log.columns) >= {
        "step",
        "strategy",
        "val_acc",
        "advantage",
        "auc",
        "score",
        "selected",
    }
    for _, group in log.groupby("step"):
        assert group["selected"].sum() == 1
        chosen = group[group["selected"]].iloc[0]
        assert chosen["score"] == group["score"].max()
        assert chosen["score"] == pytest.approx(chosen["val_acc"] - chosen["advantage"])
    # whatever candidate was kept, every layer still has exactly its initial number of weights
    _, initial, _ = sparse_setup(0)
    for name, mask in engine.masks().items():
        assert int(mask.sum()) == int(initial.masks()[name].sum())


def test_safety_weight_changes_which_candidate_wins():
    strategies = [Strategy(s, g) for s in (0.5, 1.0, 1.5) for g in ("random", "gradient")]
    _, _, neutral = run(safecompress_factory(strategies, 0.0, candidate_steps=2))
    _, _, safe = run(safecompress_factory(strategies, 100.0, candidate_steps=2))
    neutral_log, safe_log = pd.DataFrame(neutral.records), pd.DataFrame(safe.records)
    first = neutral_log["step"].min()
    at_first = [
        log[(log["step"] == first) & log["selected"]].iloc[0] for log in (neutral_log, safe_log)
    ]
    # with lambda = 0 the most accurate candidate wins; with a huge lambda the least attackable
    group = neutral_log[neutral_log["step"] == first]
    assert at_first[0]["val_acc"] == group["val_acc"].max()
    assert at_first[1]["advantage"] == group["advantage"].min()
