"""pneumo.train.distribute: strategies and the Keras multi-worker workarounds, isolated and checked.

``test_keras_still_has_what_the_workarounds_patch`` is the canary for a Keras upgrade: it fails
naming the installed Keras version when the private names the patches need are gone.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")
import tensorflow as tf  # noqa: E402

from pneumo.train import distribute  # noqa: E402
from pneumo.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_keras_still_has_what_the_workarounds_patch():
    try:
        distribute.check_keras_internals()
    except distribute.KerasInternalsChanged as e:
        pytest.fail(f"Keras {keras.__version__} broke pneumo.train.distribute's multi-worker workarounds: {e}")


def test_a_missing_private_name_fails_loudly_with_the_keras_version(monkeypatch):
    monkeypatch.setattr(keras.Model, "_symbolic_build", None)  # inherited: shadow it, as if removed
    with pytest.raises(distribute.KerasInternalsChanged, match=re.escape(f"Keras {keras.__version__}")) as e:
        distribute.check_keras_internals()
    assert "keras.Model._symbolic_build" in str(e.value)
    from keras.src.backend.tensorflow import trainer

    monkeypatch.delattr(trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(distribute.KerasInternalsChanged, match="_collective_all_reduce_multi_worker"):
        distribute.check_keras_internals()


@pytest.mark.parametrize("tf_config, role", [
    (None, (1, True)),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, (2, True)),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, (2, False)),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, (2, False)),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, (2, True)),
])
def test_cluster_role_from_tf_config(monkeypatch, tf_config, role):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.cluster_role() == role


def test_bad_tf_config_is_input_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        distribute.cluster_role()


def test_no_private_keras_or_streamlit_import_outside_the_compatibility_module():
    offenders = []
    for path in [*ROOT.glob("pneumo/**/*.py"), *ROOT.glob("pneumo_app/**/*.py"), *ROOT.glob("*.py")]:
        if path.name == "distribute.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import)\s+(keras\.src|streamlit\.runtime)\b|\bPagesManager\.", text, re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# --------------------------------------------------------------------------- clusters (issue 17)
from pneumo.train import cluster as clusters  # noqa: E402

SLURM = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")


def _slurm_env(monkeypatch, procid, nodelist, tasks_per_node, tasks=2, port=23456):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in zip(SLURM, (procid, tasks, nodelist, tasks_per_node)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv(distribute.SLURM_PORT_ENV, str(port))


def test_tf_config_cluster_names_every_worker_chief_first():
    config = {"cluster": {"worker": ["a:1", "b:2"], "chief": ["c:0"]}, "task": {"type": "worker", "index": 1}}
    cluster = clusters.cluster_from_tf_config(config)
    assert cluster.tasks == (("chief", 0, "c:0"), ("worker", 0, "a:1"), ("worker", 1, "b:2"))
    assert (cluster.me, cluster.size, cluster.chief, cluster.source) == (2, 3, False, "TF_CONFIG")
    assert cluster.label(0) == "the chief (c:0)" and cluster.label(2) == "worker 1 (b:2)"
    assert clusters.cluster_from_tf_config({"cluster": {"worker": ["a:1"]}}) == clusters.SINGLE
    with pytest.raises(InputError, match="task worker 5 is not in its cluster"):
        clusters.cluster_from_tf_config({**config, "task": {"type": "worker", "index": 5}})


def test_multi_worker_is_known_without_tensorflow():
    two = json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}})
    assert clusters.multi_worker({"TF_CONFIG": two})
    assert not clusters.multi_worker({})
    assert not clusters.multi_worker({"SLURM_STEP_NUM_TASKS": "1"})  # one task: a plain run
    assert clusters.multi_worker({"SLURM_STEP_NUM_TASKS": "4"})
    one = json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}})
    assert not clusters.multi_worker({"TF_CONFIG": one, "SLURM_STEP_NUM_TASKS": "4"})  # TF_CONFIG wins


def test_slurm_variables_resolve_through_the_slurm_resolver(monkeypatch):
    """Two nodes, one task each; then two tasks on 127.0.0.1 (ports from PNEUMO_SLURM_PORT, +1 per task)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _slurm_env(monkeypatch, 1, "node[1-2]", "1(x2)")
    cluster = distribute.resolve_cluster()
    assert cluster.source == "Slurm" and cluster.me == 1 and not cluster.chief
    assert cluster.tasks == (("worker", 0, "node1:23456"), ("worker", 1, "node2:23456"))
    assert cluster.resolver.cluster_spec().as_dict() == {"worker": ["node1:23456", "node2:23456"]}
    assert (cluster.resolver.task_type, cluster.resolver.task_id) == ("worker", 1)
    assert distribute.cluster_role() == (2, False)

    _slurm_env(monkeypatch, 0, "127.0.0.1", "2", port=24000)
    cluster = distribute.resolve_cluster()
    assert [a for _, _, a in cluster.tasks] == ["127.0.0.1:24000", "127.0.0.1:24001"] and cluster.chief
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # the resolver's GPU allocation stays off

    _slurm_env(monkeypatch, 0, "n1", "1", tasks=1)
    assert distribute.resolve_cluster() == clusters.SINGLE  # a one-task step is a plain run
    _slurm_env(monkeypatch, 0, "n[1-2]", "1(x2)", port="http")
    with pytest.raises(InputError, match="PNEUMO_SLURM_PORT"):
        distribute.resolve_cluster()
    _slurm_env(monkeypatch, 0, "n[1-2]", "x(y)")
    with pytest.raises(InputError, match="Slurm variables"):
        distribute.resolve_cluster()


@pytest.mark.parametrize("largest, batch, replicas, workers, expected", [
    (25, 16, 2, 2, (4, 4)),  # the crash: 49 dev images = 25 + 24, 8 per replica: 4 steps each
    (49, 16, 1, 1, (4, 4)),  # one device: as Keras did, ceil(49 / 16)
    (13, 8, 2, 1, (2, 4)),  # two local replicas take turns: 4 batches of 4 in one pipeline
    (2, 16, 4, 2, (1, 2)),  # fewer images than replicas (3 over 2 workers): padding, one step everywhere
    (32, 16, 8, 2, (4, 16)),  # 4 GPUs per worker: 32 images a worker, 2 per replica and step
    (0, 16, 2, 2, (1, 1)),  # an empty shard still steps along
])
def test_evaluation_steps_are_equal_everywhere_and_cover_every_image(largest, batch, replicas, workers, expected):
    steps, batches = distribute.eval_steps(largest, batch, replicas, workers)
    assert (steps, batches) == expected
    per_replica, local = batch // replicas, replicas // workers
    assert batches * per_replica >= largest  # the largest shard fits
    assert batches == steps * local


def test_a_batch_must_split_over_the_replicas():
    assert distribute.per_replica_batch(16, 2) == 8
    with pytest.raises(InputError, match="batch_size 15 does not split evenly over 2 replicas"):
        distribute.per_replica_batch(15, 2)


class _Collected(Exception):
    pass


def _agree(monkeypatch, rows, me=0):
    """agree_on_start with the all-reduce replaced by ``rows`` (each worker's (version, pack) or None)."""
    import numpy as np

    cluster = clusters.cluster_from_tf_config(
        {"cluster": {"worker": [f"127.0.0.1:{5000 + i}" for i in range(len(rows))]},
         "task": {"type": "worker", "index": me}})
    table = []

    def collect(strategy, row):
        table.append(row.numpy())
        raise _Collected()

    monkeypatch.setattr(distribute, "_gather_rows", collect)
    for i, row in enumerate(rows):
        version, fingerprint = row if row is not None else ("0.1.0", None)
        with contextlib.suppress(_Collected):
            distribute.agree_on_start(None, clusters.Cluster("TF_CONFIG", cluster.tasks, i), version, fingerprint)
    monkeypatch.setattr(distribute, "_gather_rows", lambda strategy, r: tf.constant(np.stack(table)))
    return distribute.agree_on_start(None, cluster, *(rows[me] or ("0.1.0", None)))


def test_workers_with_another_version_or_pack_are_refused_by_name(monkeypatch):
    pack = {"path": "/data/p.h5", "size": 100, "ids_sha256": "ab", "mtime": 1.0}
    moved = {**pack, "path": "/other/p.h5", "mtime": 2.0}  # a copy: same size and ids
    assert _agree(monkeypatch, [("0.1.0", pack), ("0.1.0", moved)]) is None
    assert _agree(monkeypatch, [("0.1.0", pack), ("0.1.0", moved)], me=1) is None
    with pytest.raises(InputError, match=r"worker 1 \(127.0.0.1:5001\) runs pneumo 0.2.0, worker 0 "
                                         r"\(127.0.0.1:5000\) pneumo 0.1.0"):
        _agree(monkeypatch, [("0.1.0", pack), ("0.2.0", pack)])
    with pytest.raises(InputError, match=r"worker 2 \(127.0.0.1:5002\) reads another pack than worker 0"):
        _agree(monkeypatch, [("0.1.0", pack), ("0.1.0", pack), ("0.1.0", {**pack, "ids_sha256": "cd"})], me=1)
    with pytest.raises(InputError, match=r"worker 1 \(127.0.0.1:5001\) refused its input"):
        _agree(monkeypatch, [("0.1.0", pack), None])


def test_a_dead_worker_is_named_in_the_error():
    cluster = clusters.cluster_from_tf_config(
        {"cluster": {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]}, "task": {"type": "worker", "index": 0}})
    # what the chief got when worker 1 was killed mid-epoch (TensorFlow 2.21)
    text = ("{{function_node __wrapped__CollectiveReduceV2_Nordering_token_1_device_/job:worker/replica:0/task:0/"
            "device:CPU:0}} Collective ops is aborted by: Error reported from /job:worker/task:1: The following "
            "tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have "
            "crashed. [Op:CollectiveReduceV2] name: ")
    message = distribute.worker_failure(tf.errors.UnavailableError(None, None, text), cluster)
    assert message.startswith("worker 1 (127.0.0.1:5001) failed or stopped answering (UnavailableError: ")
    assert "worker 0" not in message  # its own device in the node name is not blamed
    grpc = tf.errors.UnavailableError(None, None, "failed to connect to all addresses; ipv4:127.0.0.1:5001")
    assert distribute.worker_failure(grpc, cluster).startswith("worker 1 (127.0.0.1:5001)")
    assert distribute.worker_failure(tf.errors.UnavailableError(None, None, "socket closed"), cluster) is None
    assert distribute.worker_failure(ValueError("/job:worker/task:1"), cluster) is None
    assert distribute.worker_failure(tf.errors.UnavailableError(None, None, text), clusters.SINGLE) is None


def test_the_setup_record_reads_as_one_line():
    record = clusters.RunSetup("MultiWorkerMirroredStrategy", "TF_CONFIG", 2, 2, 16, 8, "bf16", "mixed_bfloat16",
                               ("CPU:0",), ("a:1", "b:2")).record()
    assert json.loads(json.dumps(record)) == record and record["addresses"] == ["a:1", "b:2"]
    assert clusters.describe_setup(record) == ("2 workers (TF_CONFIG) x 1 replica, MultiWorkerMirroredStrategy; "
                                               "batch 16 = 2 x 8 per replica; precision bf16; devices CPU:0")
    one = clusters.RunSetup("default", "single", 1, 1, 8, 8, "none", "float32", ("GPU:0 (NVIDIA H200)",)).record()
    assert clusters.describe_setup(one) == "1 replica, default; batch 8; precision none; devices GPU:0 (NVIDIA H200)"
    assert clusters.describe_setup(None) is None and clusters.describe_setup({"workers": "two"}) is None


def test_the_kubernetes_manifest_gives_each_pod_its_tf_config():
    """docs/cluster/pneumo-train-job.yaml: the shell lines between its TF_CONFIG markers, run as a
    pod of index 2 of 3 would, give a TF_CONFIG naming every pod through the headless Service."""
    import subprocess
    import textwrap

    text = (ROOT / "docs" / "cluster" / "pneumo-train-job.yaml").read_text(encoding="utf-8")
    script = textwrap.dedent(text.split("# >>> TF_CONFIG")[1].split("# <<< TF_CONFIG")[0].split("\n", 1)[1])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "N": "3", "PORT": "12345", "JOB_COMPLETION_INDEX": "2"}
    out = subprocess.run(["sh", "-c", script + '\nprintf %s "$TF_CONFIG"'], env=env, capture_output=True, text=True,
                         check=True).stdout
    cluster = clusters.cluster_from_tf_config(json.loads(out))
    assert [a for _, _, a in cluster.tasks] == [f"pneumo-train-{i}.pneumo-train:12345" for i in range(3)]
    assert cluster.me == 2 and not cluster.chief
    assert "completions: 2" in text and 'value: "2"' in text  # N and the Job's size agree


def test_the_sbatch_script_is_valid_bash_and_starts_one_worker_per_task():
    import subprocess

    path = ROOT / "docs" / "cluster" / "pneumo-train.sbatch"
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text(encoding="utf-8")
    assert "srun --kill-on-bad-exit=1 python -m pneumo train" in text and "PNEUMO_SLURM_PORT" in text
