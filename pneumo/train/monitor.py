"""The Keras callback that keeps a run folder up to date while :func:`pneumo.train.loop.train` fits.

Per batch: the stop request (``STOP`` file, SIGTERM, Ctrl-C) and a non-finite loss are checked,
and ``progress.json`` is written at most every :data:`PROGRESS_INTERVAL_S`. Per epoch: the exact
validation (:class:`pneumo.train.validate.Validation`) writes ``val_loss``/``val_dice``/``val_iou``
into the epoch's logs (before any later callback reads them), then a ``history.csv`` row,
``last.keras``, ``best.keras`` (lowest ``val_loss``), the backup and the status.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from pneumo._io import now_iso
from pneumo.errors import PneumoError
from pneumo.store import run as runs

__all__ = ["RunMonitor", "StopRequested", "Diverged", "PROGRESS_INTERVAL_S", "kept_checkpoint"]

log = logging.getLogger("pneumo.train.loop")

PROGRESS_INTERVAL_S = 0.5


class StopRequested(Exception):
    """Raised from a batch callback: leaves ``fit`` at once (setting ``stop_training`` would
    still finish the epoch before Keras looks at it)."""


class Diverged(PneumoError):
    """A non-finite loss: the run ends failed and no checkpoint is written from these weights."""


def kept_checkpoint(folder: runs.RunWriter) -> str:
    """What a run that fails now leaves to continue from, for its message: ``last.keras`` when
    an epoch was saved (this run's or the one it resumed), else that there is none."""
    last = runs.checkpoint_file("last")
    if folder.files.checkpoint("last").is_file():
        return f"{last} keeps the last good epoch"
    return f"no {last} was saved (no epoch had finished)"


def _float(v: Any) -> float:
    try:
        return float(np.asarray(keras.ops.convert_to_numpy(v)))
    except Exception:
        return float("nan")


class RunMonitor(keras.callbacks.Callback):
    """Per batch: stop requests and progress. Per epoch: validation, history, checkpoints, backup, status.

    ``plan``: ``steps``, ``validation_steps``, ``batch_size``, ``epochs`` (both stages), ``pack``;
    ``validate(between_steps) -> {"val_loss", "val_dice", "val_iou"}``: the epoch's validation
    (None: none); ``settle()``: makes the replicas agree on the model's state before it is
    validated and saved (:func:`pneumo.train.distribute.replica_state_sync`; None: one replica).
    """

    def __init__(self, folder: runs.RunWriter, watch_dir: Path, plan: dict, stop_flag: threading.Event,
                 progress: Callable[[dict], None] | None, best_val_loss: float,
                 validate: Callable[[Callable[[], None]], dict] | None = None,
                 settle: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.folder = folder
        self.watch_dir = watch_dir
        self.plan = plan
        self.stop_flag = stop_flag
        self.progress_fn = progress
        self.best = best_val_loss
        self.validate = validate
        self.settle = settle
        self.stage = "train"
        self.epochs_done = 0
        self.last_epoch_seconds: float | None = None
        self.last_val_seconds: float | None = None
        self._last_write = 0.0
        self.pack_stat: tuple[int, float] | None = None  # (size, mtime) the run started with

    # ---- stopping
    def check_stop(self) -> None:
        """Raise :class:`StopRequested` when a stop was asked for (flag or ``STOP`` file)."""
        if self.stop_flag.is_set() or runs.stop_requested(self.watch_dir):
            self.model.stop_training = True
            raise StopRequested()

    # ---- epoch timing
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1  # 1-based across both stages
        self.t_epoch = time.monotonic()
        self.t_first = None
        self._last_write = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = batch + 1
        now = time.monotonic()
        if self.t_first is None:
            self.t_first, self.first_step = now, step  # the first batch carries graph tracing
        raw = (logs or {}).get("loss")
        loss = _float(raw) if raw is not None else float("nan")
        if raw is not None and not math.isfinite(loss):
            # Checked before a stop request: a stop would save these weights over last.keras.
            raise Diverged(f"training diverged at epoch {self.epoch}, step {step}: the loss is {loss} "
                           f"(try a lower learning rate); {kept_checkpoint(self.folder)}")
        self.check_stop()
        if now - self._last_write >= PROGRESS_INTERVAL_S or step == self.plan["steps"]:
            self._last_write = now
            self._progress(step, loss, now)

    def _progress(self, step: int, loss: float, now: float) -> None:
        steps, batch = self.plan["steps"], self.plan["batch_size"]
        rate = 0.0  # steps per second, from the batches after the first
        if self.t_first is not None and step > self.first_step and now > self.t_first:
            rate = (step - self.first_step) / (now - self.t_first)
        eta = 0.0
        if rate > 0:
            val = self.last_val_seconds if self.last_val_seconds is not None else self.plan["validation_steps"] / (3 * rate)
            per_epoch = self.last_epoch_seconds or (steps / rate + val)
            eta = (steps - step) / rate + val + (self.plan["epochs"] - self.epoch) * per_epoch
        info = {
            "stage": self.stage, "epoch": self.epoch, "epochs": self.plan["epochs"], "step": step,
            "steps": steps, "loss": loss if math.isfinite(loss) else None,
            "images_per_s": rate * batch, "eta_s": eta, "updated": now_iso(),
        }
        self.folder.write_progress(info)
        if self.progress_fn is not None:
            self.progress_fn(info)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        loss = _float(logs.get("loss"))
        if not math.isfinite(loss):
            raise Diverged(f"training diverged at epoch {self.epoch}, step {self.plan['steps']}: the loss is "
                           f"{loss} (try a lower learning rate); {kept_checkpoint(self.folder)}")
        if self.settle is not None:
            self.settle()
        if self.validate is not None:
            t_val = time.monotonic()
            # Into Keras' own logs dict: the callbacks after this one (TensorBoard, History,
            # the progress bar) see the validation as if Keras had run it.
            logs.update(self.validate(self.check_stop))
            self.last_val_seconds = time.monotonic() - t_val
        now = time.monotonic()
        seconds = now - self.t_epoch
        self.last_epoch_seconds = seconds
        self._check_pack()
        row = {
            "epoch": self.epoch, "stage": self.stage, "loss": loss,
            "dice": _float(logs.get("dice")), "iou": _float(logs.get("iou")),
            "val_loss": _float(logs.get("val_loss")), "val_dice": _float(logs.get("val_dice")),
            "val_iou": _float(logs.get("val_iou")),
            "lr": _float(self.model.optimizer.learning_rate), "seconds": round(seconds, 3),
        }
        # Order matters for resuming: history first, backup last. A kill in between leaves a
        # history row beyond the backup, which resuming cuts and trains again.
        self.folder.append_history(row)
        self.folder.save_checkpoint(self.model, "last")
        val_loss = row["val_loss"]
        if math.isfinite(val_loss) and val_loss < self.best:
            self.best = val_loss
            self.folder.save_checkpoint(self.model, "best")
        self.epochs_done = self.epoch
        self.folder.save_backup(self.epoch, self.stage, self.best)
        self.folder.set_status(epoch=self.epoch)
        self._progress(self.plan["steps"], loss, now)
        log.info("epoch %d/%d (%s): loss %.4f dice %.4f val_loss %.4f val_dice %.4f in %.1f s",
                 self.epoch, self.plan["epochs"], self.stage, loss, row["dice"], val_loss,
                 row["val_dice"], seconds)

    def _check_pack(self) -> None:
        """A pack replaced while it is streamed mixes two datasets: fail before saving the epoch."""
        pack = Path(self.plan["pack"])
        try:
            st = pack.stat()
            now = (st.st_size, st.st_mtime)
        except OSError:
            now = None
        if self.pack_stat is not None and now != self.pack_stat:
            raise PneumoError(f"pack {pack} changed during epoch {self.epoch} (replaced or rewritten); the "
                              f"run stops with the last epoch's checkpoint")
