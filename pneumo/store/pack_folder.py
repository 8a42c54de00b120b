"""The packs of a data folder (``settings.data_dir()``): which ``*.h5`` files are readable packs,
which are not and why, and the file a new pack of a given name goes to. Reading a pack itself is
:mod:`pneumo.store.pack`'s."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import InputError, PackFormatError
from pneumo.settings import data_dir
from pneumo.store.pack import PackInfo, read_info

__all__ = ["DamagedPack", "scan_packs", "out_path"]


@dataclass
class DamagedPack:
    """An ``*.h5`` file of the data folder that is not a readable pack, and why."""

    path: Path
    reason: str


def scan_packs(folder: str | os.PathLike | None = None) -> tuple[list[PackInfo], list[DamagedPack]]:
    """Packs (``*.h5``) in ``folder`` (default ``settings.data_dir()``), by name: the valid ones
    and the damaged or foreign ones with the reason. Never raises for a bad file."""
    folder = Path(folder) if folder is not None else data_dir()
    infos: list[PackInfo] = []
    damaged: list[DamagedPack] = []
    try:
        paths = sorted(p for p in folder.glob("*.h5") if not p.name.startswith(".")) if folder.is_dir() else []
    except OSError:
        paths = []
    for p in paths:
        try:
            infos.append(read_info(p))
        except PackFormatError as e:
            damaged.append(DamagedPack(p, str(e)))
        except Exception as e:  # h5py and numpy raise many types for odd attributes
            damaged.append(DamagedPack(p, f"{p}: unreadable pack ({type(e).__name__}: {e})"))
    return infos, damaged


def out_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The pack file ``folder/name`` (default folder ``settings.data_dir()``; ``.h5`` added when
    missing). ``InputError`` unless ``name`` is a plain file name (no folder, not hidden)."""
    name = name.strip()
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise InputError(f"pack file name {name!r}: give a plain file name such as my-pack.h5")
    if not name.endswith(".h5"):
        name += ".h5"
    return (Path(folder) if folder is not None else data_dir()) / name
