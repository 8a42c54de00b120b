"""Evaluation files of a run folder: the one owner of their names, layout and rules.

No TensorFlow and no streamlit. ``pneumo.predict`` writes these files; ``pneumo.review``, the
Review page and the ``evaluate``/``review`` commands read them; all go through here
(docs/architecture.md, "Evaluation files"):

* ``RUN/predictions_<split>.h5``: ``probs (N, S, S, 1) uint8`` and ``ids (N,)``, with
  attributes naming what they were made from: the checkpoint (name and modification time)
  and the pack (resolved path, byte size, modification time and a digest of the split's ids).
  One writer, :func:`create_predictions`; one validator, :func:`open_predictions` (layout,
  ids against the pack, attributes) giving readers a :class:`Predictions`; :func:`freshness`
  says whether a file is current, and if not why.
* ``RUN/metrics_<split>.json`` (:func:`write_metrics`, :func:`read_metrics`) and
  ``RUN/cases_<split>.csv`` (:func:`write_cases`, :func:`read_cases`, columns
  :data:`CASES_COLUMNS`). A damaged one is reported by name, never read as defaults.
* :func:`run_triplet`: the one rule choosing a run's post-processing, for every caller.
* The run's checkpoint (:func:`checkpoint_path`) and its pack (:func:`find_pack`, one lookup
  order for every reader); the run folder's file names are :mod:`pneumo.store.run`'s.
"""
from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from pneumo import evaluate as ev
from pneumo._io import (atomic_path, atomic_write_json, atomic_write_text, csv_cell, csv_text, csv_value, load_json,
                        now_iso, read_json)
from pneumo.config import SPLITS
from pneumo.errors import InputError
from pneumo.store.run import CHECKPOINTS, CONFIG, RunFolder, checkpoint_file
from pneumo.store.stamps import FileStamp, check_split, ids_digest, pack_identity, pack_split, stamp_digest

# Splits whose metrics may hold a run's tuned triplet; every one made by `evaluate_run`
# carries the dev-tuned triplet, so the order only breaks ties between equally new files.
TRIPLET_SPLITS = ("test", "dev", "train")
CASES_COLUMNS = ("id", "category", "dice", "true_area", "pred_area", "score")
_MTIME_TOLERANCE_S = 1e-3  # HDF5 attributes store float seconds; st_mtime round-trips within this


def check_checkpoint(checkpoint: str) -> str:
    """``checkpoint`` itself; :class:`InputError` when it is not one of
    :data:`pneumo.store.run.CHECKPOINTS`."""
    checkpoint_file(checkpoint)
    return checkpoint


def decode_ids(values: Iterable[Any], errors: str = "strict") -> list[str]:
    """HDF5 string values (bytes or str) as ``str``; ``errors`` as for :meth:`bytes.decode`."""
    return [v.decode("utf-8", errors) if isinstance(v, bytes) else str(v) for v in values]


def attr_str(v: Any) -> str:
    """An HDF5 string attribute (bytes or str) as ``str``."""
    return v.decode() if isinstance(v, bytes) else str(v)


def _evaluate_hint(run_dir: str | os.PathLike, split: str) -> str:
    return f"run `python -m pneumo evaluate {run_dir} --split {split}`"


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


def has_predictions(run_dir: str | os.PathLike) -> bool:
    """Whether the folder holds a predictions file of any split (valid or not)."""
    return any(predictions_path(run_dir, s).is_file() for s in SPLITS)


def checkpoint_path(run_dir: str | os.PathLike, checkpoint: str = "best") -> Path:
    """``RUN/<checkpoint>.keras``; :class:`InputError` when the folder is not a run or has no such model."""
    folder = RunFolder(run_dir)
    path = folder.checkpoint(checkpoint)
    require_run(folder.path)
    if not path.is_file():
        have = [checkpoint_file(c) for c in folder.checkpoints()]
        hint = f"it has {', '.join(have)}" if have else "training has not saved a model yet"
        raise InputError(f"{folder.path}: no model {path.name} in the run folder ({hint})")
    return path


def require_run(run_dir: Path) -> None:
    """:class:`InputError` naming ``run_dir`` unless it is a run folder (holds its config)."""
    if not run_dir.exists():
        raise InputError(f"{run_dir}: run folder not found")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a folder (expected a run folder)")
    if not RunFolder(run_dir).config.is_file():
        raise InputError(f"{run_dir}: not a run folder (no {CONFIG})")


# --------------------------------------------------------------------------- the pack
def find_pack(run_dir: str | os.PathLike, stored: str | None = None) -> Path:
    """The pack a run's files belong to, resolved: ``stored`` (a predictions file's ``pack``
    attribute) when given and present, else the ``pack`` of the run's config. A relative
    path is tried against the current directory, the workspace, then the run folder.
    :class:`InputError` listing what was tried when none exists."""
    from pneumo.settings import workspace

    run_dir = Path(run_dir)
    cfg = read_json(RunFolder(run_dir).config)
    named = [p for p in (stored, cfg.get("pack") if isinstance(cfg, dict) else None) if p]
    tried: list[Path] = []
    for name in named:
        p = Path(str(name)).expanduser()
        tried += [p] if p.is_absolute() else [p, workspace() / p, run_dir / p]
    for p in tried:
        if p.is_file():
            return p.resolve()
    if not named:
        raise InputError(f"{RunFolder(run_dir).config}: no pack given")
    raise InputError(f"{run_dir}: the run's pack {' or '.join(map(str, dict.fromkeys(named)))} not found "
                     f"(tried {', '.join(map(str, tried))})")


# --------------------------------------------------------------------------- writing predictions
class PredictionsWriter:
    """The ``probs`` of a predictions file being written by :func:`create_predictions`."""

    def __init__(self, probs: Any, path: Path) -> None:
        self._probs, self.path = probs, path
        self.n = int(probs.shape[0])
        self._done = np.zeros(self.n, bool)

    def write(self, start: int, probs: np.ndarray) -> None:
        """Rows ``start .. start + B - 1`` from ``(B, S, S, 1) uint8`` levels ``round(p * 255)``."""
        probs = np.asarray(probs)
        if probs.dtype != np.uint8 or probs.shape[1:] != self._probs.shape[1:] or not 0 <= start <= self.n - len(probs):
            raise InputError(f"{self.path}: cannot write {probs.shape} {probs.dtype} at row {start} of "
                             f"{self._probs.shape} uint8 predictions")
        self._probs[start:start + len(probs)] = probs
        self._done[start:start + len(probs)] = True


@contextlib.contextmanager
def create_predictions(run_dir: str | os.PathLike, split: str, ids: Sequence[str], size: int,
                       pack_path: str | os.PathLike, checkpoint: str = "best") -> Iterator[PredictionsWriter]:
    """Write ``RUN/predictions_<split>.h5`` for the ``ids`` of the pack's split at ``size`` px:
    the one writer of the format. The body fills the rows (:meth:`PredictionsWriter.write`).

    Entering records the attributes (``checkpoint``, ``checkpoint_mtime``, ``pack``,
    ``pack_size``, ``pack_mtime``, ``ids_digest``, ``size``, ``split``, ``created``): enter
    before predicting, so a checkpoint saved meanwhile makes the file stale rather than
    wrongly current. Leaving checks every row was written and puts the file in place
    atomically; an error leaves the previous file as it was.
    """
    import h5py

    ids = [str(i) for i in ids]
    n, size = len(ids), int(size)
    out = predictions_path(run_dir, split)
    ckpt = RunFolder(run_dir).checkpoint(checkpoint)
    attrs = {"checkpoint": checkpoint, "checkpoint_mtime": FileStamp.of(ckpt).mtime,
             **pack_identity(pack_path, split), "size": size, "split": split, "created": now_iso()}
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as g:
            probs = g.create_dataset("probs", (n, size, size, 1), np.uint8, chunks=(1, size, size, 1) if n else None)
            g.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            g.attrs.update(attrs)
            writer = PredictionsWriter(probs, out)
            yield writer
            if not writer._done.all():
                raise InputError(f"{out}: {int(writer._done.sum())} of {n} predictions written; file not saved")


# --------------------------------------------------------------------------- reading predictions
def _layout(f: Any, path: Path) -> tuple[int, int]:
    """``(N, S)`` of an open predictions file; :class:`InputError` naming it when its datasets
    are not ``probs (N, S, S, 1) uint8`` and ``ids (N,)``."""
    if "probs" not in f or "ids" not in f:
        raise InputError(f"{path}: not a predictions file (needs datasets probs and ids)")
    probs, ids = f["probs"], f["ids"]
    if probs.dtype != np.uint8 or probs.ndim != 4 or probs.shape[-1] != 1 or probs.shape[1] != probs.shape[2]:
        raise InputError(f"{path}: probs must be (N, S, S, 1) uint8, got {probs.shape} {probs.dtype}")
    if ids.shape != (probs.shape[0],):
        raise InputError(f"{path}: {ids.shape[0] if ids.ndim else 1} ids for {probs.shape[0]} predictions")
    return int(probs.shape[0]), int(probs.shape[1])


@dataclass(frozen=True, eq=False)
class Predictions:
    """A checked predictions file (:func:`open_predictions`): ``ids`` (N), side ``size``,
    ``attrs`` (plain Python values), the pack it belongs to and ``rows``, ``(N,) int64`` the
    pack row of each prediction (the file may hold the split in another order)."""

    path: Path
    split: str
    stamp: FileStamp
    ids: list[str]
    size: int
    attrs: dict[str, Any]
    pack_path: Path
    pack_stamp: FileStamp
    rows: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the predictions were made from (``best``/``last``), None if unrecorded."""
        v = self.attrs.get("checkpoint")
        return None if v is None else attr_str(v)

    @property
    def in_pack_order(self) -> bool:
        return bool(np.array_equal(self.rows, np.arange(self.n)))

    def read(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """``(K, S, S, 1) uint8`` levels of these predictions, in the given order (all when None)."""
        import h5py

        with h5py.File(self.path, "r") as f:
            if indices is None:
                return f["probs"][()]
            idx = np.asarray(list(indices), np.int64)
            if idx.size and not (0 <= idx.min() and idx.max() < self.n):
                raise InputError(f"case index out of range 0..{self.n - 1}: {idx[(idx < 0) | (idx >= self.n)][0]}")
            if not idx.size:
                return np.zeros((0, self.size, self.size, 1), np.uint8)
            uniq, inv = np.unique(idx, return_inverse=True)  # h5py reads increasing, unique rows
            return f["probs"][uniq.tolist()][inv.reshape(-1)]

    def prob_stats(self, chunk: int = 64) -> ev.ProbStats:
        """:func:`pneumo.evaluate.prob_stats` of all predictions against the pack's masks, in
        the file's order (read chunk by chunk)."""
        import h5py

        from pneumo.store.pack import Pack

        with h5py.File(self.path, "r") as fp, Pack(self.pack_path) as pack:
            masks = pack.lazy_masks(self.split) if self.in_pack_order else pack.masks(self.split, self.rows)
            return ev.prob_stats(fp["probs"], masks, chunk=chunk)


def open_predictions(run_dir: str | os.PathLike, split: str, pack_path: str | os.PathLike | None = None
                     ) -> Predictions:
    """Open and check ``RUN/predictions_<split>.h5``: the one validator of the format.

    Checks the layout (:func:`_layout`), the ``split`` attribute, and the pack (``pack_path``,
    else :func:`find_pack` from the file's ``pack`` attribute): same image size, and every id
    in the pack's split (any order). :class:`InputError` naming the file and the problem. Says
    nothing about freshness (:func:`freshness`).
    """
    import h5py

    path = predictions_path(run_dir, split)
    if not path.is_file():
        raise InputError(f"{path}: no cached predictions; {_evaluate_hint(run_dir, split)} first")
    stamp = FileStamp.of(path)
    try:
        with h5py.File(path, "r") as f:
            n, size = _layout(f, path)
            ids = decode_ids(f["ids"][()])
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except OSError as e:
        raise InputError(f"{path}: unreadable predictions file ({e})") from None
    if "split" in attrs and attr_str(attrs["split"]) != split:
        raise InputError(f"{path}: holds predictions of the {attr_str(attrs['split'])} split")
    pack = Path(pack_path) if pack_path is not None else find_pack(
        run_dir, attr_str(attrs["pack"]) if "pack" in attrs else None)
    pack_stamp = FileStamp.of(pack)
    pack_size, pack_ids = pack_split(pack_stamp, split)
    if pack_size != size:
        raise InputError(f"{path}: predictions are {size} px but the pack {pack} is {pack_size} px")
    if list(pack_ids) == ids:
        rows = np.arange(n, dtype=np.int64)
    else:
        where = {s: i for i, s in enumerate(pack_ids)}
        missing = [s for s in ids if s not in where]
        if missing:
            raise InputError(f"{path}: {len(missing)} ids are not in {pack} split {split} (first: {missing[0]!r}); "
                             "the predictions belong to another pack")
        rows = np.array([where[s] for s in ids], np.int64)
    return Predictions(path, split, stamp, ids, size, attrs, pack, pack_stamp, rows)


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
            _layout(f, path)
            a = dict(f.attrs)
            file_ids = None if "ids_digest" in a else decode_ids(f["ids"][()])
    except InputError:
        return Freshness(False, f"{path.name} is not a predictions file")
    except OSError as e:
        return Freshness(False, f"{path.name} is unreadable ({e})")
    made_from = attr_str(a["checkpoint"]) if "checkpoint" in a else None
    if attr_str(a.get("split", split)) != split:
        return Freshness(False, f"{path.name} holds the {attr_str(a['split'])} split", made_from)
    if checkpoint is not None:
        ckpt = RunFolder(run_dir).checkpoint(checkpoint)
        if made_from != checkpoint:
            made = checkpoint_file(made_from) if made_from in CHECKPOINTS else made_from or "an unrecorded checkpoint"
            return Freshness(False, f"they were made with {made}, not {ckpt.name}", made_from)
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
        pack_digest = stamp_digest(stamp, split)
    except (OSError, KeyError) as e:
        return Freshness(False, f"{pack}: cannot read the {split} ids ({e})", made_from)
    digest = attr_str(a["ids_digest"]) if "ids_digest" in a else ids_digest(file_ids or [])
    if digest != pack_digest:
        return Freshness(False, f"the {split} split of {pack.name} holds other images than they were made for",
                         made_from)
    return Freshness(True, "", made_from)


# --------------------------------------------------------------------------- metrics and cases
def write_metrics(run_dir: str | os.PathLike, split: str, metrics: dict[str, Any]) -> Path:
    """Write ``RUN/metrics_<split>.json`` atomically; ``metrics`` must hold a valid ``triplet``
    (:meth:`pneumo.evaluate.Triplet.to_dict`), so the file is never one :func:`read_metrics` calls damaged."""
    path = metrics_path(run_dir, split)
    if not isinstance(metrics.get("triplet"), dict):
        raise InputError(f"{path}: metrics to write hold no triplet")
    ev.Triplet.from_dict(metrics["triplet"])
    atomic_write_json(path, metrics)
    return path


def read_metrics(run_dir: str | os.PathLike, split: str) -> dict[str, Any] | None:
    """``RUN/metrics_<split>.json``, or None while it is missing. :class:`InputError` naming
    the file when it is damaged: not a JSON object, or no valid ``triplet`` (never read as
    default thresholds)."""
    path = metrics_path(run_dir, split)
    m, problem = load_json(path)
    if problem == "missing":
        return None
    try:
        if problem is not None:
            raise InputError(problem)
        if not isinstance(m, dict):
            raise InputError(f"holds a JSON {type(m).__name__}, not an object")
        if not isinstance(m.get("triplet"), dict):
            raise InputError("no triplet")
        ev.Triplet.from_dict(m["triplet"])
    except InputError as e:
        raise InputError(f"{path}: damaged metrics ({e}); {_evaluate_hint(Path(run_dir), split)} to "
                         "write it again") from None
    return m


def write_cases(run_dir: str | os.PathLike, split: str, cases: dict[str, np.ndarray]) -> Path:
    """Write ``RUN/cases_<split>.csv`` (columns :data:`CASES_COLUMNS`, one row per image, text
    cells through :func:`pneumo._io.csv_text`: full quoting, formula guard) atomically; ``cases`` as from
    :func:`pneumo.evaluate.evaluate_stats` with ids."""
    path = cases_path(run_dir, split)
    rows = [[csv_cell(str(cases["id"][i])), csv_cell(str(cases["category"][i])), f"{cases['dice'][i]:.6f}",
             int(cases["true_area"][i]), int(cases["pred_area"][i]), f"{cases['score'][i]:.6f}"]
            for i in range(len(cases["category"]))]
    # full quoting; the text cells guarded above, the numbers formatted as text left as numbers
    atomic_write_text(path, csv_text([CASES_COLUMNS, *rows], guard=False))
    return path


def read_cases(run_dir: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Rows of ``RUN/cases_<split>.csv`` with numbers parsed; [] while it is missing;
    :class:`InputError` naming the file when it is damaged."""
    path = cases_path(run_dir, split)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["id"], r["category"] = csv_value(r["id"]), csv_value(r["category"])  # undo csv_cell
            r["dice"], r["score"] = float(r["dice"]), float(r["score"])
            r["true_area"], r["pred_area"] = int(r["true_area"]), int(r["pred_area"])
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: damaged case table ({type(e).__name__}: {e}); "
                         f"{_evaluate_hint(Path(run_dir), split)} to write it again") from None
    return rows


# --------------------------------------------------------------------------- the triplet
def run_triplet(run_dir: str | os.PathLike, size: int | None = None, checkpoint: str | None = None
                ) -> tuple[ev.Triplet, str]:
    """The post-processing of a run, one rule for ``predict``, ``evaluate``, ``review`` and the
    Review page: among ``metrics_<split>.json`` (:data:`TRIPLET_SPLITS`), those made with
    ``checkpoint`` first, then the newest (``created``), then split order. Returns the
    triplet and the file name it came from, or :data:`pneumo.evaluate.DEFAULT_TRIPLET` and
    ``"default"`` when there is none. A damaged metrics file raises :class:`InputError`
    (:func:`read_metrics`). With ``size``, ``min_area`` is rescaled if the metrics were made
    at another size."""
    found = []
    for split in TRIPLET_SPLITS:
        m = read_metrics(run_dir, split)
        if m is None:
            continue
        other = checkpoint is not None and m.get("checkpoint") != checkpoint
        found.append((other, str(m.get("created") or ""), ev.Triplet.from_dict(m["triplet"], size=size), split))
    if not found:
        return ev.DEFAULT_TRIPLET, "default"
    # stable sorts, last key first: split order < newest (ISO text compares in time order) < checkpoint
    found.sort(key=lambda f: f[1], reverse=True)
    found.sort(key=lambda f: f[0])
    _, _, t, split = found[0]
    return t, metrics_path(run_dir, split).name
