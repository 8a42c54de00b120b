"""Is the process recorded in a file still *ours*? Pid liveness with an identity check.

A pid written into ``status.json`` or ``evaluate_<split>.json`` outlives its process: after a
reboot or a long time the system hands the same number to another program. Signalling or
waiting on that number would then hit a stranger. So a recorded process is identified by
its pid *and* its start time (``/proc/<pid>/stat`` field 22, clock ticks since boot, recorded
as ``pid_start``); without a recorded start time (files from older versions, fake trainers)
its command line must name the run folder. Where ``/proc`` does not exist (macOS) only
liveness can be checked.

Standard library only; no TensorFlow.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

__all__ = ["process_start", "is_ours", "CHILDREN", "sigterm_sets"]

# Popen objects of the processes this process launched: polling them reaps finished
# children, which would otherwise linger as zombies and look alive to os.kill(pid, 0).
CHILDREN: dict[int, subprocess.Popen] = {}


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    # comm (field 2) may hold spaces and parentheses: the fields after it follow the last ")"
    return stat[stat.rindex(")") + 2:].split()


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (None without ``/proc`` or when gone)."""
    fields = _stat_fields(pid)
    with contextlib.suppress(IndexError, ValueError, TypeError):
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    return None


def _valid_pid(pid: Any) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0


def is_ours(pid: Any, *, start: Any = None, marker: str | None = None) -> bool:
    """Whether ``pid`` is alive (not a zombie) and still the process that was recorded.

    Args:
        pid: the recorded pid (anything else, e.g. a string from a damaged file, is False).
        start: the recorded :func:`process_start`; when given, it must match.
        marker: without ``start``, a string (the run folder's name) the process's command
            line must contain.
    """
    if not _valid_pid(pid):
        return False
    child = CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user: /proc below still tells who it is
    except OSError:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no /proc here: liveness is all we know
    if fields[0] in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # our own unreaped child: reap it
        return False
    if isinstance(start, int) and not isinstance(start, bool):
        return process_start(pid) == start
    if marker:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            return False
        return marker in cmdline
    return True


@contextlib.contextmanager
def sigterm_sets(flag: threading.Event):
    """SIGTERM only sets ``flag`` (a handler must not do more) while inside; restored afterwards.

    Off the main thread (where handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
