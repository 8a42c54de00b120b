"""Where a run runs: the cluster a trainer belongs to, and the record of its resolved setup.

No TensorFlow: the CLI asks :func:`multi_worker` before it loads TensorFlow, and the app
describes a run's setup (:func:`describe_setup`) from its ``status.json``.

A trainer is one of several workers when ``TF_CONFIG`` names more than one task, or, without
``TF_CONFIG``, when it is one task of a Slurm job step of several (``SLURM_STEP_NUM_TASKS`` > 1:
``srun`` started it). :func:`cluster_from_tf_config` reads the first;
:func:`pneumo.train.distribute.resolve_cluster` resolves both (Slurm through TensorFlow's
``SlurmClusterResolver``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from pneumo.errors import InputError

__all__ = ["Cluster", "tf_config", "cluster_from_tf_config", "slurm_task_count", "multi_worker", "RunSetup",
           "describe_setup", "SINGLE"]

TF_CONFIG_ENV = "TF_CONFIG"
SLURM_TASKS_ENV = "SLURM_STEP_NUM_TASKS"  # set by srun in every task of a job step


@dataclass(frozen=True)
class Cluster:
    """The workers of a run and this process's place among them.

    ``tasks``: ``(job, index, address)`` per worker, the chief first (TensorFlow's task names are
    ``/job:<job>/replica:0/task:<index>``); empty for a single process. ``me``: this process's
    position in ``tasks``. ``source``: "single", "TF_CONFIG" or "Slurm".
    """

    source: str = "single"
    tasks: tuple[tuple[str, int, str], ...] = ()
    me: int = 0
    # The resolver the multi-worker strategy is built from; None: TF_CONFIG (TensorFlow reads it).
    resolver: Any = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        """The number of workers (1 for a single process)."""
        return max(len(self.tasks), 1)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder: the ``chief`` task, else worker 0."""
        return self.me == 0

    def label(self, position: int) -> str:
        """``"worker 1 (node2:12345)"``: the worker at ``position`` as messages name it."""
        if not self.tasks:
            return "this process"
        job, index, address = self.tasks[position]
        return f"{job} {index} ({address})" if job != "chief" else f"the chief ({address})"

    def position(self, job: str, index: int) -> int | None:
        """The position of TensorFlow task ``/job:<job>/task:<index>`` in :attr:`tasks`, or None."""
        for i, (j, k, _) in enumerate(self.tasks):
            if (j, k) == (job, index):
                return i
        return None


SINGLE = Cluster()


def tf_config(environ: Mapping[str, str] | None = None) -> dict:
    """``$TF_CONFIG`` as a dict ({} when unset); :class:`InputError` when it is not JSON."""
    raw = (os.environ if environ is None else environ).get(TF_CONFIG_ENV, "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def cluster_from_tf_config(config: dict) -> Cluster:
    """The :class:`Cluster` a parsed ``TF_CONFIG`` describes (:data:`SINGLE` for one task or none)."""
    spec = config.get("cluster") or {}
    tasks = tuple((job, i, str(address)) for job in ("chief", "worker")
                  for i, address in enumerate(spec.get(job) or []))
    if len(tasks) <= 1:
        return SINGLE
    task = config.get("task") or {}
    try:
        job, index = str(task.get("type")), int(task.get("index", 0))
    except (TypeError, ValueError):
        raise InputError(f"TF_CONFIG: task {task!r} needs a type and a whole-number index") from None
    me = next((i for i, (j, k, _) in enumerate(tasks) if (j, k) == (job, index)), None)
    if me is None:
        raise InputError(f"TF_CONFIG: task {job} {index} is not in its cluster "
                         f"({', '.join(f'{j} {k}' for j, k, _ in tasks)})")
    return Cluster("TF_CONFIG", tasks, me)


def slurm_task_count(environ: Mapping[str, str] | None = None) -> int:
    """The tasks of the Slurm job step this process is one of (0 outside ``srun``)."""
    value = (os.environ if environ is None else environ).get(SLURM_TASKS_ENV, "").strip()
    return int(value) if value.isdigit() else 0


def multi_worker(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is one worker of several (``TF_CONFIG``, else a Slurm step), without TensorFlow."""
    environ = os.environ if environ is None else environ
    config = tf_config(environ)
    if config:
        return cluster_from_tf_config(config).size > 1
    return slurm_task_count(environ) > 1


# =========================================================================== the record
@dataclass(frozen=True)
class RunSetup:
    """How a run was placed, as the trainer resolved it; ``status.json`` holds it under ``setup``."""

    strategy: str  # the tf.distribute strategy's class name, or "default" (one device)
    cluster: str  # Cluster.source: "single", "TF_CONFIG" or "Slurm"
    workers: int  # processes training together
    replicas: int  # model copies in sync over all workers (one per device)
    global_batch: int  # images per step, all replicas (config.batch_size)
    per_replica_batch: int  # images per step and replica
    precision: str  # one of config.PRECISIONS
    policy: str  # the Keras dtype policy it maps to
    devices: tuple[str, ...] = ()  # this (the chief's) process's replica devices, with GPU names
    addresses: tuple[str, ...] = ()  # the workers' host:port, chief first; empty for one process

    def record(self) -> dict:
        """A JSON-ready dict (lists for tuples)."""
        return json.loads(json.dumps(asdict(self)))


def describe_setup(record: Any) -> str | None:
    """One line for people from a ``status.json`` ``setup`` record, or None when there is none
    (runs of older versions) or it is damaged.

    ``"2 workers (TF_CONFIG) x 1 replica, MultiWorkerMirroredStrategy; batch 16 = 2 x 8 per
    replica; precision bf16; devices CPU:0"``
    """
    if not isinstance(record, dict):
        return None
    try:
        workers, replicas = int(record["workers"]), int(record["replicas"])
        batch, per = int(record["global_batch"]), int(record["per_replica_batch"])
        strategy, cluster, precision = str(record["strategy"]), str(record["cluster"]), str(record["precision"])
        devices = [str(d) for d in record.get("devices") or []]
    except (KeyError, TypeError, ValueError):
        return None
    if workers > 1:
        per_worker = replicas // workers if replicas % workers == 0 else None
        where = f"{workers} workers ({cluster})" + (f" x {per_worker} replica{'s' * (per_worker != 1)}"
                                                     if per_worker else f", {replicas} replicas")
    else:
        where = f"{replicas} replica{'s' * (replicas != 1)}"
    split = f"batch {batch} = {replicas} x {per} per replica" if replicas > 1 else f"batch {batch}"
    text = f"{where}, {strategy}; {split}; precision {precision}"
    return text + (f"; devices {', '.join(devices)}" if devices else "")
