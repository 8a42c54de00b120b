"""Worker processes for decoding untrusted files: start method and a per-worker memory cap."""
from __future__ import annotations

import multiprocessing
import sys
import threading
from concurrent.futures import ProcessPoolExecutor


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


def _limit_memory(nbytes: int) -> None:
    """Worker initializer: cap the address space, so a hostile file fails with MemoryError
    in the worker instead of exhausting the machine."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = nbytes if hard == resource.RLIM_INFINITY else min(nbytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker_pool(workers: int, memory_limit: int | None = None) -> ProcessPoolExecutor:
    """A process pool for decoding (``fork`` when safe, else ``spawn``); each worker's address
    space capped at ``memory_limit`` bytes when given (``resource.RLIMIT_AS``)."""
    ctx = multiprocessing.get_context(_start_method())
    if memory_limit is None:
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_limit_memory,
                               initargs=(int(memory_limit),))
