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
- Devices, clusters and strategies (several GPUs, ``TF_CONFIG`` or Slurm workers; only the chief
  writes the run folder, which must be shared between machines, as must a STOP):
  :mod:`pneumo.train.distribute`. Each worker reads its shard of the pack, each replica its part
  of every batch (balanced when ``positive_fraction`` is set); validation is exact over the dev
  images whatever the split (:mod:`pneumo.train.validate`). The resolved setup (strategy, workers,
  replicas, batches, precision, devices) goes to ``status.json`` (``setup``); workers of other
  pneumo versions or packs are refused at start, and a worker that dies fails the run, named.
- The model, its precision and compilation: :mod:`pneumo.train.build`; the callback that keeps
  the run folder: :mod:`pneumo.train.monitor`.
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
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from pneumo import __version__
from pneumo._io import now_iso
from pneumo._procs import sigterm_sets
from pneumo.config import TrainConfig, config_diff, normalise_train_paths
from pneumo.errors import InputError, user_message
from pneumo.exclude import check_recorded
from pneumo.plan import RunPlan, check_pack, plan_run
from pneumo.store import run as runs
from pneumo.store.config_file import load_config, save_config
from pneumo.store.run import RunFolder
from pneumo.train.build import build, compile_model, set_precision
from pneumo.train.cluster import Cluster, RunSetup
from pneumo.train.distribute import (agree_on_start, distribute_input, make_strategy, per_replica_batch,
                                     replica_devices, replica_state_sync, resolve_cluster, strategy_name,
                                     symbolic_build_for_multi_worker, worker_failure)
from pneumo.train.monitor import PROGRESS_INTERVAL_S, Diverged, RunMonitor, StopRequested, kept_checkpoint
from pneumo.train.validate import Validation

__all__ = ["train", "PROGRESS_INTERVAL_S"]

log = logging.getLogger("pneumo.train.loop")


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


# =========================================================================== train
@dataclass
class _Setup:
    config: TrainConfig
    info: RunPlan  # its .exclusion: what train --exclude leaves out of train and dev
    cluster: Cluster
    strategy: tf.distribute.Strategy
    record: RunSetup  # what status.json records under "setup"
    total_epochs: int
    done: int  # epochs finished before this start (a resumed run)
    train_data: object = None  # the distributed train input
    validation: Validation | None = None


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
        InputError: bad config, pack, weights, run folder or cluster (a worker with another
            pneumo version or pack, a batch that does not split over the replicas); raised
            before anything is written to the run folder (a status.json that
            :mod:`pneumo.train.jobs` wrote for this process is set to ``failed`` with the message).
        Exception: anything raised while training, after setting the state ``failed`` (naming
            the worker when another worker of the cluster died).
    """
    t_start = time.monotonic()
    started = now_iso()
    run_dir = Path(run_dir).expanduser().absolute()
    stop_flag = threading.Event()
    policy_before = keras.mixed_precision.global_policy()
    cluster = resolve_cluster()
    # Only the chief writes the run folder; a launcher (pneumo.train.jobs) hands its lock over.
    lock = runs.writer_lock(run_dir, handover_from=runs.handover_pid()) if cluster.chief else contextlib.nullcontext()
    try:
        with sigterm_sets(stop_flag), lock:
            return _train(config, run_dir, resume, progress, verbose, stop_flag, started, t_start,
                          allow_changed_pack, cluster)
    finally:
        keras.mixed_precision.set_global_policy(policy_before)


def _prepare(config: TrainConfig | None, run_dir: Path, resume: bool, allow_changed_pack: bool,
             cluster: Cluster) -> tuple[_Setup, keras.Model, dict, dict | None]:
    """Everything that can fail on bad input, before anything is written: ``(setup, model,
    the pack's fingerprint, the backup state)``."""
    # First, before any other TensorFlow op (multi-worker needs it): every worker joins the
    # cluster, so one refusing its input can tell the others instead of leaving them waiting.
    strategy = make_strategy(cluster)
    try:
        config, info, fingerprint, backup_state = _check_input(config, run_dir, resume, allow_changed_pack, cluster)
    except InputError:
        agree_on_start(strategy, cluster, __version__, None)
        raise
    agree_on_start(strategy, cluster, __version__, fingerprint)
    total = config.epochs + config.fine_tune_epochs
    replicas = strategy.num_replicas_in_sync
    policy = set_precision(config.mixed_precision)
    record = RunSetup(
        strategy=strategy_name(strategy), cluster=cluster.source, workers=cluster.size, replicas=replicas,
        global_batch=config.batch_size, per_replica_batch=per_replica_batch(config.batch_size, replicas),
        precision=config.mixed_precision, policy=policy, devices=tuple(replica_devices(strategy)),
        addresses=tuple(address for _, _, address in cluster.tasks))
    done = backup_state["epoch"] if backup_state else 0
    setup = _Setup(config, info, cluster, strategy, record, total, done)
    # Built before anything is written: a weights file that does not fit is bad input too.
    model = build(strategy, config, info, run_dir, backup_state)
    return setup, model, fingerprint, backup_state


def _check_input(config: TrainConfig | None, run_dir: Path, resume: bool, allow_changed_pack: bool,
                 cluster: Cluster) -> tuple[TrainConfig, RunPlan, dict, dict | None]:
    """The config, its plan, the pack's fingerprint and the backup state (None when not resuming)."""
    config = _resolve_config(config, run_dir, resume, cluster.chief)
    info = plan_run(config)
    fingerprint = check_pack(run_dir, config.pack, allow_changed=allow_changed_pack)
    if info.exclusion is not None and resume:
        check_recorded(run_dir, info.exclusion)
    backup_state = runs.read_backup(run_dir, config.epochs + config.fine_tune_epochs) if resume else None
    if config.validation_steps is not None and config.validation_steps > info.dev_batches:
        log.warning("validation_steps %d is more than the dev split holds (%d samples = %d batches "
                    "of %d); using %d", config.validation_steps, info.dev, info.dev_batches,
                    config.batch_size, info.validation_steps)
    return config, info, fingerprint, backup_state


def _make_data(setup: _Setup, model: keras.Model) -> None:
    """The distributed train input and the validation (each worker its shard, each replica its
    part of a batch). Built once the run folder is written, like a failure while training: an
    error here (a shard without positives: too many workers) marks the run failed."""
    from pneumo.train.data import make_dataset

    config, info = setup.config, setup.info
    dropped = info.exclusion.indices if info.exclusion is not None else {}
    # After a resume, a fresh shuffling stream instead of replaying the first epochs' order.
    seed = config.seed + 1_000_003 * setup.done

    def train_part(batch: int, shard: tuple[int, int]):
        return make_dataset(config.pack, "train", batch, augment=config.augment, seed=seed, shuffle=True,
                            repeat=True, positive_fraction=config.positive_fraction,
                            exclude_indices=dropped.get("train"), shard=shard, in_memory=config.in_memory)

    images = min(info.validation_steps * config.batch_size, info.dev)
    dev_left_out = _dev_left_out(info, dropped.get("dev"), images)

    def dev_part(batch: int, shard: tuple[int, int], batches: int):
        return make_dataset(config.pack, "dev", batch, exclude_indices=dev_left_out, shard=shard,
                            pad_to_batches=batches, weights=True, in_memory=config.in_memory)

    setup.train_data = distribute_input(setup.strategy, config.batch_size, train_part)
    setup.validation = Validation(setup.strategy, model, config.loss, images, config.batch_size,
                                  setup.cluster.size, dev_part)
    if config.positive_fraction is not None:
        per = setup.record.per_replica_batch
        log.info("balanced batches: %d of %d images positive in every replica's batch of %d",
                 round(config.positive_fraction * per), per, per)


def _dev_left_out(info: RunPlan, excluded: np.ndarray | None, images: int) -> np.ndarray | None:
    """Dev positions left out of validation: the exclusion list's, then every kept one after the
    first ``images`` (``validation_steps`` batches, as Keras took them)."""
    excluded = np.asarray([] if excluded is None else excluded, np.int64)
    total = info.dev + len(excluded)
    kept = np.setdiff1d(np.arange(total, dtype=np.int64), excluded)
    left_out = np.union1d(excluded, kept[images:])
    return left_out if left_out.size else None


def _train(config: TrainConfig | None, run_dir: Path, resume: bool, progress: Callable[[dict], None] | None,
           verbose: int | str, stop_flag: threading.Event, started: str, t_start: float,
           allow_changed_pack: bool, cluster: Cluster) -> dict:
    chief = cluster.chief
    try:
        setup, model, fingerprint, backup_state = _prepare(config, run_dir, resume, allow_changed_pack, cluster)
    except BaseException as e:
        runs.fail_prepared_status(run_dir, user_message(e))
        raise
    config = setup.config
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="pneumo-worker-"))
    try:
        folder = runs.RunWriter(write_dir, started, setup.total_epochs, resumed=resume)
        if chief:
            save_config(config, RunFolder(run_dir).config)
            runs.write_pack_record(run_dir, fingerprint)
            if setup.info.exclusion is not None:
                runs.write_exclusion_record(run_dir, setup.info.exclusion.record())
            if resume:
                runs.clear_stop(run_dir)  # left from the stop being resumed from
        folder.truncate_history(setup.done)
        folder.set_status(epoch=setup.done, setup=setup.record.record())
        state = _run(setup, model, folder, run_dir, fingerprint, backup_state, progress, verbose, stop_flag)
        summary = runs.summary(state, folder.root, setup.total_epochs, time.monotonic() - t_start)
    finally:
        if not chief:  # also after a failure: no worker temp folder is left behind
            shutil.rmtree(write_dir, ignore_errors=True)
    summary["run_dir"] = str(run_dir)
    return summary


def _run(setup: _Setup, model: keras.Model, folder: runs.RunWriter, run_dir: Path, fingerprint: dict,
         backup_state: dict | None, progress: Callable[[dict], None] | None, verbose: int | str,
         stop_flag: threading.Event) -> str:
    """Fit both stages with the monitor; the final state ("finished" or "stopped"), written."""
    config, info = setup.config, setup.info
    best = float("inf")
    if backup_state is not None and backup_state.get("best_val_loss") is not None:
        best = float(backup_state["best_val_loss"])
    plan = {"steps": info.steps, "validation_steps": info.validation_steps,
            "batch_size": config.batch_size, "epochs": setup.total_epochs, "pack": config.pack}
    settle = replica_state_sync(model, setup.strategy)
    monitor = RunMonitor(folder, run_dir, plan, stop_flag, progress, best, settle=settle)
    monitor.pack_stat = (fingerprint["size"], fingerprint["mtime"])
    monitor.epochs_done = setup.done
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
        _make_data(setup, model)
        monitor.validate = setup.validation.run
        state = _fit_stages(setup, model, monitor, callbacks, verbose)
    except (StopRequested, KeyboardInterrupt):
        state = "stopped"
        try:
            # Mid-epoch weights, filed under the last finished epoch: resuming trains the
            # interrupted epoch again from here, so nothing is lost. Never non-finite ones.
            if settle is not None and setup.cluster.size == 1:
                settle()  # (workers may not all have stopped: no collective op then)
            if not _weights_finite(model):
                raise Diverged(f"training diverged in epoch {monitor.epochs_done + 1} before the stop: "
                               f"non-finite weights were not saved; {kept_checkpoint(folder)}")
            folder.save_checkpoint(model, "last")
            folder.save_backup(monitor.epochs_done, monitor.stage, monitor.best)
            _close_tensorboard(callbacks)
            if setup.cluster.chief:
                runs.clear_stop(run_dir)
            log.info("stopped after %d finished epoch(s); continue with --resume", monitor.epochs_done)
        except BaseException as e:
            folder.set_status(state="failed", ended=now_iso(), error=f"stopping failed: {user_message(e)}")
            raise
    except BaseException as e:
        named = worker_failure(e, setup.cluster)
        if named:
            log.error("%s", named)
        folder.set_status(state="failed", ended=now_iso(), error=named or user_message(e))
        raise
    folder.set_status(state=state, ended=now_iso(), epoch=monitor.epochs_done)
    return state


def _fit_stages(setup: _Setup, model: keras.Model, monitor: RunMonitor, callbacks: list,
                verbose: int | str) -> str:
    from pneumo.model.networks import encoder_layers, set_encoder_trainable

    config, info, done = setup.config, setup.info, setup.done
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    def fit(first: int, last: int) -> None:
        if setup.cluster.size > 1:
            symbolic_build_for_multi_worker(model, info.size, setup.record.per_replica_batch)
        model.fit(setup.train_data, epochs=last, initial_epoch=first, steps_per_epoch=info.steps,
                  callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles

    if done < config.epochs:
        monitor.stage = "train"
        fit(done, config.epochs)
    if config.fine_tune_epochs and done < setup.total_epochs:
        if monitor.stage != "fine-tune":
            if all(layer.trainable for layer in encoder_layers(model)):
                log.info("fine-tune stage: the encoder was already trainable; only the learning rate changes")
            with model.distribute_strategy.scope():
                set_encoder_trainable(model, True)
                compile_model(model, config.fine_tune_lr, config)
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
