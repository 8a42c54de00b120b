"""Training runs as separate processes, controlled through their run folders.

The app never trains in its own process: :func:`start_training` launches
``python -m pneumo train --config RUN/config.json --run-dir RUN`` in a new session with
its output in ``RUN/train.log``, and everything else here only reads or writes files of
the run folder (docs/architecture.md, "Run folder"). So a page reload, a second browser
tab or a restarted app finds a running job, follows it and can stop it.

No TensorFlow here: the app imports this module on every page.

``$PNEUMO_TRAIN_COMMAND`` (split with :func:`shlex.split`) replaces the
``python -m pneumo train`` prefix; the tests use it to run ``tests/fake_trainer.py``.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from . import settings
from ._io import atomic_write_json, atomic_write_text, read_json
from .config import TrainConfig, normalise_train_paths, save_config, to_dict
from .errors import InputError

__all__ = [
    "RunInfo",
    "start_training",
    "read_status",
    "read_progress",
    "read_history",
    "request_stop",
    "list_runs",
    "active_run",
    "new_run_dir",
    "is_run_dir",
    "encoder_weights_available",
    "encoder_weights_cache_path",
    "IMAGENET_NOTOP_FILE",
    "STATES",
]

STATES = ("running", "finished", "stopped", "failed")
IMAGENET_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
HISTORY_COLUMNS = ("epoch", "stage", "loss", "dice", "iou", "val_loss", "val_dice", "val_iou", "lr", "seconds")

# Popen objects of the trainers this process launched: polling them reaps finished
# children, which would otherwise linger as zombies and look alive to os.kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen] = {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- processes
def _pid_alive(pid: Any, run_dir: Path | None = None) -> bool:
    """Whether process ``pid`` is alive (not a zombie) and, where /proc tells, still our trainer."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        with contextlib.suppress(OSError, IndexError):
            # state is the field after "(comm)"; comm may contain spaces or parentheses
            stat = (proc / "stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                return False
        if run_dir is not None:
            # A recycled pid belongs to another program: its command line lacks the run folder.
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().decode("utf-8", "replace")
                if run_dir.name not in cmdline:
                    return False
    return True


def _train_command() -> list[str]:
    env = os.environ.get("PNEUMO_TRAIN_COMMAND", "").strip()
    if env:
        return shlex.split(env)
    return [sys.executable, "-m", "pneumo", "train"]


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    """Serialise starts in ``folder`` so two clicks cannot both pass the one-at-a-time check."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: best effort without a lock
        yield
        return
    with open(folder / ".start.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_training(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False) -> int:
    """Launch a training process for ``config`` in ``run_dir``; return its pid.

    Writes ``RUN/config.json`` and a first ``status.json`` (``running``, with the pid), then
    starts ``python -m pneumo train --config RUN/config.json --run-dir RUN`` (``--resume``
    added with ``resume=True``) in a new session, stdout and stderr to ``RUN/train.log``.
    The trainer validates the config itself; a bad one ends the run ``failed`` with the
    message. Raises :class:`InputError` when another run is active (in ``run_dir``'s parent
    or in :func:`pneumo.settings.runs_dir`), or when ``run_dir`` already holds a run and
    ``resume`` is False (or holds none and ``resume`` is True).
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"start_training: config must be a TrainConfig, got {type(config).__name__}")
    run_dir = Path(run_dir).expanduser().absolute()
    config = normalise_train_paths(config)
    with _start_lock(run_dir.parent):
        for folder in dict.fromkeys([run_dir.parent, settings.runs_dir().expanduser().absolute()]):
            other = active_run(folder)
            if other is not None:
                raise InputError(
                    f"another training run is active ({other}); stop it or wait until it ends "
                    f"before starting a new one"
                )
        held = is_run_dir(run_dir) and read_status(run_dir)["state"] != "new"
        if held and not resume:
            raise InputError(f"run folder {run_dir} already holds a run; resume it or choose a new folder")
        if resume and not (run_dir / "config.json").is_file():
            raise InputError(f"run folder {run_dir}: no config.json, nothing to resume")
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            saved = read_json(run_dir / "config.json")
            if saved != to_dict(config):
                raise InputError(f"run folder {run_dir}: config.json differs from the given config; "
                                 f"resume with the run's own config")
        else:
            save_config(config, run_dir / "config.json")
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "STOP").unlink()  # a stale STOP would end the new process at once
        cmd = _train_command() + ["--config", str(run_dir / "config.json"), "--run-dir", str(run_dir)]
        if resume:
            cmd.append("--resume")
        with open(run_dir / "train.log", "ab") as log:
            log.write(f"\n# {_now()} started: {shlex.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the app's restart; Ctrl-C in the app's terminal spares it
                close_fds=True,
            )
        _CHILDREN[proc.pid] = proc
        # Written before the trainer starts, so readers see "running" at once; the trainer
        # recognises its own pid here and takes the file over.
        previous = read_json(run_dir / "status.json") or {}
        epochs = config.epochs + config.fine_tune_epochs
        atomic_write_json(run_dir / "status.json", {
            "state": "running", "pid": proc.pid, "started": _now(), "updated": _now(), "ended": None,
            "error": None, "epoch": int(previous.get("epoch") or 0) if resume else 0, "epochs": epochs,
        })
        return proc.pid


# --------------------------------------------------------------------------- reading
def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a run (``config.json`` or ``status.json``)."""
    path = Path(path)
    return path.is_dir() and ((path / "config.json").is_file() or (path / "status.json").is_file())


def read_status(run_dir: str | os.PathLike) -> dict:
    """The run's ``status.json`` as a dict, checked against reality.

    A ``running`` state whose process is gone reads as ``failed`` with the error "process
    ended unexpectedly (see RUN/train.log)". A folder without ``status.json`` reads as
    ``{"state": "new", ...}`` (prepared, never started). Keys: state, pid, started, updated,
    ended, error, epoch, epochs.
    """
    run_dir = Path(run_dir)
    status = read_json(run_dir / "status.json")
    base = {"state": "new", "pid": None, "started": None, "updated": None, "ended": None,
            "error": None, "epoch": 0, "epochs": None}
    if not isinstance(status, dict):
        if (run_dir / "status.json").exists():
            # Atomic writes make a torn file impossible; a bad one was edited by hand.
            time.sleep(0.05)
            status = read_json(run_dir / "status.json")
        if not isinstance(status, dict):
            return base
    out = {**base, **status}
    if out["state"] == "running" and not _pid_alive(out.get("pid"), run_dir):
        # Re-read: the process may have finished and written its final state just now.
        again = read_json(run_dir / "status.json")
        if isinstance(again, dict) and again.get("state") != "running":
            return {**base, **again}
        log = run_dir / "train.log"
        out["state"] = "failed"
        out["error"] = "process ended unexpectedly" + (f" (see {log})" if log.exists() else "")
    return out


def read_progress(run_dir: str | os.PathLike) -> dict | None:
    """The live ``progress.json`` (stage, epoch, epochs, step, steps, loss, images_per_s,
    eta_s, updated), or None before the first batch."""
    data = read_json(Path(run_dir) / "progress.json")
    return data if isinstance(data, dict) else None


def _parse_cell(key: str, value: str | None) -> Any:
    if key == "stage":
        return value or ""
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if key == "epoch" and math.isfinite(number):
        return int(number)
    return number


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``history.csv``: ``epoch`` int, ``stage`` str, the rest floats (None when empty).

    An absent file gives ``[]``.
    """
    path = Path(run_dir) / "history.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for row in csv.DictReader(text.splitlines()):
        if not row.get("epoch"):
            continue
        rows.append({k: _parse_cell(k, v) for k, v in row.items() if k is not None})
    return rows


def request_stop(run_dir: str | os.PathLike) -> None:
    """Ask the run's trainer to stop: it ends at the next batch, saves ``last.keras``, state ``stopped``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir}: not found")
    atomic_write_text(run_dir / "STOP", f"stop requested {_now()}\n")


# --------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class RunInfo:
    """What the app lists about a run folder."""

    path: Path
    name: str
    state: str  # running, finished, stopped, failed, or new (config only)
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


def _run_info(path: Path) -> RunInfo:
    status = read_status(path)
    config = read_json(path / "config.json")
    config = config if isinstance(config, dict) else {}
    history = read_history(path)
    scored = [r for r in history if isinstance(r.get("val_loss"), float) and math.isfinite(r["val_loss"])]
    best = min(scored, key=lambda r: r["val_loss"]) if scored else None
    epochs = status.get("epochs")
    if epochs is None and config:
        with contextlib.suppress(TypeError):
            epochs = int(config.get("epochs", 0)) + int(config.get("fine_tune_epochs", 0))
    return RunInfo(
        path=path,
        name=path.name,
        state=status["state"],
        config=config,
        started=status.get("started"),
        ended=status.get("ended"),
        error=status.get("error"),
        epochs_done=len(history),
        epochs=epochs,
        best_val_loss=best["val_loss"] if best else None,
        best_val_dice=best.get("val_dice") if best else None,
        best_epoch=best["epoch"] if best else None,
        has_best=(path / "best.keras").is_file(),
    )


def _sort_key(path: Path) -> tuple[str, float]:
    status = read_json(path / "status.json")
    started = status.get("started") if isinstance(status, dict) else None
    with contextlib.suppress(OSError):
        return (str(started or ""), path.stat().st_mtime)
    return (str(started or ""), 0.0)


def _run_folders(runs_dir: str | os.PathLike | None) -> list[Path]:
    folder = Path(runs_dir) if runs_dir is not None else settings.runs_dir()
    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir() if not p.name.startswith(".") and is_run_dir(p)]
    return sorted(runs, key=_sort_key, reverse=True)


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[RunInfo]:
    """The runs in ``runs_dir`` (default :func:`pneumo.settings.runs_dir`), newest first."""
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


# --------------------------------------------------------------------------- weights
def encoder_weights_cache_path() -> Path:
    """Where Keras keeps (or would download) the VGG16 ImageNet no-top weights.

    ``$KERAS_HOME/models/`` (default ``~/.keras/models/``) + :data:`IMAGENET_NOTOP_FILE`;
    Keras falls back to ``/tmp/.keras`` when its home is not writable.
    """
    home = Path(os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")))
    candidates = [home / "models" / IMAGENET_NOTOP_FILE]
    if not os.access(home if home.exists() else home.parent, os.W_OK):
        candidates.append(Path("/tmp/.keras/models") / IMAGENET_NOTOP_FILE)
    return next((p for p in candidates if p.is_file()), candidates[0])


def encoder_weights_available() -> bool:
    """Whether the ImageNet VGG16 weights are cached, so training with them needs no download."""
    return encoder_weights_cache_path().is_file()
