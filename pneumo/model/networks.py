"""The segmentation models: the blog's VGG16 decoder (as printed and as coded) and a VGG16 U-Net.

Three tiers, as in qubvel/segmentation_models' ``unet.py``: block factories
(``_conv_bn_relu``, ``_unet_decoder_block``, ``_blog_decoder_block``), graph builders
(``_build_blog``, ``_build_unet``, ``_build_unet_bn``) and one public builder,
:func:`build_model`, which picks the variant's builder from :data:`VARIANT_BUILDERS` (checked
at import to hold exactly the names of ``pneumo.config.VARIANTS``).

Every model takes ``(S, S, 1)`` gray images, uint8 or float in 0..255, and returns
``(S, S, 1)`` float32 sigmoid probabilities. Scaling and gray-to-RGB happen inside the model
(named, weight-free layers), so a saved model needs nothing but the raw pack images. The
preprocessing layers and the final sigmoid are pinned to float32, so under a
``mixed_float16`` policy only the convolutions run in half precision.

The VGG16 encoder is built by ``keras.applications.VGG16`` and its layers are reused, so
layer names are Keras' own (``block1_conv1`` ...) and ``"imagenet"`` weights come through
Keras' download cache.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
from keras import layers, ops

from pneumo.config import IMAGENET_NOTOP_FILE, VARIANTS, check_registry, check_width  # check_width: re-exported
from pneumo.errors import InputError
from pneumo.model.imagenet import imagenet_cache_path, imagenet_cache_problem, imagenet_fix

_BN_MOMENTUM = 0.9  # decoder BatchNorm; see _conv_bn_relu
# Encoder layers whose outputs feed the U-Net decoder, deepest first (qubvel's VGG16 skips).
SKIP_LAYERS = ("block5_conv3", "block4_conv3", "block3_conv3", "block2_conv2", "block1_conv2")
UNET_BOTTLENECK = "block5_pool"
UNET_DECODER_FILTERS = (256, 128, 64, 32, 16)
# VGG16's conv blocks: (filters, convs) at width 1. "unet-bn" scales the filters by its width.
VGG_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
_MIN_DECODER_FILTERS = 8  # the full-resolution decoder stages of a narrow unet-bn keep this many

# The blog's printed summary: VGG16 cut at block4_pool (``conv_base.layers[-5]``).
BLOG_ENCODER_END = "block4_pool"
BLOG_DECODER_FILTERS = (32, 16, 16, 8)
# The blog's code as written: the full conv base, one more Conv2D/UpSampling2D pair.
BLOG_CODE_ENCODER_END = "block5_pool"
BLOG_CODE_DECODER_FILTERS = (64, 32, 32, 16, 8)

ENCODER_PREFIX = "block"  # every VGG16 layer name starts with it; no other layer's does

# ImageNet channel means in BGR order (keras.applications.imagenet_utils, mode="caffe").
_CAFFE_MEANS_BGR = (103.939, 116.779, 123.68)


# =========================================================================== layers
@keras.saving.register_keras_serializable(package="pneumo")
class ToFloat32(layers.Layer):
    """Cast any numeric input (uint8 pack images) to float32, values unchanged."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x):
        return ops.cast(x, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="pneumo")
class GrayToRGB(layers.Layer):
    """``(..., 1)`` to ``(..., 3)`` by repeating the gray channel (the blog's ``* np.ones``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x):
        return ops.concatenate([x, x, x], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="pneumo")
class VGGPreprocess(layers.Layer):
    """VGG16's own input scaling (``mode="caffe"``): RGB to BGR, minus the ImageNet means.

    Input ``(..., 3)`` RGB in 0..255; output the same shape, roughly -124..152.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x):
        bgr = ops.flip(x, axis=-1)
        return bgr - ops.convert_to_tensor(_CAFFE_MEANS_BGR, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


# =========================================================================== block factories
def _conv_bn_relu(filters: int, name: str):
    """3x3 Conv2D (no bias: BatchNorm has one) -> BatchNorm -> ReLU."""

    def apply(x):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer="he_uniform", name=f"{name}_conv")(x)
        # momentum 0.9 (Keras: 0.99): the moving statistics used at validation settle in
        # tens of steps, not hundreds, so short runs (the quick demo, fine-tuning on a few
        # hundred images) are not judged on statistics they never trained with.
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    return apply


def _unet_decoder_block(filters: int, stage: int):
    """x2 upsampling, concatenation with the encoder skip (if any), two conv-BN-ReLU."""

    def apply(x, skip=None):
        name = f"decoder_stage{stage}"
        x = layers.UpSampling2D(2, name=f"{name}_upsample")(x)
        if skip is not None:
            x = layers.Concatenate(axis=-1, name=f"{name}_concat")([x, skip])
        x = _conv_bn_relu(filters, f"{name}a")(x)
        return _conv_bn_relu(filters, f"{name}b")(x)

    return apply


def _blog_decoder_block(filters: int, stage: int):
    """The blog's pair: Conv2D(filters, 3x3, relu, same) then UpSampling2D(2)."""

    def apply(x):
        x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"blog_conv{stage}")(x)
        return layers.UpSampling2D(2, name=f"blog_up{stage}")(x)

    return apply


def _sigmoid_head(x, name_prefix: str):
    """Conv2D(1, 3x3) logits and a float32 sigmoid named ``mask`` (float32 under mixed precision)."""
    x = layers.Conv2D(1, 3, padding="same", name=f"{name_prefix}_conv")(x)
    return layers.Activation("sigmoid", dtype="float32", name="mask")(x)


# =========================================================================== graph builders
def _run_encoder(vgg: keras.Model, x, stop_at: str) -> dict[str, Any]:
    """Call VGG16's own layers on ``x`` up to and including ``stop_at``; outputs by layer name."""
    outputs = {}
    for layer in vgg.layers[1:]:  # layers[0] is VGG's InputLayer
        x = layer(x)
        outputs[layer.name] = x
        if layer.name == stop_at:
            return outputs
    raise AssertionError(f"VGG16 has no layer {stop_at}")  # pragma: no cover


def _build_blog(image, vgg: keras.Model, encoder_end: str, filters: tuple[int, ...], name: str):
    """The blog's graph: x/255, gray to RGB, VGG16 to ``encoder_end``, Conv2D/UpSampling2D pairs."""
    x = ToFloat32(name="cast_float32")(image)
    # The blog fed X/255 straight to VGG16, without VGG's preprocess_input: kept as it was.
    x = layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale_0_1")(x)
    x = GrayToRGB(name="gray_to_3ch")(x)
    x = _run_encoder(vgg, x, encoder_end)[encoder_end]
    for stage, f in enumerate(filters, start=1):
        x = _blog_decoder_block(f, stage)(x)
    out = _sigmoid_head(x, f"blog_conv{len(filters) + 1}")
    return keras.Model(image, out, name=name)


def _build_unet(image, vgg: keras.Model, filters: tuple[int, ...] = UNET_DECODER_FILTERS):
    """U-Net on VGG16: bottleneck block5_pool, skips :data:`SKIP_LAYERS`, conv-BN-ReLU decoder."""
    x = ToFloat32(name="cast_float32")(image)
    x = GrayToRGB(name="gray_to_3ch")(x)
    x = VGGPreprocess(name="vgg_caffe_preprocess")(x)
    feats = _run_encoder(vgg, x, UNET_BOTTLENECK)
    x = feats[UNET_BOTTLENECK]
    for stage, f in enumerate(filters):
        skip = feats[SKIP_LAYERS[stage]] if stage < len(SKIP_LAYERS) else None
        x = _unet_decoder_block(f, stage)(x, skip)
    out = _sigmoid_head(x, "final")
    return keras.Model(image, out, name="pneumo_unet")


def _scaled(filters: int, width: float, floor: int = 1) -> int:
    return max(floor, int(round(filters * width)))


def _vgg_bn_encoder(x, width: float) -> dict[str, Any]:
    """VGG16's conv layout with BatchNorm after every conv, filters scaled by ``width``.

    Layer names are VGG16's (``block1_conv1`` ..., ``block5_pool``) plus ``_bn``/``_relu``
    suffixes, so the skip table, :func:`encoder_layers` and, at width 1, ImageNet conv
    weights all apply. The convs keep their bias (redundant before BatchNorm) only so that
    VGG16 weight files fit them unchanged.
    """
    outputs = {}
    for b, (filters, convs) in enumerate(VGG_BLOCKS, start=1):
        for c in range(1, convs + 1):
            name = f"block{b}_conv{c}"
            x = layers.Conv2D(_scaled(filters, width), 3, padding="same",
                              kernel_initializer="he_uniform", name=name)(x)
            x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
            x = layers.Activation("relu", name=f"{name}_relu")(x)
            outputs[name] = x
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        outputs[f"block{b}_pool"] = x
    return outputs


def _build_unet_bn(image, width: float):
    """:func:`_build_unet`'s graph on a BatchNorm VGG encoder of ``width``; decoder scaled too."""
    x = ToFloat32(name="cast_float32")(image)
    x = GrayToRGB(name="gray_to_3ch")(x)
    x = VGGPreprocess(name="vgg_caffe_preprocess")(x)
    feats = _vgg_bn_encoder(x, width)
    x = feats[UNET_BOTTLENECK]
    for stage, f in enumerate(UNET_DECODER_FILTERS):
        skip = feats[SKIP_LAYERS[stage]] if stage < len(SKIP_LAYERS) else None
        x = _unet_decoder_block(_scaled(f, width, _MIN_DECODER_FILTERS), stage)(x, skip)
    out = _sigmoid_head(x, "final")
    return keras.Model(image, out, name="pneumo_unet_bn")


# =========================================================================== encoder weights
def _load_vgg_weights(vgg: keras.Model, path: Path, what: str, hint: str = "") -> None:
    """Load ``path`` into ``vgg``; InputError unless every variable came from the file.

    Whether a load was complete is decided from the weights, not from Keras' messages: every
    variable is set to NaN first, so one that the file did not fill (Keras skips some parts
    of a file with only a warning) still holds NaN afterwards.
    """
    for v in vgg.weights:
        v.assign(np.full(tuple(v.shape), np.nan, dtype=v.dtype))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vgg.load_weights(str(path))
        unset = [v.path for v in vgg.weights if not np.isfinite(np.asarray(v)).all()]
        if unset:
            raise ValueError(f"{len(unset)} of {len(vgg.weights)} weights not set by the file "
                             f"or not finite, e.g. {', '.join(unset[:3])}")
    except Exception as e:
        raise InputError(
            f"{what} {path}: does not fit VGG16 without top ({_first_line(e)}). "
            f"Expected Keras' {IMAGENET_NOTOP_FILE} or a file saved by save_weights of a "
            f"VGG16(include_top=False) model (name ending .weights.h5).{hint}"
        ) from None
    for w in caught:  # a complete load: pass on what Keras had to say
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _imagenet_vgg16(shape: tuple[int, int, int]) -> keras.Model:
    """VGG16 no-top with Keras' ImageNet weights: the verified cache file, else Keras' download."""
    cache = imagenet_cache_path()
    if cache.is_file():
        # Checked (md5, as Keras does) and loaded here: no network, and a wrong file is
        # named instead of being silently downloaded again (or failing offline).
        problem = imagenet_cache_problem(cache)
        if problem is not None:
            raise InputError(f"encoder_weights='imagenet': {problem}. Delete it so that Keras "
                             f"downloads it again (needs internet), or: {imagenet_fix(cache)}")
        vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
        _load_vgg_weights(vgg, cache, "cached ImageNet weights file")
        return vgg
    try:
        # Keras' own download into the same cache (md5-checked by get_file).
        return keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as e:  # URL errors (offline), hash mismatch, ...
        raise InputError(
            f"encoder_weights='imagenet': the VGG16 ImageNet weights are not on this machine "
            f"({cache} is not there) and could not be downloaded ({_first_line(e)}). "
            f"{imagenet_fix(cache)} A VGG16 no-top weights file of your own can be passed as "
            f"a path instead."
        ) from None


def _vgg16(input_size: int, encoder_weights: str | os.PathLike | None) -> keras.Model:
    """VGG16 without top at ``(S, S, 3)`` with the requested weights; errors as InputError."""
    shape = (input_size, input_size, 3)
    if encoder_weights is None:
        return keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    if isinstance(encoder_weights, str) and encoder_weights == "imagenet":
        return _imagenet_vgg16(shape)
    path = Path(encoder_weights)
    if not path.is_file():
        raise InputError(f"encoder weights file {path}: not found (expected a VGG16 no-top .h5 "
                         f"weights file, 'imagenet' or None)")
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    _load_vgg_weights(vgg, path, "encoder weights file")
    return vgg


# =========================================================================== variants
# One builder per name of config.VARIANTS: ``(image, input_size, encoder_weights, width) -> model``,
# where ``image`` is the ``(S, S, 1)`` input tensor. Arguments are checked by build_model first;
# freezing the encoder is build_model's too.
def _unet_model(image, input_size: int, encoder_weights: str | os.PathLike | None, width: float) -> keras.Model:
    return _build_unet(image, _vgg16(input_size, encoder_weights))


def _blog_model(image, input_size: int, encoder_weights: str | os.PathLike | None, width: float) -> keras.Model:
    return _build_blog(image, _vgg16(input_size, encoder_weights), BLOG_ENCODER_END, BLOG_DECODER_FILTERS,
                       "pneumo_blog")


def _blog_code_model(image, input_size: int, encoder_weights: str | os.PathLike | None,
                     width: float) -> keras.Model:
    return _build_blog(image, _vgg16(input_size, encoder_weights), BLOG_CODE_ENCODER_END,
                       BLOG_CODE_DECODER_FILTERS, "pneumo_blog_code")


def _unet_bn_model(image, input_size: int, encoder_weights: str | os.PathLike | None,
                   width: float) -> keras.Model:
    model = _build_unet_bn(image, width)
    if encoder_weights is not None:
        # Same layer names as VGG16 (width 1 is enforced with weights): copy its convolutions in.
        vgg = _vgg16(input_size, encoder_weights)
        for layer in vgg.layers:
            if isinstance(layer, layers.Conv2D):
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


VARIANT_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "unet": _unet_model,
    "blog": _blog_model,
    "blog-code": _blog_code_model,
    "unet-bn": _unet_bn_model,
}
check_registry("pneumo.model.networks.VARIANT_BUILDERS", VARIANT_BUILDERS, VARIANTS)


# =========================================================================== public API
def build_model(
    variant: str = "unet",
    input_size: int = 256,
    encoder_weights: str | os.PathLike | None = "imagenet",
    freeze_encoder: bool | None = None,
    width: float = 1.0,
) -> keras.Model:
    """Build a segmentation model.

    Args:
        variant: a name of :data:`VARIANT_BUILDERS` (``pneumo.config.VARIANTS``): ``"unet"``
            (VGG16 U-Net, VGG preprocessing), ``"blog"`` (the blog's printed table: VGG16 to
            block4_pool, Conv2D 32,16,16,8 + UpSampling2D, Conv2D(1); 7,790,929 parameters,
            155,665 trainable), ``"blog-code"`` (the blog's code: full VGG16 conv base, Conv2D
            64,32,32,16,8 + UpSampling2D, Conv2D(1); 15,043,233 / 328,545) or ``"unet-bn"``
            (the U-Net with BatchNorm in the encoder too and every filter count scaled by
            ``width``: made to learn from random weights on a CPU; 1,2 M parameters at width 0.25).
        input_size: side S, a positive multiple of 32.
        encoder_weights: ``"imagenet"``, a path to VGG16 no-top weights (``.h5``), or None.
        freeze_encoder: None = frozen exactly when weights are pretrained.
        width: filter multiplier of ``"unet-bn"`` (0.25: 16 filters in block 1); must be 1
            for the other variants and whenever ``encoder_weights`` is not None.

    Returns:
        A ``keras.Model``: input ``(N, S, S, 1)`` uint8 or float32 in 0..255, output
        ``(N, S, S, 1)`` float32 probabilities.
    """
    if not isinstance(variant, str) or variant not in VARIANT_BUILDERS:
        raise InputError(f"variant {variant!r} is unknown (choose one of: {', '.join(VARIANTS)})")
    if (not isinstance(input_size, int) or isinstance(input_size, bool)
            or input_size <= 0 or input_size % 32):
        raise InputError(f"input_size {input_size!r} is not a positive multiple of 32 "
                         f"(the encoder halves it five times; e.g. 64, 128, 256)")
    width = check_width(variant, width, encoder_weights)
    image = keras.Input((input_size, input_size, 1), name="image")
    model = VARIANT_BUILDERS[variant](image, input_size, encoder_weights, width)
    if freeze_encoder is None:
        freeze_encoder = encoder_weights is not None
    set_encoder_trainable(model, not freeze_encoder)
    return model


def encoder_layers(model: keras.Model) -> list[layers.Layer]:
    """The VGG16 layers of a model built here (names starting with ``block``), input to output."""
    return [layer for layer in model.layers if layer.name.startswith(ENCODER_PREFIX)]


def set_encoder_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze the encoder (e.g. for a fine-tuning stage); the decoder is left as is.

    Recompile the model afterwards: Keras fixes the trainable set at ``compile``.
    """
    for layer in encoder_layers(model):
        layer.trainable = bool(trainable)


def load_model(path: str | os.PathLike, *, compile: bool = True) -> keras.Model:
    """Load a model saved with ``model.save`` (``.keras``); custom layers, losses and metrics known.

    ``compile=False`` skips restoring the loss, metrics and optimizer (enough to predict).
    """
    from pneumo.model import losses  # noqa: F401  (registers the custom losses and metrics)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path}: not found")
    try:
        return keras.saving.load_model(str(path), compile=compile)
    except Exception as e:
        raise InputError(f"model file {path}: cannot be read as a Keras model "
                         f"({_first_line(e)})") from None


def warm_start(model: keras.Model, path: str | os.PathLike, size: int) -> None:
    """Copy every weight of the model saved at ``path`` into ``model`` (same architecture, ``size`` px).

    The warm start of ``train --init-from``; :class:`InputError` naming ``path`` when its image
    side or its weights differ.
    """
    source = load_model(path, compile=False)
    other = int(source.input_shape[1])
    if other != size:
        raise InputError(f"init_from {path}: trained on {other} px images, this pack is {size} px; a warm "
                         f"start needs the same image size")
    try:
        model.set_weights(source.get_weights())
    except ValueError as e:
        raise InputError(f"init_from {path}: its weights do not fit this model ({_first_line(e)})") from None


def _first_line(e: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, shortened (Keras messages run to many lines)."""
    text = (str(e).strip().splitlines() or [""])[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}"
