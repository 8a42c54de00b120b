"""An exclusive lock on a file that says who holds it: one writer at a time, no stale locks.

:class:`HolderLock` takes ``fcntl.flock`` on a lock file (the kernel drops it when the holder
dies, even by SIGKILL, so a lock never outlives its process) and writes a record of the holder
into the file: pid, process start time (:mod:`pneumo._procs`), host name, since when and what
it does. A second taker does not wait: it gets an :class:`~pneumo.errors.InputError` naming
the holder at once. Only a *hand-over* waits: a launcher holds the lock while it prepares, then
releases it to the child it started, which waits for exactly that launcher (``handover_from``).

The lock file is removed on release (while still held). A taker that opened the file just
before, and locks the removed file, notices that the path no longer leads to its file and
takes the lock anew, so removing never lets two holders in. Within one thread the lock is
re-entrant (nested takes of the same file count). Where ``fcntl`` does not exist (Windows) no
lock is taken: best effort, as before. On network filesystems the lock is as good as their
``flock`` support (NFSv4: across machines).

Standard library only.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pneumo._io import now_iso
from pneumo._procs import is_ours, process_start
from pneumo.errors import InputError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["HolderLock", "read_holder", "this_host"]

HANDOVER_TIMEOUT_S = 60.0  # how long a child waits for its launcher to hand the lock over
_POLL_S = 0.02
_GRACE_S = 1.0  # how long a lock without a readable record is taken for one being set up or let go
_RECORD_BYTES = 4096

# Locks held here: (absolute lock path, thread) -> [fd, depth]. flock conflicts between two
# open() of one file even in one process, so a nested take in the same thread reuses the held
# descriptor; another thread of this process is refused like another process.
_HELD: dict[tuple[str, int], list[int]] = {}


def this_host() -> str:
    """This machine's host name (what holder records and run statuses compare)."""
    return socket.gethostname()


def read_holder(path: str | os.PathLike) -> dict | None:
    """The holder record in lock file ``path`` (pid, pid_start, host, since, what), or None
    when there is none or it cannot be read. Only meaningful while the lock is held."""
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read(_RECORD_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _describe(record: dict | None) -> str:
    if record is None:
        return "another process (it has not recorded itself yet)"
    what = f" ({record['what']})" if record.get("what") else ""
    return f"pid {record.get('pid')} on host {record.get('host')} since {record.get('since')}{what}"


class HolderLock:
    """The exclusive lock of ``path``, naming ``subject`` in its refusal ("run folder X").

    Use as a context manager or with :meth:`acquire` / :meth:`release`. ``what`` goes into
    the holder record (e.g. "training"); ``handover_from`` is :meth:`acquire`'s default. Taking it creates the lock file's folder (and its
    parents) when missing; the last release removes the folders it created if they are left
    empty, so a refused or failed start leaves nothing behind.
    """

    def __init__(self, path: str | os.PathLike, subject: str, what: str = "", *,
                 handover_from: int | None = None) -> None:
        self.path = Path(path)
        self.subject = subject
        self.what = what
        self.handover_from = handover_from
        self.created_dirs: list[Path] = []
        self._key: tuple[str, int] | None = None

    # ------------------------------------------------------------------ taking
    def acquire(self, *, handover_from: int | None = None, timeout_s: float = HANDOVER_TIMEOUT_S) -> "HolderLock":
        """Take the lock, or raise :class:`InputError` naming the holder at once.

        ``handover_from``: the pid of the launcher that holds the lock for this process; while
        that pid (on this host) holds it, wait up to ``timeout_s`` for it to let go.
        """
        handover_from = handover_from if handover_from is not None else self.handover_from
        if self._key is not None:
            raise RuntimeError(f"{self.path}: this lock object is already held")
        key = (str(self.path.absolute()), threading.get_ident())
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            self._key = key
            return self
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = self._take(handover_from, timeout_s)
        except BaseException:
            self._remove(missing)
            raise
        self.created_dirs = missing
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def _take(self, handover_from: int | None, timeout_s: float) -> int:
        """The locked descriptor of the file at ``path``, or the refusal naming its holder.

        While waiting for a hand-over the file stays open (a launcher, or a test, can see the
        waiter); a file its holder removed on release is closed and the one at the path taken.
        """
        if fcntl is None:
            return -1
        now = time.monotonic()
        deadline, grace = now + timeout_s, now + _GRACE_S
        fd = -1
        try:
            while True:
                if fd < 0:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    if self._still_at_path(fd):
                        self._write_record(fd)
                        fd, taken = -1, fd
                        return taken
                    os.close(fd)  # its holder removed it on release: take the one now at the path
                    fd = -1
                    continue
                holder = read_holder(self.path)
                if holder is None and (time.monotonic() < grace or handover_from is not None):
                    # The holder is between its lock and its record, or has just let go (its file
                    # removed, not yet closed): look again. A waiter for a hand-over looks until
                    # its deadline, whatever the launcher's release looked like in passing.
                    if time.monotonic() > deadline:
                        raise self._refusal(holder)
                    time.sleep(_POLL_S)
                    continue
                grace = time.monotonic() + _GRACE_S  # a record was there: the next gap gets its own grace
                waiting = (handover_from is not None and holder is not None and holder.get("pid") == handover_from
                           and holder.get("host") == this_host())
                if not waiting:
                    raise self._refusal(holder)
                if time.monotonic() > deadline:
                    raise InputError(f"{self.subject}: the launcher (pid {handover_from}) did not hand it over "
                                     f"within {timeout_s:g} s")
                time.sleep(_POLL_S)
        finally:
            if fd >= 0:
                os.close(fd)

    def _still_at_path(self, fd: int) -> bool:
        try:
            mine, now = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def _write_record(self, fd: int) -> None:
        record = {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": this_host(),
                  "since": now_iso(), "what": self.what, "command": " ".join(sys.argv)[:300]}
        data = json.dumps(record).encode()[:_RECORD_BYTES]
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    # ------------------------------------------------------------------ letting go
    def release(self) -> None:
        """Let go (a nested take only counts down); removes the lock file, then the
        ``created_dirs`` left empty. Releasing a lock not held does nothing."""
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        held = _HELD[key]
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        if held[0] >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(key[0])  # while still held: see the module docstring
            os.close(held[0])
        self._remove(self.created_dirs)

    @staticmethod
    def _remove(folders: list[Path]) -> None:
        for folder in folders:  # innermost first
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break

    def check(self) -> None:
        """Raise the refusal :meth:`acquire` would raise, judged from the holder record alone
        (a live process of this host, other than ``handover_from`` and this thread's own take),
        without taking anything: an early "no" before slow work; :meth:`acquire` decides."""
        record = read_holder(self.path)
        if record is None or record.get("host") != this_host() or (str(self.path.absolute()), threading.get_ident()) in _HELD:
            return
        pid = record.get("pid")
        if pid != self.handover_from and is_ours(pid, start=record.get("pid_start")):
            raise self._refusal(record)

    def _refusal(self, holder: dict | None) -> InputError:
        return InputError(f"{self.subject} is being written by {_describe(holder)}; wait until it ends or "
                          f"choose another folder")

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._key is not None

    def __enter__(self) -> "HolderLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
