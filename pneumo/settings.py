"""Where packs and runs live: one setting, the workspace folder, and whether it can be used.

``PNEUMO_WORKSPACE`` (default: the current directory) holds ``data/`` (packs) and
``runs/`` (training runs). ``PNEUMO_DATA_DIR`` and ``PNEUMO_RUNS_DIR`` override each.

:func:`workspace_problem` says when these cannot be folders at all (a setting naming a file);
the app shows it instead of every page, and commands that write stop on it
(:func:`check_workspace`). :func:`write_problem` / :func:`check_writable` say when a folder
cannot be written (read-only file system, no permission): the app then shows what exists
without writing anything, and a command that would write there stops first, naming it.
"""
from __future__ import annotations

import os
from pathlib import Path

from pneumo.errors import InputError

DEMO_PACK_NAME = "demo.h5"
_WORKSPACE, _DATA, _RUNS = "PNEUMO_WORKSPACE", "PNEUMO_DATA_DIR", "PNEUMO_RUNS_DIR"


def workspace() -> Path:
    """The workspace folder (``$PNEUMO_WORKSPACE`` or the current directory)."""
    return Path(os.environ.get(_WORKSPACE, ".")).expanduser()


def data_dir() -> Path:
    """Folder of HDF5 packs (``$PNEUMO_DATA_DIR`` or ``<workspace>/data``)."""
    env = os.environ.get(_DATA)
    return Path(env).expanduser() if env else workspace() / "data"


def runs_dir() -> Path:
    """Folder of training runs (``$PNEUMO_RUNS_DIR`` or ``<workspace>/runs``)."""
    env = os.environ.get(_RUNS)
    return Path(env).expanduser() if env else workspace() / "runs"


def demo_pack_path() -> Path:
    """Where the app keeps the demo pack it creates on first launch."""
    return data_dir() / DEMO_PACK_NAME


def _existing(folder: Path) -> Path:
    """``folder`` or, when it does not exist yet, the nearest path above it that does (where
    it would be made)."""
    p = folder.absolute()
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def workspace_problem() -> str | None:
    """Why the workspace cannot hold packs and runs, naming the setting to change; None when
    it can. Only what no one can fix by waiting: a setting (or a folder under it) that is a
    file, not a folder. A missing folder is fine (it is made when needed)."""
    for folder, own in ((data_dir(), _DATA), (runs_dir(), _RUNS)):
        var = own if os.environ.get(own) else _WORKSPACE
        blocker = _existing(folder)
        if not blocker.is_dir():
            shown = os.environ.get(var, ".")
            what = "is" if blocker == Path(shown).expanduser().absolute() else f"holds {blocker}, which is"
            return f"{var}={shown}: {what} a file, not a folder; set {var} to a folder"
    return None


def write_problem(folder: str | os.PathLike) -> str | None:
    """Why nothing can be written in ``folder`` (made if missing): "read-only file system",
    "no permission to write" or "... is a file, not a folder", naming the path where it
    stops when that is above ``folder``; None when it can be written."""
    folder = Path(folder)
    p = _existing(folder)
    where = "" if p == folder.absolute() else f" at {p}"
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    if os.access(p, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the permission is all we know
        read_only = False
    return ("read-only file system" if read_only else "no permission to write") + where


def check_writable(folder: str | os.PathLike, what: str = "") -> Path:
    """:class:`InputError` "``<folder>: cannot be written (<why>); <what>``" when
    :func:`write_problem` finds one; else ``folder`` as a Path. Commands call it before any
    work, so a read-only target costs no time and leaves nothing half-made."""
    problem = write_problem(folder)
    if problem is not None:
        raise InputError(f"{folder}: cannot be written ({problem})" + (f"; {what}" if what else ""))
    return Path(folder)


def check_workspace(*, write: tuple[str, ...] = ("data", "runs")) -> None:
    """Stop a command that writes in the workspace: :func:`workspace_problem`, then
    :func:`check_writable` of the folders named in ``write`` (``"data"``, ``"runs"``), each as
    :class:`InputError` naming the folder or setting."""
    problem = workspace_problem()
    if problem is not None:
        raise InputError(problem)
    folders = {"data": (data_dir(), _DATA), "runs": (runs_dir(), _RUNS)}
    for name in write:
        folder, own = folders[name]
        var = own if os.environ.get(own) else _WORKSPACE
        check_writable(folder, f"set {var} to a folder you can write in")
