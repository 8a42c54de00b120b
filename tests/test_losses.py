"""pneumo.model.losses: hand-computed 4x4 cases for the losses and the per-image metrics."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from pneumo.model import losses as pl
from pneumo.errors import InputError


def _batch():
    """Four 4x4 cases, ``(4, 4, 4, 1)`` float32 each.

    A: true = top-left 2x2 (4 px); pred > 0.5 at (0,0), (0,1), (0,2) (3 px); overlap 2 px.
       Dice = 2*2/(4+3) = 4/7, IoU = 2/(4+3-2) = 2/5.
    B: both empty (pred 0.2 everywhere, and exactly 0.5 at one pixel: not above the threshold) -> 1, 1.
    C: true empty, one predicted pixel -> 0, 0.
    D: one true pixel, nothing predicted -> 0, 0.
    """
    t = np.zeros((4, 4, 4, 1), np.float32)
    p = np.full((4, 4, 4, 1), 0.1, np.float32)
    t[0, :2, :2] = 1
    p[0, 0, 0], p[0, 0, 1], p[0, 0, 2], p[0, 1, 0] = 0.9, 0.8, 0.7, 0.4
    p[1] = 0.2
    p[1, 3, 3] = 0.5
    p[2, 2, 2] = 0.6
    t[3, 1, 1] = 1
    return t, p


DICE = np.array([4 / 7, 1.0, 0.0, 0.0])
IOU = np.array([2 / 5, 1.0, 0.0, 0.0])


# --------------------------------------------------------------------------- pure functions
def test_dice_and_iou_per_image_hand_computed():
    t, p = _batch()
    np.testing.assert_allclose(np.asarray(pl.dice_per_image(t, p)), DICE, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pl.iou_per_image(t, p)), IOU, atol=1e-6)


def test_perfect_prediction_scores_one():
    t, _ = _batch()
    np.testing.assert_allclose(np.asarray(pl.dice_per_image(t, t)), 1.0)
    np.testing.assert_allclose(np.asarray(pl.iou_per_image(t, t)), 1.0)


def test_soft_dice_loss_hand_computed():
    t, p = _batch()
    # A: sum t = 4, sum p = 0.9+0.8+0.7+0.4 + 12*0.1 = 4.0, sum t*p = 0.9+0.8+0.4+0.1 = 2.2
    #    loss = 1 - (2*2.2 + 1) / (4 + 4 + 1) = 0.4
    got = np.asarray(pl.soft_dice_loss_per_image(t[:1], p[:1]))
    np.testing.assert_allclose(got, [0.4], atol=1e-6)
    empty = np.zeros((1, 4, 4, 1), np.float32)
    np.testing.assert_allclose(np.asarray(pl.soft_dice_loss_per_image(empty, empty)), [0.0])
    assert float(pl.get_loss("dice")(t[:1], p[:1])) == pytest.approx(0.4, abs=1e-6)


def test_bce_is_keras_binary_crossentropy():
    rng = np.random.default_rng(0)
    t = (rng.random((3, 8, 8, 1)) > 0.7).astype(np.float32)
    p = rng.random((3, 8, 8, 1)).astype(np.float32)
    p[0, 0, 0, 0] = 0.0  # clipped by epsilon in both
    ref = float(keras.losses.BinaryCrossentropy()(t, p))
    assert float(pl.get_loss("bce")(t, p)) == pytest.approx(ref, rel=1e-6)
    assert float(np.mean(np.asarray(pl.bce_per_image(t, p)))) == pytest.approx(ref, rel=1e-5)
    # hand-computed: one pixel, t = 1, p = 0.8 -> -ln 0.8
    one = pl.get_loss("bce")(np.ones((1, 1, 1, 1), np.float32), np.full((1, 1, 1, 1), 0.8, np.float32))
    assert float(one) == pytest.approx(-np.log(0.8), rel=1e-5)


def test_bce_plus_dice_is_the_sum():
    t, p = _batch()
    total = float(pl.get_loss("bce+dice")(t, p))
    want = float(np.mean(np.asarray(pl.bce_per_image(t, p)) + np.asarray(pl.soft_dice_loss_per_image(t, p))))
    assert total == pytest.approx(want, rel=1e-6)
    assert total == pytest.approx(float(pl.get_loss("bce")(t, p)) + float(pl.get_loss("dice")(t, p)), rel=1e-5)


def test_unknown_loss_lists_the_choices():
    with pytest.raises(InputError, match="bce, dice, bce\\+dice"):
        pl.get_loss("focal")
    with pytest.raises(InputError, match=r"loss \['bce'\] is unknown"):
        pl.get_loss(["bce"])  # from a hand-edited config.json: an input error, not a TypeError


def test_loss_registry_is_the_vocabulary_and_builds_fresh_losses():
    from pneumo.config import LOSSES

    assert tuple(pl.LOSS_BUILDERS) == LOSSES
    kinds = {"bce": keras.losses.BinaryCrossentropy, "dice": pl.DiceLoss, "bce+dice": pl.BCEDiceLoss,
             "bce+batch-dice": pl.BCEBatchDiceLoss}
    for name in LOSSES:
        loss = pl.get_loss(name)
        assert type(loss) is kinds[name] and pl.get_loss(name) is not loss, name


def test_float16_predictions_are_computed_in_float32():
    t, p = _batch()
    p16 = p.astype(np.float16)
    for name in pl.LOSSES:
        value = pl.get_loss(name)(t, p16)
        assert value.dtype == "float32" and np.isfinite(float(value))
    d = pl.dice_per_image(t, p16)
    assert d.dtype == "float32"
    np.testing.assert_allclose(np.asarray(d), DICE, atol=1e-6)


# --------------------------------------------------------------------------- metrics
def test_metrics_average_per_image_over_batches():
    t, p = _batch()
    dice, iou = pl.get_metrics()
    assert (dice.name, iou.name) == ("dice", "iou")
    dice.update_state(t[:2], p[:2])
    dice.update_state(t[2:], p[2:])
    iou.update_state(t, p)
    assert float(dice.result()) == pytest.approx(DICE.mean(), abs=1e-6)
    assert float(iou.result()) == pytest.approx(IOU.mean(), abs=1e-6)
    dice.reset_state()
    dice.update_state(t[1:2], p[1:2])  # both empty only
    assert float(dice.result()) == pytest.approx(1.0)


def test_metric_sample_weight_selects_images():
    t, p = _batch()
    m = pl.DiceMetric()
    m.update_state(t, p, sample_weight=np.array([1.0, 0.0, 0.0, 1.0], np.float32))
    assert float(m.result()) == pytest.approx((4 / 7 + 0.0) / 2, abs=1e-6)


def test_metric_of_nothing_is_zero():
    assert float(pl.IoUMetric().result()) == 0.0


def test_losses_and_metrics_serialize():
    for obj in [pl.DiceLoss(smooth=2.0), pl.BCEDiceLoss(), pl.DiceMetric(threshold=0.3), pl.IoUMetric()]:
        config = keras.saving.serialize_keras_object(obj)
        back = keras.saving.deserialize_keras_object(config)
        assert type(back) is type(obj) and back.name == obj.name
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(pl.DiceMetric(threshold=0.3))).threshold == 0.3
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(pl.DiceLoss(smooth=2.0))).smooth == 2.0


def test_metric_names_in_keras_logs():
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Identity(name="identity_head")])
    model.compile(loss=pl.get_loss("bce+dice"), metrics=pl.get_metrics(), run_eagerly=True)
    t, p = _batch()
    logs = model.evaluate(p, t, batch_size=4, verbose=0, return_dict=True)
    assert logs["dice"] == pytest.approx(DICE.mean(), abs=1e-6)
    assert logs["iou"] == pytest.approx(IOU.mean(), abs=1e-6)


# --------------------------------------------------------------------------- batch Dice (issue 10)
def test_batch_dice_hand_computed_over_all_pixels():
    t, p = _batch()
    # Pooled over the 4 images: sum t = 4 + 1 = 5; sum p = 4.0 + (15*0.2 + 0.5) + (15*0.1 + 0.6) + 16*0.1
    # = 4.0 + 3.5 + 2.1 + 1.6 = 11.2; sum t*p = 2.2 (A) + 0.1 (D) = 2.3.
    want = 1 - (2 * 2.3 + 1) / (5 + 11.2 + 1)
    assert float(pl.soft_dice_loss_batch(t, p)) == pytest.approx(want, abs=1e-5)
    # mean BCE over images + that one Dice
    bce = float(np.mean(np.asarray(pl.bce_per_image(t, p))))
    assert float(pl.get_loss("bce+batch-dice")(t, p)) == pytest.approx(bce + want, abs=1e-5)


def test_batch_dice_does_not_reward_an_empty_output_on_empty_images():
    """The issue-10 trap: per-image Dice scores 'predict nothing' ~perfect on negatives."""
    t = np.zeros((8, 16, 16, 1), np.float32)
    t[0, 4:8, 4:8] = 1  # one positive among eight
    nothing = np.zeros_like(t)
    per_image = float(pl.get_loss("dice")(t, nothing))
    batch = float(pl.soft_dice_loss_batch(t, nothing))
    assert per_image < 0.15  # 7 of 8 images at loss 0
    assert batch > 0.9  # the batch's lesion is missed: close to the worst loss
    found = t.copy()
    assert float(pl.soft_dice_loss_batch(t, found)) < 0.05
    # no lesion in the batch: an all-zero output is 0, predicted area costs
    empty = np.zeros((2, 8, 8, 1), np.float32)
    assert float(pl.soft_dice_loss_batch(empty, empty)) == pytest.approx(0.0)
    assert float(pl.soft_dice_loss_batch(empty, empty + 0.5)) > 0.9


def test_bce_batch_dice_loss_serializes():
    loss = pl.get_loss("bce+batch-dice")
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    t, p = _batch()
    assert isinstance(again, pl.BCEBatchDiceLoss)
    assert float(again(t, p)) == pytest.approx(float(loss(t, p)))
