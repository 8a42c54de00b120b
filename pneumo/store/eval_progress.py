"""An evaluation's live progress file, written like training's ``progress.json`` so a page shows a bar.

``pneumo.predict.evaluate_run`` writes it through :class:`EvalProgress`; :mod:`pneumo.train.jobs`
reads it to follow an evaluation job. Its name is :mod:`pneumo.store.run`'s
(:meth:`~pneumo.store.run.RunFolder.evaluation_progress`). No TensorFlow.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from pneumo._io import atomic_write_json, now_iso
from pneumo.store.run import RunFolder

__all__ = ["EvalProgress"]


class EvalProgress:
    """Progress of an evaluation, written like training's ``progress.json`` so a page shows a bar.

    Writes ``{"stage": "predict"|"score"|"done", "split", "done", "total", "fraction",
    "images_per_s", "eta_s", "updated"}`` to ``RUN/evaluate_<split>.progress.json`` (at most every
    ``interval`` seconds while predicting) and passes ``(done, total)`` on to ``callback``.
    A run folder that cannot take the file never fails the evaluation.
    """

    def __init__(self, run_dir: str | os.PathLike, split: str, callback: Any = None, interval: float = 0.5) -> None:
        self.path = RunFolder(run_dir).evaluation_progress(split)
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
