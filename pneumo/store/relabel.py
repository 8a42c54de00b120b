"""The relabel list: a CSV of pack ids to leave out, the one owner of its name and columns.

No TensorFlow and no streamlit. :func:`pneumo.review.curate.curate` writes it (by default
``RUN/relabel_<split>.csv``: :func:`relabel_path`) with :func:`write_list`, columns
:data:`RELABEL_COLUMNS`; ``pneumo pack --exclude`` and ``pneumo train --exclude`` read its ids
with :func:`read_list_ids`, which takes any CSV with an ``id`` column (a hand-made list too).
Text cells go through :func:`pneumo._io.csv_cell` (a leading ``'`` before ``= + - @``, so a
spreadsheet never runs an id as a formula) and are read back with :func:`pneumo._io.csv_value`.
"""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

from pneumo._io import CsvWriter, atomic_path, csv_value, fsync_dir, refuse_existing, temp_path_for
from pneumo.config import SPLITS
from pneumo.errors import InputError

RELABEL_COLUMNS = ("id", "source", "category", "verdicts", "notes")
DEFAULT_NAME = "relabel_<split>.csv"  # in the run folder; what help texts show


def relabel_path(run_dir: str | os.PathLike, split: str) -> Path:
    """Where a run's relabel list goes by default: ``RUN/relabel_<split>.csv``."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return Path(run_dir) / f"relabel_{split}.csv"


def write_list(path: str | os.PathLike, rows: Iterable[Sequence[str]], *, force: bool = False) -> Path:
    """Write ``rows`` (one value per :data:`RELABEL_COLUMNS` each, cells through ``csv_cell``)
    as a relabel list at ``path``, atomically.

    An existing ``path`` is replaced only with ``force``; otherwise :class:`InputError`, and
    the check and the write are one step (a hard link of the finished file), so a file that
    appears meanwhile is not overwritten either.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a CSV file name for the relabel list")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: folder not found")
    refuse_existing(path, force)
    rows = [tuple(r) for r in rows]
    bad = next((r for r in rows if len(r) != len(RELABEL_COLUMNS)), None)
    if bad is not None:
        raise InputError(f"{path}: a relabel row needs {len(RELABEL_COLUMNS)} values "
                         f"({', '.join(RELABEL_COLUMNS)}), got {len(bad)}")
    if force:
        with atomic_path(path) as tmp:
            _write(tmp, rows)
        return path
    tmp = temp_path_for(path)
    try:
        _write(tmp, rows)
        try:
            os.link(tmp, path)  # fails if the name was taken meanwhile: never clobbers
        except FileExistsError:
            refuse_existing(path, force)  # raises: the name was taken meanwhile
            raise
        except OSError:  # a file system without hard links: the check above has to do
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _write(tmp: Path, rows: Sequence[Sequence[str]]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = CsvWriter(f)  # full quoting and the formula guard
        w.writerow(RELABEL_COLUMNS)
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def read_list_ids(path: str | os.PathLike) -> list[str]:
    """The ids of a relabel list, or any CSV with an ``id`` column, in file order without
    duplicates (blank cells ignored).

    Raises ``InputError`` naming the file when it is missing, unreadable, not UTF-8 text or has
    no ``id`` column (header names are matched after trimming spaces, case-sensitively).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: exclusion list {'is not a file' if path.exists() else 'not found'}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, None) or []]
            if "id" not in header:
                raise InputError(
                    f"{path}: exclusion list has no 'id' column (found {header or 'no header'}); "
                    "expected a CSV such as the relabel list `pneumo curate` writes"
                )
            col = header.index("id")
            ids = [csv_value(row[col].strip()) for row in reader if len(row) > col and row[col].strip()]
    except InputError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read exclusion list ({type(e).__name__}: {e})") from None
    return list(dict.fromkeys(ids))
