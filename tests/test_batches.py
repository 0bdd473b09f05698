"""Training batches: seeded order, worker loader identical to the on-device path, crop/flip."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from helpers import SHORT_TRAINING
from safecompress.data.batches import TrainBatches, crop_flip, shuffled_batches
from safecompress.data.splits import Samples
from safecompress.training.loop import fit, seed_everything
from safecompress.training.models import build_model

CPU = torch.device("cpu")


def images(n=50, size=8, seed=0):
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return Samples(x, (x.mean((1, 2, 3)) > 0).long())


def epoch_of(batches, seed=0):
    return list(batches.epoch(torch.Generator().manual_seed(seed)))


def test_shuffled_batches_cover_every_sample_once_but_never_end_with_one():
    batches = shuffled_batches(18, 8, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(18))
    assert [len(b) for b in batches] == [8, 8, 2]
    # a lone last sample sits this epoch out
    batches = shuffled_batches(17, 8, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [8, 8] and len(set(torch.cat(batches).tolist())) == 16


def test_worker_loader_delivers_the_same_batches_as_the_device_path():
    data = images()

    def delivered(spec):
        torch.manual_seed(0)
        batches = epoch_of(TrainBatches(data, spec, CPU))
        return batches, torch.rand(3)  # the global generator as the next step would find it

    on_device, after_device = delivered(SHORT_TRAINING)
    with_workers, after_workers = delivered(dataclasses.replace(SHORT_TRAINING, workers=2))
    assert torch.equal(after_device, after_workers)
    assert len(on_device) == len(with_workers) == 7
    assert TrainBatches(data, SHORT_TRAINING, CPU).steps_per_epoch == 7
    for (xa, ya), (xb, yb) in zip(on_device, with_workers, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # and the batches are rows of the data, labels kept with their images
    for x, y in on_device:
        rows = [int((data.x == image).all((1, 2, 3)).nonzero()) for image in x]
        assert torch.equal(data.y[rows], y)


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_training_with_workers_equals_training_on_device(augment):
    def trained(workers):
        seed_everything(3)
        model = build_model({"arch": "cnn", "channels": [4]}, (3, 8, 8), 2)
        spec = dataclasses.replace(SHORT_TRAINING, workers=workers, augment=augment)
        history = fit(model, TrainBatches(images(), spec, CPU), images(20, seed=1), spec, 3)
        return model.state_dict(), history

    (a, history_a), (b, history_b) = trained(0), trained(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert history_a.equals(history_b)


def test_crop_flip_takes_a_window_of_the_padded_image_and_mirrors_it():
    x = torch.randn(64, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = F.pad(x, (3, 3, 2, 2))  # an eighth of each side: 24 // 8, 16 // 8
    offsets, flipped = set(), 0
    for image, crop in zip(padded, out, strict=True):
        found = [
            (dy, dx, mirrored)
            for dy in range(5)
            for dx in range(7)
            for mirrored in (False, True)
            if torch.equal(crop, image[:, dy : dy + 16, dx : dx + 24].flip(2 if mirrored else ()))
        ]
        assert len(found) == 1
        offsets.add(found[0][:2])
        flipped += found[0][2]
    assert 16 < flipped < 48  # about half of 64 are mirrored
    # every shift up to the full padding occurs, in both directions
    assert {dy for dy, _ in offsets} == set(range(5)) and {dx for _, dx in offsets} == set(range(7))
    # a different draw of the generator moves the crops; the same draw repeats them
    assert torch.equal(out, crop_flip(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, crop_flip(x, torch.Generator().manual_seed(1)))


def test_crop_flip_refuses_data_that_are_not_images():
    tokens = Samples(torch.zeros(10, 32, dtype=torch.long), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="train.augment: crop_flip needs images"):
        TrainBatches(tokens, dataclasses.replace(SHORT_TRAINING, augment="crop_flip"), CPU)
