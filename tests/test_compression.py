"""Mask updates during training: DST, and SafeCompress's candidates, safety test and selection."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import SHORT_TRAINING
from safecompress.compression import job as jobs
from safecompress.compression.adversarial import AdversarialRegularizer
from safecompress.compression.defenses.relaxloss import RelaxLoss, relaxloss
from safecompress.compression.dst import dst
from safecompress.compression.safecompress import safecompress, watched_indices
from safecompress.compression.safety import SafetyTest
from safecompress.compression.updates import DSTUpdate, SafeCompressUpdate, Schedule
from safecompress.config.specs import (
    AdversarialSpec,
    DSTSpec,
    RelaxLossSpec,
    SafeCompressSpec,
    ScheduleSpec,
    Strategy,
    TrainSpec,
)
from safecompress.data.batches import SharedBatches
from safecompress.data.splits import Data, Samples, make_split, set_indices
from safecompress.sparse.engine import SparseEngine
from safecompress.training.checkpoint import Checkpoint
from safecompress.training.loop import KeepMasks, fit, make_optimizer
from safecompress.training.models import build_model

SPEC = dataclasses.replace(SHORT_TRAINING, epochs=4, batch_size=16, lr=0.05)
SCHEDULE = Schedule(interval=5, prune_fraction=0.5, end_step=20)  # 24 steps: 6 x 4 epochs
TOTAL_STEPS = 24
DST_STRATEGY = Strategy(1.0, "gradient")


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


def run(update_factory, seed=0, spec=SPEC, checkpoint=None):
    model, engine, (optimizer, scheduler) = sparse_setup(seed)
    train, val = toy_data(96, 1), toy_data(48, 2)
    batches = SharedBatches(train, spec, torch.device("cpu"))
    update = update_factory(model, engine, optimizer, batches, val)
    fit(
        model,
        batches,
        val,
        spec,
        seed,
        [KeepMasks(engine), update],
        (optimizer, scheduler),
        checkpoint=checkpoint,
    )
    return model, engine, update


def dst_factory(growth="gradient"):
    def factory(model, engine, optimizer, train, val):
        return DSTUpdate(engine, optimizer, SCHEDULE, growth, torch.Generator().manual_seed(7))

    return factory


def safecompress_factory(
    strategies, safety_weight=1.0, lookahead=(0,), score="loss_auc", schedule=SCHEDULE
):
    def factory(model, engine, optimizer, train, val):
        members = Samples(train.split.x[:48], train.split.y[:48])
        safety = SafetyTest(score, members, val)
        return SafeCompressUpdate(
            model,
            engine,
            optimizer,
            schedule,
            strategies,
            lookahead,
            safety,
            safety_weight,
            train,
            TOTAL_STEPS,
            {"updates": torch.Generator().manual_seed(7), "selection": torch.Generator()},
        )

    return factory


def same_state(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_schedule_updates_every_interval_until_the_end():
    steps = [s for s in range(1, 40) if SCHEDULE.fraction_at(s) is not None]
    assert steps == [5, 10, 15]
    assert SCHEDULE.fraction_at(5) > SCHEDULE.fraction_at(15) > 0


def test_prune_fraction_decays_to_its_floor_not_to_nothing():
    schedule = Schedule(interval=10, prune_fraction=0.5, end_step=100, prune_floor=0.1)
    fractions = [schedule.fraction_at(s) for s in range(10, 100, 10)]
    assert fractions == sorted(fractions, reverse=True)
    assert 0.1 < fractions[-1] < 0.11 and fractions[0] < 0.5


def test_default_config_decides_after_the_last_learning_rate_drop():
    config = yaml.safe_load((Path(__file__).parent.parent / "config/config.yaml").read_text())
    sparse, train = config["sparse"], config["train"]
    spec = ScheduleSpec(**{f.name: sparse[f.name] for f in dataclasses.fields(ScheduleSpec)})
    steps_per_epoch = 16  # 485 digits members in batches of 32
    total = train["epochs"] * steps_per_epoch
    schedule = Schedule.of(spec, total)
    updates = [s for s in range(1, total + 1) if schedule.fraction_at(s) is not None]
    last_drop = max(train["milestones"]) * total
    assert any(s > last_drop for s in updates)
    assert min(schedule.fraction_at(s) for s in updates) >= sparse["prune_floor"]
    lookahead = config["safecompress"]["lookahead"]
    assert updates[-1] + lookahead[-1] <= total  # the last selection is decided in training


def test_one_candidate_is_exactly_dst_whatever_its_lookahead():
    """SafeCompress with DST's single strategy reduces to DST: look-ahead steps are the
    loop's own steps, not extra ones."""
    dst_model, _, _ = run(dst_factory())
    for lookahead in ((0,), (3,)):
        safe_model, _, update = run(safecompress_factory([DST_STRATEGY], lookahead=lookahead))
        same_state(dst_model, safe_model)
        assert len(update.records) == 3 and all(r["selected"] for r in update.records)


@pytest.mark.slow
def test_identical_candidates_with_halving_are_exactly_dst():
    """Whichever copy survives, the kept model took exactly the loop's SGD steps on the
    loop's batches: the same model as DST's, bit for bit."""
    dst_model, _, _ = run(dst_factory())
    safe_model, _, update = run(safecompress_factory([DST_STRATEGY] * 5, lookahead=(1, 2, 4)))
    same_state(dst_model, safe_model)
    log = pd.DataFrame(update.records)
    assert list(log.groupby("step").size()) == [5 + 3 + 2] * 3  # 5 -> 3 -> 2 -> 1 per update
    assert (log.groupby("step")["moved"].nunique() == 1).all()  # identical candidates


@pytest.mark.slow
def test_every_candidate_is_logged_at_every_rung_and_the_best_score_is_kept():
    strategies = [
        Strategy(1.0, "gradient"),
        Strategy(0.5, "random"),
        Strategy(1.5, "momentum"),
        Strategy(1.0, "leakage", prune="leakage", budget="global", init="random"),
    ]
    _, engine, update = run(safecompress_factory(strategies, lookahead=(1, 3)))
    log = pd.DataFrame(update.records)
    assert set(log.columns) == set(SafeCompressUpdate.columns)
    assert len(log) == 3 * (4 + 2)
    for _, group in log.groupby("step"):
        first, last = group[group["rung"] == 0], group[group["rung"] == 1]
        assert (
            len(first) == 4 and (first["lookahead"] == 1).all() and (last["lookahead"] == 3).all()
        )
        # the better half of the first rung goes on
        assert set(last["candidate"]) == set(first.nlargest(2, "score")["candidate"])
        assert group["selected"].sum() == 1
        chosen = group[group["selected"]].iloc[0]
        assert chosen["rung"] == 1 and chosen["score"] == last["score"].max()
        assert chosen["score"] == pytest.approx(chosen["val_acc"] - chosen["leakage"])
        assert (group["leakage_se"] > 0).all() and (group["moved"] > 0).all()
    # global budgets move weights between layers, but the total stays
    _, initial, _ = sparse_setup(0)
    total = sum(int(m.sum()) for m in initial.masks().values())
    assert sum(int(m.sum()) for m in engine.masks().values()) == total


@pytest.mark.slow
def test_safety_weight_changes_which_candidate_wins():
    strategies = [Strategy(s, g) for s in (0.5, 1.0, 1.5) for g in ("random", "gradient")]
    _, _, neutral = run(safecompress_factory(strategies, 0.0, lookahead=(2,)))
    _, _, safe = run(safecompress_factory(strategies, 100.0, lookahead=(2,)))
    neutral_log, safe_log = pd.DataFrame(neutral.records), pd.DataFrame(safe.records)
    first = neutral_log["step"].min()
    at_first = [
        log[(log["step"] == first) & log["selected"]].iloc[0] for log in (neutral_log, safe_log)
    ]
    # with lambda = 0 the most accurate candidate wins; with a huge lambda the least leaky
    group = neutral_log[neutral_log["step"] == first]
    assert at_first[0]["val_acc"] == group["val_acc"].max()
    assert at_first[1]["leakage"] == group["leakage"].min()


# How a candidate trains otherwise than DST's, a value that binds on the toy data (the toy's
# loss stays above 1, so RelaxLoss needs a target above it), and one that never binds.
TRAINED_OTHERWISE = {"clip": (0.01, 1e9), "relax": (2.0, 1e-9)}


@pytest.mark.parametrize("key", TRAINED_OTHERWISE)
def test_a_kept_candidate_trains_so_until_the_next_update(tmp_path, key):
    """A candidate that clips (or trains on RelaxLoss's objective) does so in its look-ahead,
    and once kept the loop's model does so until the next update, where DST's own candidate
    does not: kept at every update here, it is the run whose only candidate does so, bit for
    bit, also resumed from a checkpoint taken while the loop does so. A value that never binds
    is DST."""
    binds, never = TRAINED_OTHERWISE[key]
    otherwise = Strategy(1.0, "gradient", **{key: binds})
    alone, _, _ = run(safecompress_factory([otherwise], lookahead=(2,)))
    factory = safecompress_factory([DST_STRATEGY, otherwise], lookahead=(2,))
    chosen, _, update = run(factory)
    log = pd.DataFrame(update.records)
    assert log[key].tolist() == [0.0, binds] * 3 and log[log["selected"]]["candidate"].eq(1).all()
    same_state(alone, chosen)
    # the update at 15 is decided at 17: the loop trains so at the end of epoch 3 (step 18,
    # an odd epoch: RelaxLoss's parity must resume too)
    checkpoint = killed_at(factory, 20, tmp_path)
    saved = torch.load(checkpoint.path, weights_only=True)
    assert saved["step"] == 18 and saved["callbacks"][1][key] == binds
    resumed, _, _ = run(factory, checkpoint=checkpoint)
    same_state(alone, resumed)
    dst_model, _, _ = run(dst_factory())
    assert not torch.equal(dst_model.state_dict()["1.weight"], alone.state_dict()["1.weight"])
    unbound, _, _ = run(safecompress_factory([Strategy(1.0, "gradient", **{key: never})]))
    for x, y in zip(dst_model.state_dict().values(), unbound.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y)


def test_fit_saves_a_checkpoint_only_when_it_is_due(tmp_path):
    """At most every `every` seconds (none in a short run), at every epoch with 0."""
    run(dst_factory(), checkpoint=Checkpoint(tmp_path / "late.pt", "toy", every=3600))
    assert not (tmp_path / "late.pt").exists()
    run(dst_factory(), checkpoint=Checkpoint(tmp_path / "due.pt", "toy", every=0))
    assert torch.load(tmp_path / "due.pt", weights_only=True)["epoch"] == SPEC.epochs


def test_lookahead_must_end_before_the_next_update():
    with pytest.raises(ValueError, match="update_interval"):
        run(safecompress_factory([DST_STRATEGY], lookahead=(2, 6)))
    with pytest.raises(ValueError, match="increasing"):
        run(safecompress_factory([DST_STRATEGY], lookahead=(3, 2)))


class Killed(Exception):
    pass


def killed_at(factory, step, tmp_path):
    """Run `factory`'s update with a checkpoint every epoch until it is killed at `step`;
    the checkpoint."""

    def killed(*args):
        update = factory(*args)
        after_step = update.after_step

        def hook(at):
            if at == step:
                raise Killed
            after_step(at)

        update.after_step = hook
        return update

    checkpoint = Checkpoint(tmp_path / "checkpoint.pt", "test", every=0)
    with pytest.raises(Killed):
        run(killed, checkpoint=checkpoint)
    return checkpoint


def test_a_selection_in_flight_at_a_checkpoint_resumes_exactly(tmp_path):
    """The copies, the halving state and the generators are checkpointed: a run stopped
    while a selection spans the end of an epoch resumes to the same model and log."""
    schedule = Schedule(interval=6, prune_fraction=0.5, end_step=20)  # updates at 6, 12, 18
    strategies = [
        Strategy(1.0, "gradient"),
        Strategy(1.0, "random", clip=0.05),  # its clipping resumes too, in a copy or the loop
        Strategy(1.0, "gradient", relax=2.0),  # and its objective, in its epoch's parity
        Strategy(1.5, "leakage"),
    ]
    factory = safecompress_factory(strategies, lookahead=(1, 4), schedule=schedule)
    reference, _, reference_update = run(factory)

    # epoch 2 ended at step 12, the selection begun there is in flight at 14
    checkpoint = killed_at(factory, 14, tmp_path)
    saved = torch.load(checkpoint.path, weights_only=True)
    assert saved["epoch"] == 2 and saved["callbacks"][1]["selection"]["start"] == 12
    assert len(saved["callbacks"][1]["selection"]["copies"]) == len(strategies) - 1
    resumed, _, resumed_update = run(factory, checkpoint=checkpoint)
    same_state(reference, resumed)
    pd.testing.assert_frame_equal(reference_update.table(), resumed_update.table())


# End to end through `methods`: one seed, independent generators per purpose.


TOY_EPOCHS = 3


def toy_job(tmp_path, seed=0, epochs=TOY_EPOCHS):
    pool = toy_data(400, 3)
    fractions = {
        "target_train": 0.3,
        "known_members": 0.1,
        "target_out": 0.2,
        "shadow_train": 0.15,
        "shadow_out": 0.15,
        "reference": 0.1,
    }
    data = Data(pool.x, pool.y, make_split(400, fractions, 0), 4)
    train = TrainSpec(epochs, 16, 0.05, 0.9, True, 0.0, (0.5,), 0.1)
    checkpoint = Checkpoint(tmp_path / f"{seed}.pt", "toy", every=0)
    torch.manual_seed(seed)  # the model's initial weights
    model = {"arch": "mlp", "hidden": [32]}
    return jobs.Job(data, model, train, 0.2, seed, torch.device("cpu"), checkpoint)


SPARSE = {
    "distribution": "erk",
    "prune_fraction": 0.5,
    "prune_floor": 0.1,
    "update_interval": 8,
    "stop_fraction": 0.9,
}


def test_purposes_have_independent_documented_seeds():
    seeds = {p: jobs.purpose_seed(3, p) for p in jobs.PURPOSES}
    assert len(set(seeds.values())) == len(seeds) and 3 not in seeds.values()
    child = np.random.SeedSequence(3).spawn(len(jobs.PURPOSES))[1]
    assert seeds["updates"] == int(child.generate_state(1, np.uint64)[0])


def test_set_regrows_new_positions_at_its_first_update(tmp_path):
    """SET's random growth must not replay the initial mask's random numbers: with the masks'
    and the updates' generators seeded alike, the first update regrew exactly the weights it
    had just dropped (nothing moved)."""
    updates = dst(toy_job(tmp_path), DSTSpec(**SPARSE, growth="random")).updates
    assert len(updates) > 1
    assert updates["moved"].iloc[0] > 0
    assert (updates["moved"] > 0).all()


def test_dst_and_safecompress_train_on_the_same_masks_and_batches(tmp_path):
    """SafeCompress with DST's strategy alone is DST: same initial masks, same batches, same
    update numbers, look-ahead inside the step budget."""
    plain = dst(toy_job(tmp_path / "dst"), DSTSpec(**SPARSE, growth="gradient"))
    section = SafeCompressSpec(
        strategies=({"scale": 1.0, "growth": "gradient"},),
        lookahead=(4,),
        safety_score="loss_auc",
        probe_members="all",
        probe_size="all",
        safety_weight=1.0,
        min_z=2.0,
    )
    selected = safecompress(toy_job(tmp_path / "safe"), ScheduleSpec(**SPARSE), section)
    assert plain.start_density == selected.start_density
    same_state(plain.model, selected.model)
    pd.testing.assert_frame_equal(plain.history, selected.history)
    assert len(selected.updates) > 1 and selected.updates["selected"].all()


def selection_section(min_z, probe_members="all"):
    return SafeCompressSpec(
        strategies=(
            {"scale": 1.0, "growth": "gradient"},
            {"scale": 1.0, "growth": "gradient", "prune": "leakage"},
            {"scale": 1.0, "growth": "random"},
        ),
        lookahead=(2, 4),
        safety_score="loss_auc",
        probe_members=probe_members,
        probe_size="all",
        safety_weight=1.0,
        min_z=min_z,
    )


def test_unresolved_advantages_keep_dsts_own_update(tmp_path):
    """With an evidence bar no candidate can clear, the first candidate (DST's own update)
    reaches every last rung and is kept: the model is DST's, bit for bit, and no update is
    decisive."""
    plain = dst(toy_job(tmp_path / "dst"), DSTSpec(**SPARSE, growth="gradient"))
    selected = safecompress(
        toy_job(tmp_path / "safe"), ScheduleSpec(**SPARSE), selection_section(min_z=1e9)
    )
    same_state(plain.model, selected.model)
    log = selected.updates
    assert log["candidate"].nunique() == 3 and not log["decisive"].any()
    last = log[log["rung"] == log["rung"].max()]
    assert set(last.loc[last["selected"], "candidate"]) == {0}
    assert (log.loc[log["candidate"] == 0, "score_z"] == 0).all()


def test_without_an_evidence_bar_the_best_point_estimate_is_kept(tmp_path):
    """min_z 0 is the paper's argmax: the kept candidate has the highest score at the last
    rung, and an update is decisive exactly when that is not the first candidate."""
    log = safecompress(
        toy_job(tmp_path), ScheduleSpec(**SPARSE), selection_section(min_z=0.0)
    ).updates
    for _, update in log.groupby("step"):
        last = update[update["rung"] == update["rung"].max()]
        kept = last.loc[last["selected"]].iloc[0]
        assert kept["score"] == last["score"].max()
        assert (update["decisive"] == (kept["candidate"] != 0)).all()


def test_logged_candidates_have_their_logits_and_never_change_the_selection(tmp_path):
    """With log_candidates, every row of the log (every tested candidate, every rung) has its
    candidate's own logits on the evaluated samples and RMIA's population; the model, history
    and log are bit-identical without it."""
    section = selection_section(min_z=0.0)
    plain = safecompress(toy_job(tmp_path / "off"), ScheduleSpec(**SPARSE), section)
    logged = safecompress(
        toy_job(tmp_path / "on"),
        ScheduleSpec(**SPARSE),
        dataclasses.replace(section, log_candidates=True),
    )
    same_state(plain.model, logged.model)
    pd.testing.assert_frame_equal(plain.history, logged.history)
    pd.testing.assert_frame_equal(plain.updates, logged.updates)
    assert plain.arrays == {}
    arrays, log = logged.arrays, logged.updates
    split = toy_job(tmp_path).data.split
    assert list(arrays["index"]) == list(watched_indices(split))
    assert set(arrays["index"]) >= set(set_indices(split, "target_train", "target_out"))
    for key in ("step", "rung", "candidate"):
        assert list(arrays[key]) == list(log[key])
    assert arrays["logits"].shape == (len(log), len(arrays["index"]), 4)
    assert log["rung"].nunique() == 2  # both rungs of every update, every candidate tested
    assert arrays["logits"].dtype == np.float32 and np.isfinite(arrays["logits"]).all()
    # each row a forward pass of its own candidate: no two rows alike
    assert np.unique(arrays["logits"].reshape(len(log), -1), axis=0).shape[0] == len(log)


def test_safecompress_around_relaxloss_trains_the_loop_as_relaxloss_does(tmp_path, monkeypatch):
    """The selection wrapped around RelaxLoss: kept to DST's own update, the model is
    RelaxLoss's bit for bit (the candidates' frozen terms count no step of the loop's epoch
    parity), and the candidates train under the objective of the loop's current epoch."""
    spec = RelaxLossSpec(alpha=0.5, upper=1.0)
    plain = relaxloss(toy_job(tmp_path / "relax"), DSTSpec(**SPARSE, growth="gradient"), spec)
    parities = []
    term = RelaxLoss._term
    monkeypatch.setattr(
        RelaxLoss, "_term", lambda self, step: parities.append(step) or term(self, step)
    )
    wrapped = safecompress(
        toy_job(tmp_path / "safe"), ScheduleSpec(**SPARSE), selection_section(1e9), relaxloss=spec
    )
    same_state(plain.model, wrapped.model)
    loop_steps = TOY_EPOCHS * 10  # 3 epochs of 160 members in batches of 16
    assert parities[:2] == [0, 1] and max(parities) == loop_steps - 1
    assert len(parities) > loop_steps  # candidates' steps too, each at a step the loop took


@pytest.mark.parametrize("probe_members, n_members", [("all", 160), ("known", 40)])
def test_safety_probe_members_are_all_training_members_or_the_known_ones(
    tmp_path, monkeypatch, probe_members, n_members
):
    seen = []
    original = SafetyTest.__post_init__
    monkeypatch.setattr(
        SafetyTest,
        "__post_init__",
        lambda self: seen.append((len(self.members), len(self.nonmembers))) or original(self),
    )
    section = dataclasses.replace(selection_section(0.0, probe_members), lookahead=(0,))
    safecompress(toy_job(tmp_path, epochs=1), ScheduleSpec(**SPARSE), section)
    assert seen == [(n_members, 40)]  # 0.3 + 0.1 or 0.1 of 400; held out: reference, 0.1


@pytest.mark.slow
def test_safecompress_adv_attackers_take_as_many_steps_as_dst_adv(tmp_path, monkeypatch):
    """Candidates trained beside the loop train under the adversarial term against the loop's
    attackers, which only the loop's steps move: the comparison of `safecompress_adv` with
    `dst_adv` isolates the selection at equal attacker budget."""
    steps = []
    attacker_step = AdversarialRegularizer.attacker_step
    monkeypatch.setattr(
        AdversarialRegularizer,
        "attacker_step",
        lambda self, model: steps.append(1) or attacker_step(self, model),
    )
    adversarial = AdversarialSpec(("nasr",), 0.1, 1, 2, 0)
    dst(toy_job(tmp_path / "dst"), DSTSpec(**SPARSE, growth="gradient"), adversarial)
    dst_steps, steps[:] = len(steps), []
    section = SafeCompressSpec(
        strategies=({"scale": 1.0, "growth": "gradient"}, {"scale": 1.0, "growth": "random"}),
        lookahead=(2, 4),
        safety_score="loss_auc",
        probe_members="all",
        probe_size="all",
        safety_weight=1.0,
        min_z=0.0,
    )
    selected = safecompress(
        toy_job(tmp_path / "safe"), ScheduleSpec(**SPARSE), section, adversarial
    )
    assert len(selected.updates) > 2  # candidates did train beside the loop
    assert len(steps) == dst_steps > 0
