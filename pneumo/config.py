"""Configuration as frozen dataclasses.

Every stage takes its config explicitly; ``to_dict``/``from_dict`` round-trip them
through JSON (``config.json`` in every run folder), and ``from_dict`` rejects
unknown keys with a message naming them, so a typo never silently falls back to a
default.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from pneumo.errors import InputError

T = TypeVar("T")

# --------------------------------------------------------------------------- vocabularies
# TensorFlow-free, so the CLI, the app and config validation share them without importing Keras.
# Where a module builds things by name, its registry (name -> builder) is checked against the
# vocabulary at import with check_registry; the labels the app's menus and the CLI's --help
# show are defined once here, beside their vocabulary, and checked the same way below.
VARIANTS = ("unet", "blog", "blog-code", "unet-bn")  # pneumo.model.networks.VARIANT_BUILDERS
VARIANT_LABELS: dict[str, str] = {
    "unet": "VGG16-U-Net with skip connections (for ImageNet weights)",
    "blog": "the blog's VGG16 encoder-decoder, as described",
    "blog-code": "the blog's model as its code builds it",
    "unet-bn": "VGG-shaped U-Net with BatchNorm and a width (from scratch, CPU)",
}
LOSSES = ("bce", "dice", "bce+dice", "bce+batch-dice")  # pneumo.model.losses.LOSS_BUILDERS
LOSS_LABELS: dict[str, str] = {
    "bce": "binary cross-entropy (the blog's)",
    "dice": "soft Dice per image",
    "bce+dice": "BCE + soft Dice per image",
    "bce+batch-dice": "BCE + soft Dice over the batch",
}
LR_SCHEDULES = ("constant", "cosine")  # pneumo.train.loop
LR_SCHEDULE_LABELS: dict[str, str] = {"constant": "constant", "cosine": "cosine decay to 0"}
FILL_MODES = ("nearest", "constant", "reflect", "wrap")  # pneumo.train.augment
SPLITS = ("train", "dev", "test")  # the pack's splits, in order
DICOM_WINDOWS = ("voi", "full")  # pneumo.ingest.imageio: how DICOM values become 8 bits
SOURCE_KINDS = ("folders", "siim", "demo")  # pneumo.ingest.sources.SOURCES: what can be packed
IN_MEMORY = ("auto", "yes", "no")  # pneumo.train.data: hold a split's images in memory or stream them
IN_MEMORY_LABELS: dict[str, str] = {
    "auto": "load when the images and masks take at most half of the free memory, else stream",
    "yes": "load the split into memory",
    "no": "stream from the pack (bounded memory)",
}
PRECISIONS = ("none", "bf16", "fp16")  # pneumo.train.build.PRECISION_POLICIES: compute precision
PRECISION_LABELS: dict[str, str] = {
    "none": "float32 (no mixed precision)",
    "bf16": "mixed bfloat16, no loss scaling (A100/H100/H200; CPUs with AMX)",
    "fp16": "mixed float16 with loss scaling (older GPUs with tensor cores)",
}
IMAGENET_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"  # Keras' cache name


def check_registry(registry: str, names: Iterable[str], vocabulary: Sequence[str]) -> None:
    """Raise ``RuntimeError`` unless ``names`` (a registry's keys) are exactly ``vocabulary``, in its order.

    Called at import by every registry and label table: a builder added without its name in
    the vocabulary (or the reverse) stops the import with a message naming the difference,
    instead of surfacing later as an unknown option or a missing menu entry.
    """
    names = tuple(names)
    if names == tuple(vocabulary):
        return
    missing = [n for n in vocabulary if n not in names]
    extra = [n for n in names if n not in vocabulary]
    problems = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + \
               ([f"not in the vocabulary {', '.join(map(repr, extra))}"] if extra else [])
    detail = "; ".join(problems) or f"order {', '.join(names)} instead of {', '.join(vocabulary)}"
    raise RuntimeError(f"{registry} does not match its vocabulary ({', '.join(vocabulary)}): {detail}")


check_registry("pneumo.config.VARIANT_LABELS", VARIANT_LABELS, VARIANTS)
check_registry("pneumo.config.LOSS_LABELS", LOSS_LABELS, LOSSES)
check_registry("pneumo.config.LR_SCHEDULE_LABELS", LR_SCHEDULE_LABELS, LR_SCHEDULES)
check_registry("pneumo.config.IN_MEMORY_LABELS", IN_MEMORY_LABELS, IN_MEMORY)
check_registry("pneumo.config.PRECISION_LABELS", PRECISION_LABELS, PRECISIONS)


# --------------------------------------------------------------------------- split
@dataclass(frozen=True)
class SplitConfig:
    """How a manifest is cut into train/dev/test."""

    proportions: tuple[float, float, float] = (250.0, 40.0, 40.0)  # the blog's 250/40/40 ratio
    batches: tuple[int, int, int] | None = None  # exact counts = batches x batch_size (the blog's mode)
    batch_size: int = 32  # only used with ``batches``
    seed: int = 2  # the blog's random.seed(2)
    stratify: bool = False  # same positive fraction in each split
    group_by_patient: bool = False  # no patient in two splits


# --------------------------------------------------------------------------- pack
@dataclass(frozen=True)
class PackConfig:
    """How a manifest becomes an HDF5 pack."""

    size: int = 256  # square side in pixels; a positive multiple of 32 (the models need it)
    split: SplitConfig = field(default_factory=SplitConfig)
    compression: str | None = None  # None, "gzip" or "lzf"; None is fastest to read
    workers: int | None = None  # decoding processes; None = all cores
    skip_bad: bool = False  # skip (and report) unreadable images instead of failing
    # Pixel budget per image, checked from the file's header before decoding: 50 Mpx is a
    # 7000x7000 image, well above any chest X-ray; None = no limit (trusted data only).
    max_pixels: int | None = 50_000_000
    # Decode in worker processes even for a handful of images (the app: an upload is never
    # decoded inside the server process).
    isolate: bool = False
    worker_memory: int | None = None  # address-space cap per worker in bytes (RLIMIT_AS); None = none
    # DICOM to 8 bits: "voi" applies the file's own VOI LUT or WindowCenter/WindowWidth (what a
    # radiologist's viewer shows first; a 12-bit CR scaled by its full range looks washed out),
    # falling back to the full stored range when it has none; "full" always uses the full range.
    dicom_window: str = "voi"
    # CSV with an "id" column (e.g. the relabel list `pneumo curate` writes): those ids are left
    # out before splitting, and the pack records how many and the list's path. None = none.
    exclude: str | None = None


# --------------------------------------------------------------------------- augment
@dataclass(frozen=True)
class AugmentConfig:
    """Paired random geometry; the blog's ImageDataGenerator ranges by default. 0 turns a range off."""

    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    width_shift: float = 0.02  # fraction of the width, uniform in [-s, s]
    height_shift: float = 0.02  # fraction of the height
    zoom: float = 0.02  # x and y scales drawn independently in [1 - zoom, 1 + zoom], as Keras did
    horizontal_flip: bool = True  # flip with probability 1/2
    fill_mode: str = "nearest"  # "nearest", "constant" (0), "reflect" or "wrap"
    per_batch: bool = False  # True: one transform for the whole batch (the blog's generator)


# --------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    pack: str = ""  # path of the HDF5 pack
    variant: str = "unet"  # one of VARIANTS (VARIANT_LABELS says what each builds)
    encoder_weights: str | None = "imagenet"  # "imagenet", a local .h5 path, or None
    freeze_encoder: bool | None = None  # None: frozen when weights are pretrained
    epochs: int = 90  # the blog's 90
    steps_per_epoch: int | None = None  # None: one pass over the train split
    validation_steps: int | None = None  # None: one pass over the dev split
    batch_size: int = 32  # the blog's 32
    lr: float = 2e-5  # the blog's Adam learning rate
    loss: str = "bce"  # one of LOSSES; "bce" is the blog's
    fine_tune_epochs: int = 0  # second stage with the encoder unfrozen; 0 = none
    fine_tune_lr: float = 1e-5  # lower than lr: pretrained features move slowly
    # One of PRECISIONS; "none" = float32 throughout. A config.json of before issue 17 holds
    # true/false here, read as "fp16"/"none" (LEGACY_VALUES).
    mixed_precision: str = "none"
    xla: bool = False  # jit_compile the train step
    seed: int = 0  # weights init, shuffling and augmentation
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Added by issue 10; a config.json written before them loads with these defaults, which
    # reproduce the old behaviour exactly.
    width: float = 1.0  # filter multiplier of "unet-bn" (0.25: 16 filters in block 1); 1 for the others
    positive_fraction: float | None = None  # share of positive images per train batch; None = uniform
    lr_schedule: str = "constant"  # one of LR_SCHEDULES; "cosine": lr decays to 0 over all first-stage steps
    init_from: str | None = None  # run folder whose best.keras weights start this run; None = fresh
    # CSV with an "id" column (e.g. the relabel list `pneumo curate` writes): those images are
    # left out of the train and dev splits while training, never out of test, so test scores
    # stay comparable with runs on the whole pack. None = train on every image of the pack.
    exclude: str | None = None
    # Issue 17: "auto" loads each split (this worker's shard of it) when its images and masks
    # take at most half of MemAvailable, else streams it: what runs did before the option existed.
    in_memory: str = "auto"  # one of IN_MEMORY


# --------------------------------------------------------------------------- presets
# Named starting points shared by ``python -m pneumo train --preset``, ``quickstart`` and the
# app's Training page. ``pack`` is empty: the caller names the data. Keep the keys stable;
# the values are chosen by measurement (docs/benchmarks.md, "Quick demo quality").
PRESETS: dict[str, TrainConfig] = {
    # From random weights on 2 CPU cores: 5,120 images in 2-2.5 minutes (142-154 s with the
    # machine shared, load 4-5). A quarter-width U-Net with BatchNorm (1.2 M parameters), half
    # of each batch positive so the rare lesions are seen from the first steps (uniform
    # batches: Dice on positives 0.39 at the same point), a batch-global Dice that does not
    # reward empty outputs, lr 2e-3 decayed to 0 (1e-3: Dice+ 0.74). Test split of the
    # 1,000-phantom pack, seeds 0/1/2: SIIM 0.963/0.958/0.933 vs 0.793 all-empty, Dice on
    # positives 0.82/0.80/0.84, AUC 1.00/0.98/1.00 (docs/benchmarks.md, bench/quality.py).
    # Augmentation: horizontal flips only, as in the measured recipe (the blog's
    # rotation/shift/zoom ranges were not measured here).
    "quick-demo": TrainConfig(
        variant="unet-bn", width=0.25, encoder_weights=None, epochs=8, steps_per_epoch=40,
        batch_size=16, lr=2e-3, loss="bce+batch-dice", positive_fraction=0.5,
        lr_schedule="cosine", seed=0,
        augment=AugmentConfig(rotation=0.0, width_shift=0.0, height_shift=0.0, zoom=0.0,
                              horizontal_flip=True),
    ),
    # The blog's 2019 settings: VGG16 encoder from ImageNet, frozen, Adam 2e-5, BCE, 90 epochs.
    "blog": TrainConfig(variant="blog", encoder_weights="imagenet", epochs=90, batch_size=32, lr=2e-5,
                        loss="bce"),
}
PRESET_TITLES: dict[str, str] = {  # one line per preset for menus and --help
    "quick-demo": "Quick demo on CPU (about 2 minutes, from scratch)",
    "blog": "Blog (2019) settings (ImageNet VGG16, GPU)",
}
QUICK_PRESET = "quick-demo"  # what Home's button and ``python -m pneumo quickstart`` train

# The demo pack the quick demo trains on, in the workspace's data folder; keyword arguments
# of ``pneumo.ingest.packer.make_demo_pack``. 128 px: a quarter of the work of 256 px per image.
# 1,000 phantoms (a few seconds to make): more variety to learn from than the 400 of the
# first-launch pack, and a test split of 121 images, enough to tell a model from noise.
QUICK_PACK_NAME = "quick-demo-128.h5"
QUICK_PACK_OPTIONS: dict[str, Any] = {"size": 128, "count": 1000}


def preset(name: str) -> TrainConfig:
    """The preset ``name`` (``pack`` empty); unknown names raise :class:`InputError` listing the known."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def normalise_train_paths(config: TrainConfig) -> TrainConfig:
    """``encoder_weights`` "none"/"" as None; the pack, a weights file, ``init_from`` and ``exclude`` as absolute paths.

    Runs outlive the folder they were started from: the app, the CLI and a resumed run must
    all find the same files from ``config.json``.
    """
    weights = config.encoder_weights
    if isinstance(weights, str) and weights.strip().lower() in ("", "none", "null"):
        weights = None
    elif isinstance(weights, str) and weights != "imagenet":
        weights = str(Path(weights).expanduser().absolute())
    pack = str(Path(config.pack).expanduser().absolute()) if config.pack else config.pack
    return dataclasses.replace(config, pack=pack, encoder_weights=weights, init_from=_absolute(config.init_from),
                               exclude=_absolute(config.exclude))


def _absolute(path: Any) -> Any:
    """An optional path as an absolute one ("" as None); abspath also folds "..", since the recorded
    path is read back by people, not only code. Anything but a string is left for the checks."""
    if not isinstance(path, str):
        return path
    return os.path.abspath(Path(path).expanduser()) if path.strip() else None


# --------------------------------------------------------------------------- train validation
def _positive_int(value: Any, option: str, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a whole number >= 0" if allow_zero else "a whole number >= 1"
        raise InputError(f"{option} = {value!r}: must be {kind}")


def _positive_float(value: Any, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{option} = {value!r}: must be a positive number")


def check_width(variant: str, width: float, encoder_weights: Any = None) -> float:
    """Validate ``width`` for ``variant``: any in (0, 4] for "unet-bn" (1 with pretrained weights), 1 otherwise."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise InputError(f"width {width!r} must be a number in (0, 4] (0.25: 16 filters in block 1)")
    if variant != "unet-bn" and width != 1:
        raise InputError(f"width {width} applies to variant 'unet-bn' only; {variant!r} needs width 1")
    if encoder_weights is not None and width != 1:
        raise InputError(f"encoder weights {encoder_weights!r} fit VGG16 at width 1 only; width {width} "
                         f"needs encoder_weights=None (train from scratch)")
    return float(width)


def check_options(config: TrainConfig) -> TrainConfig:
    """Check every value of ``config`` (no file is read: :func:`pneumo.plan.plan_run` checks the
    files it names); return it, or raise :class:`InputError` naming the option."""
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.variant not in VARIANTS:
        raise InputError(f"variant {config.variant!r} is unknown (choose one of: {', '.join(VARIANTS)})")
    if config.loss not in LOSSES:
        raise InputError(f"loss {config.loss!r} is unknown (choose one of: {', '.join(LOSSES)})")
    _positive_int(config.epochs, "epochs")
    _positive_int(config.fine_tune_epochs, "fine_tune_epochs", allow_zero=True)
    _positive_int(config.steps_per_epoch, "steps_per_epoch", allow_none=True)
    _positive_int(config.validation_steps, "validation_steps", allow_none=True)
    _positive_int(config.batch_size, "batch_size")
    _positive_int(config.seed, "seed", allow_zero=True)
    _positive_float(config.lr, "lr")
    if config.fine_tune_epochs:
        _positive_float(config.fine_tune_lr, "fine_tune_lr")
    if config.freeze_encoder not in (None, True, False):
        raise InputError(f"freeze_encoder = {config.freeze_encoder!r}: must be true, false or null")
    if not isinstance(config.xla, bool):
        raise InputError(f"xla = {config.xla!r}: must be true or false")
    if not isinstance(config.mixed_precision, str) or config.mixed_precision not in PRECISIONS:
        raise InputError(f"mixed_precision {config.mixed_precision!r} is unknown (choose one of: "
                         f"{', '.join(PRECISIONS)})")
    if not isinstance(config.augment, AugmentConfig):
        raise InputError(f"augment must be an AugmentConfig, got {type(config.augment).__name__}")
    if config.augment.fill_mode not in FILL_MODES:
        raise InputError(f"augment.fill_mode {config.augment.fill_mode!r} is unknown "
                         f"(choose one of: {', '.join(FILL_MODES)})")
    check_width(config.variant, config.width, config.encoder_weights)
    f = config.positive_fraction
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1):
        raise InputError(f"positive_fraction = {f!r}: must be a number in 0..1 or null (uniform batches)")
    if config.lr_schedule not in LR_SCHEDULES:
        raise InputError(f"lr_schedule {config.lr_schedule!r} is unknown (choose one of: {', '.join(LR_SCHEDULES)})")
    if config.in_memory not in IN_MEMORY:
        raise InputError(f"in_memory {config.in_memory!r} is unknown (choose one of: {', '.join(IN_MEMORY)})")
    for name in ("init_from", "exclude"):
        value = getattr(config, name)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{name} = {value!r}: must be a path or null")
    return config


def config_diff(a: Any, b: Any) -> list[str]:
    """The top-level fields whose values differ between configs ``a`` and ``b`` (same class)."""
    da, db = to_dict(a), to_dict(b)
    return [k for k in da if da[k] != db.get(k)]


# --------------------------------------------------------------------------- helpers
def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# Values that config.json files of older versions hold for a field whose type changed since,
# and what they mean now: (class name, field) -> {old value: new value}. from_dict applies them
# before coercion; the old value matches by type and value (True is not 1).
LEGACY_VALUES: dict[tuple[str, str], dict[Any, Any]] = {
    ("TrainConfig", "mixed_precision"): {True: "fp16", False: "none"},  # a bool before issue 17
}


def _legacy(cls: type, name: str, value: Any) -> Any:
    for old, new in LEGACY_VALUES.get((cls.__name__, name), {}).items():
        if type(value) is type(old) and value == old:
            return new
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build config ``cls`` from ``data``, recursing into nested configs.

    Unknown keys raise :class:`InputError` naming them; missing keys take defaults;
    lists become tuples where the field is a tuple; older values are read as they are meant
    now (:data:`LEGACY_VALUES`).
    """
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) for {cls.__name__}: {', '.join(unknown)} "
            f"(known: {', '.join(fields)})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], _legacy(cls, name, value), f"{where}.{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                return _coerce(arg, value, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_size(size: int) -> int:
    """Validate an image side: a positive multiple of 32 (five 2x poolings in the models)."""
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 32:
        raise InputError(f"size {size!r} is not a positive multiple of 32 (e.g. 64, 128, 256)")
    return size
