"""Jobs: the one launcher of training and evaluation processes, and their control.

The app never trains or evaluates in its own process: :func:`start_training` launches
``python -m pneumo train --config RUN/config.json --run-dir RUN`` and :func:`start_evaluation`
``python -m pneumo evaluate RUN --split S --checkpoint C``, each in a new session with its
output in a log file of the run folder. Everything else reads or writes files of the run
folder (:mod:`pneumo.store.run`, docs/architecture.md "Run folder"), so a page reload, a second
browser tab or a restarted app finds a running job, follows it and can stop it.

- One job at a time, across both kinds: a start is refused while any training or
  evaluation runs (in the run's parent folder or the workspace's runs folder).
- A recorded pid is only trusted while it is still the same process (pid and start time,
  :mod:`pneumo._procs`): a pid reused by another program is never signalled.
- Evaluation reports progress in ``RUN/evaluate_<split>.progress.json`` (written by
  :func:`pneumo.predict.evaluate_run`), and a failure as the command's one-line error; raw
  log lines (TensorFlow's C++ chatter) stay in the log file.

The readers pages use (:func:`read_status`, :func:`list_runs`, ...) are :mod:`pneumo.store.run`'
own, re-exported here. No TensorFlow here: the app imports this module on every page.

Test hooks: with ``PNEUMO_TESTING=1`` set, ``$PNEUMO_TRAIN_COMMAND`` and
``$PNEUMO_EVALUATE_COMMAND`` (split with :func:`shlex.split`) replace the ``python -m pneumo``
prefix of the commands; without it they are ignored.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from pneumo import settings
from pneumo.store.predictions import check_checkpoint, check_split, predictions_path
from pneumo._io import atomic_write_json, load_json, now_iso, read_json
from pneumo._procs import CHILDREN, is_ours, process_start
from pneumo.config import TrainConfig, normalise_train_paths, save_config, to_dict
from pneumo.errors import InputError
from pneumo.store.run import (STATES, RunInfo, active_run, eval_progress_path, holds_run, is_run_dir, list_runs, log_tail,
                   new_run_dir, read_history, read_progress, read_status, request_stop, write_prepared_status)
from pneumo.ingest.split import SPLITS

__all__ = [
    "start_training", "start_evaluation", "evaluation_job", "stop_evaluation", "evaluate_command",
    "running_job", "eval_progress_path",
    # pneumo.store.run' readers, for the pages
    "RunInfo", "read_status", "read_progress", "read_history", "request_stop", "list_runs",
    "active_run", "new_run_dir", "is_run_dir", "log_tail", "STATES",
]

# --------------------------------------------------------------------------- commands
def _test_hook(name: str) -> list[str] | None:
    """``$name`` split into words, only while ``PNEUMO_TESTING=1`` (never in production)."""
    value = os.environ.get(name, "").strip()
    if value and os.environ.get("PNEUMO_TESTING") == "1":
        return shlex.split(value)
    return None


def _train_command() -> list[str]:
    return _test_hook("PNEUMO_TRAIN_COMMAND") or [sys.executable, "-m", "pneumo", "train"]


def evaluate_command(run_dir: str | os.PathLike, split: str, checkpoint: str, *,
                     allow_changed_pack: bool = False) -> list[str]:
    """``python -m pneumo evaluate RUN --split S --checkpoint C [--allow-changed-pack]``."""
    head = _test_hook("PNEUMO_EVALUATE_COMMAND") or [sys.executable, "-m", "pneumo"]
    cmd = [*head, "evaluate", str(run_dir), "--split", split, "--checkpoint", checkpoint]
    return cmd + (["--allow-changed-pack"] if allow_changed_pack else [])


def _launch(cmd: list[str], log_path: Path, header: bool) -> subprocess.Popen:
    with open(log_path, "ab" if header else "wb") as log:
        if header:
            log.write(f"\n# {now_iso()} started: {shlex.join(cmd)}\n".encode())
            log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the app's restart; Ctrl-C in the app's terminal spares it
            close_fds=True,
        )
    CHILDREN[proc.pid] = proc
    return proc


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


def _folders(run_dir: Path) -> list[Path]:
    return list(dict.fromkeys([run_dir.parent, settings.runs_dir().expanduser().absolute()]))


def running_job(runs_dir: str | os.PathLike | None = None) -> str | None:
    """What job runs now in ``runs_dir`` (default the workspace's): "training run X" or
    "evaluation of X (split)", or None."""
    folder = Path(runs_dir) if runs_dir is not None else settings.runs_dir()
    run = active_run(folder)
    if run is not None:
        return f"training run {run.name}"
    with contextlib.suppress(OSError):
        for path in sorted(folder.iterdir()):
            for split in SPLITS:
                if _job_path(path, split).is_file():
                    job = evaluation_job(path, split)
                    if job is not None and job["state"] == "running":
                        return f"evaluation of {path.name} ({split})"
    return None


def _refuse_if_busy(folders: list[Path]) -> None:
    for folder in folders:
        busy = running_job(folder)
        if busy is not None:
            raise InputError(f"another job is running ({busy}); stop it or wait until it ends "
                             f"before starting a new one (one job at a time)")


# --------------------------------------------------------------------------- training
def start_training(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                   allow_changed_pack: bool = False) -> int:
    """Launch a training process for ``config`` in ``run_dir``; return its pid.

    Writes ``RUN/config.json`` and a first ``status.json`` (``running``, with the pid), then
    starts ``python -m pneumo train --config RUN/config.json --run-dir RUN`` (``--resume``,
    ``--allow-changed-pack`` as asked) in a new session, output to ``RUN/train.log``. The
    trainer validates the config itself; a bad one ends the run ``failed`` with the message.
    Raises :class:`InputError` when another job (training or evaluation) is running, or when
    ``run_dir`` already holds a run and ``resume`` is False (or holds none and ``resume`` is True).
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"start_training: config must be a TrainConfig, got {type(config).__name__}")
    run_dir = Path(run_dir).expanduser().absolute()
    config = normalise_train_paths(config)
    with _start_lock(run_dir.parent):
        _refuse_if_busy(_folders(run_dir))
        if not resume:
            why = holds_run(run_dir)
            if why:
                raise InputError(f"run folder {run_dir} already holds a run ({why}); resume it or choose a new folder")
        if resume and not (run_dir / "config.json").is_file():
            raise InputError(f"run folder {run_dir}: no config.json, nothing to resume")
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if read_json(run_dir / "config.json") != to_dict(config):
                raise InputError(f"run folder {run_dir}: config.json differs from the given config; "
                                 f"resume with the run's own config")
        else:
            save_config(config, run_dir / "config.json")
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "STOP").unlink()  # a stale STOP would end the new process at once
        cmd = _train_command() + ["--config", str(run_dir / "config.json"), "--run-dir", str(run_dir)]
        cmd += ["--resume"] if resume else []
        cmd += ["--allow-changed-pack"] if allow_changed_pack else []
        previous = read_status(run_dir) if resume else {}
        proc = _launch(cmd, run_dir / "train.log", header=True)
        # Written before the trainer starts, so readers see "running" at once.
        epoch = previous.get("epoch") if isinstance(previous.get("epoch"), int) else 0
        write_prepared_status(run_dir, proc.pid, config.epochs + config.fine_tune_epochs, epoch)
        return proc.pid


# --------------------------------------------------------------------------- evaluation
def _job_path(run_dir: str | os.PathLike, split: str) -> Path:
    return Path(run_dir) / f"evaluate_{split}.json"


def _log_path(run_dir: str | os.PathLike, split: str) -> Path:
    return Path(run_dir) / f"evaluate_{split}.log"


def start_evaluation(run_dir: str | os.PathLike, split: str, checkpoint: str = "best", *,
                     allow_changed_pack: bool = False) -> int:
    """Launch ``python -m pneumo evaluate`` for a run and split in its own session; return the pid.

    Output goes to ``RUN/evaluate_<split>.log``; ``RUN/evaluate_<split>.json`` records the job
    (pid and its start time) so a reload or a second tab finds it. The same evaluation
    already running is reused; any other running job refuses the start (:class:`InputError`),
    as does a missing ``RUN/<checkpoint>.keras``.
    """
    check_split(split)
    check_checkpoint(checkpoint)
    run_dir = Path(run_dir).expanduser().absolute()
    if not (run_dir / f"{checkpoint}.keras").is_file():
        raise InputError(f"{run_dir}: no {checkpoint}.keras checkpoint to evaluate")
    with _start_lock(run_dir.parent):
        job = evaluation_job(run_dir, split)
        if job and job["state"] == "running":
            return int(job["pid"])
        _refuse_if_busy(_folders(run_dir))
        with contextlib.suppress(FileNotFoundError):
            eval_progress_path(run_dir, split).unlink()  # the last job's: not this one's progress
        log = _log_path(run_dir, split)
        proc = _launch(evaluate_command(run_dir, split, checkpoint, allow_changed_pack=allow_changed_pack),
                       log, header=False)
        atomic_write_json(_job_path(run_dir, split), {
            "pid": proc.pid, "pid_start": process_start(proc.pid), "split": split, "checkpoint": checkpoint,
            "started": now_iso(), "log": log.name,
        })
        return proc.pid


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:?")


def _job_error(run_dir: Path, split: str) -> str:
    """The failed command's own message (its ``error: ...`` line, else the exception line of a
    traceback), never TensorFlow's log lines; names the log for the details."""
    log = _log_path(run_dir, split)
    lines = [line.strip() for line in log_tail(log, lines=200).splitlines() if line.strip()]
    message = next((line[len("error: "):] for line in reversed(lines) if line.startswith("error: ")), None)
    if message is None and any(line.startswith("Traceback") for line in lines):
        message = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)
    message = message or "the evaluation ended without results"
    return f"{message[:500]} (details: {log})"


def _job_started(job: dict) -> float | None:
    from datetime import datetime

    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(job["started"]).timestamp()
    return None


def evaluation_job(run_dir: str | os.PathLike, split: str) -> dict[str, Any] | None:
    """State of the last evaluation launched for this run and split, or None (never raises).

    ``{"state": "running"|"finished"|"failed", "pid", "checkpoint", "started",
    "progress": the progress file's dict or None, "fraction": float|None (predicted share),
    "error": str|None (failed only)}``. Finished: the process is gone and it reported
    ``done`` (or wrote the predictions after it started).
    """
    run_dir = Path(run_dir)
    job, _ = load_json(_job_path(run_dir, split))
    if not isinstance(job, dict) or "pid" not in job:
        return None
    progress = read_json(eval_progress_path(run_dir, split))
    progress = progress if isinstance(progress, dict) else None
    fraction = progress.get("fraction") if progress else None
    fraction = float(fraction) if isinstance(fraction, (int, float)) and 0 <= fraction <= 1 else None
    out = {**job, "progress": progress, "fraction": fraction, "error": None}
    if is_ours(job.get("pid"), start=job.get("pid_start"), marker=run_dir.name):
        return {**out, "state": "running"}
    started = _job_started(job)
    wrote = False
    with contextlib.suppress(OSError, InputError):  # gone or unreadable meanwhile: not written
        wrote = started is not None and predictions_path(run_dir, split).stat().st_mtime >= started - 1
    if (progress or {}).get("stage") == "done" or wrote:
        return {**out, "state": "finished", "fraction": 1.0}
    return {**out, "state": "failed", "error": _job_error(run_dir, split)}


def stop_evaluation(run_dir: str | os.PathLike, split: str) -> bool:
    """Terminate this split's running evaluation (its process group); True when signalled.

    Only the recorded process itself is signalled: a pid now used by another program (or one
    that is no longer a group leader) is left alone.
    """
    run_dir = Path(run_dir)
    job = evaluation_job(run_dir, split)
    if not job or job["state"] != "running":
        return False
    pid = int(job["pid"])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # launched with start_new_session: it leads its group
            os.killpg(pid, signal.SIGTERM)
            return True
    return False
