"""The pack: one HDF5 file holding the train/dev/test splits. The only code that knows its layout.

Layout (format version 1, docs/architecture.md): ``X_<split>``, ``Y_<split>`` ``(N, S, S, 1) uint8``
(masks 0/255), one image per chunk so any image reads alone; ``ids_<split>`` UTF-8 strings;
``source_path_<split>`` and ``source_hw_<split>`` ``(N, 2) int32`` (where each image came from;
older packs lack both); ``source_size_<split>``, ``source_mtime_ns_<split>`` ``(N,) int64`` and
``source_sha256_<split>`` ``(N,) S64`` (what identified that file; newer still, optional);
``skipped`` ``(id, reason)`` pairs, ``excluded_ids``. Root attributes:
``format`` "pneumo-pack", ``format_version``, ``size``, ``count_<split>``,
``positive_fraction_<split>``, ``report`` (JSON), ``created``, ``pneumo_version`` and the packer's.

:class:`Pack` reads a pack, :class:`PackWriter` writes one atomically, :func:`positive_flags` is
the one rule for a positive image (any non-zero mask pixel), :func:`pack_fingerprint` identifies
a pack's version.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import numpy as np

from pneumo import __version__
from pneumo._io import atomic_path
from pneumo.config import SPLITS
from pneumo.errors import InputError, PackFormatError
from pneumo.store.pack_faults import check_space, damaged, first_line, open_for_writing, verify_file, writing
from pneumo.store.pack_rows import SplitRows

__all__ = ["FORMAT", "FORMAT_VERSION", "SPLITS", "Pack", "PackWriter", "PackInfo", "SourceRef", "LazyRows",
           "positive_flags", "read_info", "read_sources", "pack_fingerprint"]

FORMAT = "pneumo-pack"
FORMAT_VERSION = 1
_IMAGES, _MASKS, _IDS, _PATHS, _HW = "X", "Y", "ids", "source_path", "source_hw"
# What identifies each source file (packs from before lack them): byte size, mtime in ns (-1 for
# none, e.g. a phantom) and the SHA-256 hex digest (empty for none).
_FILE_SIZE, _FILE_MTIME, _FILE_SHA = "source_size", "source_mtime_ns", "source_sha256"
_IDENTITY = (_FILE_SIZE, _FILE_MTIME, _FILE_SHA)
_REPORT_SKIPPED = 50  # skipped files listed in the report attribute (all are in dataset "skipped")
_REPORT_IDS = 50  # excluded ids listed in the report attribute (all are in dataset "excluded_ids")
_FLAG_CHUNK = 256  # masks read at a time when finding positives: memory stays one chunk
_ROW_OVERHEAD = 1024  # bytes per image beyond its pixels: id, source path and identity, chunk index


def _key(prefix: str, split: str) -> str:
    return f"{prefix}_{split}"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def _decode(values: Any, errors: str = "strict") -> list[str]:
    return [v.decode("utf-8", errors) if isinstance(v, bytes) else str(v) for v in values]


def positive_flags(masks: Any, stop: int | None = None) -> np.ndarray:
    """``(N,) bool``: which of ``masks`` ``(N, S, S[, 1]) uint8`` (an array or an array-like read
    on slicing, such as :meth:`Pack.lazy_masks`) have a non-zero pixel: pneumo's one rule for a
    positive image. Only the first ``stop`` when given. Read ``_FLAG_CHUNK`` masks at a time, so
    no temporary copy is larger than one chunk."""
    n = len(masks) if stop is None else min(int(stop), len(masks))
    out = np.zeros(n, bool)
    for a in range(0, n, _FLAG_CHUNK):
        block = np.asarray(masks[a:min(n, a + _FLAG_CHUNK)])
        out[a:a + len(block)] = block.reshape(len(block), -1).max(axis=1, initial=0) > 0
    return out


@dataclass
class PackInfo:
    """What a pack holds: ``counts`` and ``positive_fractions`` per split, root ``attrs``."""

    path: Path
    size: int
    counts: dict[str, int]
    positive_fractions: dict[str, float]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, Any]:
        """Skipped files and source counts recorded at packing time."""
        try:
            return json.loads(self.attrs.get("report", "{}"))
        except (TypeError, json.JSONDecodeError):
            return {}

    def format_report(self) -> str:
        """The split report: the blog's one line, then count and positive fraction per split."""
        fractions = self.positive_fractions
        lines = ["Images with mask:",
                 f"Train:{fractions.get('train', 0.0)}, dev:{fractions.get('dev', 0.0)}, test:{fractions.get('test', 0.0)}",
                 "", f"{'split':<6} {'count':>8} {'positive':>9}"]
        lines += [f"{name:<6} {self.counts.get(name, 0):>8} {fractions.get(name, 0.0):>9.2%}" for name in SPLITS]
        return "\n".join(lines + [f"{'total':<6} {sum(self.counts.values()):>8}"])


@dataclass(frozen=True)
class SourceRef:
    """Where one packed image came from (packs made before source references lack them)."""

    path: str  # the image file as the source gave it (SIIM: the DICOM); "demo:<seed>" for a phantom
    height: int  # native size before resizing to the pack's size
    width: int
    size: int | None = None  # the file as packed: byte size, mtime (ns), SHA-256 hex digest;
    mtime_ns: int | None = None  # None for a phantom and in packs made before they were recorded
    sha256: str | None = None


# --------------------------------------------------------------------------- reading
def _int_attr(f: h5py.File, name: str, path: Path) -> int:
    try:
        return int(f.attrs.get(name, 0))
    except (TypeError, ValueError):
        raw = f.attrs.get(name)
        raise PackFormatError(f"{path}: damaged pack, attribute {name} is {raw!r}, not a number") from None


def _check_layout(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        raise PackFormatError(f"{path}: not a pneumo pack (format attribute is {fmt!r}); create one with `python -m pneumo pack`")
    version = _int_attr(f, "format_version", path)
    if version > FORMAT_VERSION:
        raise PackFormatError(f"{path}: pack format version {version} is newer than this pneumo reads ({FORMAT_VERSION}); upgrade pneumo")
    size = _int_attr(f, "size", path)
    for split in SPLITS:
        for name in (_key(_IMAGES, split), _key(_MASKS, split), _key(_IDS, split)):
            if name not in f:
                raise PackFormatError(f"{path}: damaged pack, dataset {name} is missing")
        x, y, ids = f[_key(_IMAGES, split)], f[_key(_MASKS, split)], f[_key(_IDS, split)]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise PackFormatError(f"{path}: damaged pack, {_key(_IMAGES, split)}/{_key(_MASKS, split)} are not uint8")
        if x.shape[1:] != (size, size, 1) or y.shape != x.shape or ids.shape != (x.shape[0],):
            raise PackFormatError(
                f"{path}: damaged pack, {split} shapes disagree "
                f"(X {x.shape}, Y {y.shape}, ids {ids.shape}, size {size})"
            )


class LazyRows:
    """One split's images or masks, read from the file on slicing (``len``, ``shape``, ``dtype``,
    ``[a:b]`` gives ``(k, S, S, 1) uint8``); valid while its :class:`Pack` is open. A damaged
    chunk raises :class:`PackFormatError` naming the pack, split and row."""

    def __init__(self, dataset: h5py.Dataset, pack: "Pack | None" = None, split: str = ""):
        self._dataset, self.shape, self.dtype = dataset, tuple(dataset.shape), dataset.dtype
        self._pack, self._split = pack, split

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self._dataset[key]
        except OSError as e:
            if self._pack is None:
                raise
            raise self._pack._damaged(self._dataset, self._split, key if isinstance(key, slice) else None, e) from None


class Pack:
    """A pack opened read-only, its layout checked: ``with Pack(path) as pack: pack.images("test")``.

    ``path``, ``size`` (the image side S) and ``counts`` (images per split) are read at opening.
    Raises :class:`PackFormatError` (an ``InputError``) naming the file for a missing, foreign or
    damaged file, and ``InputError`` for an unknown split. ``rows`` everywhere: ``None`` (the
    whole split), a slice, or positions in any order (repeats allowed), read in runs of
    consecutive rows (an in-order batch is one read).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            why = "is a folder, expected an HDF5 pack file" if self.path.is_dir() else "no such pack file"
            raise PackFormatError(f"{self.path}: {why}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise PackFormatError(f"{self.path}: not a readable HDF5 file ({e})") from None
        try:
            _check_layout(self._file, self.path)
        except BaseException:
            self._file.close()
            raise
        self.size = int(self._file.attrs["size"])
        self.counts = {s: int(self._file[_key(_IMAGES, s)].shape[0]) for s in SPLITS}

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Pack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes, numpy scalars as Python values."""
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._file.attrs.items()}

    @property
    def info(self) -> PackInfo:
        """Counts, recorded positive fractions (0 when unrecorded) and attributes; no image data read."""
        attrs = self.attrs
        fractions = {s: float(attrs.get(_key("positive_fraction", s), 0.0)) for s in SPLITS}
        return PackInfo(self.path, self.size, dict(self.counts), fractions, attrs)

    def positive_fraction(self, split: str) -> float | None:
        """The positive fraction of ``split`` recorded at packing, None when unrecorded."""
        value = self._file.attrs.get(_key("positive_fraction", _check_split(split)))
        return None if value is None else float(value)

    def _damaged(self, ds: Any, split: str, rows: Any, e: BaseException) -> PackFormatError:
        return damaged(self.path, ds, split, rows, e, self._file[_key(_IDS, split)])

    def verify(self, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Read every chunk of every dataset (opening checks the layout only): one line per
        unreadable row (:func:`pneumo.store.pack_faults.verify_file`), ``[]`` for a sound pack."""
        return verify_file(self._file, progress)

    def _read(self, split: str, prefix: str, rows: Any) -> np.ndarray:
        ds = self._file[_key(prefix, _check_split(split))]
        try:
            return self._read_rows(ds, split, rows)
        except OSError as e:  # h5py's error for a damaged chunk names neither pack nor row
            raise self._damaged(ds, split, rows, e) from None

    def _read_rows(self, ds: Any, split: str, rows: Any) -> np.ndarray:
        if rows is None or isinstance(rows, slice):
            return ds[() if rows is None else rows]
        idx = np.asarray(rows, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(ds)):
            raise InputError(f"{self.path}: rows {idx.min()}..{idx.max()} out of range for split {split!r} ({len(ds)} images)")
        uniq, inverse = np.unique(idx, return_inverse=True)
        cuts = np.flatnonzero(np.diff(uniq) != 1) + 1
        # One read per run of consecutive rows: an in-order batch is one slice, a shuffled one a
        # few small reads (h5py's fancy indexing is ~100x slower).
        bounds = zip(np.r_[0, cuts], np.r_[cuts, len(uniq)]) if len(uniq) else ()
        out = np.concatenate([ds[int(uniq[a]):int(uniq[b - 1]) + 1] for a, b in bounds] or [ds[0:0]])
        return out if np.array_equal(uniq, idx) else out[inverse.reshape(-1)]

    def ids(self, split: str, rows: Any = None, *, errors: str = "strict") -> list[str]:
        """The image ids of ``split`` (``rows`` of it), as ``str``; ``errors`` as for ``bytes.decode``."""
        return _decode(self._read(split, _IDS, rows), errors)

    def images(self, split: str, rows: Any = None) -> np.ndarray:
        """Images ``(k, S, S, 1) uint8`` of ``split`` (``rows`` of it), in memory."""
        return self._read(split, _IMAGES, rows)

    def masks(self, split: str, rows: Any = None) -> np.ndarray:
        """Masks ``(k, S, S, 1) uint8`` (0/255) of ``split`` (``rows`` of it), in memory."""
        return self._read(split, _MASKS, rows)

    def lazy_images(self, split: str) -> LazyRows:
        """The images of ``split`` read on slicing (for chunked passes over a large split)."""
        return LazyRows(self._file[_key(_IMAGES, _check_split(split))], self, split)

    def lazy_masks(self, split: str) -> LazyRows:
        """The masks of ``split`` read on slicing (for chunked passes over a large split)."""
        return LazyRows(self._file[_key(_MASKS, _check_split(split))], self, split)

    def chunk_reader(self, split: str) -> SplitRows:
        """``split``'s images and masks read by row from any number of threads at once
        (:class:`pneumo.store.pack_rows.SplitRows`: the chunk layout read once, then ``os.preadv``;
        h5py would serialise them); valid while this pack is open."""
        split = _check_split(split)
        return SplitRows(self.path, split, self._file[_key(_IMAGES, split)], self._file[_key(_MASKS, split)],
                         self._file[_key(_IDS, split)])

    def positives(self, split: str, stop: int | None = None) -> np.ndarray:
        """``(N,) bool``: which images of ``split`` (the first ``stop``) are positive
        (:func:`positive_flags`), read chunk by chunk."""
        return positive_flags(self.lazy_masks(split), stop)

    def sources(self, split: str) -> list[SourceRef] | None:
        """The source reference of every image of ``split``, in id order, with the file's identity
        when the pack recorded it; ``None`` for a pack written without them.
        :class:`PackFormatError` when they are damaged."""
        f = self._file
        names = (_key(_PATHS, _check_split(split)), _key(_HW, split))
        if names[0] not in f and names[1] not in f:
            return None
        n = self.counts[split]
        if any(name not in f for name in names) or f[names[0]].shape != (n,) or f[names[1]].shape != (n, 2):
            raise PackFormatError(f"{self.path}: damaged pack, {names[0]}/{names[1]} do not match "
                                  f"{_key(_IDS, split)} ({n} images)")
        paths, hw = _decode(self._read(split, _PATHS, None)), self._read(split, _HW, None)
        identity: list[list[Any]] = [[None] * n] * 3
        present = [_key(p, split) in f and f[_key(p, split)].shape == (n,) for p in _IDENTITY]
        if any(present):
            if not all(present):
                raise PackFormatError(f"{self.path}: damaged pack, the source identities of {split} "
                                      f"({', '.join(_key(p, split) for p in _IDENTITY)}) do not match its {n} images")
            size, mtime, sha = (self._read(split, p, None) for p in _IDENTITY)
            identity = [[None if v < 0 else int(v) for v in size], [None if v < 0 else int(v) for v in mtime],
                        [v.decode("ascii", "replace") or None for v in sha]]
        return [SourceRef(p, int(h), int(w), *ident) for p, (h, w), *ident in zip(paths, hw, *identity)]


def read_info(path: str | os.PathLike) -> PackInfo:
    """:attr:`Pack.info` of the pack at ``path`` (no image data is read)."""
    with Pack(path) as pack:
        return pack.info


def read_sources(path: str | os.PathLike, split: str) -> list[SourceRef] | None:
    """:meth:`Pack.sources` of the pack at ``path``."""
    with Pack(path) as pack:
        return pack.sources(split)


def pack_fingerprint(path: str | os.PathLike) -> dict:
    """``{"path", "size", "mtime", "ids_sha256"}`` of a pack: its byte size, modification time
    and a digest of its ids, split by split. Raises :class:`InputError` if it cannot be read."""
    path = Path(path)
    try:
        st = path.stat()
        digest = hashlib.sha256()
        with h5py.File(path, "r") as f:  # not Pack: a foreign file still gets a fingerprint
            for split in SPLITS:
                digest.update(f"\0{split}\0".encode())
                if _key(_IDS, split) in f:
                    for v in _decode(f[_key(_IDS, split)][()], "replace"):
                        digest.update(v.encode())
                        digest.update(b"\n")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the pack to fingerprint it ({e})") from None
    return {"path": str(path), "size": st.st_size, "mtime": st.st_mtime, "ids_sha256": digest.hexdigest()}


# --------------------------------------------------------------------------- writing
class PackWriter:
    """Write a new pack atomically: to a temporary file beside ``path``, renamed over it when the
    ``with`` block ends without an error (removed otherwise).

    ``capacity``: images expected per split (datasets grow past it and shrink to what was
    appended); ``compression``: None, "gzip" or "lzf"; ``sources``: whether images carry source
    references (then every :meth:`append` gives them). Counts and positive fractions are
    computed from what is appended. :meth:`finish` writes the root attributes (called at the end
    of the block with no extras if the caller did not).

    A full disk is an :class:`InputError` naming the pack, never a half-written file: an
    uncompressed pack's size is known from ``capacity``, so free space is checked before the
    temporary file is made, and before each block; a write that still fails (another process
    filled the disk) removes the temporary file. HDF5's chunk cache is off (each image is
    written whole, once), so a failed write surfaces in :meth:`append`, not in a destructor.
    """

    def __init__(self, path: str | os.PathLike, size: int, capacity: Mapping[str, int] | None = None, *,
                 compression: str | None = None, sources: bool = True):
        self.path, self.size, self.compression, self.with_sources = Path(path), int(size), compression, sources
        self._capacity = {s: int((capacity or {}).get(s, 0)) for s in SPLITS}
        self.counts = {s: 0 for s in SPLITS}
        self._positives = {s: 0 for s in SPLITS}
        self._finished = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "PackWriter":
        rows = sum(self._capacity.values())
        check_space(self.path, rows * self._row_bytes() if self.compression is None else 0, "the pack")
        with self._stack as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(open_for_writing(tmp, self.path))
            with writing(self.path):
                self._create()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None and not self._finished:
            try:
                self.finish()
            except BaseException as e:
                if not self._stack.__exit__(type(e), e, e.__traceback__):
                    raise
                return False
        return self._stack.__exit__(exc_type, exc, tb)

    def _row_bytes(self) -> int:  # an upper bound on one image's bytes on disk, metadata included
        return 2 * self.size * self.size + _ROW_OVERHEAD

    def _fields(self) -> dict[str, tuple[tuple[int, ...], Any]]:  # dataset prefix -> (row shape, dtype)
        s, text = self.size, h5py.string_dtype()
        fields = {_IMAGES: ((s, s, 1), np.uint8), _MASKS: ((s, s, 1), np.uint8), _IDS: ((), text)}
        identity = {_FILE_SIZE: ((), np.int64), _FILE_MTIME: ((), np.int64), _FILE_SHA: ((), "S64")}
        return {**fields, _PATHS: ((), text), _HW: ((2,), np.int32), **identity} if self.with_sources else fields

    def _create(self) -> None:
        pixels = {"chunks": (1, self.size, self.size, 1), "compression": self.compression}  # one image per chunk
        for split, n in self._capacity.items():
            for prefix, (row, dtype) in self._fields().items():
                self._file.create_dataset(_key(prefix, split), shape=(n, *row), maxshape=(None, *row), dtype=dtype,
                                          **(pixels if prefix in (_IMAGES, _MASKS) else {}))

    def append(self, split: str, ids: Sequence[str], images: np.ndarray, masks: np.ndarray,
               sources: Sequence[SourceRef] | None = None) -> None:
        """Append images and masks ``(k, S, S[, 1]) uint8`` (masks 0/255) with their ``k`` ids and,
        when the writer records them, their source references, after the rows already in ``split``."""
        k, s = len(ids), self.size
        images, masks = np.asarray(images, np.uint8), np.asarray(masks, np.uint8)
        if images.size != k * s * s or masks.shape != images.shape or (sources is not None) != self.with_sources \
                or len(sources or ids) != k:
            raise InputError(f"{self.path}: append needs {k} images and masks of {s}x{s} (got {images.shape} and "
                             f"{masks.shape}) and {'one source reference each' if self.with_sources else 'no sources'}")
        values = {_IMAGES: images.reshape(k, s, s, 1), _MASKS: masks.reshape(k, s, s, 1), _IDS: list(ids)}
        if sources is not None:
            values.update({_PATHS: [r.path for r in sources],
                           _HW: np.array([(r.height, r.width) for r in sources], np.int32).reshape(k, 2),
                           _FILE_SIZE: np.array([-1 if r.size is None else r.size for r in sources], np.int64),
                           _FILE_MTIME: np.array([-1 if r.mtime_ns is None else r.mtime_ns for r in sources], np.int64),
                           _FILE_SHA: np.array([(r.sha256 or "").encode("ascii") for r in sources], "S64")})
        a, b = self.counts[_check_split(split)], self.counts[split] + k
        check_space(self.path, k * self._row_bytes(), f"{k} more images")
        with writing(self.path):
            for prefix, value in values.items():
                ds = self._file[_key(prefix, split)]
                if b > ds.shape[0]:
                    ds.resize(b, axis=0)
                ds[a:b] = value
        self.counts[split] = b
        self._positives[split] += int(positive_flags(masks).sum())

    def finish(self, *, report: Mapping[str, Any] | None = None, skipped: Sequence[tuple[str, str]] = (),
               exclusion: Any = None, **attrs: Any) -> None:
        """Shrink the splits to what was appended and write the root attributes: the format's own,
        ``attrs`` (e.g. ``seed``, ``split``, ``source``), and ``report`` (JSON) with the packed count,
        the ``skipped`` ``(id, reason)`` pairs (all in dataset ``skipped``, the first few in the
        report) and what ``exclusion`` (an :class:`pneumo.exclude.Exclusion`) removed."""
        with writing(self.path):
            self._finish(report, skipped, exclusion, attrs)
        self._finished = True

    def _finish(self, report: Mapping[str, Any] | None, skipped: Sequence[tuple[str, str]], exclusion: Any,
                attrs: dict[str, Any]) -> None:
        f = self._file
        for split in SPLITS:
            for prefix in self._fields():  # skipped files shrink the split
                f[_key(prefix, split)].resize(self.counts[split], axis=0)
        # HDF5 attributes are limited to 64 KiB: full lists are datasets, the report keeps the first few.
        if skipped:
            f.create_dataset("skipped", data=np.array([[str(a), str(b)] for a, b in skipped], dtype=object),
                             dtype=h5py.string_dtype())
        full = {**(report or {}), "packed": sum(self.counts.values()), "n_skipped": len(skipped),
                "skipped": [[str(a), str(b)[:300]] for a, b in list(skipped)[:_REPORT_SKIPPED]]}
        if exclusion is not None:
            full["exclusion"] = {"list": exclusion.path, "excluded": len(exclusion.excluded),
                                 "excluded_ids": exclusion.excluded[:_REPORT_IDS], "unknown": len(exclusion.unknown),
                                 "unknown_ids": exclusion.unknown[:_REPORT_IDS]}
            if exclusion.excluded:
                f.create_dataset("excluded_ids", data=np.array(exclusion.excluded, dtype=object),
                                 dtype=h5py.string_dtype())
        f.attrs.update(
            format=FORMAT, format_version=FORMAT_VERSION, size=self.size,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), pneumo_version=__version__,
            compression=self.compression or "none", report=json.dumps(full),
            excluded=len(exclusion.excluded) if exclusion is not None else 0,
            exclude_list=exclusion.path if exclusion is not None else "", **attrs,
        )
        for s in SPLITS:
            f.attrs[_key("count", s)] = self.counts[s]
            f.attrs[_key("positive_fraction", s)] = self._positives[s] / self.counts[s] if self.counts[s] else 0.0
