"""The run folder: the one owner of its files, for writing and for reading, and its lock.

docs/architecture.md ("Run folder") is the contract. :class:`RunFolder` names every file of a
run folder; no other module spells one. :class:`RunWriter` is what the trainer writes with
(status, progress, history, checkpoints, backup); everything else here reads, for
:mod:`pneumo.train.jobs`, the CLI and the app. No TensorFlow: the app imports this on every page.
The runs folder as a whole (listing, the running one, new folders) is :mod:`pneumo.store.run_list`;
an evaluation's progress file is written by :mod:`pneumo.store.eval_progress`.

One writer at a time: whoever writes a run folder (the trainer, ``pneumo.train.jobs`` while it
prepares a start, ``quickstart``) holds :func:`writer_lock` (``fcntl.flock`` on ``RUN/.lock``,
with a record of the holder: pid, start time, host, since when; :mod:`pneumo._lock`). A second
writer is refused at once with an :class:`InputError` naming the holder; the kernel drops the
lock when its holder dies. A launcher hands the lock to the trainer it started through
:data:`HANDOVER_ENV`: the trainer waits for that launcher to let go, never for anyone else.

Readers never raise on a damaged folder: a ``status.json`` that is not UTF-8 or JSON, a folder
named ``status.json``, a non-UTF-8 ``history.csv`` or a ``config.json`` with ``"epochs":
"ten"`` make the run read as ``damaged`` with the reason (:attr:`RunInfo.damaged`), never
break :func:`list_runs`, :func:`active_run` or a page.

Runs on other machines (a runs folder shared between hosts): ``status.json`` records the host,
and a ``running`` run of another host is not judged by pids of this one (:func:`read_status`).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumo._io import atomic_write_json, atomic_write_text, load_json, now_iso, read_json, replace_durably
from pneumo._lock import HolderLock, this_host
from pneumo._procs import is_ours, process_start
from pneumo.errors import InputError
from pneumo.store.run_history import HISTORY_COLUMNS, STAGES, best_row, format_row, history_text, sound_rows

__all__ = [
    "RunFolder", "CHECKPOINTS", "checkpoint_file", "CONFIG", "LOG", "STOP", "EXCLUSION_RECORD", "PACK_RECORD",
    "HISTORY_COLUMNS", "STAGES", "STATES", "RunWriter", "read_status", "remote_host", "read_progress",
    "read_history", "load_history", "best_row", "summary", "read_backup", "holds_run", "request_stop",
    "stop_requested", "clear_stop", "log_tail", "write_prepared_status", "fail_prepared_status",
    "writer_lock", "HANDOVER_ENV", "handover_pid", "write_pack_record", "read_pack_record",
    "write_exclusion_record", "read_exclusion_record", "this_host",
]

# "new": prepared, never started; "damaged": status.json unreadable (RunInfo.damaged says why).
STATES = ("new", "running", "finished", "stopped", "failed", "damaged")
CHECKPOINTS = ("best", "last")  # best.keras: lowest val_loss; last.keras: the last epoch (and a stop)

# =========================================================================== names
CONFIG, STATUS, PROGRESS, HISTORY, STOP, LOG = (
    "config.json", "status.json", "progress.json", "history.csv", "STOP", "train.log")
TENSORBOARD, BACKUP_STATE, LOCK = "logs", "backup/state.json", ".lock"
PACK_RECORD, EXCLUSION_RECORD = "pack.json", "excluded.json"
# Set by pneumo.train.jobs in the trainer it launches: the launcher's pid, which holds the lock
# until it has written the prepared status; the trainer waits for it (and only for it).
HANDOVER_ENV = "PNEUMO_RUN_HANDOVER"
# A "running" run of another host whose status and progress have not changed for this long
# reads as failed: its process cannot be looked up from here, so silence is the only sign.
REMOTE_SILENCE_S = 3600


def checkpoint_file(name: str) -> str:
    """The file name of checkpoint ``name`` (one of :data:`CHECKPOINTS`): ``best.keras``;
    :class:`InputError` naming the choices for any other name."""
    if name not in CHECKPOINTS:
        raise InputError(f"checkpoint {name!r} is unknown (choose one of: {', '.join(CHECKPOINTS)})")
    return f"{name}.keras"


class RunFolder:
    """The paths of one run folder's files, by what they hold (docs/architecture.md, "Run folder")."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG, doc="``config.json``: the run's TrainConfig")
    status = property(lambda self: self.path / STATUS, doc="``status.json``: state, pid, host, times")
    progress = property(lambda self: self.path / PROGRESS, doc="``progress.json``: the live batch counter")
    history = property(lambda self: self.path / HISTORY, doc="``history.csv``: one row per epoch")
    stop = property(lambda self: self.path / STOP, doc="``STOP``: asks the trainer to stop")
    log = property(lambda self: self.path / LOG, doc="``train.log``: the launched trainer's output")
    tensorboard = property(lambda self: self.path / TENSORBOARD, doc="``logs/``: TensorBoard's event files")
    backup_state = property(lambda self: self.path / BACKUP_STATE, doc="``backup/state.json``: what resumes")
    pack_record = property(lambda self: self.path / PACK_RECORD, doc="``pack.json``: the pack's fingerprint")
    exclusion_record = property(lambda self: self.path / EXCLUSION_RECORD, doc="``excluded.json``: ids left out")
    lock = property(lambda self: self.path / LOCK, doc="``.lock``: the single-writer lock and its holder")

    def checkpoint(self, name: str) -> Path:
        """``RUN/<name>.keras`` (:func:`checkpoint_file`)."""
        return self.path / checkpoint_file(name)

    def checkpoints(self) -> list[str]:
        """The checkpoints present, in :data:`CHECKPOINTS` order."""
        return [c for c in CHECKPOINTS if self.checkpoint(c).is_file()]

    def evaluation_job(self, split: str) -> Path:
        """``RUN/evaluate_<split>.json``: the evaluation job launched for ``split`` (pid, start)."""
        return self.path / f"evaluate_{split}.json"

    def evaluation_log(self, split: str) -> Path:
        """``RUN/evaluate_<split>.log``: that job's output."""
        return self.path / f"evaluate_{split}.log"

    def evaluation_progress(self, split: str) -> Path:
        """``RUN/evaluate_<split>.progress.json``: that evaluation's live progress (:class:`EvalProgress`)."""
        return self.path / f"evaluate_{split}.progress.json"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"


_BASE_STATUS = {"state": "new", "pid": None, "host": None, "started": None, "updated": None, "ended": None,
                "error": None, "epoch": 0, "epochs": None}


# =========================================================================== the lock
def writer_lock(run_dir: str | os.PathLike, what: str = "training", *, handover_from: int | None = None) -> HolderLock:
    """The (not yet taken) single-writer lock of ``run_dir``: ``with writer_lock(run):``.

    ``what`` the holder does ("training"); ``handover_from``: the launcher pid to wait for
    (:func:`handover_pid`). Taking it creates the folder when missing (the last release removes
    it again if it is left empty); a second writer gets an :class:`InputError` naming the
    holder: "run folder X is being written by pid P on host H since T". Re-entrant within one
    process. :class:`InputError` when ``run_dir`` is a file.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"run folder {run_dir}: exists and is not a folder")
    return HolderLock(RunFolder(run_dir).lock, f"run folder {run_dir}", what, handover_from=handover_from)


def handover_pid() -> int | None:
    """The launcher pid :mod:`pneumo.train.jobs` passed this process in :data:`HANDOVER_ENV`, or None."""
    value = os.environ.get(HANDOVER_ENV, "")
    return int(value) if value.strip().isdigit() else None


# =========================================================================== records
def write_pack_record(run_dir: str | os.PathLike, fingerprint: dict) -> None:
    """Write ``RUN/pack.json``: ``fingerprint`` (``pneumo.fingerprint``) and when it was recorded."""
    atomic_write_json(RunFolder(run_dir).pack_record, {**fingerprint, "recorded": now_iso()})


def read_pack_record(run_dir: str | os.PathLike) -> tuple[Any, str | None]:
    """``RUN/pack.json`` as :func:`pneumo._io.load_json` gives it: ``(value, None)`` or
    ``(None, "missing" | why it is damaged)``."""
    return load_json(RunFolder(run_dir).pack_record)


def write_exclusion_record(run_dir: str | os.PathLike, record: dict) -> None:
    """Write ``RUN/excluded.json`` (``pneumo.exclude.PackExclusion.record()``)."""
    atomic_write_json(RunFolder(run_dir).exclusion_record, record)


def read_exclusion_record(run_dir: str | os.PathLike) -> tuple[Any, str | None]:
    """``RUN/excluded.json`` as :func:`pneumo._io.load_json` gives it."""
    return load_json(RunFolder(run_dir).exclusion_record)


# =========================================================================== writing
class RunWriter:
    """Atomic writers for one run folder (what the trainer, and only it, writes).

    ``status`` is kept in memory and written whole on each :meth:`set_status`; a resumed run
    keeps its first ``started`` and records ``resumed``.
    """

    def __init__(self, root: Path, started: str, epochs: int, resumed: bool) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files = RunFolder(self.root)
        previous = read_json(self.files.status) if resumed else None
        first = previous.get("started") if isinstance(previous, dict) else None
        self.status: dict[str, Any] = {
            "state": "running", "pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": this_host(),
            "started": first or started, "updated": started, "ended": None, "error": None,
            "epoch": 0, "epochs": epochs,
        }
        if resumed:
            self.status["resumed"] = started

    def set_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=now_iso())
        atomic_write_json(self.files.status, self.status)

    def write_progress(self, info: dict) -> None:
        atomic_write_json(self.files.progress, info)

    def _raw_history(self) -> list[dict]:
        # the sound rows only: a damaged line is not carried into the next write
        return [raw for raw, _ in sound_rows(self.files.history)[0]]

    def _write_history(self, rows: list[dict]) -> None:
        atomic_write_text(self.files.history, history_text(rows))

    def truncate_history(self, epochs_done: int) -> None:
        """Keep rows of epochs 1..epochs_done (a killed run may have logged one more)."""
        rows = [r for r in self._raw_history()
                if str(r.get("epoch") or "").isdigit() and int(r["epoch"]) <= epochs_done]
        self._write_history(rows)

    def append_history(self, row: dict) -> None:
        self._write_history(self._raw_history() + [format_row(row)])

    def save_checkpoint(self, model: Any, checkpoint: str) -> None:
        """``model.save`` to a temporary file, then rename it over ``RUN/<checkpoint>.keras`` (durably)."""
        target = self.files.checkpoint(checkpoint)
        tmp = self.root / f".{target.name}.{os.getpid()}.tmp.keras"  # .keras suffix: Keras insists
        try:
            model.save(tmp)
            replace_durably(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def save_backup(self, epochs_done: int, stage: str, best_val_loss: float) -> None:
        """Record that ``last.keras`` (weights and optimizer state) resumes after ``epochs_done``.

        Call right after saving ``last.keras``: a kill in between leaves the state one epoch
        behind the weights, and resuming then trains that epoch once more.
        """
        atomic_write_json(self.files.backup_state, {
            "epoch": epochs_done, "stage": stage, "weights": checkpoint_file("last"),
            "best_val_loss": best_val_loss if math.isfinite(best_val_loss) else None, "saved": now_iso(),
        })


def read_backup(run_dir: Path, total_epochs: int) -> dict | None:
    """``backup/state.json`` checked against its weights file and the plan; None when absent.

    Raises :class:`InputError` when it is damaged or beyond ``total_epochs``.
    """
    path = RunFolder(run_dir).backup_state
    state, problem = load_json(path)
    if problem == "missing":
        return None
    ok = (isinstance(state, dict) and isinstance(state.get("epoch"), int) and state.get("stage") in STAGES
          and isinstance(state.get("weights"), str))
    if not ok or not (run_dir / state["weights"]).is_file():
        raise InputError(f"{path.parent}: the resume state is damaged ({path.name} or its weights "
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
    for name in (HISTORY, *map(checkpoint_file, reversed(CHECKPOINTS)), BACKUP_STATE):
        if (run_dir / name).exists():
            return f"it has {name}"
    status, problem = load_json(run_dir / STATUS)
    if problem == "missing":
        return None
    if not isinstance(status, dict):
        return f"its {STATUS} is damaged ({problem or 'not an object'})"
    if own_pid is None or status.get("pid") != own_pid:
        return f"its {STATUS} says {status.get('state')!r}"
    return None


def write_prepared_status(run_dir: Path, pid: int, epochs: int, epoch: int = 0) -> None:
    """The first ``running`` status, written by the launcher with the child's pid so readers
    see the run at once; the trainer recognises its pid and takes the file over. Write it
    holding :func:`writer_lock`: the trainer only writes once the launcher let go."""
    now = now_iso()
    atomic_write_json(run_dir / STATUS, {
        "state": "running", "pid": pid, "pid_start": process_start(pid), "host": this_host(),
        "started": now, "updated": now,
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
    ``failed`` with the error "process ended unexpectedly (see RUN/train.log)". A run of
    another host (``host`` differs from :func:`this_host`) cannot be looked up here: it stays
    ``running`` (:func:`remote_host` names the host) unless neither its status nor its progress
    changed for :data:`REMOTE_SILENCE_S`, when it reads as ``failed`` ("no news from host H").
    A folder without ``status.json`` reads as ``{"state": "new", ...}``; an unreadable one as
    ``{"state": "damaged", "error": reason}``. Keys: state, pid, host, started, updated,
    ended, error, epoch, epochs (and pid_start, resumed when written; host is None in files
    of older versions, which are judged as of this host).
    """
    run_dir = Path(run_dir)
    out, _ = _status(run_dir)
    if out["state"] == "running" and remote_host(out):
        return _judge_remote(run_dir, out)
    if out["state"] == "running" and not is_ours(out.get("pid"), start=out.get("pid_start"), marker=run_dir.name):
        # Re-read: the process may have finished and written its final state just now.
        again, _ = _status(run_dir)
        if again["state"] != "running":
            return again
        log = run_dir / LOG
        out["state"] = "failed"
        out["error"] = "process ended unexpectedly" + (f" (see {log})" if log.exists() else "")
    return out


def remote_host(status: dict) -> str | None:
    """The host of a ``running`` status written on another machine, else None."""
    host = status.get("host")
    running = status.get("state") == "running"
    return host if running and isinstance(host, str) and host and host != this_host() else None


def _when(stamp: Any) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        moment = datetime.fromisoformat(stamp)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    return None


def _judge_remote(run_dir: Path, out: dict) -> dict:
    """``out`` (running on another host) as it reads from here: running, or failed after silence."""
    progress = read_progress(run_dir) or {}
    stamps = [t for t in (_when(out.get("updated")), _when(progress.get("updated"))) if t is not None]
    last = max(stamps, default=None)
    if last is None or time.time() - last > REMOTE_SILENCE_S:
        seen = datetime.fromtimestamp(last, timezone.utc).isoformat(timespec="seconds") if last else "never"
        out["state"] = "failed"
        out["error"] = (f"no news from host {out['host']} for over {REMOTE_SILENCE_S // 60} minutes (last update "
                        f"{seen}): the run was ended there, or that host is down")
    return out


def read_progress(run_dir: str | os.PathLike) -> dict | None:
    """The live ``progress.json`` (stage, epoch, epochs, step, steps, loss, images_per_s,
    eta_s, updated), or None before the first batch (or when damaged)."""
    data = read_json(Path(run_dir) / PROGRESS)
    return data if isinstance(data, dict) else None


def load_history(run_dir: str | os.PathLike) -> tuple[list[dict], str | None]:
    """:func:`read_history` and what is damaged in ``history.csv`` (None when sound): the
    file (not UTF-8, not CSV, unreadable) or the lines left out, by line number."""
    sound, problem = sound_rows(RunFolder(run_dir).history)
    return [parsed for _, parsed in sound], problem


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``history.csv``: ``epoch`` int (1, 2, ... in order), ``stage`` str, the rest
    floats (None when empty).

    An absent or damaged file gives ``[]``; damaged lines are left out (:func:`load_history`
    says which).
    """
    return load_history(run_dir)[0]


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
