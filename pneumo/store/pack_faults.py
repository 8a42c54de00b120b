"""What goes wrong with a pack's HDF5 file, said in one line naming the pack: damaged rows (which
cannot be read, and the check that reads every chunk: ``pneumo info PACK --verify``), and a
full disk while writing (free space checked before writing, write errors caught).

h5py reports a damaged chunk (a corrupt gzip stream, a truncated file) as an ``OSError`` naming
neither the file nor the row; :class:`pneumo.store.pack.Pack` turns it into a
:class:`~pneumo.errors.PackFormatError` through :func:`damaged`. Only generic HDF5 here: the
layout's names stay in :mod:`pneumo.store.pack`.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from pneumo.errors import InputError, PackFormatError

__all__ = ["first_line", "bad_rows", "damaged", "verify_file", "check_space", "writing", "open_for_writing"]

_VERIFY_ROWS = 256  # rows of an image dataset read at once by verify_file (one chunk each)
_VERIFY_VALUES = 65536  # rows of a one-value-per-image dataset (ids, paths) read at once
_SPACE_MARGIN = 4 << 20  # free bytes kept beyond what a write needs: HDF5's metadata, the report


def first_line(e: BaseException) -> str:
    """The first line of an error's message (HDF5's errors span several lines)."""
    lines = str(e).strip().splitlines()
    return lines[0].strip() if lines else type(e).__name__


def bad_rows(ds: Any, rows: Any = None) -> Iterator[tuple[int, str]]:
    """``(row, reason)`` of each row of ``rows`` (None: all, a slice, or positions) of the
    dataset ``ds`` that cannot be read, read one by one: meant for after a larger read failed."""
    if rows is None or isinstance(rows, slice):
        candidates: Any = range(*(rows or slice(None)).indices(len(ds)))
    else:
        candidates = sorted({int(r) for r in np.asarray(rows, np.int64).reshape(-1)})
    for r in candidates:
        try:
            ds[r]
        except OSError as e:
            yield r, first_line(e)


def damaged(path: Path, ds: Any, split: str, rows: Any, error: BaseException, ids: Any = None) -> PackFormatError:
    """The error for a failed read of ``rows`` of ``ds``: the pack, the split, the dataset and its
    first unreadable row (with its id from the dataset ``ids`` when that can be read)."""
    row, reason = next(bad_rows(ds, rows), (None, first_line(error)))
    where = ds.name.lstrip("/") + ("" if row is None else f" row {row}")
    if row is not None and ids is not None and ids.name != ds.name:
        with contextlib.suppress(OSError, UnicodeDecodeError, AttributeError):
            where += f" (id {ids[row].decode('utf-8')})"
    return PackFormatError(f"{path}: damaged pack, split {split}: {where} cannot be read ({reason}); "
                           f"`python -m pneumo info {path} --verify` lists every damaged row")


def verify_file(f: h5py.File, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Read every chunk of every dataset of ``f``: one line per unreadable row
    (``"<dataset> row <r>: <reason>"``), ``[]`` when all read. ``progress(done, total)`` in rows."""
    names = sorted(name for name in f if isinstance(f[name], h5py.Dataset))
    total, done, problems = sum(len(f[name]) for name in names), 0, []
    for name in names:
        ds = f[name]
        step = _VERIFY_ROWS if ds.ndim > 1 else _VERIFY_VALUES
        for a in range(0, len(ds), step):
            b = min(len(ds), a + step)
            try:
                ds[a:b]
            except OSError:
                problems += [f"{name} row {r}: {why}" for r, why in bad_rows(ds, slice(a, b))]
            done += b - a
            if progress is not None:
                progress(done, total)
    return problems


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e7 else f"{n / 1e6:.1f} MB"


def check_space(path: Path, need: int, what: str) -> None:
    """:class:`InputError` naming the pack ``path`` when its folder has less than ``need`` bytes
    (plus a margin for HDF5's metadata) free; ``what`` says what they are for."""
    folder = next((p for p in path.absolute().parents if p.is_dir()), path.parent)  # it may not exist yet
    free = shutil.disk_usage(folder).free
    if free < need + _SPACE_MARGIN:
        raise InputError(f"{path}: not enough free space in {folder} for {what}: it needs about "
                         f"{_mb(need + _SPACE_MARGIN)}, {_mb(free)} are free")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """h5py's write errors (a full disk, an I/O error) as one :class:`InputError` naming the pack."""
    try:
        yield
    except OSError as e:
        reason = "no space left on device" if e.errno == errno.ENOSPC else first_line(e)
        raise InputError(f"{path}: cannot write the pack ({reason}); {path} was not changed") from None


@contextlib.contextmanager
def open_for_writing(tmp: Path, path: Path) -> Iterator[h5py.File]:
    """``tmp`` open for writing, closed on the way out; after an error a failing close (a full
    disk fails its flush too) is ignored, since the temporary file is deleted next."""
    f = h5py.File(tmp, "w", rdcc_nbytes=0)  # no chunk cache: a failed write raises where it happens
    try:
        yield f
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        raise
    try:
        f.close()
    except (OSError, RuntimeError) as e:  # HDF5 reports a failed final flush as either
        no_space = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)
        raise InputError(f"{path}: cannot write the pack ({'no space left on device' if no_space else first_line(e)}); "
                         f"{path} was not changed") from None
