"""Atomic file writing and tolerant reading of files other processes write.

Writers: a crash, kill or power cut never leaves a half-written file at the target (a
temporary file beside it is written, fsynced, renamed over it, then the folder is fsynced so
the rename itself is durable). Readers of live files (:func:`read_json`) never raise: a
missing, half-written or damaged file reads as ``None``; :func:`load_json` also says why.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from pneumo.errors import InputError


def now_iso() -> str:
    """The current UTC time as ISO 8601 to the second (``2026-01-31T12:00:00+00:00``): the one
    timestamp format of every file pneumo writes."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _umask() -> int:
    # os.umask can only be read by setting it, which races with other threads (the app
    # server has many); Linux reports it in /proc instead.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh, unique temporary path beside ``path`` (same filesystem, so rename is atomic).

    It gets the permissions a plain ``open()`` would give (mkstemp's are owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename (or creation) in ``folder`` durable; a no-op where folders cannot be
    opened or synced (Windows, some network filesystems)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and replaces ``path`` (and
    the folder is fsynced), on error it is removed."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path`` to fill; on success it takes the name
    ``path`` (a folder already there is moved aside first, then deleted), on error it is
    deleted, so ``path`` never holds a mix of old and new files. Callers refuse an existing
    ``path`` first (:func:`refuse_existing`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        elif path.exists() or path.is_symlink():
            path.unlink()  # a file or link of that name: refused earlier unless forced
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not path.exists():  # put the old folder back where it was
                with contextlib.suppress(OSError):
                    os.replace(old / path.name, path)
            with contextlib.suppress(OSError):
                old.rmdir()  # only when empty: an old folder that could not go back stays there
        raise
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace(src, dst)`` for a file written elsewhere (e.g. by Keras): fsync it, rename,
    fsync the folder."""
    _fsync_file(Path(src))
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


#: How the app names its overwrite control, for :func:`refuse_existing`'s ``flag``.
APP_FORCE = 'the "Replace existing" checkbox'


def refuse_existing(path: str | os.PathLike, force: bool, *, flag: str = "--force") -> Path:
    """The one overwrite rule for every file or folder a user names as an output: an existing
    ``path`` is refused unless ``force``.

    Raises :class:`~pneumo.errors.InputError` "``<path>: already exists; use <flag> to replace
    it``"; ``flag`` names the control that replaces it (``--force`` on the command line,
    :data:`APP_FORCE` in the app). Returns ``path`` as a :class:`Path`. A check only: writers
    still write atomically, so a refused or failed write leaves the existing file as it was.
    """
    path = Path(path)
    if not force and (path.exists() or path.is_symlink()):
        raise InputError(f"{path}: already exists; use {flag} to replace it")
    return path


def load_json(path: str | os.PathLike) -> tuple[Any, str | None]:
    """Read a JSON file without ever raising: ``(value, None)``, or ``(None, reason)``.

    ``reason`` is ``"missing"`` for an absent file, else a short sentence for a damaged or
    unreadable one ("not valid UTF-8", "is a folder", "not valid JSON (line 1 ...)", an OS
    error such as a permission problem).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, "missing"
    except IsADirectoryError:
        return None, "is a folder, not a file"
    except OSError as e:
        return None, f"unreadable ({e.strerror or type(e).__name__})"
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not valid UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; ``None`` when it is missing, half-written or damaged (invalid UTF-8,
    a folder of that name, unreadable): readers poll live files and must never raise. Use
    :func:`load_json` to learn why a file gave ``None``."""
    return load_json(path)[0]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP CSV injection).

    Strings starting with ``= + - @``, tab or CR get a leading apostrophe; other values
    (numbers included, so ``-0.5`` stays a number) are returned unchanged.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    """pneumo's one CSV writer: every cell quoted and text cells through :func:`csv_cell`.

    Full quoting because the csv module's minimal quoting leaves a bare carriage return
    unquoted when rows end in ``\\n``, and a reader then splits the row there (an id
    ``cr\\rhere0`` read back as two ids); :func:`csv_cell` keeps a spreadsheet from running a
    cell as a formula. ``f``: a text file opened with ``newline=""`` (or a ``StringIO``).
    ``guard=False`` only where numbers are written as text (``"-0.5"`` must stay a number) and
    any text cell (an id, a name, a note) has been through :func:`csv_cell` already.
    """

    def __init__(self, f: IO[str], *, guard: bool = True):
        self._writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        self._cell = csv_cell if guard else (lambda value: value)

    def writerow(self, row: Iterable[Any]) -> None:
        """Write one row; numbers stay numbers (``-0.5`` is not a formula), strings are guarded."""
        self._writer.writerow([self._cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Write several rows (see :meth:`writerow`)."""
        for row in rows:
            self.writerow(row)


def csv_text(rows: Iterable[Iterable[Any]], *, guard: bool = True) -> str:
    """The CSV text of ``rows`` (header first) as :class:`CsvWriter` writes it."""
    buf = io.StringIO()
    CsvWriter(buf, guard=guard).writerows(rows)
    return buf.getvalue()


def csv_value(cell: str) -> str:
    """Undo :func:`csv_cell` on a cell read back: one leading apostrophe is dropped when the
    rest starts like a formula (``= + - @``, tab or CR), so ``'=x`` reads as ``=x``; any other
    cell (``'quoted`` included) is returned unchanged."""
    if isinstance(cell, str) and cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell
