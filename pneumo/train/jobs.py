"""Jobs: the one launcher of training and evaluation processes, and their control.

The app never trains or evaluates in its own process: :func:`start_training` launches
``python -m pneumo train --config RUN/config.json --run-dir RUN`` and :func:`start_evaluation`
``python -m pneumo evaluate RUN --split S --checkpoint C``, each in a new session with its
output in a log file of the run folder. Everything else reads or writes files of the run
folder (:mod:`pneumo.store.run`, docs/architecture.md "Run folder"), so a page reload, a second
browser tab or a restarted app finds a running job, follows it and can stop it.

- One job at a time, across both kinds: a start is refused while any training or
  evaluation runs (in the run's parent folder or the workspace's runs folder). ``quickstart``
  trains and evaluates in its own process under the same rule (:func:`own_training`,
  :func:`own_evaluation`).
- One writer per run folder (:func:`pneumo.store.run.writer_lock`): the launcher holds the
  folder's lock while it prepares (config, first status), then hands it to the trainer it
  started, which waits for exactly that launcher. So the trainer's own status is never
  overwritten by the launcher's, and a CLI trainer in the folder refuses the start.
- A recorded pid is only trusted while it is still the same process (pid and start time,
  :mod:`pneumo._procs`): a pid reused by another program is never signalled.
- The quick demo (:func:`start_quick_demo`) is ``python -m pneumo quickstart`` launched the
  same way: pack, training and test scores in one process whose stages are recorded in the
  runs folder (:mod:`pneumo.store.quickstart_job`), so it survives a closed tab and counts as
  the workspace's job from its first step (making the pack) to its last.
- Evaluation reports progress in ``RUN/evaluate_<split>.progress.json`` (written by
  :func:`pneumo.predict.evaluate_run`), and a failure as the command's one-line error; raw
  log lines (TensorFlow's C++ chatter) stay in the log file.

Pages read runs through :mod:`pneumo.store.run` and :mod:`pneumo.store.run_list` themselves.
No TensorFlow here: the app imports this module on every page.

Test hooks: with ``PNEUMO_TESTING=1`` set, ``$PNEUMO_TRAIN_COMMAND``,
``$PNEUMO_EVALUATE_COMMAND`` and ``$PNEUMO_QUICKSTART_COMMAND`` (split with :func:`shlex.split`)
replace the ``python -m pneumo`` prefix of the commands; without it they are ignored.
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
from pneumo._io import atomic_write_json, load_json, now_iso, read_json
from pneumo._procs import CHILDREN, is_ours, process_start
from pneumo.config import SPLITS, TrainConfig, normalise_train_paths, to_dict
from pneumo.store.config_file import save_config
from pneumo.errors import InputError
from pneumo.store.predictions import check_checkpoint, check_split, predictions_path
from pneumo.store.run import (HANDOVER_ENV, RunFolder, checkpoint_file, clear_stop, holds_run, log_tail, read_status,
                              request_stop, write_prepared_status, writer_lock)
from pneumo.store.run_list import active_run
from pneumo.store import quickstart_job

__all__ = [
    "start_training", "start_evaluation", "evaluation_job", "stop_evaluation", "evaluation_command",
    "running_job", "refuse_if_busy", "own_training", "own_evaluation",
    "start_quick_demo", "own_quick_demo", "quick_demo_job", "stop_quick_demo",
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


def evaluation_command(run_dir: str | os.PathLike, split: str, checkpoint: str, *,
                       allow_changed_pack: bool = False) -> list[str]:
    """``python -m pneumo evaluate RUN --split S --checkpoint C [--allow-changed-pack]``."""
    head = _test_hook("PNEUMO_EVALUATE_COMMAND") or [sys.executable, "-m", "pneumo"]
    cmd = [*head, "evaluate", str(run_dir), "--split", split, "--checkpoint", checkpoint]
    return cmd + (["--allow-changed-pack"] if allow_changed_pack else [])


def _launch(cmd: list[str], log_path: Path, header: bool, env: dict[str, str] | None = None) -> subprocess.Popen:
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
            close_fds=True,  # above all the run folder's lock: the child takes it over, never inherits it
            env={**os.environ, **env} if env else None,
        )
    CHILDREN[proc.pid] = proc
    return proc


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    """Serialise starts in ``folder`` so two clicks cannot both pass the one-at-a-time check.
    A folder that cannot be written (a read-only workspace) is refused first, by name."""
    settings.check_writable(folder, "no job can start there")
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
                if RunFolder(path).evaluation_job(split).is_file():
                    job = evaluation_job(path, split)
                    if job is not None and job["state"] == "running":
                        return f"evaluation of {path.name} ({split})"
    quick = quickstart_job.read_job(folder)
    # the quick demo's own process asks too (before each of its steps): it is not in its own way
    if quick is not None and quick["state"] == "running" and quick.get("pid") != os.getpid():
        return f"the quick demo ({_QUICK_STAGES.get(quick['stage'], quick['stage'])})"
    return None


def refuse_if_busy(runs_dir: str | os.PathLike | None = None) -> None:
    """:class:`InputError` naming the job running in ``runs_dir`` (default the workspace's), if any."""
    _refuse_if_busy([Path(runs_dir) if runs_dir is not None else settings.runs_dir()])


def _refuse_if_busy(folders: list[Path]) -> None:
    for folder in folders:
        busy = running_job(folder)
        if busy is not None:
            raise InputError(f"another job is running ({busy}); stop it or wait until it ends "
                             f"before starting a new one (one job at a time)")


def _check_folder(run_dir: Path, resume: bool) -> None:
    """The run folder fits the start: a new run needs a folder without a run, a resume one with a config."""
    if not resume:
        why = holds_run(run_dir)
        if why:
            raise InputError(f"run folder {run_dir} already holds a run ({why}); resume it or choose a new folder")
    elif not RunFolder(run_dir).config.is_file():
        raise InputError(f"run folder {run_dir}: no {RunFolder(run_dir).config.name}, nothing to resume")


# --------------------------------------------------------------------------- training
def start_training(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                   allow_changed_pack: bool = False) -> int:
    """Launch a training process for ``config`` in ``run_dir``; return its pid.

    Holding the run folder's lock (:func:`pneumo.store.run.writer_lock`), it writes
    ``RUN/config.json``, starts ``python -m pneumo train --config RUN/config.json --run-dir RUN``
    (``--resume``, ``--allow-changed-pack`` as asked) in a new session, output to
    ``RUN/train.log``, and writes a first ``status.json`` (``running``, with the child's pid);
    then it lets go and the trainer, which waits for this process (``$PNEUMO_RUN_HANDOVER``),
    takes the folder over: the trainer never writes before the launcher is done. The trainer
    validates the config itself; a bad one ends the run ``failed`` with the message.
    Raises :class:`InputError` when another job (training or evaluation) is running, when
    another process writes ``run_dir``, or when ``run_dir`` already holds a run and ``resume``
    is False (or holds none and ``resume`` is True).
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"start_training: config must be a TrainConfig, got {type(config).__name__}")
    run_dir = Path(run_dir).expanduser().absolute()
    files = RunFolder(run_dir)
    config = normalise_train_paths(config)
    with _start_lock(run_dir.parent):
        _refuse_if_busy(_folders(run_dir))
        with writer_lock(run_dir, "starting a training run"):
            _check_folder(run_dir, resume)
            if not resume:
                save_config(config, files.config)
            elif read_json(files.config) != to_dict(config):
                raise InputError(f"run folder {run_dir}: {files.config.name} differs from the given config; "
                                 f"resume with the run's own config")
            clear_stop(run_dir)  # a stale STOP would end the new process at once
            cmd = _train_command() + ["--config", str(files.config), "--run-dir", str(run_dir)]
            cmd += ["--resume"] if resume else []
            cmd += ["--allow-changed-pack"] if allow_changed_pack else []
            previous = read_status(run_dir) if resume else {}
            proc = _launch(cmd, files.log, header=True, env={HANDOVER_ENV: str(os.getpid())})
            # Written before the trainer may write (it waits for this lock), so readers see
            # "running" at once and the trainer's own status is never overwritten.
            epoch = previous.get("epoch") if isinstance(previous.get("epoch"), int) else 0
            write_prepared_status(run_dir, proc.pid, config.epochs + config.fine_tune_epochs, epoch)
        return proc.pid


@contextlib.contextmanager
def own_training(config: TrainConfig, run_dir: str | os.PathLike, what: str = "training") -> Iterator[None]:
    """Make the training this process is about to run in ``run_dir`` the workspace's job.

    For a trainer in this very process (``quickstart``): refused like :func:`start_training`
    (another job running, another writer of the folder, a folder holding a run); inside, this
    process holds the folder's lock and its status reads ``running`` with this pid, so the app
    refuses other starts. :func:`pneumo.train.loop.train` takes the lock again (re-entrant).
    """
    run_dir = Path(run_dir).expanduser().absolute()
    lock = writer_lock(run_dir, what)
    with _start_lock(run_dir.parent):
        _refuse_if_busy(_folders(run_dir))
        lock.acquire()
        try:
            _check_folder(run_dir, resume=False)
            write_prepared_status(run_dir, os.getpid(), config.epochs + config.fine_tune_epochs)
        except BaseException:
            lock.release()
            raise
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------------- evaluation
def _record_job(run_dir: Path, split: str, checkpoint: str, pid: int) -> None:
    atomic_write_json(RunFolder(run_dir).evaluation_job(split), {
        "pid": pid, "pid_start": process_start(pid), "split": split, "checkpoint": checkpoint,
        "started": now_iso(), "log": RunFolder(run_dir).evaluation_log(split).name,
    })


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
    files = RunFolder(run_dir)
    if not files.checkpoint(checkpoint).is_file():
        raise InputError(f"{run_dir}: no {checkpoint_file(checkpoint)} checkpoint to evaluate")
    with _start_lock(run_dir.parent):
        job = evaluation_job(run_dir, split)
        if job and job["state"] == "running":
            return int(job["pid"])
        _refuse_if_busy(_folders(run_dir))
        with contextlib.suppress(FileNotFoundError):
            files.evaluation_progress(split).unlink()  # the last job's: not this one's progress
        proc = _launch(evaluation_command(run_dir, split, checkpoint, allow_changed_pack=allow_changed_pack),
                       files.evaluation_log(split), header=False)
        _record_job(run_dir, split, checkpoint, proc.pid)
        return proc.pid


@contextlib.contextmanager
def own_evaluation(run_dir: str | os.PathLike, split: str, checkpoint: str = "best") -> Iterator[None]:
    """Make the evaluation this process is about to run the workspace's job (``quickstart``):
    refused while another job runs; inside, :func:`evaluation_job` reports it ``running`` (this
    pid), afterwards as its progress file says (this process lives on: its pid is dropped from
    the record). A failure removes the job record."""
    run_dir = Path(run_dir).expanduser().absolute()
    files = RunFolder(run_dir)
    with _start_lock(run_dir.parent):
        _refuse_if_busy(_folders(run_dir))
        with contextlib.suppress(FileNotFoundError):
            files.evaluation_progress(split).unlink()
        _record_job(run_dir, split, checkpoint, os.getpid())
    try:
        yield
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            files.evaluation_job(split).unlink()  # no log to point at: the caller reports the error
        raise
    job = read_json(files.evaluation_job(split))
    if isinstance(job, dict):
        atomic_write_json(files.evaluation_job(split), {**job, "pid": None, "pid_start": None})


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:?")


def _job_error(run_dir: Path, split: str) -> str:
    """The failed command's own message (its ``error: ...`` line, else the exception line of a
    traceback), never TensorFlow's log lines; names the log for the details."""
    log = RunFolder(run_dir).evaluation_log(split)
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
    job, _ = load_json(RunFolder(run_dir).evaluation_job(split))
    if not isinstance(job, dict) or "pid" not in job:
        return None
    progress = read_json(RunFolder(run_dir).evaluation_progress(split))
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


# --------------------------------------------------------------------------- the quick demo
_QUICK_STAGES = {"pack": "making its pack", "train": "training", "evaluate": "scoring the test split"}


def _quickstart_command() -> list[str]:
    return _test_hook("PNEUMO_QUICKSTART_COMMAND") or [sys.executable, "-m", "pneumo", "quickstart"]


def start_quick_demo() -> int:
    """Launch ``python -m pneumo quickstart`` in the workspace, in its own session; return its pid.

    Its output goes to ``RUNS/.quickstart.log``; the job record (``RUNS/.quickstart.json``,
    :mod:`pneumo.store.quickstart_job`) is written before this returns, with the child's pid,
    so any page finds the job at once and the one-job rule holds from the pack onwards.
    Raises :class:`InputError` while another job runs in the workspace.
    """
    folder = settings.runs_dir().expanduser().absolute()
    # The child reads its workspace from the environment: give it the folders seen here.
    env = {"PNEUMO_RUNS_DIR": str(folder), "PNEUMO_DATA_DIR": str(settings.data_dir().expanduser().absolute())}
    with _start_lock(folder):
        _refuse_if_busy([folder])
        log = quickstart_job.log_path(folder)
        proc = _launch(_quickstart_command(), log, header=False, env=env)
        quickstart_job.QuickstartRecord(folder, proc.pid).claim(log)
    return proc.pid


@contextlib.contextmanager
def own_quick_demo() -> Iterator[quickstart_job.QuickstartRecord]:
    """Make the quick demo this process runs the workspace's job (``quickstart``); yields its record.

    Refused while another job runs (:class:`InputError`); a record the app's launcher wrote
    for this very process is taken over. The caller records the stages and the outcome
    (:meth:`~pneumo.store.quickstart_job.QuickstartRecord.end`); leaving without one records
    ``failed`` with the exception's message (``stopped`` for SIGTERM or Ctrl-C).
    """
    folder = settings.runs_dir().expanduser().absolute()
    with _start_lock(folder):
        _refuse_if_busy([folder])
        record = quickstart_job.QuickstartRecord(folder, os.getpid()).claim()
    try:
        yield record
    except (KeyboardInterrupt, SystemExit):
        if not record.ended:
            stage = record.record.get("stage")
            record.end("stopped", f"stopped while {_QUICK_STAGES.get(stage, stage)}")
        raise
    except BaseException as e:
        if not record.ended:
            record.end("failed", str(e) or type(e).__name__)
        raise
    if not record.ended:
        record.end("failed", "ended without a result")


def quick_demo_job() -> dict[str, Any] | None:
    """The workspace's latest quick demo (:func:`pneumo.store.quickstart_job.read_job`), or None."""
    return quickstart_job.read_job(settings.runs_dir())


def stop_quick_demo() -> bool:
    """Stop the running quick demo; True when asked. While it trains, its run gets a ``STOP``
    (it ends after the current batch, keeping ``last.keras``); while it makes its pack or
    scores, its process group gets SIGTERM (a pack is never left half-written). Only a process
    that is still the recorded one and leads its group is signalled."""
    job = quick_demo_job()
    if job is None or job["state"] != "running":
        return False
    if job["stage"] == "train" and job["run"] is not None:
        request_stop(job["run"])
        return True
    pid = job.get("pid")
    with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
            return True
    return False
