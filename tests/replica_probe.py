"""Train through pneumo.train.loop.train on 2 logical CPU devices and record each replica's batches.

``python tests/replica_probe.py CONFIG.json RUN_DIR OUT.json``: a fresh process, because the
logical devices must be configured before TensorFlow touches any device. The loss is wrapped
to record, at every training step, the replica that computed it, its batch size and how many
of its images hold a lesion; OUT.json gets ``{"batches": [[replica, images, positives], ...],
"summary": ...}``. tests/test_train.py reads it.
"""
from __future__ import annotations

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import pneumo.model.losses as losses  # noqa: E402
from pneumo.config import TrainConfig  # noqa: E402
from pneumo.store.config_file import load_config  # noqa: E402

batches: list[list[int]] = []
_real_get_loss = losses.get_loss


def _record(replica, images, positives) -> np.int64:
    batches.append([int(replica), int(images), int(positives)])
    return np.int64(0)


def _probing_loss(name: str):
    loss = _real_get_loss(name)
    call = loss.call

    def probed(y_true, y_pred):
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:  # (Keras also traces it once outside)
            positives = tf.reduce_sum(tf.cast(tf.reduce_max(y_true, axis=[1, 2, 3]) > 0, tf.int64))
            done = tf.numpy_function(_record, [ctx.replica_id_in_sync_group, tf.shape(y_true)[0], positives],
                                     tf.int64)
            with tf.control_dependencies([done]):
                y_true = tf.identity(y_true)
        return call(y_true, y_pred)

    loss.call = probed
    return loss


def main(config_path: str, run_dir: str, out: str) -> None:
    losses.get_loss = _probing_loss
    from pneumo.train.loop import train

    config = load_config(TrainConfig, config_path)
    keras.utils.set_random_seed(config.seed)  # a process entry point
    summary = train(config, run_dir, verbose=0)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"batches": batches, "summary": summary}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
