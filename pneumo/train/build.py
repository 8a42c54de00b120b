"""The model a run trains, built and compiled under its strategy and precision.

- :data:`PRECISION_POLICIES`: ``config.mixed_precision`` (:data:`pneumo.config.PRECISIONS`) to a
  Keras dtype policy. "bf16" is ``mixed_bfloat16`` without loss scaling (bfloat16 has float32's
  exponent range, so small gradients do not underflow); "fp16" is ``mixed_float16`` with Keras'
  dynamic loss scaling. Weights stay float32 and the models pin their output to float32.
- :func:`set_precision` (the trainer restores the previous global policy when it ends);
- :func:`compile_model`: Adam at a learning rate, cosine decay when asked, the run's loss and metrics;
- :func:`build`: fresh, warm-started (``init_from``) or restored from the run's backup.
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pneumo.config import PRECISIONS, TrainConfig, check_registry
from pneumo.errors import InputError, user_message
from pneumo.plan import RunPlan, init_config
from pneumo.store.run import RunFolder

__all__ = ["PRECISION_POLICIES", "set_precision", "compile_model", "build", "frozen"]

log = logging.getLogger("pneumo.train.loop")

PRECISION_POLICIES: dict[str, str] = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
check_registry("pneumo.train.build.PRECISION_POLICIES", PRECISION_POLICIES, PRECISIONS)

_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with native bfloat16


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy for ``precision`` and return the policy's name."""
    policy = PRECISION_POLICIES[precision]
    keras.mixed_precision.set_global_policy(policy)
    if precision != "none":
        if not tf.config.list_physical_devices("GPU") and not (precision == "bf16" and _cpu_has_bf16()):
            log.warning("mixed precision %s on this CPU is emulated and slower than float32; it pays on GPUs%s",
                        precision, " and CPUs with AMX/AVX512-BF16" if precision == "bf16" else "")
        scaling = "with loss scaling" if precision == "fp16" else "without loss scaling"
        log.info("mixed precision: %s compute, float32 weights, %s", policy.split("_")[1], scaling)
    return policy


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in _CPU_BF16_FLAGS)
    except OSError:
        pass
    return False


def compile_model(model: keras.Model, lr: float, config: TrainConfig, decay_steps: int | None = None) -> None:
    """Compile with Adam at ``lr``; with ``decay_steps`` and ``lr_schedule="cosine"``, lr decays to 0 over them.

    Loss scaling only for "fp16" (Keras would add it for a ``mixed_float16`` model anyway; said here).
    """
    from pneumo.model.losses import get_loss, get_metrics

    if decay_steps and config.lr_schedule == "cosine":
        # The schedule reads optimizer.iterations, which a resumed backup restores.
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=int(decay_steps))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=get_loss(config.loss),
                  metrics=get_metrics(), jit_compile=bool(config.xla),
                  auto_scale_loss=config.mixed_precision == "fp16")


def frozen(config: TrainConfig) -> bool:
    """Whether the encoder starts frozen: as asked, else when its weights are pretrained."""
    return config.freeze_encoder if config.freeze_encoder is not None else config.encoder_weights is not None


def build(strategy: tf.distribute.Strategy, config: TrainConfig, info: RunPlan, run_dir: Path,
          backup_state: dict | None) -> keras.Model:
    """The compiled model under ``strategy`` (restored from the backup when resuming).

    Raises :class:`InputError` when the weights of a backup or a warm start do not fit.
    """
    from pneumo.model.networks import build_model, set_encoder_trainable, warm_start

    if config.xla:
        log.info("XLA: the train step is jit-compiled")
    with strategy.scope():
        if backup_state is None:
            # A warm start overwrites every weight: no encoder weights to load (or download).
            model = build_model(config.variant, input_size=info.size,
                                encoder_weights=None if config.init_from else config.encoder_weights,
                                freeze_encoder=frozen(config), width=config.width)
            if config.init_from:
                init_config(config)
                warm_start(model, RunFolder(config.init_from).checkpoint("best"), info.size)
                log.info("warm start: weights from %s", config.init_from)
            compile_model(model, config.lr, config, config.epochs * info.steps)
        else:
            # The backup holds every weight: skip loading (or downloading) the encoder's.
            model = build_model(config.variant, input_size=info.size, encoder_weights=None,
                                freeze_encoder=frozen(config), width=config.width)
            if backup_state["stage"] == "fine-tune":
                set_encoder_trainable(model, True)
                compile_model(model, config.fine_tune_lr, config)
            else:
                compile_model(model, config.lr, config, config.epochs * info.steps)
            model.optimizer.build(model.trainable_variables)
            try:
                model.load_weights(run_dir / backup_state["weights"])
            except Exception as e:
                raise InputError(f"{run_dir / backup_state['weights']}: cannot resume from it "
                                 f"({user_message(e)})") from None
            log.info("resuming after epoch %d (%s stage) from %s", backup_state["epoch"],
                     backup_state["stage"], backup_state["weights"])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    if info.exclusion is not None:
        log.info("%s", info.exclusion.describe())
    log.info("model %s: %s parameters, %s trainable; pack %s (%d px, train %d, dev %d); %d steps "
             "+ %d validation steps per epoch", config.variant, f"{model.count_params():,}",
             f"{trainable:,}", config.pack, info.size, info.train, info.dev, info.steps,
             info.validation_steps)
    return model
