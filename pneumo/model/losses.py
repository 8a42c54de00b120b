"""Losses (BCE, soft Dice, BCE+Dice, BCE+batch Dice) and per-image Dice/IoU metrics.

Shapes: ``y_true`` ``(N, S, S, 1)`` float in {0, 1} (what ``pneumo.train.data`` yields), ``y_pred``
``(N, S, S, 1)`` probabilities. Everything is computed in float32, so a float16 ``y_pred``
under mixed precision is safe.

The metrics threshold both masks at 0.5 and score each image on its own, then average over
images (not over pixels of the whole batch): a small lesion counts as much as a large one.
Empty rule, as in the SIIM-ACR pneumothorax metric: an image whose true and predicted masks
are both empty scores 1; exactly one empty scores 0.

Empty masks in the losses. The per-image soft Dice (``"dice"``, ``"bce+dice"``) scores an
all-zero output on an empty image as a perfect 0 loss (smoothing 1), so on data where most
images are empty "predict nothing" is a deep minimum that a from-scratch model falls into.
The batch Dice (``"bce+batch-dice"``) pools every pixel of the batch into one Dice: empty
images add only their false positives to the denominator and never reward an empty output;
the loss is low only when the batch's lesions are found. A batch with no lesion at all
gives ``1 - s / (sum p + s)``: 0 for an all-zero output, rising with predicted area (BCE
carries the per-pixel signal there).
"""
from __future__ import annotations

from typing import Any, Callable

import keras
from keras import ops

from pneumo.config import LOSSES, check_registry
from pneumo.errors import InputError

DICE_SMOOTH = 1.0  # soft Dice: keeps empty/empty at loss 0 and the gradient finite


# =========================================================================== pure maths
def _flat_f32(y_true, y_pred):
    """``(N, ...)`` tensors to ``(N, P)`` float32."""
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    n = ops.shape(y_pred)[0]
    return ops.reshape(y_true, (n, -1)), ops.reshape(y_pred, (n, -1))


def _binarized_counts(y_true, y_pred, threshold: float):
    t, p = _flat_f32(y_true, y_pred)
    t = ops.cast(t > threshold, "float32")
    p = ops.cast(p > threshold, "float32")
    inter = ops.sum(t * p, axis=1)
    return inter, ops.sum(t, axis=1), ops.sum(p, axis=1)


def dice_per_image(y_true, y_pred, threshold: float = 0.5):
    """Dice ``2|T&P| / (|T| + |P|)`` of each image's thresholded masks; ``(N,)`` float32.

    Both masks empty gives 1.
    """
    inter, st, sp = _binarized_counts(y_true, y_pred, threshold)
    denom = st + sp
    return ops.where(denom > 0, 2.0 * inter / ops.maximum(denom, 1.0), 1.0)


def iou_per_image(y_true, y_pred, threshold: float = 0.5):
    """IoU ``|T&P| / |T|P|`` of each image's thresholded masks; ``(N,)`` float32.

    Both masks empty gives 1.
    """
    inter, st, sp = _binarized_counts(y_true, y_pred, threshold)
    union = st + sp - inter
    return ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)


def soft_dice_loss_per_image(y_true, y_pred, smooth: float = DICE_SMOOTH):
    """``1 - (2 sum(t p) + s) / (sum t + sum p + s)`` per image on probabilities; ``(N,)`` float32."""
    t, p = _flat_f32(y_true, y_pred)
    inter = ops.sum(t * p, axis=1)
    return 1.0 - (2.0 * inter + smooth) / (ops.sum(t, axis=1) + ops.sum(p, axis=1) + smooth)


def soft_dice_loss_batch(y_true, y_pred, smooth: float = DICE_SMOOTH):
    """One soft Dice loss over all pixels of the batch (module docstring: empty masks); scalar float32."""
    t, p = _flat_f32(y_true, y_pred)
    inter = ops.sum(t * p)
    return 1.0 - (2.0 * inter + smooth) / (ops.sum(t) + ops.sum(p) + smooth)


def bce_per_image(y_true, y_pred):
    """Binary cross-entropy averaged over each image's pixels; ``(N,)`` float32.

    Its batch mean equals ``keras.losses.BinaryCrossentropy()`` (same clipping by epsilon).
    """
    t, p = _flat_f32(y_true, y_pred)
    return ops.mean(keras.losses.binary_crossentropy(t[..., None], p[..., None]), axis=1)


# =========================================================================== losses
@keras.saving.register_keras_serializable(package="pneumo")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss, per image, mean over the batch (0 when perfect, 1 when disjoint)."""

    def __init__(self, smooth: float = DICE_SMOOTH, name: str = "dice_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return soft_dice_loss_per_image(y_true, y_pred, self.smooth)

    def get_config(self) -> dict:
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="pneumo")
class BCEDiceLoss(keras.losses.Loss):
    """Binary cross-entropy plus soft Dice loss, each per image, summed with weight 1."""

    def __init__(self, smooth: float = DICE_SMOOTH, name: str = "bce_dice_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return bce_per_image(y_true, y_pred) + soft_dice_loss_per_image(y_true, y_pred, self.smooth)

    def get_config(self) -> dict:
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="pneumo")
class BCEBatchDiceLoss(BCEDiceLoss):
    """Per-image binary cross-entropy plus one soft Dice loss over the whole batch, weight 1.

    Keras averages the returned ``(N,)`` values: the batch Dice is added to every image's
    BCE, so the result is ``mean BCE + batch Dice``.
    """

    def __init__(self, smooth: float = DICE_SMOOTH, name: str = "bce_batch_dice_loss", **kwargs: Any) -> None:
        super().__init__(smooth=smooth, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return bce_per_image(y_true, y_pred) + soft_dice_loss_batch(y_true, y_pred, self.smooth)


# One builder per name of config.LOSSES: each call returns a fresh loss object.
LOSS_BUILDERS: dict[str, Callable[[], keras.losses.Loss]] = {
    "bce": lambda: keras.losses.BinaryCrossentropy(name="bce"),  # the blog's
    "dice": DiceLoss,
    "bce+dice": BCEDiceLoss,
    "bce+batch-dice": BCEBatchDiceLoss,
}
check_registry("pneumo.model.losses.LOSS_BUILDERS", LOSS_BUILDERS, LOSSES)


def get_loss(name: str) -> keras.losses.Loss:
    """A fresh loss called ``name``, a key of :data:`LOSS_BUILDERS`: ``"bce"`` (the blog's binary
    cross-entropy), ``"dice"``, ``"bce+dice"`` (both per image) or ``"bce+batch-dice"`` (Dice over
    the batch). Unknown names raise :class:`InputError` listing the known."""
    builder = LOSS_BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise InputError(f"loss {name!r} is unknown (choose one of: {', '.join(LOSSES)})")
    return builder()


# =========================================================================== metrics
class _PerImageMean(keras.metrics.Metric):
    """Mean over all images seen of a per-image score ``_score(y_true, y_pred) -> (N,)``."""

    def __init__(self, name: str, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def _score(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        score = self._score(y_true, y_pred)
        if sample_weight is None:
            w = ops.ones_like(score)
        else:
            w = ops.reshape(ops.cast(sample_weight, "float32"), (ops.shape(score)[0], -1))
            w = ops.mean(w, axis=1)
        self.total.assign_add(ops.sum(score * w))
        self.count.assign_add(ops.sum(w))

    def result(self):
        return ops.where(self.count > 0, self.total / ops.maximum(self.count, 1e-12), 0.0)

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="pneumo")
class DiceMetric(_PerImageMean):
    """Mean per-image Dice of masks thresholded at ``threshold``; both empty scores 1."""

    def __init__(self, name: str = "dice", threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(name=name, threshold=threshold, **kwargs)

    def _score(self, y_true, y_pred):
        return dice_per_image(y_true, y_pred, self.threshold)


@keras.saving.register_keras_serializable(package="pneumo")
class IoUMetric(_PerImageMean):
    """Mean per-image IoU of masks thresholded at ``threshold``; both empty scores 1."""

    def __init__(self, name: str = "iou", threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(name=name, threshold=threshold, **kwargs)

    def _score(self, y_true, y_pred):
        return iou_per_image(y_true, y_pred, self.threshold)


def get_metrics() -> list[keras.metrics.Metric]:
    """Fresh ``[DiceMetric(), IoUMetric()]`` (names ``dice`` and ``iou`` in logs/history)."""
    return [DiceMetric(), IoUMetric()]
