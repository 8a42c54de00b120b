"""The run folder: the one owner of its files, for writing and for reading.

docs/architecture.md ("Run folder") is the contract. :class:`RunWriter` is what the trainer
writes with (status, progress, history, checkpoints, backup); everything else here reads,
for :mod:`pneumo.train.jobs`, the CLI and the app. No TensorFlow: the app imports this on every page.

Readers never raise on a damaged folder: a ``status.json`` that is not UTF-8 or JSON, a folder
named ``status.json``, a non-UTF-8 ``history.csv`` or a ``config.json`` with ``"epochs":
"ten"`` make the run read as ``damaged`` with the reason (:attr:`RunInfo.damaged`), never
break :func:`list_runs`, :func:`active_run` or a page.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pneumo import settings
from pneumo._io import atomic_write_json, atomic_write_text, load_json, now_iso, read_json, replace_durably
from pneumo._procs import is_ours, process_start
from pneumo.errors import InputError

__all__ = [
    "HISTORY_COLUMNS", "STAGES", "STATES", "RunWriter", "RunInfo", "read_status", "read_progress",
    "read_history", "load_history", "best_row", "summary", "read_backup", "holds_run", "request_stop",
    "stop_requested", "clear_stop", "log_tail", "write_prepared_status", "fail_prepared_status",
    "list_runs", "active_run", "is_run_dir", "new_run_dir", "eval_progress_path", "EvalProgress",
]

HISTORY_COLUMNS = ("epoch", "stage", "loss", "dice", "iou", "val_loss", "val_dice", "val_iou", "lr", "seconds")
STAGES = ("train", "fine-tune")
# "new": prepared, never started; "damaged": status.json unreadable (RunInfo.damaged says why).
STATES = ("new", "running", "finished", "stopped", "failed", "damaged")

STATUS, PROGRESS, HISTORY, CONFIG, STOP, LOG = (
    "status.json", "progress.json", "history.csv", "config.json", "STOP", "train.log")
BACKUP_STATE = "backup/state.json"

_BASE_STATUS = {"state": "new", "pid": None, "started": None, "updated": None, "ended": None,
                "error": None, "epoch": 0, "epochs": None}


# =========================================================================== writing
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.8g}"
    return "" if v is None else str(v)


class RunWriter:
    """Atomic writers for one run folder (what the trainer, and only it, writes).

    ``status`` is kept in memory and written whole on each :meth:`set_status`; a resumed run
    keeps its first ``started`` and records ``resumed``.
    """

    def __init__(self, root: Path, started: str, epochs: int, resumed: bool) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        previous = read_json(self.root / STATUS) if resumed else None
        first = previous.get("started") if isinstance(previous, dict) else None
        self.status: dict[str, Any] = {
            "state": "running", "pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "started": first or started, "updated": started, "ended": None, "error": None,
            "epoch": 0, "epochs": epochs,
        }
        if resumed:
            self.status["resumed"] = started

    def set_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=now_iso())
        atomic_write_json(self.root / STATUS, self.status)

    def write_progress(self, info: dict) -> None:
        atomic_write_json(self.root / PROGRESS, info)

    def _raw_history(self) -> list[dict]:
        rows, _ = _load_history_rows(self.root)
        return rows

    def _write_history(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.root / HISTORY, buf.getvalue())

    def truncate_history(self, epochs_done: int) -> None:
        """Keep rows of epochs 1..epochs_done (a killed run may have logged one more)."""
        rows = [r for r in self._raw_history()
                if str(r.get("epoch") or "").isdigit() and int(r["epoch"]) <= epochs_done]
        self._write_history(rows)

    def append_history(self, row: dict) -> None:
        self._write_history(self._raw_history() + [{k: _fmt(v) for k, v in row.items()}])

    def save_model(self, model: Any, name: str) -> None:
        """``model.save`` to a temporary file, then rename it over ``name`` (durably)."""
        tmp = self.root / f".{name}.{os.getpid()}.tmp.keras"  # .keras suffix: Keras insists
        try:
            model.save(tmp)
            replace_durably(tmp, self.root / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def save_backup(self, epochs_done: int, stage: str, best_val_loss: float) -> None:
        """Record that ``last.keras`` (weights and optimizer state) resumes after ``epochs_done``.

        Call right after saving ``last.keras``: a kill in between leaves the state one epoch
        behind the weights, and resuming then trains that epoch once more.
        """
        atomic_write_json(self.root / BACKUP_STATE, {
            "epoch": epochs_done, "stage": stage, "weights": "last.keras",
            "best_val_loss": best_val_loss if math.isfinite(best_val_loss) else None, "saved": now_iso(),
        })


def read_backup(run_dir: Path, total_epochs: int) -> dict | None:
    """``backup/state.json`` checked against its weights file and the plan; None when absent.

    Raises :class:`InputError` when it is damaged or beyond ``total_epochs``.
    """
    state, problem = load_json(run_dir / BACKUP_STATE)
    if problem == "missing":
        return None
    ok = (isinstance(state, dict) and isinstance(state.get("epoch"), int) and state.get("stage") in STAGES
          and isinstance(state.get("weights"), str))
    if not ok or not (run_dir / state["weights"]).is_file():
        raise InputError(f"{run_dir / 'backup'}: the resume state is damaged (state.json or its weights "
                         f"file); start a new run instead")
    if state["epoch"] > total_epochs:
        raise InputError(f"{run_dir}: the backup is at epoch {state['epoch']}, beyond the config's "
                         f"{total_epochs} epochs")
    return state


def holds_run(run_dir: str | os.PathLike, own_pid: int | None = None) -> str | None:
    """Why ``run_dir`` already holds a run, or None: the one "is this folder taken" rule.

    Taken: a history, a checkpoint or a backup, or a ``status.json`` (readable or not) other
    than the ``running`` one :mod:`pneumo.train.jobs` prepared for ``own_pid``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    for name in (HISTORY, "last.keras", "best.keras", BACKUP_STATE):
        if (run_dir / name).exists():
            return f"it has {name}"
    status, problem = load_json(run_dir / STATUS)
    if problem == "missing":
        return None
    if not isinstance(status, dict):
        return f"its status.json is damaged ({problem or 'not an object'})"
    if own_pid is None or status.get("pid") != own_pid:
        return f"its status.json says {status.get('state')!r}"
    return None


def write_prepared_status(run_dir: Path, pid: int, epochs: int, epoch: int = 0) -> None:
    """The first ``running`` status, written by the launcher with the child's pid so readers
    see the run at once; the trainer recognises its pid and takes the file over."""
    now = now_iso()
    atomic_write_json(run_dir / STATUS, {
        "state": "running", "pid": pid, "pid_start": process_start(pid), "started": now, "updated": now,
        "ended": None, "error": None, "epoch": epoch, "epochs": epochs,
    })


def fail_prepared_status(run_dir: Path, message: str) -> None:
    """Mark the status.json prepared for this very process as failed (bad input found early)."""
    status = read_json(run_dir / STATUS)
    if isinstance(status, dict) and status.get("pid") == os.getpid() and status.get("state") == "running":
        status.update(state="failed", error=message, ended=now_iso(), updated=now_iso())
        atomic_write_json(run_dir / STATUS, status)


# =========================================================================== stop, log
def request_stop(run_dir: str | os.PathLike) -> None:
    """Ask the run's trainer to stop: it ends at the next batch, saves ``last.keras``, state ``stopped``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir}: not found")
    atomic_write_text(run_dir / STOP, f"stop requested {now_iso()}\n")


def stop_requested(run_dir: Path) -> bool:
    """Whether a ``STOP`` file waits in ``run_dir``."""
    return (run_dir / STOP).exists()


def clear_stop(run_dir: Path) -> None:
    """Remove a ``STOP`` file (consumed by a stop, or stale before a start)."""
    with contextlib.suppress(FileNotFoundError):
        (run_dir / STOP).unlink()


def log_tail(path: str | os.PathLike, lines: int = 30, max_bytes: int = 65536) -> str:
    """The last ``lines`` lines of a log file (read from its end; "" when missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


# =========================================================================== reading
def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a run (a ``config.json`` or ``status.json`` entry)."""
    path = Path(path)
    return path.is_dir() and ((path / CONFIG).exists() or (path / STATUS).exists())


def _status(run_dir: Path) -> tuple[dict, str | None]:
    status, problem = load_json(run_dir / STATUS)
    if problem is not None and problem != "missing" and problem.startswith("not valid JSON"):
        # Atomic writes make a torn file impossible; still, re-read once before calling it damaged.
        time.sleep(0.05)
        status, problem = load_json(run_dir / STATUS)
    if problem == "missing":
        return dict(_BASE_STATUS), None
    if not isinstance(status, dict):
        reason = f"status.json: {problem or 'not a JSON object'}"
        return {**_BASE_STATUS, "state": "damaged", "error": reason}, reason
    return {**_BASE_STATUS, **status}, None


def read_status(run_dir: str | os.PathLike) -> dict:
    """The run's ``status.json`` as a dict, checked against reality; never raises.

    A ``running`` state whose process is gone (or is another program now) reads as
    ``failed`` with the error "process ended unexpectedly (see RUN/train.log)". A folder
    without ``status.json`` reads as ``{"state": "new", ...}``; an unreadable one as
    ``{"state": "damaged", "error": reason}``. Keys: state, pid, started, updated, ended,
    error, epoch, epochs (and pid_start, resumed when written).
    """
    run_dir = Path(run_dir)
    out, _ = _status(run_dir)
    if out["state"] == "running" and not is_ours(out.get("pid"), start=out.get("pid_start"), marker=run_dir.name):
        # Re-read: the process may have finished and written its final state just now.
        again, _ = _status(run_dir)
        if again["state"] != "running":
            return again
        log = run_dir / LOG
        out["state"] = "failed"
        out["error"] = "process ended unexpectedly" + (f" (see {log})" if log.exists() else "")
    return out


def read_progress(run_dir: str | os.PathLike) -> dict | None:
    """The live ``progress.json`` (stage, epoch, epochs, step, steps, loss, images_per_s,
    eta_s, updated), or None before the first batch (or when damaged)."""
    data = read_json(Path(run_dir) / PROGRESS)
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
    if key == "epoch":
        return int(number) if math.isfinite(number) else None
    return number


def _load_history_rows(run_dir: Path) -> tuple[list[dict], str | None]:
    try:
        text = (run_dir / HISTORY).read_bytes().decode("utf-8")
    except FileNotFoundError:
        return [], None
    except UnicodeDecodeError:
        return [], "history.csv: not valid UTF-8 text"
    except OSError as e:
        return [], f"history.csv: unreadable ({e.strerror or type(e).__name__})"
    try:
        return list(csv.DictReader(text.splitlines())), None
    except csv.Error as e:
        return [], f"history.csv: not valid CSV ({e})"


def load_history(run_dir: str | os.PathLike) -> tuple[list[dict], str | None]:
    """:func:`read_history` and the reason it gave nothing when ``history.csv`` is damaged."""
    raw, problem = _load_history_rows(Path(run_dir))
    rows = []
    for row in raw:
        parsed = {k: _parse_cell(k, v) for k, v in row.items() if k is not None}
        if isinstance(parsed.get("epoch"), int):
            rows.append(parsed)
    return rows, problem


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``history.csv``: ``epoch`` int, ``stage`` str, the rest floats (None when empty).

    An absent or damaged file gives ``[]``.
    """
    return load_history(run_dir)[0]


def best_row(rows: list[dict]) -> dict | None:
    """The history row with the lowest finite ``val_loss`` (the epoch ``best.keras`` holds)."""
    scored = [r for r in rows if isinstance(r.get("val_loss"), float) and math.isfinite(r["val_loss"])]
    return min(scored, key=lambda r: r["val_loss"]) if scored else None


def summary(state: str, run_dir: Path, total: int, seconds: float) -> dict:
    """What :func:`pneumo.train.loop.train` returns, from the folder's history."""
    rows = read_history(run_dir)
    best = best_row(rows)
    return {
        "state": state, "run_dir": str(run_dir), "epochs_done": len(rows), "epochs": total,
        "best_epoch": best["epoch"] if best else None,
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_dice": best.get("val_dice") if best else None,
        "last": rows[-1] if rows else None, "seconds": round(seconds, 2),
    }


# =========================================================================== listing
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
    config, problem = load_json(path / CONFIG)
    if problem not in (None, "missing"):
        problems.append(f"config.json: {problem}")
    if not isinstance(config, dict):
        if problem is None:
            problems.append("config.json: not a JSON object")
        config = {}
    history, problem = load_history(path)
    if problem:
        problems.append(problem)
    best = best_row(history)
    epochs = _whole(status.get("epochs"))
    if epochs is None and config:
        first, second = _whole(config.get("epochs")), _whole(config.get("fine_tune_epochs", 0))
        if first is None or second is None:
            problems.append(f"config.json: epochs {config.get('epochs')!r} / fine_tune_epochs "
                            f"{config.get('fine_tune_epochs', 0)!r} are not whole numbers")
        else:
            epochs = first + second
    text = lambda v: v if isinstance(v, str) else None  # noqa: E731
    return RunInfo(
        path=path, name=path.name, state=str(status["state"]), config=config,
        started=text(status.get("started")), ended=text(status.get("ended")),
        error=text(status.get("error")), epochs_done=len(history), epochs=epochs,
        best_val_loss=best["val_loss"] if best else None,
        best_val_dice=best.get("val_dice") if best else None,
        best_epoch=best["epoch"] if best else None,
        has_best=(path / "best.keras").is_file(),
        damaged="; ".join(problems) or None,
    )


def _sort_key(path: Path) -> tuple[str, float]:
    status = read_json(path / STATUS)
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


# =========================================================================== evaluation progress
def eval_progress_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN/evaluate_<split>.progress.json``, an evaluation's live progress (:class:`EvalProgress`)."""
    return Path(run_dir) / f"evaluate_{split}.progress.json"


class EvalProgress:
    """Progress of an evaluation, written like training's ``progress.json`` so a page shows a bar.

    Writes ``{"stage": "predict"|"score"|"done", "split", "done", "total", "fraction",
    "images_per_s", "eta_s", "updated"}`` to :func:`eval_progress_path` (at most every
    ``interval`` seconds while predicting) and passes ``(done, total)`` on to ``callback``.
    A run folder that cannot take the file never fails the evaluation.
    """

    def __init__(self, run_dir: str | os.PathLike, split: str, callback: Any = None, interval: float = 0.5) -> None:
        self.path = eval_progress_path(run_dir, split)
        self.split, self.callback, self.interval = split, callback, interval
        self.t0 = time.monotonic()
        self._last = 0.0
        self.done, self.total = 0, 0

    def _write(self, stage: str) -> None:
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        info = {"stage": stage, "split": self.split, "done": self.done, "total": self.total,
                "fraction": (self.done / self.total) if self.total else (1.0 if stage == "done" else 0.0),
                "images_per_s": rate, "eta_s": (self.total - self.done) / rate if rate > 0 else None,
                "updated": now_iso()}
        with contextlib.suppress(OSError):
            atomic_write_json(self.path, info)

    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` images predicted."""
        self.done, self.total = int(done), int(total)
        now = time.monotonic()
        if now - self._last >= self.interval or done >= total:
            self._last = now
            self._write("predict")
        if self.callback is not None:
            self.callback(done, total)

    def stage(self, name: str) -> None:
        """Enter ``"score"`` (tuning and scoring) or ``"done"``."""
        if name == "done":
            self.done = self.total
        self._write(name)
