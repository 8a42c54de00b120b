"""The quick demo's job record: the one owner of ``RUNS/.quickstart.json`` and ``RUNS/.quickstart.log``.

``python -m pneumo quickstart`` makes the demo pack, trains and scores the test split in one
process. It records here, in the workspace's runs folder, who runs it (pid and start time,
host), the stage it is in (``pack``, ``train``, ``evaluate``), the pack's progress, the run
folder once it exists, and how it ended (``finished``, ``stopped``, ``failed`` with the
message). The app launches the same command (:func:`pneumo.train.jobs.start_quick_demo`, output
in ``.quickstart.log``) and writes the first record itself with the child's pid, so a reload,
a second tab or a closed one finds the job and follows it; nothing of it lives in a browser
session. One record per workspace: the latest quick demo's. Dot names keep both files out of
the run list. No TensorFlow.
"""
from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pneumo import settings
from pneumo._io import atomic_write_json, load_json, now_iso, read_json
from pneumo._lock import this_host
from pneumo._procs import is_ours, process_start
from pneumo.store.run import log_tail

__all__ = ["JOB_FILE", "LOG_FILE", "STAGES", "ENDS", "job_path", "log_path", "QuickstartRecord", "read_job"]

JOB_FILE, LOG_FILE = ".quickstart.json", ".quickstart.log"
STAGES = ("pack", "train", "evaluate")  # while it runs, in this order
ENDS = ("finished", "stopped", "failed")
# A record of another host cannot be checked by pid from here: silence this long means it is gone.
REMOTE_SILENCE_S = 3600
# Written into the command line of the process, so a pid without a start time is still recognised.
MARKER = "quickstart"


def _folder(runs_dir: str | os.PathLike | None) -> Path:
    return Path(runs_dir) if runs_dir is not None else settings.runs_dir()


def job_path(runs_dir: str | os.PathLike | None = None) -> Path:
    """``RUNS/.quickstart.json`` (default: the workspace's runs folder)."""
    return _folder(runs_dir) / JOB_FILE


def log_path(runs_dir: str | os.PathLike | None = None) -> Path:
    """``RUNS/.quickstart.log``: the output of a quick demo the app launched."""
    return _folder(runs_dir) / LOG_FILE


class QuickstartRecord:
    """The writer of the record, held by the process that runs the quick demo (or its launcher).

    :meth:`claim` writes a fresh record (stage ``pack``) for ``pid``, keeping the launcher's
    ``started`` and log when the launcher already wrote one for that pid; :meth:`update` and
    :meth:`end` rewrite it whole, atomically. Only the claimed pid's writer writes.
    """

    def __init__(self, runs_dir: str | os.PathLike | None, pid: int) -> None:
        self.path = job_path(runs_dir)
        self.pid = pid
        self.record: dict[str, Any] = {}

    def claim(self, log: str | os.PathLike | None = None) -> "QuickstartRecord":
        previous = read_json(self.path)
        mine = isinstance(previous, dict) and previous.get("pid") == self.pid and previous.get("stage") in STAGES
        now = now_iso()
        self.record = {
            "pid": self.pid, "pid_start": process_start(self.pid), "host": this_host(), "stage": "pack",
            "started": previous["started"] if mine else now, "updated": now, "ended": None,
            "pack": None, "done": 0, "total": None, "run": None, "error": None,
            "log": previous.get("log") if mine else (str(log) if log is not None else None),
        }
        atomic_write_json(self.path, self.record)
        return self

    def update(self, **changes: Any) -> None:
        """Merge ``changes`` (``stage``, ``done``, ``total``, ``pack``, ``run``...) and write."""
        self.record.update({k: str(v) if isinstance(v, Path) else v for k, v in changes.items()}, updated=now_iso())
        atomic_write_json(self.path, self.record)

    def end(self, state: str, error: str | None = None) -> None:
        """Record the outcome (one of :data:`ENDS`); ``error`` says why a run failed or stopped."""
        if state not in ENDS:
            raise ValueError(f"state {state!r} is not one of {ENDS}")
        self.update(stage=state, error=error, ended=now_iso())

    @property
    def ended(self) -> bool:
        return self.record.get("stage") in ENDS


def _last_error(log: str | None) -> str | None:
    """The command's own ``error: ...`` line in its log (TensorFlow's chatter left out)."""
    if not log:
        return None
    lines = [line.strip() for line in log_tail(log, lines=200).splitlines()]
    return next((line[len("error: "):] for line in reversed(lines) if line.startswith("error: ")), None)


def _gone(record: dict) -> str | None:
    """Why a record of a running stage is not running any more, or None while it is."""
    host = record.get("host")
    if isinstance(host, str) and host and host != this_host():
        updated = record.get("updated")
        try:
            silent = time.time() - datetime.fromisoformat(updated).timestamp()
        except (TypeError, ValueError):
            silent = float("inf")
        return None if silent < REMOTE_SILENCE_S else f"no news from host {host} for over an hour"
    if is_ours(record.get("pid"), start=record.get("pid_start"), marker=MARKER):
        return None
    log = record.get("log")
    return _last_error(log) or "its process ended unexpectedly" + (f" (see {log})" if log else "")


def read_job(runs_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The latest quick demo of ``runs_dir`` (default the workspace's), or None; never raises.

    The record (``pid``, ``stage``, ``started``, ``updated``, ``ended``, ``pack``, ``done``,
    ``total``, ``run``, ``error``, ``log``) plus ``state``: ``running`` while the stage is one of
    :data:`STAGES` and its process lives, else the recorded end, or ``failed`` with the reason
    when the process is gone without recording one (killed). ``run`` and ``log`` are ``Path`` or None.
    """
    path = job_path(runs_dir)
    record, _ = load_json(path)
    if not isinstance(record, dict) or record.get("stage") not in (*STAGES, *ENDS):
        return None
    state = "running" if record["stage"] in STAGES else record["stage"]
    if state == "running":
        why = _gone(record)
        if why is not None:
            again = read_json(path)  # it may have recorded its end just now
            if isinstance(again, dict) and again.get("stage") in ENDS:
                record, state = again, again["stage"]
            else:
                record, state = {**record, "error": why}, "failed"
    out = {**record, "state": state}
    for key in ("run", "log"):
        out[key] = Path(record[key]) if isinstance(record.get(key), str) and record[key] else None
    return out
