"""pneumo.train.validate: exact validation sums, per loss, padding-proof, and Keras' own numbers on one replica.

Fixed masks and probabilities (never what a model learned); the end-to-end case uses an
untrained model with fixed weights, whose predictions are what they are.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from pneumo.config import LOSSES

keras = pytest.importorskip("keras")
import tensorflow as tf  # noqa: E402

from pneumo.model.losses import DiceMetric, IoUMetric, get_loss  # noqa: E402
from pneumo.train import validate  # noqa: E402


def _sums(y, p, w=None):
    w = np.ones(len(y), np.float32) if w is None else w
    return np.asarray(validate.image_terms(y, p, w), np.float64)


def test_a_hand_computed_pair():
    # image 1: lesion of 2 pixels, predicted 1 of them (p = 1 there, 0 elsewhere); image 2: empty, predicted empty
    y = np.zeros((2, 2, 2, 1), np.float32)
    p = np.zeros((2, 2, 2, 1), np.float32)
    y[0, 0, :, 0] = 1
    p[0, 0, 0, 0] = 1
    s = dict(zip(validate.SUMS, _sums(y, p)))
    assert s["images"] == 2 and s["intersection"] == 1 and s["true"] == 2 and s["predicted"] == 1
    assert s["dice"] == pytest.approx(2 / 3 + 1)  # 2*1/(2+1), and empty/empty scores 1
    assert s["iou"] == pytest.approx(1 / 2 + 1)
    out = validate.scores(_sums(y, p), "bce+batch-dice", smooth=1.0)
    assert out["val_dice"] == pytest.approx(5 / 6) and out["val_iou"] == pytest.approx(3 / 4)
    bce = s["bce"] / 2
    assert out["val_loss"] == pytest.approx(bce + 1 - (2 * 1 + 1) / (2 + 1 + 1))
    assert all(math.isnan(v) for v in validate.scores(np.zeros(len(validate.SUMS)), "bce").values())  # no images


@pytest.fixture(scope="module")
def fixed():
    rng = np.random.default_rng(0)
    y = np.zeros((11, 16, 16, 1), np.float32)
    for i in range(0, 11, 3):  # every third image holds a square lesion
        y[i, 4:4 + i % 7 + 2, 3:9] = 1
    p = np.clip(y * 0.7 + rng.uniform(0, 0.5, y.shape), 0, 1).astype(np.float32)
    return y, p


@pytest.mark.parametrize("loss", LOSSES)
def test_val_loss_is_keras_loss_over_all_images_and_padding_never_counts(fixed, loss):
    y, p = fixed
    whole = validate.scores(_sums(y, p), loss)
    # Keras' loss over the whole split as one batch: the mean per-image loss, or (batch Dice) one pooled Dice
    assert whole["val_loss"] == pytest.approx(float(get_loss(loss)(y, p)), rel=1e-5)
    dice, iou = DiceMetric(), IoUMetric()
    dice.update_state(y, p)
    iou.update_state(y, p)
    assert whole["val_dice"] == pytest.approx(float(dice.result()), rel=1e-6)
    assert whole["val_iou"] == pytest.approx(float(iou.result()), rel=1e-6)
    # the same images in padded batches of 4 (weight 0 on copies of another image): the same sums
    total = np.zeros(len(validate.SUMS))
    for start in range(0, 12, 4):
        yb, pb = y[start:start + 4], p[start:start + 4]
        w = np.ones(4, np.float32)
        w[len(yb):] = 0
        pad = 4 - len(yb)
        yb = np.concatenate([yb, np.repeat(y[:1], pad, 0)])
        pb = np.concatenate([pb, np.repeat(p[:1], pad, 0)])
        total += _sums(yb, pb, w)
    assert validate.scores(total, loss) == pytest.approx(whole, rel=1e-6)


def test_one_replica_gives_keras_own_validation_numbers(tiny_pack):
    """What Keras' fit reported before (model.evaluate over in-order batches, last one partial),
    for a per-image loss, equals the exact validation on the default strategy."""
    from pneumo.model.networks import build_model
    from pneumo.train.build import compile_model
    from pneumo.config import TrainConfig
    from pneumo.train.data import make_dataset

    keras.utils.set_random_seed(3)  # a test: fixed weights
    config = TrainConfig(pack=str(tiny_pack), variant="unet-bn", width=0.125, encoder_weights=None,
                         loss="bce+dice", batch_size=5)
    strategy = tf.distribute.get_strategy()
    model = build_model("unet-bn", input_size=64, encoder_weights=None, width=0.125)
    compile_model(model, 1e-3, config)
    expected = model.evaluate(make_dataset(tiny_pack, "dev", 5), steps=4, verbose=0, return_dict=True)

    def dev(batch, shard, batches):
        return make_dataset(tiny_pack, "dev", batch, shard=shard, pad_to_batches=batches, weights=True)

    check = validate.Validation(strategy, model, "bce+dice", 16, 5, 1, dev)
    assert check.steps == 4  # ceil(16 / 5), the last batch padded
    got = check.run()
    assert got["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert got["val_dice"] == pytest.approx(expected["dice"], rel=1e-5)
    assert got["val_iou"] == pytest.approx(expected["iou"], rel=1e-5)
    stops = []
    check.run(lambda: stops.append(1))
    assert len(stops) == 4  # the stop check runs between steps
