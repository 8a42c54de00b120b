"""Paired random geometry for images and masks, as batched TensorFlow ops.

The blog drew one ``ImageDataGenerator`` transform per batch and applied it image by
image in Python (float64 copies). Here every sample gets its own transform, drawn with
stateless random ops from an explicit seed, composed into one projective matrix per
sample, and applied to the whole batch by one ``ImageProjectiveTransformV3`` call for
the images and one for the masks. The same code runs inside ``tf.data`` on the CPU or
on a GPU.

Conventions (pixel ``(x, y)``: x = column to the right, y = row downwards; rotation and
zoom are about the image centre ``((W - 1) / 2, (H - 1) / 2)``):

- ``angle`` (degrees) > 0 turns the content **counter-clockwise as displayed**.
- ``shift_x`` / ``shift_y`` (fractions of width / height) > 0 move the content
  **right / down**.
- ``zoom_x`` / ``zoom_y`` are Keras' zoom factors: the output samples the input at
  ``zoom x`` the distance from the centre, so a factor > 1 zooms **out** (content looks
  smaller) and < 1 zooms in. x and y are drawn independently, as Keras did.
- ``flip``: mirror left-right (probability 1/2 when ``horizontal_flip``).

Composed, content is flipped, zoomed, rotated, then shifted. Images are resampled with
bilinear interpolation (in float32, rounded back to uint8); masks with nearest
interpolation, so they keep exactly the values they had ({0, 255}) and stay aligned with
their images: both use the very same matrices and fill mode. Pixels that come from
outside the image follow ``fill_mode`` ("nearest" repeats the edge, "constant" is 0,
"reflect" mirrors ``dcba|abcd|dcba``, "wrap" tiles).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
import tensorflow as tf

from pneumo.config import FILL_MODES, AugmentConfig
from pneumo.errors import InputError

INTERPOLATIONS = ("bilinear", "nearest")
PARAM_NAMES = ("angle", "shift_x", "shift_y", "zoom_x", "zoom_y", "flip")

__all__ = [
    "FILL_MODES",
    "PARAM_NAMES",
    "check_config",
    "is_identity",
    "sample_params",
    "transforms_from_params",
    "apply_transforms",
    "augment_batch",
    "preview",
]


# --------------------------------------------------------------------------- config
def check_config(config: AugmentConfig) -> AugmentConfig:
    """Validate ``config`` and return it; bad values raise :class:`InputError` naming the field."""
    if not isinstance(config, AugmentConfig):
        raise InputError(f"augment: expected an AugmentConfig, got {type(config).__name__}")
    limits = {
        # The upper bounds keep the transform invertible and the image mostly in view.
        "rotation": (180.0, "degrees, at most 180"),
        "width_shift": (1.0, "a fraction of the width, below 1"),
        "height_shift": (1.0, "a fraction of the height, below 1"),
        "zoom": (1.0, "a fraction, below 1 (scales are drawn in [1 - zoom, 1 + zoom])"),
    }
    for name, (top, what) in limits.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InputError(f"augment.{name}: expected a number ({what}), got {value!r}")
        if value < 0:
            raise InputError(f"augment.{name}: must be >= 0 (0 turns it off), got {value!r}")
        if name == "rotation" and value > top or name != "rotation" and value >= top:
            raise InputError(f"augment.{name}: {value!r} is out of range ({what})")
    for name in ("horizontal_flip", "per_batch"):
        if not isinstance(getattr(config, name), (bool, np.bool_)):
            raise InputError(f"augment.{name}: expected true or false, got {getattr(config, name)!r}")
    if config.fill_mode not in FILL_MODES:
        raise InputError(
            f"augment.fill_mode: unknown mode {config.fill_mode!r} (choose from {', '.join(FILL_MODES)})"
        )
    return config


def is_identity(config: AugmentConfig) -> bool:
    """True when ``config`` changes nothing (all ranges 0 and no flip)."""
    return (
        config.rotation == 0
        and config.width_shift == 0
        and config.height_shift == 0
        and config.zoom == 0
        and not config.horizontal_flip
    )


def _as_seed(seed: Any) -> tf.Tensor:
    """A shape-(2,) int64 seed tensor from an int or anything of shape (2,)."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        # Python ints beyond int64 would overflow the cast; fold them into range.
        return tf.constant([int(seed) % (2**63), 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise InputError(f"augment seed: expected integers, got dtype {seed.dtype.name}")
    if seed.shape.rank is not None and seed.shape.as_list() != [2]:
        raise InputError(f"augment seed: expected shape (2,), got {seed.shape.as_list()}")
    return tf.cast(seed, tf.int64)


# --------------------------------------------------------------------------- parameters
def sample_params(batch_size: int | tf.Tensor, config: AugmentConfig, seed: Any) -> dict[str, tf.Tensor]:
    """Draw the random geometry of a batch.

    Returns a dict of shape-``(batch_size,)`` tensors: ``angle`` (degrees, float32, in
    ``[-rotation, rotation]``), ``shift_x``, ``shift_y`` (fractions, float32),
    ``zoom_x``, ``zoom_y`` (float32 in ``[1 - zoom, 1 + zoom]``), ``flip`` (bool). One draw
    per sample, or one for the whole batch when ``config.per_batch``. ``seed``: an int
    or a shape-(2,) int tensor; the same seed gives the same parameters.
    """
    check_config(config)
    seed = _as_seed(seed)
    batch_size = tf.convert_to_tensor(batch_size, tf.int32)
    draws = 1 if config.per_batch else batch_size
    # One call for all six numbers: each sample's parameters depend only on the seed.
    u = tf.random.stateless_uniform(tf.stack([draws, 6]), seed=seed, dtype=tf.float32)

    def symmetric(column: int, bound: float) -> tf.Tensor:
        return (2.0 * u[:, column] - 1.0) * float(bound)

    params = {
        "angle": symmetric(0, config.rotation),
        "shift_x": symmetric(1, config.width_shift),
        "shift_y": symmetric(2, config.height_shift),
        "zoom_x": 1.0 + symmetric(3, config.zoom),
        "zoom_y": 1.0 + symmetric(4, config.zoom),
        "flip": tf.logical_and(u[:, 5] < 0.5, bool(config.horizontal_flip)),
    }
    if config.per_batch:
        params = {k: tf.repeat(v, batch_size, axis=0) for k, v in params.items()}
    return params


def transforms_from_params(params: dict[str, Any], height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
    """``(B, 8)`` float32 projective matrices (output -> input pixel map) for ``ImageProjectiveTransformV3``.

    ``params`` as from :func:`sample_params` (any missing entry means "no change").
    Row ``[a0, a1, a2, b0, b1, b2, 0, 0]`` sends output pixel ``(x, y)`` to input
    ``(a0 x + a1 y + a2, b0 x + b1 y + b2)``; see the module docstring for the signs.
    """
    sizes = [tf.convert_to_tensor(v) for v in params.values()]
    if not sizes:
        raise InputError("transforms_from_params: no parameters given")
    n = tf.shape(sizes[0])[0]

    def get(name: str, default: float) -> tf.Tensor:
        if name not in params:
            return tf.fill([n], tf.constant(default, tf.float32))
        return tf.cast(tf.convert_to_tensor(params[name]), tf.float32)

    theta = get("angle", 0.0) * (math.pi / 180.0)
    zx, zy = get("zoom_x", 1.0), get("zoom_y", 1.0)
    f = tf.where(tf.cast(get("flip", 0.0), tf.bool), -1.0, 1.0)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    tx, ty = get("shift_x", 0.0) * w, get("shift_y", 0.0) * h
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    c, s = tf.cos(theta), tf.sin(theta)
    # Inverse map: p_in = F Z R^-1 (p_out - centre - shift) + centre, where the forward
    # rotation R turns content counter-clockwise on screen (y points down).
    m00, m01 = f * zx * c, -f * zx * s
    m10, m11 = zy * s, zy * c
    ox, oy = cx + tx, cy + ty
    a2 = cx - m00 * ox - m01 * oy
    b2 = cy - m10 * ox - m11 * oy
    zeros = tf.zeros_like(theta)
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def apply_transforms(
    images: Any,
    transforms: Any,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "nearest",
    fill_value: float = 0.0,
) -> tf.Tensor:
    """Resample ``images (B, H, W, C)`` with ``transforms (B, 8)``; same dtype and shape out.

    ``interpolation``: "bilinear" (computed in float32; integer images are rounded and
    clipped back) or "nearest" (values are copied, never mixed).
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation: unknown {interpolation!r} (choose from {', '.join(INTERPOLATIONS)})")
    if fill_mode not in FILL_MODES:
        raise InputError(f"fill_mode: unknown {fill_mode!r} (choose from {', '.join(FILL_MODES)})")
    images = tf.convert_to_tensor(images)
    dtype = images.dtype
    x = images
    if interpolation == "bilinear" and dtype != tf.float32:
        # The kernel would truncate a weighted mean of uint8 values; round it instead.
        x = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=tf.cast(transforms, tf.float32),
        output_shape=shape[1:3],
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode=fill_mode.upper(),
    )
    if out.dtype != dtype:
        if dtype.is_integer:
            out = tf.clip_by_value(tf.round(out), dtype.min, dtype.max)
        out = tf.cast(out, dtype)
    return out


# --------------------------------------------------------------------------- batches
def _check_batch(images: tf.Tensor, masks: tf.Tensor) -> None:
    for name, t in (("images", images), ("masks", masks)):
        if t.shape.rank is not None and t.shape.rank != 4:
            raise InputError(f"augment: {name} must be (B, H, W, C), got shape {t.shape.as_list()}")
    a, b = images.shape.as_list(), masks.shape.as_list()
    if a and b:
        for axis, what in ((0, "batch size"), (1, "height"), (2, "width")):
            if a[axis] is not None and b[axis] is not None and a[axis] != b[axis]:
                raise InputError(f"augment: images {a} and masks {b} differ in {what}")


def augment_batch(
    images: Any,
    masks: Any,
    config: AugmentConfig,
    seed: Any,
    *,
    image_interpolation: str = "bilinear",
) -> tuple[tf.Tensor, tf.Tensor]:
    """Apply the same random geometry to each image and its mask.

    ``images``, ``masks``: ``(B, H, W, C)`` tensors (uint8 by contract; masks in
    {0, 255}); returned with the same shapes and dtypes. Masks use nearest interpolation,
    so their values are unchanged in kind. ``seed``: an int or shape-(2,) int tensor;
    the same seed gives the same batch. An identity config returns the inputs untouched.
    ``image_interpolation`` ("bilinear" or "nearest") exists for alignment checks.
    """
    check_config(config)
    images = tf.convert_to_tensor(images)
    masks = tf.convert_to_tensor(masks)
    _check_batch(images, masks)
    if is_identity(config):
        return images, masks
    shape = tf.shape(images)
    params = sample_params(shape[0], config, seed)
    if _flip_only(config):
        # A mirror maps pixel x to W-1-x exactly: the projective resampling would copy the same
        # values at ten times the cost (the quick demo's only augmentation, on every batch).
        flip = params["flip"][:, None, None, None]
        return (tf.where(flip, tf.reverse(images, axis=[2]), images),
                tf.where(flip, tf.reverse(masks, axis=[2]), masks))
    transforms = transforms_from_params(params, shape[1], shape[2])
    out_images = apply_transforms(
        images, transforms, interpolation=image_interpolation, fill_mode=config.fill_mode
    )
    out_masks = _transform_masks(masks, transforms, config.fill_mode)
    return out_images, out_masks


def _flip_only(config: AugmentConfig) -> bool:
    """Whether ``config`` only mirrors (no rotation, shift or zoom)."""
    return (config.horizontal_flip and config.rotation == 0 and config.width_shift == 0
            and config.height_shift == 0 and config.zoom == 0)


def _transform_masks(masks: tf.Tensor, transforms: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """Nearest-neighbour resampling of the masks that have any foreground.

    An all-zero mask (a negative: most of a real dataset) stays all zero under any of the
    fill modes (constant fill is 0), so only the others go through the op.
    """
    nonzero = tf.reduce_any(tf.not_equal(masks, 0), axis=[1, 2, 3])
    idx = tf.where(nonzero)
    moved = apply_transforms(
        tf.gather_nd(masks, idx), tf.gather_nd(transforms, idx), interpolation="nearest", fill_mode=fill_mode
    )
    return tf.tensor_scatter_nd_update(tf.zeros_like(masks), idx, moved)


def preview(
    image: np.ndarray,
    mask: np.ndarray | None,
    config: AugmentConfig,
    n: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` augmented versions of one image and its mask (the blog's figure of 5).

    ``image``, ``mask``: ``(H, W)`` or ``(H, W, 1)`` uint8 (mask {0, 255}, or None for an
    all-zero mask). Returns ``(images (n, H, W) uint8, masks (n, H, W) uint8)``. Each of
    the ``n`` gets its own draw even when ``config.per_batch`` (the figure shows variety).
    """
    check_config(config)
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise InputError(f"preview: n must be a positive integer, got {n!r}")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise InputError(f"preview: image must be (H, W) or (H, W, 1), got shape {image.shape}")
    if mask is None:
        mask = np.zeros_like(image, dtype=np.uint8)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.shape != image.shape:
        raise InputError(f"preview: mask shape {mask.shape} differs from image shape {image.shape}")
    images = np.repeat(image.astype(np.uint8)[None, ..., None], n, axis=0)
    masks = np.repeat(mask.astype(np.uint8)[None, ..., None], n, axis=0)
    config = dataclasses.replace(config, per_batch=False)
    out_images, out_masks = augment_batch(images, masks, config, seed)
    return out_images.numpy()[..., 0], out_masks.numpy()[..., 0]
