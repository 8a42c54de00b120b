"""What identifies a file's content without reading it all: cache keys and freshness checks.

No TensorFlow and no streamlit. :class:`FileStamp` (resolved path, size, modification time)
names one version of a file; a pack split's ids and their digest are read once per version
of the pack (:func:`pack_split_ids`, :func:`pack_split_digest`), so a re-pack is read afresh
and an unchanged pack costs nothing. :mod:`pneumo.store.predictions` records
:func:`pack_identity` in every predictions file and compares it to decide freshness.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pneumo.config import SPLITS
from pneumo.errors import InputError


def check_split(split: str) -> str:
    """``split`` itself; :class:`InputError` naming the choices when it is not one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown (choose one of: {', '.join(SPLITS)})")
    return split


def ids_digest(ids: Sequence[str]) -> str:
    """A short content digest of an ordered id list (16 hex characters of SHA-256)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


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
        """The modification time in seconds (what HDF5 attributes store)."""
        return self.mtime_ns / 1e9


@functools.lru_cache(maxsize=64)
def pack_split(stamp: FileStamp, split: str) -> tuple[int, tuple[str, ...]]:
    """The image side of the pack version ``stamp`` and the ids of its ``split``, read once per
    version (:class:`pneumo.errors.PackFormatError` for a missing or damaged pack)."""
    from pneumo.store.pack import Pack

    with Pack(stamp.path) as pack:
        return pack.size, tuple(pack.ids(check_split(split)))


@functools.lru_cache(maxsize=64)
def _split_digest(stamp: FileStamp, split: str) -> str:
    # hashing every id of a split costs milliseconds per call; a re-pack changes the stamp
    return ids_digest(pack_split(stamp, split)[1])


def stamp_digest(stamp: FileStamp, split: str) -> str:
    """:func:`ids_digest` of the ids of ``split`` in the pack version ``stamp``, computed once."""
    return _split_digest(stamp, check_split(split))


def pack_split_ids(pack_path: str | os.PathLike, split: str) -> tuple[str, ...]:
    """The ids of a pack split, read once per version of the file (keyed by its :class:`FileStamp`)."""
    return pack_split(FileStamp.of(pack_path), check_split(split))[1]


def pack_split_digest(pack_path: str | os.PathLike, split: str) -> str:
    """:func:`ids_digest` of a pack split's ids, computed once per version of the file."""
    return stamp_digest(FileStamp.of(pack_path), split)


def pack_identity(pack_path: str | os.PathLike, split: str) -> dict[str, Any]:
    """``{"pack", "pack_size", "pack_mtime", "ids_digest"}``: what a predictions file records
    about the pack split it was made from."""
    stamp = FileStamp.of(pack_path)
    return {"pack": stamp.path, "pack_size": stamp.size, "pack_mtime": stamp.mtime,
            "ids_digest": stamp_digest(stamp, split)}
