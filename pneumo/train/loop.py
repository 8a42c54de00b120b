"""The training engine: one run folder per run, resumable, observable, stoppable.

:func:`train` validates everything first (:func:`pneumo.plan.plan_run`: pack, exclusion list,
weights, run folder), then fits a model from :mod:`pneumo.model.networks` on
:func:`pneumo.train.data.make_dataset` pipelines and keeps the run folder (docs/architecture.md,
"Run folder"; written through :mod:`pneumo.store.run`, every file replaced atomically) up to date
through Keras callbacks: status, progress (per batch, at most every ``PROGRESS_INTERVAL_S``),
history (one row per epoch), ``best.keras`` (lowest ``val_loss``), ``last.keras`` and its backup.

- Stopping: a ``STOP`` file, SIGTERM or Ctrl-C ends training after the current batch (no
  validation pass first), saves ``last.keras`` and a backup, state ``stopped``. ``resume=True``
  continues from the last finished epoch (weights and Adam state; ``history.csv`` is cut back
  to the backup), re-running an interrupted epoch from the saved mid-epoch weights, with a data
  order seeded from ``config.seed`` and the epoch (not a replay of the first epochs).
- Two stages: ``epochs`` as configured, then ``fine_tune_epochs`` with the encoder unfrozen
  and Adam at ``fine_tune_lr``; epoch numbers run on across both.
- Devices and strategies (several GPUs, ``TF_CONFIG`` workers; only the chief writes the run
  folder, which must be shared between machines, as must a STOP): :mod:`pneumo.train.distribute`.
- One writer: the chief holds :func:`pneumo.store.run.writer_lock` throughout; a second is refused at once.
- Divergence: a non-finite batch loss ends the run ``failed`` ("diverged at epoch E, step S")
  and no checkpoint is written from non-finite weights.
- The pack's fingerprint goes to ``pack.json``: resuming refuses a changed pack unless
  ``allow_changed_pack``; a pack that changes during training fails the run at the epoch's end.
- ``config.exclude``: the listed ids never enter a train or dev batch (test is not trained on);
  ``excluded.json`` records them and resuming refuses a list whose ids changed.

Randomness: :func:`train` takes the data and augmentation seed from ``config.seed`` and
touches no global random state. Weight initialisation uses Keras' global generator, which
only the process entry point seeds (``python -m pneumo train`` calls
``keras.utils.set_random_seed(config.seed)``); call it yourself for reproducible weights.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from pneumo.store import run as runs
from pneumo.store.run import RunFolder
from pneumo._procs import sigterm_sets
from pneumo._io import now_iso
from pneumo.train.distribute import cluster_role, make_strategy, symbolic_build_for_multi_worker, with_shard_policy
from pneumo.config import TrainConfig, config_diff, normalise_train_paths
from pneumo.plan import RunPlan, check_pack, init_config, plan_run
from pneumo.store.config_file import load_config, save_config
from pneumo.exclude import check_recorded
from pneumo.errors import InputError, PneumoError, user_message

__all__ = ["train", "PROGRESS_INTERVAL_S"]

log = logging.getLogger("pneumo.train.loop")

PROGRESS_INTERVAL_S = 0.5


class _StopRequested(Exception):
    """Raised from a batch callback: leaves ``fit`` at once (setting ``stop_training`` would
    still run a whole validation pass before Keras looks at it)."""


class _Diverged(PneumoError):
    """A non-finite loss: the run ends failed and no checkpoint is written from these weights."""


# =========================================================================== run folder
def _resolve_config(config: TrainConfig | None, run_dir: Path, resume: bool, chief: bool) -> TrainConfig:
    saved_path = RunFolder(run_dir).config  # (writer_lock refused a run_dir that is a file)
    if resume:
        if not saved_path.is_file():
            raise InputError(f"run folder {run_dir}: no {saved_path.name}, so there is nothing to resume")
        saved = load_config(TrainConfig, saved_path)
        if config is not None:
            config = normalise_train_paths(config)
            diff = config_diff(config, saved)
            if diff:
                raise InputError(f"run folder {run_dir}: resuming needs the run's own config, but "
                                 f"{', '.join(diff)} differ from its {saved_path.name} (leave them out)")
        return saved
    if config is None:
        raise InputError("no training config given")
    if chief:
        why = runs.holds_run(run_dir, own_pid=os.getpid())
        if why:
            raise InputError(f"run folder {run_dir} already holds a run ({why}); use --resume to "
                             f"continue it or choose another --run-dir")
    return normalise_train_paths(config)


# =========================================================================== callbacks
def _float(v: Any) -> float:
    try:
        return float(np.asarray(keras.ops.convert_to_numpy(v)))
    except Exception:
        return float("nan")


class _RunMonitor(keras.callbacks.Callback):
    """Per batch: stop requests and progress. Per epoch: history, checkpoints, backup, status."""

    def __init__(self, folder: runs.RunWriter, watch_dir: Path, plan: dict, stop_flag: threading.Event,
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
        self.pack_stat: tuple[int, float] | None = None  # (size, mtime) the run started with

    # ---- stopping
    def _check_stop(self) -> None:
        if self.stop_flag.is_set() or runs.stop_requested(self.watch_dir):
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
        raw = (logs or {}).get("loss")
        loss = _float(raw) if raw is not None else float("nan")
        if raw is not None and not math.isfinite(loss):
            # Checked before a stop request: a stop would save these weights over last.keras.
            raise _Diverged(f"training diverged at epoch {self.epoch}, step {step}: the loss is {loss} "
                            f"(try a lower learning rate); last.keras keeps the last good epoch")
        self._check_stop()
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
            raise _Diverged(f"training diverged at epoch {self.epoch}, step {self.plan['steps']}: the loss is "
                            f"{loss} (try a lower learning rate); last.keras keeps the last good epoch")
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


# =========================================================================== train
@dataclass
class _Setup:
    config: TrainConfig
    info: RunPlan  # its .exclusion: what train --exclude leaves out of train and dev
    chief: bool
    workers: int
    write_dir: Path
    total_epochs: int


def _compile(model: keras.Model, lr: float, config: TrainConfig, decay_steps: int | None = None) -> None:
    """Compile with Adam at ``lr``; with ``decay_steps`` and ``lr_schedule="cosine"``, lr decays to 0 over them."""
    from pneumo.model.losses import get_loss, get_metrics

    if decay_steps and config.lr_schedule == "cosine":
        # The schedule reads optimizer.iterations, which a resumed backup restores.
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=int(decay_steps))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=get_loss(config.loss),
                  metrics=get_metrics(), jit_compile=bool(config.xla))


def _frozen(config: TrainConfig) -> bool:
    return config.freeze_encoder if config.freeze_encoder is not None else config.encoder_weights is not None


def train(
    config: TrainConfig | None,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    verbose: int | str = "auto",
    allow_changed_pack: bool = False,
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
        allow_changed_pack: resume even though the pack differs from the fingerprint
            recorded in ``pack.json`` (size, modification time or ids).

    Returns:
        ``{"state": "finished"|"stopped", "run_dir", "epochs_done", "epochs", "best_epoch",
        "best_val_loss", "best_val_dice", "last": last history row or None, "seconds"}``.

    Raises:
        InputError: bad config, pack, weights or run folder; raised before anything is
            written to the run folder (a status.json that :mod:`pneumo.train.jobs` wrote for this
            process is set to ``failed`` with the message).
        Exception: anything raised while training, after setting the state ``failed``.
    """
    t_start = time.monotonic()
    started = now_iso()
    run_dir = Path(run_dir).expanduser().absolute()
    stop_flag = threading.Event()
    policy_before = keras.mixed_precision.global_policy()
    workers, chief = cluster_role()
    # Only the chief writes the run folder; a launcher (pneumo.train.jobs) hands its lock over.
    lock = runs.writer_lock(run_dir, handover_from=runs.handover_pid()) if chief else contextlib.nullcontext()
    try:
        with sigterm_sets(stop_flag), lock:
            return _train(config, run_dir, resume, progress, verbose, stop_flag, started, t_start,
                          allow_changed_pack, workers, chief)
    finally:
        keras.mixed_precision.set_global_policy(policy_before)


def _train(config: TrainConfig | None, run_dir: Path, resume: bool, progress: Callable[[dict], None] | None,
           verbose: int | str, stop_flag: threading.Event, started: str, t_start: float,
           allow_changed_pack: bool, workers: int, chief: bool) -> dict:
    try:
        config = _resolve_config(config, run_dir, resume, chief)
        info = plan_run(config)
        fingerprint = check_pack(run_dir, config.pack, allow_changed=allow_changed_pack)
        exclusion = info.exclusion
        if exclusion is not None and resume:
            check_recorded(run_dir, exclusion)
        total = config.epochs + config.fine_tune_epochs
        backup_state = runs.read_backup(run_dir, total) if resume else None
        if config.validation_steps is not None and config.validation_steps > info.dev_batches:
            log.warning("validation_steps %d is more than the dev split holds (%d samples = %d batches "
                        "of %d); using %d", config.validation_steps, info.dev, info.dev_batches,
                        config.batch_size, info.validation_steps)
        setup = _Setup(config, info, chief, workers, run_dir if chief else Path(), total)
        # Built before anything is written: a weights file that does not fit is bad input too.
        model = _build(setup, run_dir, backup_state)
    except BaseException as e:
        runs.fail_prepared_status(run_dir, user_message(e))
        raise

    setup.write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="pneumo-worker-"))
    folder = runs.RunWriter(setup.write_dir, started, total, resumed=resume)
    if chief:
        save_config(config, RunFolder(run_dir).config)
        runs.write_pack_record(run_dir, fingerprint)
        if exclusion is not None:
            runs.write_exclusion_record(run_dir, exclusion.record())
        if resume:
            runs.clear_stop(run_dir)  # left from the stop being resumed from
    done = backup_state["epoch"] if backup_state else 0
    folder.truncate_history(done)
    folder.set_status(epoch=done)

    best = float("inf")
    if backup_state is not None and backup_state.get("best_val_loss") is not None:
        best = float(backup_state["best_val_loss"])
    plan = {"steps": info.steps, "validation_steps": info.validation_steps,
            "batch_size": config.batch_size, "epochs": total, "pack": config.pack}
    monitor = _RunMonitor(folder, run_dir, plan, stop_flag, progress, best)
    monitor.pack_stat = (fingerprint["size"], fingerprint["mtime"])
    monitor.epochs_done = done
    if backup_state is not None:
        monitor.stage = backup_state["stage"]
    callbacks: list = [monitor]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(folder.files.tensorboard), write_graph=False,
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
            # interrupted epoch again from here, so nothing is lost. Never non-finite ones.
            if not _weights_finite(model):
                raise _Diverged(f"training diverged in epoch {monitor.epochs_done + 1} before the stop: "
                                f"non-finite weights were not saved; last.keras keeps the last good epoch")
            folder.save_checkpoint(model, "last")
            folder.save_backup(monitor.epochs_done, monitor.stage, monitor.best)
            _close_tensorboard(callbacks)
            if chief:
                runs.clear_stop(run_dir)
            log.info("stopped after %d finished epoch(s); continue with --resume", monitor.epochs_done)
        except BaseException as e:
            folder.set_status(state="failed", ended=now_iso(), error=f"stopping failed: {user_message(e)}")
            raise
    except BaseException as e:
        folder.set_status(state="failed", ended=now_iso(), error=user_message(e))
        raise
    folder.set_status(state=state, ended=now_iso(), epoch=monitor.epochs_done)
    summary = runs.summary(state, folder.root, total, time.monotonic() - t_start)
    summary["run_dir"] = str(run_dir)
    if not chief:
        shutil.rmtree(setup.write_dir, ignore_errors=True)
    return summary


def _build(setup: _Setup, run_dir: Path, backup_state: dict | None) -> keras.Model:
    """Strategy, then the compiled model (restored from the backup when resuming)."""
    from pneumo.model.networks import build_model, set_encoder_trainable, warm_start

    config, info = setup.config, setup.info
    strategy = make_strategy(setup.workers)
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
            # A warm start overwrites every weight: no encoder weights to load (or download).
            model = build_model(config.variant, input_size=info.size,
                                encoder_weights=None if config.init_from else config.encoder_weights,
                                freeze_encoder=_frozen(config), width=config.width)
            if config.init_from:
                init_config(config)
                warm_start(model, RunFolder(config.init_from).checkpoint("best"), info.size)
                log.info("warm start: weights from %s", config.init_from)
            _compile(model, config.lr, config, config.epochs * info.steps)
        else:
            # The backup holds every weight: skip loading (or downloading) the encoder's.
            model = build_model(config.variant, input_size=info.size, encoder_weights=None,
                                freeze_encoder=_frozen(config), width=config.width)
            if backup_state["stage"] == "fine-tune":
                set_encoder_trainable(model, True)
                _compile(model, config.fine_tune_lr, config)
            else:
                _compile(model, config.lr, config, config.epochs * info.steps)
            model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(run_dir / backup_state["weights"])
            except Exception as e:
                raise InputError(f"{run_dir / backup_state['weights']}: cannot resume from it "
                                 f"({user_message(e)})") from None
            log.info("resuming after epoch %d (%s stage) from %s", backup_state["epoch"],
                     backup_state["stage"], backup_state["weights"])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    if setup.info.exclusion is not None:
        log.info("%s", setup.info.exclusion.describe())
    log.info("model %s: %s parameters, %s trainable; pack %s (%d px, train %d, dev %d); %d steps "
             "+ %d validation steps per epoch", config.variant, f"{model.count_params():,}",
             f"{trainable:,}", config.pack, info.size, info.train, info.dev, info.steps,
             info.validation_steps)
    return model


def _fit_stages(setup: _Setup, model: keras.Model, monitor: _RunMonitor, callbacks: list,
                done: int, verbose: int | str) -> str:
    from pneumo.train.data import make_dataset
    from pneumo.model.networks import set_encoder_trainable

    config, info = setup.config, setup.info
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    # After a resume, a fresh shuffling stream instead of replaying the first epochs' order.
    seed = config.seed + 1_000_003 * done
    dropped = setup.info.exclusion.indices if setup.info.exclusion is not None else {}
    train_ds = make_dataset(config.pack, "train", config.batch_size, augment=config.augment, seed=seed,
                            shuffle=True, repeat=True, positive_fraction=config.positive_fraction,
                            exclude_indices=dropped.get("train"))
    dev_ds = make_dataset(config.pack, "dev", config.batch_size, exclude_indices=dropped.get("dev"))
    train_ds = with_shard_policy(train_ds, setup.workers)
    dev_ds = with_shard_policy(dev_ds, setup.workers)

    def fit(first: int, last: int) -> None:
        if setup.workers > 1:
            symbolic_build_for_multi_worker(model, info.size, config.batch_size)
        model.fit(train_ds, epochs=last, initial_epoch=first, steps_per_epoch=info.steps,
                  validation_data=dev_ds, validation_steps=info.validation_steps,
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles

    if done < config.epochs:
        monitor.stage = "train"
        fit(done, config.epochs)
    if config.fine_tune_epochs and done < setup.total_epochs:
        if monitor.stage != "fine-tune":
            from pneumo.model.networks import encoder_layers

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


def _weights_finite(model: keras.Model) -> bool:
    """Whether every weight of ``model`` is finite (checked before a checkpoint at a stop)."""
    return all(bool(np.isfinite(keras.ops.convert_to_numpy(w)).all()) for w in model.weights)


def _close_tensorboard(callbacks: list) -> None:
    """Close TensorBoard's writers, which it does in on_train_end, which a stop skips."""
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.TensorBoard):
            with contextlib.suppress(Exception):
                cb.on_train_end()
