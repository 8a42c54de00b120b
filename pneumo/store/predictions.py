"""Evaluation files of a run folder: one owner for their names, identities and rules.

No TensorFlow and no streamlit. ``pneumo.predict`` writes these files, ``pneumo.review.cases``, the
Review page and the ``evaluate``/``review`` commands read them; all go through here
(docs/architecture.md, "Evaluation files"):

* ``RUN/<checkpoint>.keras`` (:data:`CHECKPOINTS`): :func:`checkpoint_path`, :func:`run_checkpoints`.
* The run's pack: :func:`find_pack` (one lookup order for every reader).
* ``RUN/predictions_<split>.h5``: ``probs (N, S, S, 1) uint8`` and ``ids``, with attributes
  naming what they were made from (:func:`prediction_attrs`): the checkpoint (name and
  modification time) and the pack (resolved path, byte size, modification time and a digest
  of the split's ids). :func:`freshness` says whether they are current, and if not why.
* ``RUN/metrics_<split>.json`` and ``RUN/cases_<split>.csv``; :func:`run_triplet` is the one
  rule choosing the post-processing triplet of a run, for every caller.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pneumo import evaluate as ev
from pneumo._io import atomic_path, read_json, now_iso
from pneumo.errors import InputError
from pneumo.ingest.split import SPLITS

CHECKPOINTS = ("best", "last")
# Splits whose metrics may hold a run's tuned triplet; every one made by `evaluate_run`
# carries the dev-tuned triplet, so the order only breaks ties between equally new files.
TRIPLET_SPLITS = ("test", "dev", "train")
_MTIME_TOLERANCE_S = 1e-3  # HDF5 attributes store float seconds; st_mtime round-trips within this


def check_split(split: str) -> str:
    """``split`` itself; :class:`InputError` naming the choices when it is not one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown (choose one of: {', '.join(SPLITS)})")
    return split


def check_checkpoint(checkpoint: str) -> str:
    """``checkpoint`` itself; :class:`InputError` when it is not one of :data:`CHECKPOINTS`."""
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint {checkpoint!r} is unknown (choose one of: {', '.join(CHECKPOINTS)})")
    return checkpoint


def decode_ids(values: Iterable[Any], errors: str = "strict") -> list[str]:
    """HDF5 string values (bytes or str) as ``str``; ``errors`` as for :meth:`bytes.decode`."""
    return [v.decode("utf-8", errors) if isinstance(v, bytes) else str(v) for v in values]


def ids_digest(ids: Sequence[str]) -> str:
    """A short content digest of an ordered id list (16 hex characters of SHA-256)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- paths
def predictions_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN/predictions_<split>.h5``."""
    return Path(run_dir) / f"predictions_{check_split(split)}.h5"


def metrics_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN/metrics_<split>.json``."""
    return Path(run_dir) / f"metrics_{check_split(split)}.json"


def cases_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN/cases_<split>.csv``."""
    return Path(run_dir) / f"cases_{check_split(split)}.csv"


def run_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """Checkpoints present in a run folder, in :data:`CHECKPOINTS` order (``best``, ``last``)."""
    return [c for c in CHECKPOINTS if (Path(run_dir) / f"{c}.keras").is_file()]


def checkpoint_path(run_dir: str | os.PathLike, checkpoint: str = "best") -> Path:
    """``RUN/<checkpoint>.keras``; :class:`InputError` when the folder is not a run or has no such model."""
    run_dir = Path(run_dir)
    check_checkpoint(checkpoint)
    require_run(run_dir)
    path = run_dir / f"{checkpoint}.keras"
    if not path.is_file():
        have = [p.name for p in sorted(run_dir.glob("*.keras"))]
        hint = f"it has {', '.join(have)}" if have else "training has not saved a model yet"
        raise InputError(f"{run_dir}: no model {path.name} in the run folder ({hint})")
    return path


def require_run(run_dir: Path) -> None:
    """:class:`InputError` naming ``run_dir`` unless it is a run folder (holds ``config.json``)."""
    if not run_dir.exists():
        raise InputError(f"{run_dir}: run folder not found")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a folder (expected a run folder)")
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir}: not a run folder (no config.json)")


# --------------------------------------------------------------------------- the pack
def find_pack(run_dir: str | os.PathLike, stored: str | None = None) -> Path:
    """The pack a run's files belong to, resolved: ``stored`` (a predictions file's ``pack``
    attribute) when given and present, else the run's ``config.json`` ``pack``. A relative
    path is tried against the current directory, the workspace, then the run folder.
    :class:`InputError` listing what was tried when none exists."""
    from pneumo.settings import workspace

    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    named = [p for p in (stored, cfg.get("pack") if isinstance(cfg, dict) else None) if p]
    tried: list[Path] = []
    for name in named:
        p = Path(str(name)).expanduser()
        tried += [p] if p.is_absolute() else [p, workspace() / p, run_dir / p]
    for p in tried:
        if p.is_file():
            return p.resolve()
    if not named:
        raise InputError(f"{run_dir / 'config.json'}: no pack given")
    raise InputError(f"{run_dir}: the run's pack {' or '.join(map(str, dict.fromkeys(named)))} not found "
                     f"(tried {', '.join(map(str, tried))})")


@dataclass(frozen=True)
class FileStamp:
    """What identifies a file's content without reading it: resolved path, size, mtime (ns)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileStamp":
        """Stamp of an existing file; a missing one gets size -1."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            return cls(str(p.resolve()), -1, 0)
        return cls(str(p.resolve()), int(st.st_size), int(st.st_mtime_ns))

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


@functools.lru_cache(maxsize=64)
def _pack_split_ids(stamp: FileStamp, split: str) -> tuple[str, ...]:
    from pneumo.store.pack import open_pack

    with open_pack(stamp.path) as f:
        return tuple(decode_ids(f[f"ids_{split}"][()]))


@functools.lru_cache(maxsize=64)
def _split_digest(stamp: FileStamp, split: str) -> str:
    # hashing every id of a split costs milliseconds per call; a re-pack changes the stamp
    return ids_digest(_pack_split_ids(stamp, split))


def pack_split_ids(pack_path: str | os.PathLike, split: str) -> tuple[str, ...]:
    """The ids of a pack split, read once per version of the file (keyed by its :class:`FileStamp`)."""
    return _pack_split_ids(FileStamp.of(pack_path), check_split(split))


def pack_split_digest(pack_path: str | os.PathLike, split: str) -> str:
    """:func:`ids_digest` of a pack split's ids, computed once per version of the file."""
    return _split_digest(FileStamp.of(pack_path), check_split(split))


def pack_identity(pack_path: str | os.PathLike, split: str) -> dict[str, Any]:
    """``{"pack", "pack_size", "pack_mtime", "ids_digest"}``: what a predictions file records
    about the pack split it was made from."""
    stamp = FileStamp.of(pack_path)
    return {"pack": stamp.path, "pack_size": stamp.size, "pack_mtime": stamp.mtime,
            "ids_digest": _split_digest(stamp, check_split(split))}


# --------------------------------------------------------------------------- predictions
def prediction_attrs(run_dir: str | os.PathLike, split: str, checkpoint: str,
                     pack_path: str | os.PathLike) -> dict[str, Any]:
    """Attributes of a predictions file made now from ``RUN/<checkpoint>.keras`` and the pack:
    ``checkpoint``, ``checkpoint_mtime``, ``pack``, ``pack_size``, ``pack_mtime``,
    ``ids_digest``, ``split``, ``created``. Take them before predicting, so a checkpoint
    saved meanwhile makes the file stale rather than wrongly current."""
    ckpt = Path(run_dir) / f"{check_checkpoint(checkpoint)}.keras"
    return {"checkpoint": checkpoint, "checkpoint_mtime": FileStamp.of(ckpt).mtime,
            **pack_identity(pack_path, split), "split": split,
            "created": now_iso()}


def write_predictions(run_dir: str | os.PathLike, split: str, probs: np.ndarray, ids: Sequence[str],
                      pack_path: str | os.PathLike, checkpoint: str = "best") -> Path:
    """Write ``RUN/predictions_<split>.h5`` atomically from ``probs (N, S, S, 1) uint8`` and
    ``ids`` (for tests, benchmarks and imports of predictions made elsewhere)."""
    import h5py

    probs = np.asarray(probs)
    if probs.dtype != np.uint8 or probs.ndim != 4 or probs.shape[-1] != 1 or probs.shape[0] != len(ids):
        raise InputError(f"predictions must be (N, S, S, 1) uint8 with N ids; got {probs.shape} {probs.dtype}, "
                         f"{len(ids)} ids")
    out = predictions_path(run_dir, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = prediction_attrs(run_dir, split, checkpoint, pack_path)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as g:
            g.create_dataset("probs", data=probs, chunks=(1, *probs.shape[1:]) if len(ids) else None)
            g.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype())
            g.attrs.update(size=int(probs.shape[1]), **attrs)
    return out


def attr_str(v: Any) -> str:
    """An HDF5 string attribute (bytes or str) as ``str``."""
    return v.decode() if isinstance(v, bytes) else str(v)


def predictions_pack(run_dir: str | os.PathLike, split: str) -> str | None:
    """The ``pack`` attribute of ``RUN/predictions_<split>.h5`` (the pack they were made
    from), or None when the file is missing, unreadable or does not record it."""
    import h5py

    path = predictions_path(run_dir, split)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("pack")
    except OSError:
        return None
    if value is None:
        return None
    return attr_str(value) or None


@dataclass(frozen=True)
class Freshness:
    """Whether cached predictions are current: ``fresh``, and ``reason`` (one sentence) when not.
    ``checkpoint`` is the checkpoint the file was made from (None when unrecorded)."""

    fresh: bool
    reason: str = ""
    checkpoint: str | None = None


def freshness(run_dir: str | os.PathLike, split: str, checkpoint: str | None = "best") -> Freshness:
    """Whether ``RUN/predictions_<split>.h5`` was made from ``RUN/<checkpoint>.keras`` as it is
    now and from the run's pack as it is now (path, size, modification time, ids of the split).

    ``checkpoint=None`` checks the pack only (a run folder that has predictions but no
    model). Attributes an older pneumo did not write are not required, except that the ids
    are then compared with the pack's. Never raises for a damaged file: it is just not fresh.
    """
    import h5py

    path = predictions_path(run_dir, split)
    if not path.is_file():
        return Freshness(False, f"no cached predictions for the {split} split")
    try:
        with h5py.File(path, "r") as f:
            if "probs" not in f or "ids" not in f:
                return Freshness(False, f"{path.name} is not a predictions file")
            a = dict(f.attrs)
            file_ids = None if "ids_digest" in a else decode_ids(f["ids"][()])
    except OSError as e:
        return Freshness(False, f"{path.name} is unreadable ({e})")
    made_from = attr_str(a["checkpoint"]) if "checkpoint" in a else None
    if attr_str(a.get("split", split)) != split:
        return Freshness(False, f"{path.name} holds the {attr_str(a['split'])} split", made_from)
    if checkpoint is not None:
        ckpt = Path(run_dir) / f"{check_checkpoint(checkpoint)}.keras"
        if made_from != checkpoint:
            return Freshness(False, f"they were made with {made_from or 'an unrecorded checkpoint'}"
                             f"{'.keras' if made_from else ''}, not {checkpoint}.keras", made_from)
        if not ckpt.is_file():
            return Freshness(False, f"{ckpt.name} is missing from the run folder", made_from)
        if abs(float(a.get("checkpoint_mtime", -1)) - FileStamp.of(ckpt).mtime) > _MTIME_TOLERANCE_S:
            return Freshness(False, f"{ckpt.name} changed after they were made (training went on)", made_from)
    try:
        pack = find_pack(run_dir, attr_str(a["pack"]) if "pack" in a else None)
    except InputError as e:
        return Freshness(False, str(e), made_from)
    stamp = FileStamp.of(pack)
    if "pack" in a and Path(attr_str(a["pack"])).is_absolute() and str(Path(attr_str(a["pack"])).resolve()) != stamp.path:
        return Freshness(False, f"they were made from another pack ({attr_str(a['pack'])})", made_from)
    changed = f"the pack {pack.name} was rewritten after they were made (re-packed)"
    if "pack_mtime" in a and abs(float(a["pack_mtime"]) - stamp.mtime) > _MTIME_TOLERANCE_S:
        return Freshness(False, changed, made_from)
    if "pack_size" in a and int(a["pack_size"]) != stamp.size:
        return Freshness(False, changed, made_from)
    try:
        pack_digest = _split_digest(stamp, split)
    except (OSError, KeyError) as e:
        return Freshness(False, f"{pack}: cannot read the {split} ids ({e})", made_from)
    digest = attr_str(a["ids_digest"]) if "ids_digest" in a else ids_digest(file_ids or [])
    if digest != pack_digest:
        return Freshness(False, f"the {split} split of {pack.name} holds other images than they were made for",
                         made_from)
    return Freshness(True, "", made_from)


# --------------------------------------------------------------------------- the triplet
def run_triplet(run_dir: str | os.PathLike, size: int | None = None, checkpoint: str | None = None
                ) -> tuple[ev.Triplet, str]:
    """The post-processing of a run, one rule for ``predict``, ``evaluate``, ``review`` and the
    Review page: among ``metrics_<split>.json`` (:data:`TRIPLET_SPLITS`) holding a
    ``triplet``, those made with ``checkpoint`` first, then the newest (``created``), then
    split order. Returns the triplet and the file name it came from, or
    :data:`pneumo.evaluate.DEFAULT_TRIPLET` and ``"default"``. With ``size``, ``min_area`` is
    rescaled if the metrics were made at another size."""
    found = []
    for split in TRIPLET_SPLITS:
        m = read_json(metrics_path(run_dir, split))
        if not (isinstance(m, dict) and isinstance(m.get("triplet"), dict)):
            continue
        try:
            t = ev.Triplet.from_dict(m["triplet"], size=size)
        except InputError:
            continue  # a damaged file does not decide the run's post-processing
        other = checkpoint is not None and m.get("checkpoint") != checkpoint
        found.append((other, str(m.get("created") or ""), t, split))
    if not found:
        return ev.DEFAULT_TRIPLET, "default"
    # stable sorts, last key first: split order < newest (ISO text compares in time order) < checkpoint
    found.sort(key=lambda f: f[1], reverse=True)
    found.sort(key=lambda f: f[0])
    _, _, t, split = found[0]
    return t, metrics_path(run_dir, split).name
