"""The runs folder: the runs it holds, newest first, the one running now, and new run folders.

What the Home and Training pages list and what :mod:`pneumo.train.jobs` checks before a start
("one job at a time"). Each run is read through :mod:`pneumo.store.run` (the owner of the run
folder's files), so a damaged run is listed as damaged with the reason, never breaks the list.
No TensorFlow.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pneumo import settings
from pneumo._io import load_json, read_json
from pneumo.errors import InputError
from pneumo.store.run import CONFIG, RunFolder, best_row, load_history, read_status

__all__ = ["RunInfo", "list_runs", "active_run", "new_run_dir", "is_run_dir"]


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a run (a ``config.json`` or ``status.json`` entry)."""
    path = Path(path)
    files = RunFolder(path)
    return path.is_dir() and (files.config.exists() or files.status.exists())

@dataclass(frozen=True)
class RunInfo:
    """What the app lists about a run folder."""

    path: Path
    name: str
    state: str  # one of STATES
    config: dict = field(default_factory=dict)  # config.json as saved ({} when unreadable)
    started: str | None = None
    ended: str | None = None
    error: str | None = None
    epochs_done: int = 0  # rows in history.csv
    epochs: int | None = None  # planned, both stages
    best_val_loss: float | None = None
    best_val_dice: float | None = None  # val_dice of the epoch with the lowest val_loss
    best_epoch: int | None = None
    has_best: bool = False  # best.keras exists
    damaged: str | None = None  # why a file of the run could not be read (None when all are fine)


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _run_info(path: Path) -> RunInfo:
    status = read_status(path)
    problems = [status["error"]] if status["state"] == "damaged" else []
    config, problem = load_json(RunFolder(path).config)
    if problem not in (None, "missing"):
        problems.append(f"{CONFIG}: {problem}")
    if not isinstance(config, dict):
        if problem is None:
            problems.append(f"{CONFIG}: not a JSON object")
        config = {}
    history, problem = load_history(path)
    if problem:
        problems.append(problem)
    best = best_row(history)
    epochs = _whole(status.get("epochs"))
    if epochs is None and config:
        first, second = _whole(config.get("epochs")), _whole(config.get("fine_tune_epochs", 0))
        if first is None or second is None:
            problems.append(f"{CONFIG}: epochs {config.get('epochs')!r} / fine_tune_epochs "
                            f"{config.get('fine_tune_epochs', 0)!r} are not whole numbers")
        else:
            epochs = first + second
    if epochs is not None and len(history) > epochs:  # a row past the end is not this run's
        problems.append(f"{RunFolder(path).history.name}: {len(history)} epochs for a run of {epochs}")
    text = lambda v: v if isinstance(v, str) else None  # noqa: E731
    return RunInfo(
        path=path, name=path.name, state=str(status["state"]), config=config,
        started=text(status.get("started")), ended=text(status.get("ended")),
        error=text(status.get("error")), epochs_done=len(history), epochs=epochs,
        best_val_loss=best["val_loss"] if best else None,
        best_val_dice=best.get("val_dice") if best else None,
        best_epoch=best["epoch"] if best else None,
        has_best=RunFolder(path).checkpoint("best").is_file(),
        damaged="; ".join(problems) or None,
    )


def _sort_key(path: Path) -> tuple[str, float]:
    status = read_json(RunFolder(path).status)
    started = status.get("started") if isinstance(status, dict) else None
    with contextlib.suppress(OSError):
        return (str(started or ""), path.stat().st_mtime)
    return (str(started or ""), 0.0)


def _run_folders(runs_dir: str | os.PathLike | None) -> list[Path]:
    folder = Path(runs_dir) if runs_dir is not None else settings.runs_dir()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    runs = [p for p in entries if not p.name.startswith(".") and is_run_dir(p)]
    return sorted(runs, key=_sort_key, reverse=True)


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[RunInfo]:
    """The runs in ``runs_dir`` (default :func:`pneumo.settings.runs_dir`), newest first.

    Never raises on a damaged run: it is listed with :attr:`RunInfo.damaged` set.
    """
    return [_run_info(p) for p in _run_folders(runs_dir)]


def active_run(runs_dir: str | os.PathLike | None = None) -> Path | None:
    """The run folder in ``runs_dir`` whose trainer is running now, or None."""
    for path in _run_folders(runs_dir):
        if read_status(path)["state"] == "running":
            return path
    return None


def new_run_dir(runs_dir: str | os.PathLike | None = None, prefix: str = "run") -> Path:
    """Create and return a fresh folder ``<runs_dir>/<prefix>-YYYYmmdd-HHMMSS[-n]``."""
    if not prefix or any(c in prefix for c in "/\\") or prefix.startswith("."):
        raise InputError(f"run name prefix {prefix!r}: use letters, digits, '-' or '_'")
    folder = Path(runs_dir) if runs_dir is not None else settings.runs_dir()
    settings.check_writable(folder, "no run can start there")  # not a PermissionError traceback
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = folder / (f"{prefix}-{stamp}" if n == 1 else f"{prefix}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise InputError(f"{folder}: could not create a new run folder named {prefix}-{stamp}-N")
