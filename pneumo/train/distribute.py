"""Devices, clusters and distribution strategies for training, with the Keras 3 multi-worker workarounds.

- :func:`resolve_cluster`: ``TF_CONFIG``, else a Slurm job step of several tasks (TensorFlow's
  ``SlurmClusterResolver``), else one process (:mod:`pneumo.train.cluster`);
- :func:`make_strategy`: ``MultiWorkerMirroredStrategy`` for several workers, ``MirroredStrategy``
  for several local GPUs (or several logical CPU devices, as tests configure), else the default;
- :func:`distribute_input`: one pipeline per worker through ``distribute_datasets_from_function``,
  each batch one replica's part; :func:`eval_steps`: equal, padded evaluation steps everywhere;
- :func:`agree_on_start`: workers of other pneumo versions or packs are refused at start;
  :func:`worker_failure`: a dead worker named in the run's error.

The one module of pneumo that touches private Keras names (``keras.src`` and private model
methods): Keras 3 cannot train under ``MultiWorkerMirroredStrategy`` without two patches,
applied only when several workers train. :func:`check_keras_internals` says loudly, naming the
installed Keras version, when an upgrade removed what they patch (tests/test_distribute.py runs
it on every test run).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from pneumo.errors import InputError
from pneumo.train.cluster import SINGLE, Cluster, cluster_from_tf_config, slurm_task_count, tf_config

__all__ = ["tf_config", "cluster_role", "resolve_cluster", "slurm_cluster", "make_strategy", "replica_devices",
           "strategy_name", "replica_state_sync", "distribute_input", "per_replica_batch", "eval_steps",
           "agree_on_start", "worker_failure", "symbolic_build_for_multi_worker", "check_keras_internals",
           "KerasInternalsChanged", "SLURM_PORT_ENV", "SLURM_PORT_DEFAULT"]

# A child of pneumo.train.loop's logger: the trainer's log level and handlers apply.
log = logging.getLogger("pneumo.train.loop.distribute")

SLURM_PORT_ENV = "PNEUMO_SLURM_PORT"  # the first port of a node's tasks (the next task: +1)
SLURM_PORT_DEFAULT = 8888  # SlurmClusterResolver's own default


class KerasInternalsChanged(RuntimeError):
    """The private Keras names the multi-worker workarounds patch are gone or changed."""


# =========================================================================== the cluster
def resolve_cluster() -> Cluster:
    """This process's :class:`~pneumo.train.cluster.Cluster`: ``TF_CONFIG`` when set, else a Slurm
    step of several tasks (:func:`slurm_cluster`), else one process. :class:`InputError` naming
    the variable when it cannot be read."""
    config = tf_config()
    if config:
        return cluster_from_tf_config(config)
    if slurm_task_count() > 1:
        return slurm_cluster()
    return SINGLE


def cluster_role() -> tuple[int, bool]:
    """``(number of workers, is chief)`` (1 and True for one process)."""
    cluster = resolve_cluster()
    return cluster.size, cluster.chief


def slurm_cluster() -> Cluster:
    """The cluster of this Slurm job step, one worker per task, through ``SlurmClusterResolver``.

    Reads ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_NODELIST`` and
    ``SLURM_STEP_TASKS_PER_NODE``; ports from ``$PNEUMO_SLURM_PORT`` (default 8888, the next
    task on a node +1). GPUs are left as Slurm made them visible (the resolver's own GPU
    allocation is off: it would rewrite ``CUDA_VISIBLE_DEVICES``, and it fails on nodes without
    ``nvidia-smi``); the strategy uses the GPUs this task sees.
    """
    raw = os.environ.get(SLURM_PORT_ENV, "").strip()
    if raw and not raw.isdigit():
        raise InputError(f"{SLURM_PORT_ENV}={raw!r}: expected a port number")
    port = int(raw) if raw else SLURM_PORT_DEFAULT
    try:
        # gpus_per_node/per_task only satisfy the resolver's own GPU allocation, which is off: one
        # "GPU" per task, as many as the step has tasks, always fits.
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port, gpus_per_node=slurm_task_count(), gpus_per_task=1, auto_set_gpu=False)
        spec = resolver.cluster_spec().as_dict()
        job, index = resolver.get_task_info()
    except (RuntimeError, ValueError, KeyError) as e:
        raise InputError(f"Slurm variables (SLURM_PROCID, SLURM_STEP_*): cannot resolve the cluster ({e})") from None
    workers = spec.get("worker") or []
    if job != "worker" or index is None or index >= len(workers):
        raise InputError(f"Slurm variables: task {os.environ.get('SLURM_PROCID')!r} is not one of the step's "
                         f"{len(workers)} tasks")
    tasks_list = tuple(("worker", i, str(a)) for i, a in enumerate(workers))
    return Cluster("Slurm", tasks_list, int(index), resolver=_spec_resolver(spec, "worker", int(index)))


def _spec_resolver(spec: dict, job: str, index: int) -> tf.distribute.cluster_resolver.ClusterResolver:
    """A resolver of ``spec`` whose accelerators are the GPUs this process sees (counted when the
    strategy asks, which is after Slurm set the visible devices)."""

    class _Resolver(tf.distribute.cluster_resolver.SimpleClusterResolver):
        def num_accelerators(self, task_type=None, task_id=None, config_proto=None):
            return {"GPU": len(tf.config.list_physical_devices("GPU"))}

    return _Resolver(tf.train.ClusterSpec(spec), task_type=job, task_id=index, rpc_layer="grpc")


# =========================================================================== the strategy
def make_strategy(cluster: Cluster) -> tf.distribute.Strategy:
    """Multi-worker for a cluster of several, mirrored over several local GPUs (or logical CPU
    devices), or the default strategy. Must come before any other TensorFlow op of the process."""
    if cluster.size > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster.resolver)
        _patch_keras_for_multi_worker()
    else:
        devices = _local_devices()
        strategy = tf.distribute.MirroredStrategy(devices) if len(devices) > 1 else tf.distribute.get_strategy()
    log.info("devices: %s; %s with %d replica(s)%s", ", ".join(replica_devices(strategy)) or "CPU",
             strategy_name(strategy), strategy.num_replicas_in_sync,
             f" over {cluster.size} workers ({cluster.source}), this is {cluster.label(cluster.me)}"
             if cluster.size > 1 else "")
    return strategy


def _local_devices() -> list[str]:
    """Several GPUs, else several logical CPU devices (only ever configured on purpose), else none."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return [d.name for d in gpus]
    if not gpus:
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) > 1:
            return [d.name for d in cpus]
    return []


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The strategy's class name, "default" for TensorFlow's default (one device) strategy."""
    name = type(strategy).__name__
    if name.startswith("_Default"):
        return "default"
    return "MultiWorkerMirroredStrategy" if name == "CollectiveAllReduceStrategy" else name  # (an alias)


def replica_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """This process's replica devices, short (``GPU:0 (NVIDIA H200)``, ``CPU:0``)."""
    out = []
    # The default strategy has no device list: TensorFlow places ops on the first GPU, else the CPU.
    default = strategy_name(strategy) == "default"
    devices = (["/device:GPU:0" if tf.config.list_physical_devices("GPU") else "/device:CPU:0"] if default
               else strategy.extended.worker_devices)
    for device in devices:
        spec = tf.DeviceSpec.from_string(device)
        kind = (spec.device_type or "CPU").upper()
        name = f"{kind}:{spec.device_index or 0}"
        if kind == "GPU":
            gpus = tf.config.list_physical_devices("GPU")
            index = spec.device_index or 0
            if index < len(gpus):
                model = tf.config.experimental.get_device_details(gpus[index]).get("device_name")
                name += f" ({model})" if model else ""
        out.append(name)
    return out


# =========================================================================== input
def distribute_input(strategy: tf.distribute.Strategy, global_batch: int,
                     make: Callable[[int, tuple[int, int]], tf.data.Dataset]):
    """``make(per_replica_batch, (pipeline index, pipelines))`` once per worker, through
    ``distribute_datasets_from_function``: each yielded batch is one replica's part of a global
    batch (consecutive batches go to the worker's replicas in turn), and each worker reads its
    shard only. :class:`InputError` when ``global_batch`` does not split evenly."""
    per_replica_batch(global_batch, strategy.num_replicas_in_sync)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return make(ctx.get_per_replica_batch_size(global_batch), (ctx.input_pipeline_id, ctx.num_input_pipelines))

    return strategy.distribute_datasets_from_function(dataset_fn)


def per_replica_batch(global_batch: int, replicas: int) -> int:
    """``global_batch / replicas``; :class:`InputError` when it does not split evenly."""
    if global_batch % replicas:
        raise InputError(f"batch_size {global_batch} does not split evenly over {replicas} replicas: "
                         f"give a multiple of {replicas}")
    return global_batch // replicas


def eval_steps(largest_shard: int, global_batch: int, replicas: int, pipelines: int) -> tuple[int, int]:
    """``(steps, batches per pipeline)`` to evaluate every image once when the largest of the
    ``pipelines`` shards holds ``largest_shard`` images: every replica runs the same number of
    steps (collective ops need it), so each pipeline pads to ``batches`` of the per-replica batch."""
    per_replica, local = global_batch // replicas, max(replicas // pipelines, 1)
    steps = max(math.ceil(largest_shard / (per_replica * local)), 1)
    return steps, steps * local


# =========================================================================== replica state
def replica_state_sync(model: keras.Model, strategy: tf.distribute.Strategy) -> Callable[[], None] | None:
    """A function that averages the BatchNorm moving statistics of ``model`` over all replicas
    and workers, or None for one replica (or no BatchNorm).

    Keras creates BatchNorm's moving mean and variance with no aggregation, so under a mirrored
    strategy each replica keeps statistics of its own batches only, validates with them, and
    ``model.save`` writes the first replica's. Averaged at each epoch end (a mean of
    exponential moving averages is the moving average of the mean), the saved model is the one
    every replica validated, and its statistics come from all the data.
    """
    if strategy.num_replicas_in_sync <= 1:
        return None
    state = [v for layer in _layers(model) if isinstance(layer, keras.layers.BatchNormalization)
             for v in (layer.moving_mean, layer.moving_variance)]
    if not state:
        return None

    sizes = [int(np.prod(v.shape)) for v in state]

    @tf.function
    def sync() -> None:
        def local() -> tf.Tensor:  # this replica's own copies, as one vector: one all-reduce
            return tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in state], axis=0)

        means = tf.split(strategy.reduce("MEAN", strategy.run(local), axis=None), sizes)
        for variable, mean in zip(state, means):
            variable.value.assign(tf.cast(tf.reshape(mean, variable.shape), variable.dtype))  # every copy

    return sync


def _layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    out = []
    for inner in getattr(layer, "layers", []):
        out += [inner, *_layers(inner)]
    return out


# =========================================================================== start and failure
_TEXT = 32  # bytes of the pneumo version a worker sends
_DIGEST = 16  # bytes of the pack digest


def agree_on_start(strategy: tf.distribute.Strategy, cluster: Cluster, version: str, pack: dict | None) -> None:
    """Refuse a cluster whose workers run other pneumo versions, read other packs, or refused their input.

    Every worker sends its version and a digest of its pack (size and image ids: copies of one
    pack on several machines agree, their modification times need not), or ``pack=None`` when it
    refused its own input (it then raises its own error after this call), through one
    all-reduce; each then raises the same :class:`InputError` naming the first worker that
    differs from the chief. No-op for one process.
    """
    if cluster.size <= 1:
        return
    digest = b"" if pack is None else hashlib.sha256(f"{pack['size']}:{pack['ids_sha256']}".encode()).digest()
    text = version.encode("utf-8")[:_TEXT].ljust(_TEXT, b"\0")
    row = np.frombuffer(text + digest[:_DIGEST].ljust(_DIGEST, b"\0"), np.uint8).astype(np.float32)
    row = tf.constant(np.concatenate([[cluster.me, pack is not None], row]).astype(np.float32))
    table = _gather_rows(strategy, row).numpy()
    if pack is None:
        return
    rows = {int(r[0]): (bool(r[1]), r[2:]) for r in table}
    for position in sorted(rows):
        ok, values = rows[position]
        who, chief = cluster.label(position), cluster.label(0)
        if not ok:
            raise InputError(f"{who} refused its input (its output says why): the run does not start")
        theirs, ours = _text(values[:_TEXT]), _text(rows[0][1][:_TEXT])
        if theirs != ours:
            raise InputError(f"{who} runs pneumo {theirs}, {chief} pneumo {ours}: every worker needs the same version")
        if not np.array_equal(values[_TEXT:], rows[0][1][_TEXT:]):
            raise InputError(f"{who} reads another pack than {chief} (its size or image ids differ; here: "
                             f"{pack['path']}): every worker must train on the same pack")


def _text(values: np.ndarray) -> str:
    return bytes(values.astype(np.uint8)).rstrip(b"\0").decode("utf-8", "replace")


def _gather_rows(strategy: tf.distribute.Strategy, row: tf.Tensor) -> tf.Tensor:
    """Every replica's ``row`` as ``(replicas, D)``: a sum of one-hot rows (all_gather of a
    captured tensor has no device under this strategy; a float32 sum of one value and zeros is exact)."""

    @tf.function
    def gather() -> tf.Tensor:
        def replica() -> tf.Tensor:
            ctx = tf.distribute.get_replica_context()
            place = tf.one_hot(ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync, dtype=tf.float32)
            return place[:, None] * row[None, :]

        return strategy.reduce("SUM", strategy.run(replica), axis=None)

    return gather()


_TASK = re.compile(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)")


def worker_failure(error: BaseException, cluster: Cluster) -> str | None:
    """The run's error when ``error`` says another worker of ``cluster`` failed or went silent:
    ``"worker 1 (node2:12345) failed or stopped answering: <TensorFlow's first line>"``; None
    when it names no other worker (or for one process)."""
    if cluster.size <= 1 or not isinstance(error, tf.errors.OpError):
        return None
    text = str(error)
    named = [cluster.position(job, int(index)) for job, index in _TASK.findall(text)]
    named += [i for i, (_, _, address) in enumerate(cluster.tasks) if address and address in text]
    others = sorted({i for i in named if i is not None and i != cluster.me})
    if not others:
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    who = " and ".join(cluster.label(i) for i in others)
    return f"{who} failed or stopped answering ({type(error).__name__}: {first[:300]})"


# =========================================================================== Keras workarounds
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
