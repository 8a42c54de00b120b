"""Worker processes for decoding untrusted files: start method, a per-worker memory cap, and
workers that die with their parent.

A parent killed with ``kill -9`` cannot clean up, so each worker watches for it: Linux's
``PR_SET_PDEATHSIG`` kills it at once when the main thread forked it (the signal follows the
thread that forked, and an executor forks or spawns its workers from whichever thread submits
first: a worker of a short-lived thread would be killed early), and a watcher thread in every
worker exits it within ``_WATCH_SECONDS`` of the parent's death on any system. :func:`exit_on_sigterm` makes SIGTERM unwind the parent
(temporary files removed), and :func:`stop_workers` ends a pool without waiting for its work.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
import collections
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def _start_method() -> str:
    """``fork`` where it is safe (a single-threaded process without TensorFlow: the CLI),
    else ``spawn``.

    Forked workers start at once, where spawned ones spend about a second importing numpy,
    h5py and Pillow; but forking a multi-threaded process (the app's server, anything with
    TensorFlow loaded) can deadlock the child on a lock some other thread held.
    """
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1 \
            and "tensorflow" not in sys.modules:
        return "fork"
    return "spawn"


_WATCH_SECONDS = 0.5  # how often a worker checks that its parent is alive
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Pillow warns from 89 Mpx, which pneumo's own budget (--max-pixels, checked from the header)
# refuses or allows already: the warning would only add noise to the console.
_PILLOW_BOMB_WARNING = r"Image size \(\d+ pixels\) exceeds limit"


def quiet_pillow_bomb_warning() -> None:
    """Hide Pillow's DecompressionBombWarning in this process (pneumo checks its own pixel
    budget before decoding). For pneumo's own processes: workers and the ``pack`` command."""
    warnings.filterwarnings("ignore", message=_PILLOW_BOMB_WARNING)


# Set in the forking thread just before each os.fork(): the forked child (whose only thread is
# a copy of that one) reads its own copy. Spawned workers start from a fresh import: False.
_forking = threading.local()


def _note_forking_thread() -> None:
    _forking.by_main = threading.current_thread() is threading.main_thread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_note_forking_thread)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that started it ends."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCH_SECONDS)
    os._exit(1)  # orphaned: nobody reads our results any more


def _init_worker(parent: int, memory_limit: int | None) -> None:
    """Worker initializer: die with the parent, default SIGTERM, no Pillow bomb warning, and
    the memory cap when given."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (inherited by fork)
    quiet_pillow_bomb_warning()
    if getattr(_forking, "by_main", False) and sys.platform.startswith("linux"):
        _die_with_parent()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="pneumo-watch-parent", daemon=True).start()
    if memory_limit is not None:
        _limit_memory(memory_limit)


def _limit_memory(nbytes: int) -> None:
    """Cap the address space, so a hostile file fails with MemoryError in the worker instead of
    exhausting the machine."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker_pool(workers: int, memory_limit: int | None = None) -> ProcessPoolExecutor:
    """A process pool for decoding (``fork`` when safe, else ``spawn``); each worker's address
    space capped at ``memory_limit`` bytes when given (``resource.RLIMIT_AS``). Its workers die
    with this process, even when it is killed with SIGKILL (see the module docstring)."""
    ctx = multiprocessing.get_context(_start_method())
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(), None if memory_limit is None else int(memory_limit)))


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting for the calls in flight: its workers are terminated
    (an error or SIGTERM in the parent must not wait for a slow or hung decode)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.join()
    pool.shutdown(wait=True)


@contextlib.contextmanager
def exit_on_sigterm(code: int = 128 + signal.SIGTERM) -> Iterator[None]:
    """While inside (in the main thread), SIGTERM raises ``SystemExit(code)`` instead of ending
    the process at once, so ``finally`` blocks and :func:`pneumo._io.atomic_path` remove their
    temporary files. Elsewhere (a server's worker thread) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise SystemExit(code)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ordered_map(pool: Executor, fn: Callable[..., Any], items: Iterable[Any], window: int, *args: Any) -> Iterator[Any]:
    """``fn(item, *args)`` for each item on ``pool``, yielded in input order, with at most
    ``window`` calls submitted and not yet yielded (``Executor.map`` would submit every item
    at once: memory grows with the input).

    A call's exception is raised at its turn, after the results before it. Stopping early
    leaves the calls in flight to the pool's ``shutdown(cancel_futures=True)``.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    pending: collections.deque[Future] = collections.deque()
    todo = iter(items)

    def fill() -> None:
        for item in todo:
            pending.append(pool.submit(fn, item, *args))
            if len(pending) >= window:
                return

    fill()
    while pending:
        result = pending.popleft().result()
        fill()  # before yielding: the workers stay busy while the caller uses the result
        yield result


class InlineExecutor(Executor):
    """An :class:`~concurrent.futures.Executor` that runs each call at ``submit`` in this
    process: the "no worker processes" path runs the very code of the parallel one."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # delivered by result(), at the caller's turn, as a pool would
            future.set_exception(e)
        return future
