"""Devices and distribution strategies for training, with the Keras 3 multi-worker workarounds.

The one module of pneumo that touches private Keras names (``keras.src`` and private model
methods): Keras 3 cannot train under ``MultiWorkerMirroredStrategy`` without two patches,
applied only when ``TF_CONFIG`` names several workers. :func:`check_keras_internals` says
loudly, naming the installed Keras version, when an upgrade removed what they patch
(tests/test_distribute.py runs it on every test run).
"""
from __future__ import annotations

import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from pneumo.errors import InputError

__all__ = ["tf_config", "cluster_role", "make_strategy", "symbolic_build_for_multi_worker", "with_shard_policy",
           "check_keras_internals", "KerasInternalsChanged"]

# A child of pneumo.train.loop's logger: the trainer's log level and handlers apply.
log = logging.getLogger("pneumo.train.loop.distribute")


class KerasInternalsChanged(RuntimeError):
    """The private Keras names the multi-worker workarounds patch are gone or changed."""


def tf_config() -> dict:
    """``$TF_CONFIG`` as a dict ({} when unset); :class:`InputError` when it is not JSON."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def cluster_role() -> tuple[int, bool]:
    """``(number of workers, is chief)`` from ``TF_CONFIG`` (1 and True without it)."""
    config = tf_config()
    cluster = config.get("cluster") or {}
    workers = len(cluster.get("worker") or []) + len(cluster.get("chief") or [])
    if workers <= 1:
        return max(workers, 1), True
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not cluster.get("chief"))
    return workers, chief


def check_keras_internals() -> None:
    """Raise :class:`KerasInternalsChanged` (naming the Keras version) when the private Keras
    names the multi-worker workarounds rely on are missing."""
    missing = []
    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError:
        missing.append("module keras.src.backend.tensorflow.trainer")
    else:
        for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker"):
            if not callable(getattr(tf_trainer, name, None)):
                missing.append(f"keras.src.backend.tensorflow.trainer.{name}")
    for name in ("_symbolic_build", "_maybe_symbolic_build"):
        if not callable(getattr(keras.Model, name, None)):
            missing.append(f"keras.Model.{name}")
    if missing:
        raise KerasInternalsChanged(
            f"Keras {keras.__version__} no longer has {', '.join(missing)}, which pneumo.train.distribute "
            f"patches for multi-worker training (written for Keras 3.5-3.15); update the workarounds "
            f"or pin an older Keras")


_KERAS_PATCHED = False


def _patch_keras_for_multi_worker() -> None:
    """Work around Keras 3 + MultiWorkerMirroredStrategy (keras-team/keras#20585, tensorflow#72388).

    Keras reduces each scalar log with ``strategy.reduce("MEAN", v, axis=0)``, which
    ``CollectiveAllReduceStrategy`` rejects for 0-d values; reduce over replicas only.
    Process-wide, once; only multi-worker processes call it.
    """
    global _KERAS_PATCHED
    if _KERAS_PATCHED:
        return
    check_keras_internals()
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    _KERAS_PATCHED = True


def make_strategy(workers: int) -> tf.distribute.Strategy:
    """Multi-worker (``workers > 1``), mirrored over several local GPUs, or the default."""
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


def with_shard_policy(ds: tf.data.Dataset, workers: int) -> tf.data.Dataset:
    """``ds`` sharded by element across ``workers`` (unchanged for one worker)."""
    if workers <= 1:
        return ds
    # The pipeline reads one HDF5 file: shard by element (AUTO would try files and warn).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def symbolic_build_for_multi_worker(model: keras.Model, size: int, batch: int) -> None:
    """Build metrics/optimizer from shapes so Keras skips its own build, which fails under
    MultiWorkerMirroredStrategy (it reduces a whole data batch across workers).

    ``model`` takes ``(batch, size, size, 1)`` uint8 images and float32 masks.
    """
    check_keras_internals()
    x = np.zeros((batch, size, size, 1), np.uint8)
    y = np.zeros((batch, size, size, 1), np.float32)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=(x, y))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
