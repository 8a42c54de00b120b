"""The checked plan of a training run: a :class:`~pneumo.config.TrainConfig` held against the
files it names (pack, weights file, warm-start run, exclusion list), before anything is built.

:mod:`pneumo.config` checks values only; this module is the first that reads files for a run,
and it sits above the store (it reads through :mod:`pneumo.store.pack` and
:mod:`pneumo.store.run`). No TensorFlow: the CLI and the app plan a run before a trainer starts.

- :func:`plan_run` -> :class:`RunPlan` (split sizes after the exclusion, steps per epoch);
- :func:`init_config`: the config of the run a warm start (``init_from``) takes weights from;
- :func:`check_pack`: the pack a run trained on, compared with the fingerprint it recorded.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from pneumo.config import TrainConfig, check_options
from pneumo.errors import InputError
from pneumo.exclude import PackExclusion, pack_exclusion
from pneumo.store.config_file import load_config
from pneumo.store.pack import Pack, pack_fingerprint
from pneumo.store.run import RunFolder, read_pack_record

__all__ = ["RunPlan", "plan_run", "init_config", "check_pack"]


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, from its config and its pack as they are now."""

    size: int  # the pack's image side in pixels (a multiple of 32)
    train: int  # train images after the exclusion list
    dev: int  # dev images after the exclusion list
    steps: int  # train steps per epoch (config.steps_per_epoch, else one pass over train)
    validation_steps: int  # dev batches per validation (config.validation_steps, at most one pass)
    dev_batches: int  # batches in one pass over dev
    exclusion: PackExclusion | None = None  # what config.exclude leaves out, per split; None without a list


def plan_run(config: TrainConfig) -> RunPlan:
    """Check ``config`` and the files it names (no TensorFlow); raise :class:`InputError` naming
    the option or file. Options first (:func:`pneumo.config.check_options`), then the weights
    file, the warm-start run, the pack and the exclusion list."""
    check_options(config)
    if config.init_from is not None:
        init_config(config)
    weights = config.encoder_weights
    if weights is not None and weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"encoder weights file {path}: not found (give 'imagenet', 'none' or "
                             f"the path of a VGG16 no-top weights .h5 file)")
        if not path.name.endswith(".h5"):
            raise InputError(f"encoder weights file {path}: expected a Keras weights file ending in .h5")
    return _plan_pack(config)


def _plan_pack(config: TrainConfig) -> RunPlan:
    if not config.pack:
        raise InputError("pack: no pack file given")
    with Pack(config.pack) as packed:
        n_train, n_dev, size = packed.counts["train"], packed.counts["dev"], packed.size
    if size <= 0 or size % 32:
        raise InputError(f"{config.pack}: image size {size} is not a multiple of 32, which the models "
                         f"need (five 2x poolings); pack it again with --size 64, 128, 256, ...")
    if n_train == 0:
        raise InputError(f"{config.pack}: the train split is empty; nothing to train on")
    if n_dev == 0:
        raise InputError(f"{config.pack}: the dev split is empty; training needs dev data for "
                         f"validation (pack it with a dev share)")
    exclusion = None
    if config.exclude is not None:
        exclusion = pack_exclusion(config.pack, config.exclude)
        n_train -= len(exclusion.indices["train"])
        n_dev -= len(exclusion.indices["dev"])
        for split, n in (("train", n_train), ("dev", n_dev)):
            if n == 0:
                raise InputError(f"{config.exclude}: lists every image of the {split} split of "
                                 f"{config.pack}; nothing left to {'train on' if split == 'train' else 'validate on'}")
    dev_batches = math.ceil(n_dev / config.batch_size)
    steps = config.steps_per_epoch or math.ceil(n_train / config.batch_size)
    validation_steps = min(config.validation_steps or dev_batches, dev_batches)
    return RunPlan(size=size, train=n_train, dev=n_dev, steps=steps, validation_steps=validation_steps,
                   dev_batches=dev_batches, exclusion=exclusion)


def init_config(config: TrainConfig) -> TrainConfig:
    """The config of the run ``config.init_from`` names, after checking it fits (same variant, width).

    Raises :class:`InputError` naming the folder when it has no best checkpoint or config, or
    when its model differs from the one ``config`` builds. The image side is checked when the
    weights are loaded.
    """
    root = Path(str(config.init_from))
    files = RunFolder(root)
    if not files.checkpoint("best").is_file():
        raise InputError(f"init_from {root}: no {files.checkpoint('best').name} there (give a run folder that "
                         f"finished at least one epoch)")
    other = load_config(TrainConfig, files.config)
    for name in ("variant", "width"):
        if getattr(other, name) != getattr(config, name):
            raise InputError(f"init_from {root}: its model has {name} {getattr(other, name)!r}, this run "
                             f"{getattr(config, name)!r}; a warm start needs the same model")
    return other


# --------------------------------------------------------------------------- the run's pack
# A pack replaced or rewritten under a run (same name, other images) would silently mix two
# datasets: resuming would retrain on the new one, evaluation would score the model on images
# it was not split on. The trainer records the pack's fingerprint in the run folder; this refuses
# a pack that differs, naming what changed, unless the caller allows it (--allow-changed-pack).
def _changes(old: dict, new: dict) -> list[str]:
    out = []
    if old.get("size") != new["size"]:
        out.append(f"size {old.get('size')} -> {new['size']} bytes")
    if not isinstance(old.get("mtime"), (int, float)) or abs(old["mtime"] - new["mtime"]) > 1e-3:
        out.append("modification time")
    if old.get("ids_sha256") != new["ids_sha256"]:
        out.append("image ids")
    return out


def check_pack(run_dir: str | os.PathLike, pack: str | os.PathLike, *, allow_changed: bool = False) -> dict:
    """Compare ``pack`` with the fingerprint the run recorded; return the pack's fingerprint now.

    Raises :class:`InputError` naming what changed (size, modification time, ids) unless
    ``allow_changed``. A run without a record (older runs) passes; a damaged record fails.
    """
    run_dir = Path(run_dir)
    new = pack_fingerprint(pack)
    old, problem = read_pack_record(run_dir)
    if problem == "missing":
        return new
    if not isinstance(old, dict):
        if allow_changed:
            return new
        raise InputError(f"{RunFolder(run_dir).pack_record}: damaged ({problem or 'not an object'}); pass "
                         f"--allow-changed-pack to use pack {pack} anyway")
    changed = _changes(old, new)
    if changed and not allow_changed:
        raise InputError(f"pack {pack} changed since run {run_dir.name} trained on it ({', '.join(changed)}); "
                         f"pass --allow-changed-pack to use it anyway")
    return new
