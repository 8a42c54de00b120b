"""Exact validation under any strategy: every dev image counted once, padding never.

Keras' own validation splits the dev batches across replicas and workers; a last batch smaller
than the number of replicas leaves some with zero images, which crashed BatchNorm under
``MultiWorkerMirroredStrategy`` (issue 17), and means of per-replica means weigh images
unequally. Here each worker reads its shard of the dev split, padded to the same number of
full per-replica batches with weight 0 on the padding (:func:`pneumo.train.distribute.eval_steps`),
each replica sums per-image terms times their weights, and the sums are added over replicas
and workers (``strategy.reduce(SUM)``). The scores are then means over the real images:

- ``val_dice``, ``val_iou``: the mean per-image Dice and IoU (as the metrics in
  :mod:`pneumo.model.losses`);
- ``val_loss`` per loss of :data:`pneumo.config.LOSSES` (:data:`VAL_LOSSES`): the mean over images
  of the per-image loss for "bce", "dice" and "bce+dice" (what Keras reports: its batch losses
  weighted by batch size); for "bce+batch-dice" the mean BCE plus one soft Dice pooled over the
  pixels of all dev images (the batch Dice over the whole split, its sums being additive), not a
  mean of per-batch Dice values; plus the model's regularisation losses if it has any.

The dev images are the first ``validation_steps x batch_size`` kept ones (all by default), as
before. One replica on one worker gives Keras' own numbers (tests/test_validate.py).
"""
from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from pneumo.config import LOSSES, check_registry
from pneumo.model.losses import DICE_SMOOTH, bce_per_image, dice_per_image, iou_per_image, soft_dice_loss_per_image
from pneumo.train.data import shard_positions
from pneumo.train.distribute import distribute_input, eval_steps

__all__ = ["SUMS", "VAL_LOSSES", "image_terms", "scores", "Validation"]

# What each replica adds up per image, times the image's weight (0 for padding).
SUMS = ("images", "bce", "dice_loss", "dice", "iou", "intersection", "true", "predicted")

# val_loss from the sums over all dev images, per loss name (module docstring).
VAL_LOSSES: dict[str, Callable[[dict, float], float]] = {
    "bce": lambda s, smooth: s["bce"] / s["images"],
    "dice": lambda s, smooth: s["dice_loss"] / s["images"],
    "bce+dice": lambda s, smooth: (s["bce"] + s["dice_loss"]) / s["images"],
    "bce+batch-dice": lambda s, smooth: s["bce"] / s["images"] + 1.0 - (2.0 * s["intersection"] + smooth)
    / (s["true"] + s["predicted"] + smooth),
}
check_registry("pneumo.train.validate.VAL_LOSSES", VAL_LOSSES, LOSSES)


def image_terms(y_true, y_pred, weights, smooth: float = DICE_SMOOTH):
    """The weighted sums of :data:`SUMS` over a batch: ``(len(SUMS),)`` float32.

    ``y_true``, ``y_pred``: ``(B, S, S, 1)`` masks in {0, 1} and probabilities; ``weights``:
    ``(B,)``, 1 for an image, 0 for padding.
    """
    t = ops.cast(ops.reshape(y_true, (ops.shape(y_true)[0], -1)), "float32")
    p = ops.cast(ops.reshape(y_pred, (ops.shape(y_pred)[0], -1)), "float32")
    w = ops.cast(weights, "float32")
    per_image = ops.stack([
        ops.ones_like(w), bce_per_image(y_true, y_pred), soft_dice_loss_per_image(y_true, y_pred, smooth),
        dice_per_image(y_true, y_pred), iou_per_image(y_true, y_pred),
        ops.sum(t * p, axis=1), ops.sum(t, axis=1), ops.sum(p, axis=1),
    ], axis=1)
    return ops.sum(per_image * w[:, None], axis=0)


def scores(sums: np.ndarray, loss: str, smooth: float = DICE_SMOOTH, extra_loss: float = 0.0) -> dict[str, float]:
    """``{"val_loss", "val_dice", "val_iou"}`` from the :data:`SUMS` over all dev images (NaN for none)."""
    s = dict(zip(SUMS, (float(v) for v in sums)))
    if s["images"] <= 0:
        return {"val_loss": math.nan, "val_dice": math.nan, "val_iou": math.nan}
    return {"val_loss": VAL_LOSSES[loss](s, smooth) + extra_loss, "val_dice": s["dice"] / s["images"],
            "val_iou": s["iou"] / s["images"]}


class Validation:
    """One exact pass over the dev images under ``strategy``, for the trainer's epoch end.

    ``make(per_replica_batch, shard, pad_to_batches)`` returns the pipeline of one worker's
    shard of the dev images with weights (``pneumo.train.data.make_dataset(..., shard=,
    pad_to_batches=, weights=True)``); ``images``: how many dev images are validated;
    ``workers``: the processes training together (one input pipeline each).
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, loss: str, images: int,
                 global_batch: int, workers: int, make: Callable[[int, tuple[int, int], int], tf.data.Dataset]) -> None:
        self.strategy, self.model, self.loss, self.images = strategy, model, loss, images
        # the shards make_dataset will cut the images into (pneumo.train.data.shard_positions)
        largest = max(len(shard_positions(np.arange(images), i, workers)) for i in range(workers))
        self.steps, batches = eval_steps(largest, global_batch, strategy.num_replicas_in_sync, workers)

        def shard(batch: int, where: tuple[int, int]) -> tf.data.Dataset:
            if where[1] != workers:  # the padding was sized for one pipeline per worker
                raise RuntimeError(f"{where[1]} input pipelines for {workers} workers")
            return make(batch, where, batches)

        self.data = distribute_input(strategy, global_batch, shard)
        self._step: Callable | None = None

    def _smooth(self) -> float:
        return float(getattr(self.model.loss, "smooth", DICE_SMOOTH))

    def _make_step(self) -> Callable:
        strategy, model, smooth = self.strategy, self.model, self._smooth()

        @tf.function
        def step(iterator) -> tf.Tensor:
            def replica(images, masks, weights):
                return image_terms(masks, model(images, training=False), weights, smooth)

            return strategy.reduce("SUM", strategy.run(replica, args=next(iterator)), axis=None)

        return step

    def run(self, between_steps: Callable[[], None] | None = None) -> dict[str, float]:
        """The scores (:func:`scores`) of the model as it is now; ``between_steps`` is called
        after each step (the trainer's stop check)."""
        if self._step is None:
            self._step = self._make_step()
        iterator = iter(self.data)
        total = np.zeros(len(SUMS), np.float64)
        for _ in range(self.steps):
            total += self._step(iterator).numpy()
            if between_steps is not None:
                between_steps()
        extra = sum(float(keras.ops.convert_to_numpy(v)) for v in self.model.losses)  # regularisation, if any
        return scores(total, self.loss, self._smooth(), float(extra))
