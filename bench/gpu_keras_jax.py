"""GPU training-step throughput of pneumo's models, on a machine without TensorFlow.

The GPU machine lent to this project has JAX (CUDA) but no TensorFlow, and TensorFlow's CUDA
wheels are too large to carry there. ``pneumo.model.networks`` and ``pneumo.model.losses`` are pure Keras 3, so
this script builds the very same models on Keras' JAX backend and times their training step
(forward, backward, Adam update; jit-compiled, the equivalent of ``--xla``) on one constant
batch held on the GPU: the model's compute, without the ``tf.data`` input pipeline.

For each variant and precision policy (float32, mixed_bfloat16, mixed_float16) it prints
images/s after ``--warmup`` untimed steps (compilation), as a markdown table.

    KERAS_BACKEND=jax python bench/gpu_keras_jax.py --size 256 --batch 32 64
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _gpu_name() -> str:
    try:
        import jax

        return ", ".join(d.device_kind for d in jax.devices() if d.platform == "gpu") or "no GPU"
    except Exception as e:  # noqa: BLE001 - any backend: report, never fail the bench on it
        return f"unknown ({e})"


def _build(variant: str, size: int, width: float | None):
    from pneumo.model.networks import build_model

    kwargs = {}
    if width is not None:
        kwargs["width"] = width
    return build_model(variant, input_size=size, encoder_weights=None, freeze_encoder=False, **kwargs)


def time_variant(variant: str, size: int, batch: int, policy: str, steps: int, warmup: int,
                 width: float | None = None) -> float:
    """Images/s of ``train_on_batch`` for one model, after ``warmup`` untimed steps."""
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _build(variant, size, width)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", jit_compile=True)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8).astype("float32")
        y = (rng.random((batch, size, size, 1)) < 0.1).astype("float32")
        for _ in range(warmup):
            model.train_on_batch(x, y)  # returns host floats: each call waits for the GPU
        t0 = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return steps * batch / (time.perf_counter() - t0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="+", default=[256])
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--variants", nargs="+", default=["blog", "unet", "unet@0.25"],
                    help="variant names; NAME@W passes width=W")
    ap.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16", "mixed_float16"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)

    import keras

    print(f"Keras {keras.__version__} on {keras.backend.backend()}, {_gpu_name()}, "
          f"Python {platform.python_version()}\n")
    print("| variant | size | batch | policy | images/s |")
    print("|---|---:|---:|---|---:|")
    for spec in args.variants:
        name, _, w = spec.partition("@")
        width = float(w) if w else None
        for size in args.size:
            for batch in args.batch:
                for policy in args.policies:
                    try:
                        rate = f"{time_variant(name, size, batch, policy, args.steps, args.warmup, width):.0f}"
                    except Exception as e:  # noqa: BLE001 - one failing cell must not hide the rest
                        rate = f"failed: {type(e).__name__}: {str(e)[:80]}"
                    print(f"| {spec} | {size} | {batch} | {policy} | {rate} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
