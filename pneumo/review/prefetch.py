"""Loading ahead: the next case's pictures are made while the reader looks at this one.

No streamlit. A :class:`Prefetcher` runs loads in a background thread into a
:class:`pneumo.review.fullres.ImageCache` (byte-bounded, shared by every session). Asking for
a key whose load is under way waits for it instead of loading it twice; a load that failed is
forgotten (the caller's own :meth:`Prefetcher.get` then loads it again and sees the error).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable

from pneumo.review.fullres import ImageCache


class Prefetcher:
    """Loads into ``cache`` now (:meth:`get`) or in the background (:meth:`prefetch`), each key
    at most once at a time. ``workers`` background threads (one: prefetching must not take
    the cores the page itself needs)."""

    def __init__(self, cache: ImageCache, workers: int = 1) -> None:
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="pneumo-prefetch")
        self._running: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The value of ``key``: from the cache, from a prefetch under way (waited for), else
        loaded now. A failed prefetch is retried here, so its error reaches the caller."""
        with self._lock:
            running = self._running.get(key)
        if running is not None:
            try:
                return running.result()
            except Exception:  # noqa: BLE001 - loaded again below, where the error is raised
                pass
        return self.cache.get(key, load)

    def prefetch(self, key: Hashable, load: Callable[[], Any]) -> Future | None:
        """Start loading ``key`` in the background unless it is held or under way; returns the
        future (None when nothing was started). Errors stay in the future."""
        with self._lock:
            if key in self._running or key in self.cache:
                return None
            future = self._pool.submit(self._load, key, load)
            self._running[key] = future
            return future

    def _load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        try:
            return self.cache.get(key, load)
        finally:
            with self._lock:
                self._running.pop(key, None)
