"""Configuration as frozen dataclasses.

Every stage takes its config explicitly; ``to_dict``/``from_dict`` round-trip them
through JSON (``config.json`` in every run folder), and ``from_dict`` rejects
unknown keys with a message naming them, so a typo never silently falls back to a
default.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import InputError

T = TypeVar("T")


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
    variant: str = "unet"  # "unet", "blog" or "blog-code"
    encoder_weights: str | None = "imagenet"  # "imagenet", a local .h5 path, or None
    freeze_encoder: bool | None = None  # None: frozen when weights are pretrained
    epochs: int = 90  # the blog's 90
    steps_per_epoch: int | None = None  # None: one pass over the train split
    validation_steps: int | None = None  # None: one pass over the dev split
    batch_size: int = 32  # the blog's 32
    lr: float = 2e-5  # the blog's Adam learning rate
    loss: str = "bce"  # "bce" (the blog's), "dice" or "bce+dice"
    fine_tune_epochs: int = 0  # second stage with the encoder unfrozen; 0 = none
    fine_tune_lr: float = 1e-5  # lower than lr: pretrained features move slowly
    mixed_precision: bool = False  # float16 compute on GPUs
    xla: bool = False  # jit_compile the train step
    seed: int = 0  # weights init, shuffling and augmentation
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def normalise_train_paths(config: TrainConfig) -> TrainConfig:
    """``encoder_weights`` "none"/"" as None, and the pack and a weights file as absolute paths.

    Runs outlive the folder they were started from: the app, the CLI and a resumed run must
    all find the same files from ``config.json``.
    """
    weights = config.encoder_weights
    if isinstance(weights, str) and weights.strip().lower() in ("", "none", "null"):
        weights = None
    elif isinstance(weights, str) and weights != "imagenet":
        weights = str(Path(weights).expanduser().absolute())
    pack = str(Path(config.pack).expanduser().absolute()) if config.pack else config.pack
    return dataclasses.replace(config, pack=pack, encoder_weights=weights)


# --------------------------------------------------------------------------- helpers
def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build config ``cls`` from ``data``, recursing into nested configs.

    Unknown keys raise :class:`InputError` naming them; missing keys take defaults;
    lists become tuples where the field is a tuple.
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
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
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


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config dataclass to ``path`` as JSON, atomically."""
    from ._io import atomic_write_json

    atomic_write_json(path, to_dict(cfg))


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config dataclass written by :func:`save_config`; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    return from_dict(cls, data, where=str(path))


def check_size(size: int) -> int:
    """Validate an image side: a positive multiple of 32 (five 2x poolings in the models)."""
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 32:
        raise InputError(f"size {size!r} is not a positive multiple of 32 (e.g. 64, 128, 256)")
    return size
