"""pneumo.train.curves: the all-empty Dice level, whole epoch ticks, the batch-loss sampler (no TensorFlow)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import write_test_pack
from pneumo.train import curves


# --------------------------------------------------------------------------- all-empty level
@pytest.fixture(scope="module")
def pack32(tmp_path_factory) -> Path:
    # dev: samples 8..13 of the running index, every third positive -> dev 0, 3 of 6 are 9 and 12
    return write_test_pack(tmp_path_factory.mktemp("p") / "p.h5", counts=(8, 6, 4), size=32)


def _dev_empty(path: Path, n: int) -> float:
    with h5py.File(path, "r") as f:
        y = f["Y_dev"][:n]
    return float((y.reshape(n, -1).max(1) == 0).mean())


def test_all_empty_level_is_the_share_of_empty_dev_masks(pack32):
    with h5py.File(pack32, "r") as f:
        attr = float(f.attrs["positive_fraction_dev"])
    whole = curves.all_empty_val_dice({"pack": str(pack32), "batch_size": 4, "validation_steps": None})
    assert whole == pytest.approx(1 - attr) == pytest.approx(_dev_empty(pack32, 6))
    # validation_steps x batch_size < dev: the first images only, as the trainer validates them
    part = curves.all_empty_val_dice({"pack": str(pack32), "batch_size": 2, "validation_steps": 1})
    assert part == pytest.approx(_dev_empty(pack32, 2))
    assert curves.all_empty_val_dice({"pack": str(pack32), "batch_size": 4, "validation_steps": 99}) == whole


def test_all_empty_level_unknown_without_a_readable_pack(tmp_path):
    assert curves.all_empty_val_dice({"pack": str(tmp_path / "gone.h5")}) is None
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert curves.all_empty_val_dice({"pack": str(tmp_path / "junk.h5")}) is None
    assert curves.all_empty_val_dice({}) is None


def test_predicts_nothing_within_tolerance():
    assert curves.predicts_nothing(0.8, 0.8)
    assert curves.predicts_nothing(0.8 + 1e-6, 0.8)
    assert not curves.predicts_nothing(0.8 + 1 / 40, 0.8)  # one lesion found among 40 images
    assert not curves.predicts_nothing(None, 0.8) and not curves.predicts_nothing(0.8, None)
    assert not curves.predicts_nothing(float("nan"), 0.8)


@pytest.mark.parametrize("last, step", [(1, 1), (3, 1), (12, 1), (13, 2), (24, 2), (25, 5), (90, 10), (400, 50)])
def test_epoch_tick_step_is_whole_and_few(last, step):
    assert curves.epoch_tick_step(last) == step
    assert last / step <= 12


# --------------------------------------------------------------------------- batch loss
def _keras_progress(batch_losses: np.ndarray, steps: int):
    """What the trainer writes after each batch: Keras' running mean over the epoch so far."""
    for i, _ in enumerate(batch_losses):
        epoch, step = i // steps + 1, i % steps + 1
        start = (epoch - 1) * steps
        yield {"stage": "train", "epoch": epoch, "step": step, "steps": steps,
               "loss": float(batch_losses[start:i + 1].mean())}


def test_sampler_points_are_the_batches_between_samples():
    steps = 10
    losses = np.linspace(1.0, 0.1, 5 * steps)  # a steadily falling loss
    progress = list(_keras_progress(losses, steps))
    sampler = curves.BatchLossSampler()
    for i in range(2, len(progress), 3):  # a look every third batch
        sampler.add(progress[i])
    x, y = sampler.series()
    assert None not in y and len(y) == sampler.plotted() > 10
    for (xa, _), (xb, yb) in zip(sampler.points, sampler.points[1:]):
        assert xb > xa
    # each point lies within the true batch losses since the previous look: no lag, no jumps
    assert all(np.diff(y) < 0)  # the falling loss falls on the chart too, across epoch starts
    drops = -np.diff(y)
    assert drops.max() <= 2 * np.median(drops)  # the same fall everywhere
    raw = -np.diff([p["loss"] for p in progress[2::3]])
    assert raw.max() >= 3 * np.median(raw)  # the raw running mean: a step down at each epoch start
    assert y[-1] == pytest.approx(losses[45:48].mean())  # the batches after the look at 44, to 47


def test_sampler_after_a_reload_does_not_start_from_a_lagging_mean():
    steps = 40
    losses = np.linspace(1.0, 0.2, 3 * steps)
    progress = list(_keras_progress(losses, steps))
    sampler = curves.BatchLossSampler()  # a new session, mid-epoch 3
    for p in progress[95::5]:
        sampler.add(p)
    _, y = sampler.series()
    assert progress[95]["loss"] > losses[95] + 0.05  # the lagging running mean at that moment
    assert all(v is not None and v <= losses[95] for v in y)  # not drawn: the chart starts true


def test_sampler_ignores_repeats_and_handles_a_resume():
    steps = 5
    sampler = curves.BatchLossSampler()
    p = lambda e, s, loss: {"stage": "train", "epoch": e, "step": s, "steps": steps, "loss": loss}  # noqa: E731
    assert not sampler.add(p(1, 1, 0.9))  # the first look only starts the interval
    assert sampler.add(p(1, 3, 0.8))
    assert not sampler.add(p(1, 3, 0.8))  # nothing new
    assert sampler.add(p(2, 1, 0.5))
    assert sampler.add(p(2, 4, 0.45))
    # stopped, then resumed from the end of epoch 1: epoch 2 runs again
    assert not sampler.add(p(2, 2, 0.6))
    assert [x for x, y in sampler.points if y is not None] == [pytest.approx(0.6), pytest.approx(1.2)]
    assert sampler.points[-1][1] is None  # the chart leaves a gap instead of a false jump
    assert sampler.add(p(2, 3, 0.55))
    assert sampler.points[-1] == (pytest.approx(1.6), pytest.approx((0.55 * 3 - 0.6 * 2) / 1))
    for bad in (None, {}, p(0, 1, 0.5), p(1, 9, 0.5), p(1, 1, float("nan")), {"epoch": "x"}):
        assert not sampler.add(bad)


def test_curves_imports_without_tensorflow():
    code = "import sys, pneumo.train.curves; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
