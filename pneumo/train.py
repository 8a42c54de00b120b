"""The training engine: one run folder per run, resumable, observable, stoppable.

:func:`train` validates everything first (config, pack, weights, run folder), then fits a
model from :mod:`pneumo.model` on :func:`pneumo.data.make_dataset` pipelines and keeps
the run folder (docs/architecture.md, "Run folder") up to date through Keras callbacks:

- ``status.json`` (running / finished / stopped / failed + error), ``progress.json``
  (per batch, at most every ``PROGRESS_INTERVAL_S``), ``history.csv`` (one row per epoch),
  ``logs/`` (TensorBoard, when the ``tensorboard`` package is installed), ``best.keras``
  (lowest ``val_loss``), ``last.keras`` (each epoch; it holds the optimizer state too),
  ``backup/state.json`` (the epoch and stage ``last.keras`` resumes after). Every file is
  replaced atomically, so readers never see half of one.
- Stopping: a ``STOP`` file in the run folder, SIGTERM or Ctrl-C ends training after the
  current batch (no validation pass first), saves ``last.keras`` and a backup, and leaves
  the state ``stopped``. A killed run resumes with ``resume=True`` from its last finished
  epoch (weights and Adam state); ``history.csv`` is cut back to the backup, so no epoch
  appears twice. After a stop, resuming re-runs the interrupted epoch from the saved
  mid-epoch weights. The data order after a resume comes from a seed derived from
  ``config.seed`` and the epoch, not a replay of the first epochs.
- Two stages: ``epochs`` with the encoder as configured, then ``fine_tune_epochs`` with
  the encoder unfrozen and Adam at ``fine_tune_lr``; epoch numbers run on across both.
- Devices: the GPU when there is one, ``MirroredStrategy`` on several GPUs,
  ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers (only the
  chief writes the run folder; the others write to a temporary folder and, when resuming,
  read the chief's backup, so the run folder must be shared between machines). Under
  several workers a STOP must reach every worker (a shared run folder does that); one
  worker stopping alone leaves the others waiting. Keras 3 needs two workarounds there
  (see :func:`_patch_keras_for_multi_worker`).

Randomness: :func:`train` takes the data and augmentation seed from ``config.seed`` and
touches no global random state. Weight initialisation uses Keras' global generator, which
only the process entry point seeds (``python -m pneumo train`` calls
``keras.utils.set_random_seed(config.seed)``); call it yourself for reproducible weights.
"""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from ._io import atomic_write_json, atomic_write_text, read_json
from .config import AugmentConfig, TrainConfig, load_config, normalise_train_paths, save_config, to_dict
from .errors import InputError, PneumoError

__all__ = [
    "train",
    "check_config",
    "HISTORY_COLUMNS",
    "STAGES",
    "PROGRESS_INTERVAL_S",
]

log = logging.getLogger("pneumo.train")

HISTORY_COLUMNS = ("epoch", "stage", "loss", "dice", "iou", "val_loss", "val_dice", "val_iou", "lr", "seconds")
STAGES = ("train", "fine-tune")
LOSSES = ("bce", "dice", "bce+dice")
PROGRESS_INTERVAL_S = 0.5
_FILL_MODES = ("nearest", "constant", "reflect", "wrap")
_BACKUP_STATE = "state.json"


class _StopRequested(Exception):
    """Raised from a batch callback: leaves ``fit`` at once (setting ``stop_training`` would
    still run a whole validation pass before Keras looks at it)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# =========================================================================== validation
def _positive_int(value: Any, option: str, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a whole number >= 0" if allow_zero else "a whole number >= 1"
        raise InputError(f"{option} = {value!r}: must be {kind}")


def _positive_float(value: Any, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{option} = {value!r}: must be a positive number")


def check_config(config: TrainConfig) -> dict[str, int]:
    """Check ``config`` and its pack without building anything; raise :class:`InputError`.

    Returns ``{"size", "train", "dev", "steps", "validation_steps", "dev_batches"}``: the
    pack's image side, split sizes, and the step counts an epoch will use (defaults filled
    in, ``validation_steps`` clamped to the dev batches).
    """
    from .data import split_shape
    from .model import VARIANTS

    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.variant not in VARIANTS:
        raise InputError(f"variant {config.variant!r} is unknown (choose one of: {', '.join(VARIANTS)})")
    if config.loss not in LOSSES:
        raise InputError(f"loss {config.loss!r} is unknown (choose one of: {', '.join(LOSSES)})")
    _positive_int(config.epochs, "epochs")
    _positive_int(config.fine_tune_epochs, "fine_tune_epochs", allow_zero=True)
    _positive_int(config.steps_per_epoch, "steps_per_epoch", allow_none=True)
    _positive_int(config.validation_steps, "validation_steps", allow_none=True)
    _positive_int(config.batch_size, "batch_size")
    _positive_int(config.seed, "seed", allow_zero=True)
    _positive_float(config.lr, "lr")
    if config.fine_tune_epochs:
        _positive_float(config.fine_tune_lr, "fine_tune_lr")
    if config.freeze_encoder not in (None, True, False):
        raise InputError(f"freeze_encoder = {config.freeze_encoder!r}: must be true, false or null")
    for name in ("mixed_precision", "xla"):
        if not isinstance(getattr(config, name), bool):
            raise InputError(f"{name} = {getattr(config, name)!r}: must be true or false")
    if not isinstance(config.augment, AugmentConfig):
        raise InputError(f"augment must be an AugmentConfig, got {type(config.augment).__name__}")
    if config.augment.fill_mode not in _FILL_MODES:
        raise InputError(f"augment.fill_mode {config.augment.fill_mode!r} is unknown "
                         f"(choose one of: {', '.join(_FILL_MODES)})")

    weights = config.encoder_weights
    if weights is not None and weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"encoder weights file {path}: not found (give 'imagenet', 'none' or "
                             f"the path of a VGG16 no-top weights .h5 file)")
        if not path.name.endswith(".h5"):
            raise InputError(f"encoder weights file {path}: expected a Keras weights file ending in .h5")

    if not config.pack:
        raise InputError("pack: no pack file given")
    n_train, size = split_shape(config.pack, "train")
    n_dev, _ = split_shape(config.pack, "dev")
    if size <= 0 or size % 32:
        raise InputError(f"{config.pack}: image size {size} is not a multiple of 32, which the models "
                         f"need (five 2x poolings); pack it again with --size 64, 128, 256, ...")
    if n_train == 0:
        raise InputError(f"{config.pack}: the train split is empty; nothing to train on")
    if n_dev == 0:
        raise InputError(f"{config.pack}: the dev split is empty; training needs dev data for "
                         f"validation (pack it with a dev share)")
    dev_batches = math.ceil(n_dev / config.batch_size)
    steps = config.steps_per_epoch or math.ceil(n_train / config.batch_size)
    val_steps = min(config.validation_steps or dev_batches, dev_batches)
    return {"size": size, "train": n_train, "dev": n_dev, "steps": steps,
            "validation_steps": val_steps, "dev_batches": dev_batches}


def _config_diff(a: TrainConfig, b: TrainConfig) -> list[str]:
    da, db = to_dict(a), to_dict(b)
    return [k for k in da if da[k] != db.get(k)]


def _holds_run(run_dir: Path) -> str | None:
    """Why ``run_dir`` already holds a run (or None): something a previous trainer left."""
    for name in ("history.csv", "last.keras", "best.keras", f"backup/{_BACKUP_STATE}"):
        if (run_dir / name).exists():
            return f"it has {name}"
    status = read_json(run_dir / "status.json")
    # pneumo.jobs writes a first status.json with the trainer's pid before it starts.
    if isinstance(status, dict) and status.get("pid") != os.getpid():
        return f"its status.json says {status.get('state')!r}"
    return None


def _resolve_config(config: TrainConfig | None, run_dir: Path, resume: bool, chief: bool) -> TrainConfig:
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"run folder {run_dir}: exists and is not a folder")
    saved_path = run_dir / "config.json"
    if resume:
        if not saved_path.is_file():
            raise InputError(f"run folder {run_dir}: no config.json, so there is nothing to resume")
        saved = load_config(TrainConfig, saved_path)
        if config is not None:
            config = normalise_train_paths(config)
            diff = _config_diff(config, saved)
            if diff:
                raise InputError(f"run folder {run_dir}: resuming needs the run's own config, but "
                                 f"{', '.join(diff)} differ from its config.json (leave them out)")
        return saved
    if config is None:
        raise InputError("no training config given")
    if chief:
        why = _holds_run(run_dir) if run_dir.is_dir() else None
        if why:
            raise InputError(f"run folder {run_dir} already holds a run ({why}); use --resume to "
                             f"continue it or choose another --run-dir")
    return normalise_train_paths(config)


# =========================================================================== devices
def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def _cluster_role() -> tuple[int, bool]:
    """``(number of workers, is chief)`` from ``TF_CONFIG`` (1 and True without it)."""
    tf_config = _tf_config()
    cluster = tf_config.get("cluster") or {}
    workers = len(cluster.get("worker") or []) + len(cluster.get("chief") or [])
    if workers <= 1:
        return max(workers, 1), True
    task = tf_config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return workers, chief


_KERAS_PATCHED = False


def _patch_keras_for_multi_worker() -> None:
    """Work around Keras 3 + MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow#72388).

    Keras reduces each scalar log with ``strategy.reduce("MEAN", v, axis=0)``, which
    ``CollectiveAllReduceStrategy`` rejects for 0-d values; reduce over replicas only.
    """
    global _KERAS_PATCHED
    if _KERAS_PATCHED:
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    _KERAS_PATCHED = True


def _make_strategy(workers: int) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if workers > 1:
        # Must come before any other TensorFlow op in the process.
        strategy, name = tf.distribute.MultiWorkerMirroredStrategy(), "MultiWorkerMirroredStrategy"
        _patch_keras_for_multi_worker()
    elif len(gpus) > 1:
        strategy, name = tf.distribute.MirroredStrategy(), "MirroredStrategy"
    else:
        strategy, name = tf.distribute.get_strategy(), "default strategy"
    devices = ", ".join(g.name for g in gpus) or "none (CPU only)"
    log.info("devices: GPUs %s; %s with %d replica(s)%s", devices, name, strategy.num_replicas_in_sync,
             f" over {workers} workers" if workers > 1 else "")
    return strategy


def _symbolic_build_for_multi_worker(model: keras.Model, size: int, batch: int) -> None:
    """Build metrics/optimizer from shapes so Keras skips its own build, which fails under
    MultiWorkerMirroredStrategy (it reduces a whole data batch across workers)."""
    x = np.zeros((batch, size, size, 1), np.uint8)
    y = np.zeros((batch, size, size, 1), np.float32)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


# =========================================================================== run folder
class _RunFolder:
    """Atomic writers for the run folder files (status, progress, history, checkpoints, backup)."""

    def __init__(self, root: Path, started: str, epochs: int, resumed: bool) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.backup = root / "backup"
        previous = read_json(root / "status.json") if resumed else None
        first = previous.get("started") if isinstance(previous, dict) else None
        self.status: dict[str, Any] = {
            "state": "running", "pid": os.getpid(), "started": first or started, "updated": started,
            "ended": None, "error": None, "epoch": 0, "epochs": epochs,
        }
        if resumed:
            self.status["resumed"] = started

    # ---- status / progress
    def set_status(self, **changes: Any) -> None:
        self.status.update(changes, updated=_now())
        atomic_write_json(self.root / "status.json", self.status)

    def write_progress(self, info: dict) -> None:
        atomic_write_json(self.root / "progress.json", info)

    # ---- history
    def history_rows(self) -> list[dict]:
        path = self.root / "history.csv"
        if not path.is_file():
            return []
        return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))

    def _write_history(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.root / "history.csv", buf.getvalue())

    def truncate_history(self, epochs_done: int) -> None:
        """Keep rows of epochs 1..epochs_done (a killed run may have logged one more)."""
        rows = [r for r in self.history_rows() if r.get("epoch", "").isdigit() and int(r["epoch"]) <= epochs_done]
        self._write_history(rows)

    def append_history(self, row: dict) -> None:
        self._write_history(self.history_rows() + [{k: _fmt(v) for k, v in row.items()}])

    # ---- checkpoints
    def save_model(self, model: keras.Model, name: str) -> None:
        tmp = self.root / f".{name}.{os.getpid()}.tmp.keras"  # .keras suffix: Keras insists
        try:
            model.save(tmp)
            os.replace(tmp, self.root / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def save_backup(self, epochs_done: int, stage: str, best_val_loss: float) -> None:
        """Record that ``last.keras`` (weights and optimizer state) resumes after ``epochs_done``.

        Call right after saving ``last.keras``: a kill in between leaves the state one epoch
        behind the weights, and resuming then trains that epoch once more.
        """
        self.backup.mkdir(exist_ok=True)
        atomic_write_json(self.backup / _BACKUP_STATE, {
            "epoch": epochs_done, "stage": stage, "weights": "last.keras",
            "best_val_loss": best_val_loss if math.isfinite(best_val_loss) else None, "saved": _now(),
        })


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.8g}"
    return "" if v is None else str(v)


def _read_backup(run_dir: Path, total_epochs: int) -> dict | None:
    state = read_json(run_dir / "backup" / _BACKUP_STATE)
    if state is None:
        return None
    ok = (isinstance(state, dict) and isinstance(state.get("epoch"), int) and state.get("stage") in STAGES
          and isinstance(state.get("weights"), str))
    if not ok or not (run_dir / state["weights"]).is_file():
        raise InputError(f"{run_dir / 'backup'}: the resume state is damaged (state.json or its weights "
                         f"file); start a new run instead")
    if state["epoch"] > total_epochs:
        raise InputError(f"{run_dir}: the backup is at epoch {state['epoch']}, beyond the config's "
                         f"{total_epochs} epochs")
    return state


# =========================================================================== callbacks
def _float(v: Any) -> float:
    try:
        return float(np.asarray(keras.ops.convert_to_numpy(v)))
    except Exception:
        return float("nan")


class _RunMonitor(keras.callbacks.Callback):
    """Per batch: stop requests and progress. Per epoch: history, checkpoints, backup, status."""

    def __init__(self, folder: _RunFolder, watch_dir: Path, plan: dict, stop_flag: threading.Event,
                 progress: Callable[[dict], None] | None, best_val_loss: float) -> None:
        super().__init__()
        self.folder = folder
        self.watch_dir = watch_dir
        self.plan = plan
        self.stop_flag = stop_flag
        self.progress_fn = progress
        self.best = best_val_loss
        self.stage = "train"
        self.epochs_done = 0
        self.last_epoch_seconds: float | None = None
        self.last_val_seconds: float | None = None
        self._last_write = 0.0

    # ---- stopping
    def _check_stop(self) -> None:
        if self.stop_flag.is_set() or (self.watch_dir / "STOP").exists():
            self.model.stop_training = True
            raise _StopRequested()

    # ---- epoch timing
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1  # 1-based across both stages
        self.t_epoch = time.monotonic()
        self.t_first = None
        self.t_val = None
        self._last_write = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = batch + 1
        now = time.monotonic()
        if self.t_first is None:
            self.t_first, self.first_step = now, step  # the first batch carries graph tracing
        self._check_stop()
        if now - self._last_write >= PROGRESS_INTERVAL_S or step == self.plan["steps"]:
            self._last_write = now
            self._progress(step, _float((logs or {}).get("loss")), now)

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
            "images_per_s": rate * batch, "eta_s": eta, "updated": _now(),
        }
        self.folder.write_progress(info)
        if self.progress_fn is not None:
            self.progress_fn(info)

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.t_val = time.monotonic()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check_stop()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        now = time.monotonic()
        seconds = now - self.t_epoch
        self.last_epoch_seconds = seconds
        if self.t_val is not None:
            self.last_val_seconds = now - self.t_val
        loss = _float(logs.get("loss"))
        if not math.isfinite(loss):
            raise PneumoError(f"training diverged: the loss is {loss} in epoch {self.epoch} "
                              f"(try a lower learning rate)")
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
        self.folder.save_model(self.model, "last.keras")
        val_loss = row["val_loss"]
        if math.isfinite(val_loss) and val_loss < self.best:
            self.best = val_loss
            self.folder.save_model(self.model, "best.keras")
        self.epochs_done = self.epoch
        self.folder.save_backup(self.epoch, self.stage, self.best)
        self.folder.set_status(epoch=self.epoch)
        self._progress(self.plan["steps"], loss, now)
        log.info("epoch %d/%d (%s): loss %.4f dice %.4f val_loss %.4f val_dice %.4f in %.1f s",
                 self.epoch, self.plan["epochs"], self.stage, loss, row["dice"], val_loss,
                 row["val_dice"], seconds)


# =========================================================================== train
@dataclass
class _Setup:
    config: TrainConfig
    info: dict
    chief: bool
    workers: int
    write_dir: Path
    total_epochs: int


def _compile(model: keras.Model, lr: float, config: TrainConfig) -> None:
    from .losses import get_loss, get_metrics

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=get_loss(config.loss),
                  metrics=get_metrics(), jit_compile=bool(config.xla))


def _frozen(config: TrainConfig) -> bool:
    return config.freeze_encoder if config.freeze_encoder is not None else config.encoder_weights is not None


def _with_shard_policy(ds: tf.data.Dataset, workers: int) -> tf.data.Dataset:
    if workers <= 1:
        return ds
    # The pipeline reads one HDF5 file: shard by element (AUTO would try files and warn).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


@contextlib.contextmanager
def _sigterm_sets(flag: threading.Event):
    """SIGTERM only sets ``flag`` (a handler must not do more); restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(
    config: TrainConfig | None,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    verbose: int | str = "auto",
) -> dict:
    """Train ``config`` into ``run_dir`` and return a summary.

    Args:
        config: the run's config; with ``resume=True`` it may be None (the folder's
            ``config.json`` is used) and otherwise must equal that file.
        run_dir: the run folder; created if needed. Without ``resume`` it must not hold a
            run already.
        resume: continue a stopped, failed or killed run from its last backup (a folder
            without a backup starts from scratch).
        progress: called with each ``progress.json`` dict as it is written (main thread).
        verbose: Keras' fit verbosity; "auto" = a progress bar on a terminal, else one line
            per epoch.

    Returns:
        ``{"state": "finished"|"stopped", "run_dir", "epochs_done", "epochs", "best_epoch",
        "best_val_loss", "best_val_dice", "last": last history row or None, "seconds"}``.

    Raises:
        InputError: bad config, pack, weights or run folder; raised before anything is
            written to the run folder (a status.json that :mod:`pneumo.jobs` wrote for this
            process is set to ``failed`` with the message).
        Exception: anything raised while training, after setting the state ``failed``.
    """
    t_start = time.monotonic()
    started = _now()
    run_dir = Path(run_dir).expanduser().absolute()
    stop_flag = threading.Event()
    policy_before = keras.mixed_precision.global_policy()
    try:
        with _sigterm_sets(stop_flag):
            return _train(config, run_dir, resume, progress, verbose, stop_flag, started, t_start)
    finally:
        keras.mixed_precision.set_global_policy(policy_before)


def _train(config: TrainConfig | None, run_dir: Path, resume: bool, progress: Callable[[dict], None] | None,
           verbose: int | str, stop_flag: threading.Event, started: str, t_start: float) -> dict:
    workers, chief = _cluster_role()
    try:
        config = _resolve_config(config, run_dir, resume, chief)
        info = check_config(config)
        total = config.epochs + config.fine_tune_epochs
        backup_state = _read_backup(run_dir, total) if resume else None
        if config.validation_steps is not None and config.validation_steps > info["dev_batches"]:
            log.warning("validation_steps %d is more than the dev split holds (%d samples = %d batches "
                        "of %d); using %d", config.validation_steps, info["dev"], info["dev_batches"],
                        config.batch_size, info["validation_steps"])
        setup = _Setup(config, info, chief, workers, run_dir if chief else Path(), total)
        # Built before anything is written: a weights file that does not fit is bad input too.
        model = _build(setup, run_dir, backup_state)
    except BaseException as e:
        _fail_prepared_status(run_dir, _message(e))
        raise

    setup.write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="pneumo-worker-"))
    folder = _RunFolder(setup.write_dir, started, total, resumed=resume)
    if chief:
        save_config(config, run_dir / "config.json")
        if resume:
            with contextlib.suppress(FileNotFoundError):
                (run_dir / "STOP").unlink()  # left from the stop being resumed from
    done = backup_state["epoch"] if backup_state else 0
    folder.truncate_history(done)
    folder.set_status(epoch=done)

    best = float("inf")
    if backup_state is not None and backup_state.get("best_val_loss") is not None:
        best = float(backup_state["best_val_loss"])
    plan = {"steps": info["steps"], "validation_steps": info["validation_steps"],
            "batch_size": config.batch_size, "epochs": total}
    monitor = _RunMonitor(folder, run_dir, plan, stop_flag, progress, best)
    monitor.epochs_done = done
    if backup_state is not None:
        monitor.stage = backup_state["stage"]
    callbacks: list = [monitor]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(folder.root / "logs"), write_graph=False,
                                                     update_freq="epoch", profile_batch=0))
    else:  # tensorflow >= 2.21 no longer pulls it in; tf.summary fails without it
        log.warning("TensorBoard logs skipped: the tensorboard package is not installed "
                    "(pip install tensorboard)")

    try:
        state = _fit_stages(setup, model, monitor, callbacks, done, verbose)
    except (_StopRequested, KeyboardInterrupt):
        state = "stopped"
        try:
            # Mid-epoch weights, filed under the last finished epoch: resuming trains the
            # interrupted epoch again from here, so nothing is lost.
            folder.save_model(model, "last.keras")
            folder.save_backup(monitor.epochs_done, monitor.stage, monitor.best)
            _close_tensorboard(callbacks)
            if chief:
                with contextlib.suppress(FileNotFoundError):
                    (run_dir / "STOP").unlink()
            log.info("stopped after %d finished epoch(s); continue with --resume", monitor.epochs_done)
        except BaseException as e:
            folder.set_status(state="failed", ended=_now(), error=f"stopping failed: {_message(e)}")
            raise
    except BaseException as e:
        folder.set_status(state="failed", ended=_now(), error=_message(e))
        raise
    folder.set_status(state=state, ended=_now(), epoch=monitor.epochs_done)
    summary = _summary(state, run_dir, folder, total, time.monotonic() - t_start)
    if not chief:
        shutil.rmtree(setup.write_dir, ignore_errors=True)
    return summary


def _message(e: BaseException) -> str:
    if isinstance(e, PneumoError):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:500]}" if text else type(e).__name__


def _fail_prepared_status(run_dir: Path, message: str) -> None:
    """Mark the status.json that pneumo.jobs wrote for this very process as failed."""
    status = read_json(run_dir / "status.json")
    if isinstance(status, dict) and status.get("pid") == os.getpid() and status.get("state") == "running":
        status.update(state="failed", error=message, ended=_now(), updated=_now())
        atomic_write_json(run_dir / "status.json", status)


def _build(setup: _Setup, run_dir: Path, backup_state: dict | None) -> keras.Model:
    """Strategy, then the compiled model (restored from the backup when resuming)."""
    from .model import build_model, set_encoder_trainable

    config, info = setup.config, setup.info
    strategy = _make_strategy(setup.workers)
    gpus = tf.config.list_physical_devices("GPU")
    if config.mixed_precision:
        if not gpus:
            log.warning("mixed precision on a CPU is slow (float16 is emulated); it pays on GPUs")
        keras.mixed_precision.set_global_policy("mixed_float16")
        log.info("mixed precision: float16 compute, float32 weights")
    if config.xla:
        log.info("XLA: the train step is jit-compiled")

    with strategy.scope():
        if backup_state is None:
            model = build_model(config.variant, input_size=info["size"], encoder_weights=config.encoder_weights,
                                freeze_encoder=config.freeze_encoder)
            _compile(model, config.lr, config)
        else:
            # The backup holds every weight: skip loading (or downloading) the encoder's.
            model = build_model(config.variant, input_size=info["size"], encoder_weights=None,
                                freeze_encoder=_frozen(config))
            if backup_state["stage"] == "fine-tune":
                set_encoder_trainable(model, True)
                _compile(model, config.fine_tune_lr, config)
            else:
                _compile(model, config.lr, config)
            model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(run_dir / backup_state["weights"])
            except Exception as e:
                raise InputError(f"{run_dir / backup_state['weights']}: cannot resume from it "
                                 f"({_message(e)})") from None
            log.info("resuming after epoch %d (%s stage) from %s", backup_state["epoch"],
                     backup_state["stage"], backup_state["weights"])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    log.info("model %s: %s parameters, %s trainable; pack %s (%d px, train %d, dev %d); %d steps "
             "+ %d validation steps per epoch", config.variant, f"{model.count_params():,}",
             f"{trainable:,}", config.pack, info["size"], info["train"], info["dev"], info["steps"],
             info["validation_steps"])
    return model


def _fit_stages(setup: _Setup, model: keras.Model, monitor: _RunMonitor, callbacks: list,
                done: int, verbose: int | str) -> str:
    from .data import make_dataset
    from .model import set_encoder_trainable

    config, info = setup.config, setup.info
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    # After a resume, a fresh shuffling stream instead of replaying the first epochs' order.
    seed = config.seed + 1_000_003 * done
    train_ds = make_dataset(config.pack, "train", config.batch_size, augment=config.augment, seed=seed,
                            shuffle=True, repeat=True)
    dev_ds = make_dataset(config.pack, "dev", config.batch_size)
    train_ds = _with_shard_policy(train_ds, setup.workers)
    dev_ds = _with_shard_policy(dev_ds, setup.workers)

    def fit(first: int, last: int) -> None:
        if setup.workers > 1:
            _symbolic_build_for_multi_worker(model, info["size"], config.batch_size)
        model.fit(train_ds, epochs=last, initial_epoch=first, steps_per_epoch=info["steps"],
                  validation_data=dev_ds, validation_steps=info["validation_steps"],
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles

    if done < config.epochs:
        monitor.stage = "train"
        fit(done, config.epochs)
    if config.fine_tune_epochs and done < setup.total_epochs:
        if monitor.stage != "fine-tune":
            from .model import encoder_layers

            if all(layer.trainable for layer in encoder_layers(model)):
                log.info("fine-tune stage: the encoder was already trainable; only the learning rate changes")
            with model.distribute_strategy.scope():
                set_encoder_trainable(model, True)
                _compile(model, config.fine_tune_lr, config)
            monitor.stage = "fine-tune"
            log.info("fine-tune stage: encoder unfrozen, Adam at %g for %d epochs", config.fine_tune_lr,
                     config.fine_tune_epochs)
        fit(max(done, config.epochs), setup.total_epochs)
    return "finished"


def _close_tensorboard(callbacks: list) -> None:
    """Close TensorBoard's writers, which it does in on_train_end, which a stop skips."""
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.TensorBoard):
            with contextlib.suppress(Exception):
                cb.on_train_end()


def _summary(state: str, run_dir: Path, folder: _RunFolder, total: int, seconds: float) -> dict:
    rows = []
    for r in folder.history_rows():
        rows.append({k: (r[k] if k == "stage" else (int(r[k]) if k == "epoch" else _to_float(r[k])))
                     for k in HISTORY_COLUMNS if k in r})
    scored = [r for r in rows if math.isfinite(r.get("val_loss", float("nan")))]
    best = min(scored, key=lambda r: r["val_loss"]) if scored else None
    return {
        "state": state, "run_dir": str(run_dir), "epochs_done": len(rows), "epochs": total,
        "best_epoch": best["epoch"] if best else None,
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_dice": best["val_dice"] if best else None,
        "last": rows[-1] if rows else None, "seconds": round(seconds, 2),
    }


def _to_float(s: str) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")
