"""Uploaded zips: streamed to disk, checked as a whole before anything is extracted, unpacked
safely into a fresh folder of ``data/uploads/``, and swept when a crash left them behind.

What a zip may not do (``InputError`` naming the member, shown with ``repr`` so control
characters and Markdown stay inert): hold more than ``MAX_ZIP_MEMBERS`` files (first checked
from the end-of-central-directory record, ZIP64 included, before the listing is parsed: a
92 MB zip of a million empty entries took 30 s and 740 MB to list), expand to
more than ``MAX_ZIP_BYTES`` in total, or expand more than ``MAX_ZIP_RATIO`` times its own
size overall (a zip bomb of many small members is caught as well as one big one); escape
the destination (absolute paths, drive letters, ``..``), hold symbolic links, or hold a
name twice or as both a file and a folder (``a`` and ``a/b``). The app lists and unpacks in a
worker process with a memory cap (:func:`extract_upload` with ``isolate``), since the record
can lie about the count.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import struct
import time
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pneumo.errors import InputError

__all__ = [
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "MAX_ZIP_RATIO",
    "content_root",
    "data_root",
    "extract_upload",
    "hide_root",
    "new_upload_dir",
    "safe_extract_zip",
    "save_upload",
    "sweep_temp_files",
    "sweep_uploads",
    "uploads_dir",
]

MAX_ZIP_MEMBERS = 50_000  # files; a larger set belongs on the server, given by path
MAX_ZIP_BYTES = 4 * 1024**3  # uncompressed total; checked from the listing, then while writing
MAX_ZIP_RATIO = 100  # overall expansion (uncompressed / zip size); images compress 1-5x, bombs 1000x
_RATIO_FLOOR = 8 * 1024**2  # below this total, any ratio is harmless (a few blank masks)
_COPY_CHUNK = 1 << 20
_UPLOAD_MAX_AGE = 24 * 3600.0  # seconds; an unpacked upload older than this is an orphan
_TEMP_MAX_AGE = 3600.0  # seconds; a temporary file untouched this long belongs to a killed write
# The end-of-central-directory record and its ZIP64 forms (APPNOTE.TXT 4.3.14-4.3.16).
_EOCD, _EOCD_FORMAT = b"PK\x05\x06", "<4s4H2LH"
_LOCATOR, _LOCATOR_FORMAT = b"PK\x06\x07", "<4sLQL"
_EOCD64, _EOCD64_FORMAT = b"PK\x06\x06", "<4sQ2H2L4Q"
_TAIL = 22 + 65535  # the record and the longest comment: where the record must start
_ENTRIES_PER_FILE = 2  # directory entries allowed per file before listing (its folders too)
_ENTRY_BYTES = 300  # central-directory bytes allowed per entry (46 fixed, the name, extras)


def _shown(name: str) -> str:
    """A member name as shown to the user: quoted, control characters escaped, bounded."""
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "...'"


def uploads_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir/uploads`` (default: the workspace's data folder)."""
    if data_dir is None:
        from pneumo.settings import data_dir as default_data_dir

        data_dir = default_data_dir()
    return Path(data_dir) / "uploads"


def new_upload_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """A fresh, empty folder under ``uploads_dir(data_dir)`` for one upload."""
    d = uploads_dir(data_dir) / uuid.uuid4().hex[:12]
    d.mkdir(parents=True, exist_ok=False)
    return d


def save_upload(file: BinaryIO, dest: str | os.PathLike) -> Path:
    """Copy a file-like upload (e.g. Streamlit's ``UploadedFile``) to ``dest`` in 1 MiB chunks."""
    dest = Path(dest)
    if hasattr(file, "seek"):
        file.seek(0)
    with open(dest, "wb") as out:
        while chunk := file.read(_COPY_CHUNK):
            out.write(chunk)
    return dest


def _zip_size(file: str | os.PathLike | BinaryIO) -> int:
    if isinstance(file, (str, os.PathLike)):
        return os.path.getsize(file)
    pos = file.tell()
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(pos)
    return size


def _tail(file: str | os.PathLike | BinaryIO, start: int, n: int) -> bytes:
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as f:
            f.seek(start)
            return f.read(n)
    pos = file.tell()
    try:
        file.seek(start)
        return file.read(n)
    finally:
        file.seek(pos)


def zip_directory(file: str | os.PathLike | BinaryIO) -> tuple[int, int]:
    """``(entries, central-directory bytes)`` as the zip's end-of-central-directory record
    declares them (the ZIP64 record when there is one), read from its last 64 KiB only: nothing
    of the listing is parsed. ``InputError`` when there is no such record (not a zip)."""
    size = _zip_size(file)
    start = max(0, size - _TAIL)
    tail = _tail(file, start, size - start)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < struct.calcsize(_EOCD_FORMAT):
        raise InputError("upload: not a readable zip file (no end-of-central-directory record)")
    fields = struct.unpack_from(_EOCD_FORMAT, tail, at)
    entries, cd_bytes = fields[4], fields[5]
    locator = at - struct.calcsize(_LOCATOR_FORMAT)
    if locator >= 0 and tail[locator:locator + 4] == _LOCATOR:
        offset = struct.unpack_from(_LOCATOR_FORMAT, tail, locator)[2]
        record = _tail(file, offset, struct.calcsize(_EOCD64_FORMAT))
        if len(record) == struct.calcsize(_EOCD64_FORMAT) and record[:4] == _EOCD64:
            zip64 = struct.unpack(_EOCD64_FORMAT, record)
            entries, cd_bytes = zip64[7], zip64[8]
    return int(entries), int(cd_bytes)


def check_directory(file: str | os.PathLike | BinaryIO, max_members: int = MAX_ZIP_MEMBERS) -> None:
    """Refuse a zip whose end-of-central-directory record declares more entries than
    ``max_members`` files could need (with their folders), or a central directory too large
    for that many entries (a record that understates the count); ``InputError``. Reads 64 KiB."""
    entries, cd_bytes = zip_directory(file)
    most = _ENTRIES_PER_FILE * max_members
    if entries > most:
        raise InputError(f"upload: {entries:,} entries in the zip; the limit is {max_members:,} files")
    if cd_bytes > most * _ENTRY_BYTES:
        raise InputError(f"upload: the zip's listing is {cd_bytes / 1e6:,.0f} MB, too large for the "
                         f"{max_members:,} files allowed")


def _plan(zf: zipfile.ZipFile, dest: Path, zip_size: int, max_members: int, max_bytes: int,
          max_ratio: float) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Check the whole listing; the members to write and where. Nothing is written here."""
    infos = zf.infolist()
    files = [i for i in infos if not i.is_dir()]
    if len(files) > max_members:
        raise InputError(f"upload: {len(files)} files in the zip; the limit is {max_members}")
    targets: list[tuple[zipfile.ZipInfo, Path]] = []
    file_parts: dict[tuple[str, ...], str] = {}
    folders: set[tuple[str, ...]] = set()
    declared = 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = tuple(p for p in PurePosixPath(name).parts if p != ".")
        if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts or not parts or "\0" in name:
            raise InputError(f"upload: unsafe path in the zip: {_shown(info.filename)}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"upload: symbolic link in the zip: {_shown(info.filename)}")
        folders.update(parts[:k] for k in range(1, len(parts)))
        if info.is_dir():
            folders.add(parts)
            continue
        if parts in file_parts:
            raise InputError(f"upload: {_shown(info.filename)} appears twice in the zip")
        file_parts[parts] = info.filename
        declared += info.file_size
        targets.append((info, dest.joinpath(*parts)))
    clash = next((p for p in file_parts if p in folders), None)
    if clash is not None:
        raise InputError(
            f"upload: {_shown(file_parts[clash])} is both a file and a folder in the zip; remove one of them"
        )
    if declared > max_bytes:
        raise InputError(f"upload: {declared / 1e9:.1f} GB uncompressed; the limit is {max_bytes / 1e9:.1f} GB")
    if declared > _RATIO_FLOOR and declared > max_ratio * max(zip_size, 1):
        raise InputError(
            f"upload: the zip expands {declared / max(zip_size, 1):.0f}x ({zip_size / 1e6:.1f} MB to "
            f"{declared / 1e6:.0f} MB); the limit is {max_ratio:g}x (zip bomb?)"
        )
    return targets


def safe_extract_zip(
    file: str | os.PathLike | BinaryIO,
    dest: str | os.PathLike,
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_ZIP_RATIO,
) -> Path:
    """Unpack a zip into ``dest`` (created) after checking its whole listing; returns ``dest``.

    Refused with ``InputError`` before anything is written: see the module docstring (the
    entry count is read from the end-of-central-directory record before the listing is
    parsed). While writing, bytes are counted again (never trusting the listing alone); any
    failure removes ``dest`` with what was written.
    """
    dest = Path(dest)
    check_directory(file, max_members)
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InputError(f"upload: not a readable zip file ({e})") from None
    with zf:
        targets = _plan(zf, dest, _zip_size(file), max_members, max_bytes, max_ratio)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        try:
            for info, target in targets:
                if root not in target.resolve().parents:
                    raise InputError(f"upload: unsafe path in the zip: {_shown(info.filename)}")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "xb") as out:
                        while chunk := src.read(_COPY_CHUNK):
                            written += len(chunk)
                            if written > max_bytes:
                                raise InputError(
                                    f"upload: more than {max_bytes / 1e9:.1f} GB uncompressed; the limit is reached"
                                )
                            out.write(chunk)
                except (OSError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as e:
                    reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
                    raise InputError(f"upload: cannot unpack {_shown(info.filename)} ({reason})") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def content_root(folder: str | os.PathLike) -> Path:
    """``folder``, or the folder inside it while it holds exactly one visible entry that is a
    folder (a zip of ``mydata/images/...``); macOS' ``__MACOSX`` and hidden entries are ignored."""
    folder = Path(folder)
    for _ in range(8):
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            break
        folder = entries[0]
    return folder


def data_root(top: str | os.PathLike, names: list[str] | tuple[str, ...] = ()) -> Path:
    """Where an unpacked zip's data starts: ``top`` when it holds every one of ``names``
    (e.g. ``images``, ``masks``, or ``set/images``), else :func:`content_root` of ``top``."""
    top = Path(top)
    if names and all((top / name).exists() for name in names):
        return top
    return content_root(top)


def extract_upload(
    file: BinaryIO | str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_ZIP_RATIO,
    isolate: bool = False,
    memory_limit: int | None = None,
) -> tuple[Path, Path]:
    """Save an uploaded zip to a fresh upload folder, unpack it there and delete the zip.

    Returns ``(folder, top)``: the folder to delete when done, and the unpacked files (see
    :func:`data_root` for a zip with one extra top-level folder). On failure nothing is left.
    ``isolate`` (the app): the entry count is checked here from the end-of-central-directory
    record, then the listing is parsed and the members unpacked in a worker process whose
    address space is capped at ``memory_limit`` bytes, never in this one.
    """
    folder = new_upload_dir(data_dir)
    try:
        zip_path = folder / ".upload.zip"
        if isinstance(file, (str, os.PathLike)):
            zip_path = Path(file)
        else:
            save_upload(file, zip_path)
        limits = {"max_members": max_members, "max_bytes": max_bytes, "max_ratio": max_ratio}
        if isolate:
            check_directory(zip_path, max_members)  # the common refusal without starting a worker
            _in_worker(safe_extract_zip, (zip_path, folder / "files"), limits, memory_limit)
        else:
            safe_extract_zip(zip_path, folder / "files", **limits)
        if zip_path.parent == folder:
            zip_path.unlink()
        return folder, folder / "files"
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _in_worker(fn: Any, args: tuple, kwargs: dict, memory_limit: int | None) -> Any:
    """``fn(*args, **kwargs)`` in a fresh worker process capped at ``memory_limit`` bytes."""
    from concurrent.futures.process import BrokenProcessPool

    from pneumo.workers import worker_pool

    with worker_pool(1, memory_limit) as pool:
        try:
            return pool.submit(fn, *args, **kwargs).result()
        except (MemoryError, BrokenProcessPool):
            raise InputError("upload: the zip needs more memory to list or unpack than a worker may use; "
                             "refused") from None


def hide_root(message: str, root: str | os.PathLike, label: str = "zip") -> str:
    """``message`` with the server path of an unpacked upload replaced by ``label:``, so a user
    sees names inside their zip, not the server's folders."""
    root = str(root).rstrip("/")
    return message.replace(root + "/", f"{label}:").replace(root, label)


def _stale(folder: Path, max_age: float):
    """``(path, lstat)`` of the entries of ``folder`` not modified for ``max_age`` seconds."""
    now = time.time()
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return
    for p in entries:
        try:
            st = p.lstat()
        except OSError:
            continue
        if now - st.st_mtime > max_age:
            yield p, st


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # _io.temp_path_for: .NAME.XXXXXXXX.tmp


def sweep_temp_files(folder: str | os.PathLike, max_age: float = _TEMP_MAX_AGE) -> list[Path]:
    """Delete temporary files that a killed write left in ``folder`` (``.NAME.*.tmp``, e.g. a
    12 MB ``.demo.h5.*.tmp``, older than ``max_age`` seconds; a live write keeps touching its
    file). Returns what was deleted."""
    removed: list[Path] = []
    for p, st in _stale(Path(folder), max_age):
        if _TEMP_NAME.match(p.name) and stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def sweep_uploads(data_dir: str | os.PathLike | None = None, max_age: float = _UPLOAD_MAX_AGE) -> list[Path]:
    """Delete upload folders older than ``max_age`` seconds (a crash or kill left them: they hold
    patient images). Returns what was deleted; never raises for a folder it cannot remove."""
    removed: list[Path] = []
    for p, st in _stale(uploads_dir(data_dir), max_age):
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        if not p.exists():
            removed.append(p)
    return removed
