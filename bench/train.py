"""Training throughput of the models: images/s per variant, size, XLA on/off.

For each variant of ``pneumo.model.networks.VARIANTS`` and each size, one model is built with
``encoder_weights=None, freeze_encoder=True`` (the first stage, as with ImageNet weights: same
compute, no download), compiled with the blog's Adam(2e-5) + binary cross-entropy, and fitted
on one constant in-memory uint8 batch (``tf.data.Dataset.from_tensors(...).repeat()``); the
first ``--warmup`` steps (tracing, XLA compilation) are not timed. Then, if ``pneumo.train.data``
exists, the input share: the same fit fed by ``make_dataset(augment=True)`` from a demo-phantom
pack. The FLOP column counts the convolutions' multiply-adds (x2) from the layer shapes.

Prints a markdown section; ``--write-docs`` puts it into docs/benchmarks.md under
"## Training throughput (bench/train.py)".

    python bench/train.py --write-docs                  # CPU: 128 and 256 px, XLA off/on
    python bench/train.py --gpu --write-docs            # GPU: 256 px, mixed precision, batch 32-128
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import cpu_model, demo_pack, publish  # noqa: E402

import numpy as np  # noqa: E402

SECTION = "## Training throughput (bench/train.py)"


# --------------------------------------------------------------------------- FLOPs
def conv_flops(model, stop_at: str | None = None) -> float:
    """Forward FLOPs of one image through the model's Conv2D layers (2 x multiply-adds).

    Stops after layer ``stop_at`` when given (layers are in topological order).
    """
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += 2.0 * h * w * cout * kh * kw * cin
        if layer.name == stop_at:
            break
    return total


# --------------------------------------------------------------------------- timing
class _Timer:
    """Keras callback stamping the end of each training batch."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.stamps: list[float] = []

            def on_train_batch_end(self, batch, logs=None):
                self.stamps.append(time.perf_counter())

        return Timer()


def fit_rate(model, ds, batch_size: int, steps: int, warmup: int) -> float:
    """Images/s of ``model.fit`` on ``ds`` over ``steps`` steps after ``warmup`` untimed steps."""
    timer = _Timer()
    model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    s = timer.stamps[warmup - 1:]  # from the end of the last warm-up step
    return batch_size * (len(s) - 1) / (s[-1] - s[0])


def _compiled(variant: str, size: int, xla: bool, *, trainable_encoder: bool = False):
    import keras

    from pneumo.model.losses import get_loss
    from pneumo.model.networks import build_model

    model = build_model(variant, size, encoder_weights=None, freeze_encoder=not trainable_encoder)
    model.compile(optimizer=keras.optimizers.Adam(2e-5), loss=get_loss("bce"), jit_compile=xla)
    return model


def _constant_batch(size: int, batch_size: int, seed: int = 0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (batch_size, size, size, 1), dtype=np.uint8)
    y = (rng.random((batch_size, size, size, 1)) > 0.9).astype(np.float32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def bench_model(variant: str, size: int, xla: bool, batch_size: int, steps: int, warmup: int,
                trainable_encoder: bool = False) -> dict:
    import keras

    t0 = time.perf_counter()
    model = _compiled(variant, size, xla, trainable_encoder=trainable_encoder)
    rate = fit_rate(model, _constant_batch(size, batch_size), batch_size, steps, warmup)
    fwd = conv_flops(model)
    row = {"variant": variant, "size": size, "xla": xla, "batch": batch_size,
           "trainable_encoder": trainable_encoder, "images_per_s": rate,
           "forward_gflop": fwd / 1e9, "seconds": time.perf_counter() - t0}
    del model
    keras.backend.clear_session()
    return row


# --------------------------------------------------------------------------- input share
def bench_input_share(variant: str, size: int, batch_size: int, steps: int, warmup: int,
                      count: int = 64) -> tuple[float, float] | None:
    """(images/s on a constant batch, images/s fed by make_dataset(augment=True)), same model."""
    try:
        from pneumo.train.data import make_dataset
    except ImportError:
        return None
    import keras

    tmp = Path(tempfile.mkdtemp(prefix="pneumo-bench-train-"))
    try:
        pack = demo_pack(tmp / "bench.h5", count + 16, size, proportions=(count, 8, 8))
        model = _compiled(variant, size, False)
        fed = make_dataset(pack, "train", batch_size, augment=True, seed=0)
        const = _constant_batch(size, batch_size)
        fit_rate(model, const, batch_size, 1, warmup)  # trace once; both datasets share the step
        const_rate = fit_rate(model, const, batch_size, steps, 1)
        fed_rate = fit_rate(model, fed, batch_size, steps, 1)
        const_rate = max(const_rate, fit_rate(model, const, batch_size, steps, 1))  # shared machine
        keras.backend.clear_session()
        return const_rate, fed_rate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- GPU
def _gpu_util_sampler():
    """Start sampling GPU utilisation with nvidia-smi every 0.2 s; returns a stop() -> mean %."""
    if not shutil.which("nvidia-smi"):
        return lambda: float("nan")
    proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                             "-lms", "200"], stdout=subprocess.PIPE, text=True)

    def stop() -> float:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        vals = [float(v) for v in out.split() if v.strip().replace(".", "").isdigit()]
        vals = vals[len(vals) // 4:]  # drop the ramp-up
        return float(np.mean(vals)) if vals else float("nan")

    return stop


def bench_gpu(variants, batches, steps: int, warmup: int) -> list[dict]:
    """256 px, mixed_float16 + XLA, frozen encoder: images/s, GPU utilisation, TFLOP/s."""
    import keras

    rows = []
    for variant in variants:
        for bs in batches:
            keras.config.set_dtype_policy("mixed_float16")
            try:
                model = _compiled(variant, 256, True)
            finally:
                keras.config.set_dtype_policy("float32")
            ds = _constant_batch(256, bs).prefetch(2)
            fit_rate(model, ds, bs, 2, warmup)  # compile
            stop = _gpu_util_sampler()
            rate = fit_rate(model, ds, bs, steps, 1)
            util = stop()
            rows.append({"variant": variant, "batch": bs, "images_per_s": rate, "gpu_util": util,
                         "forward_gflop": conv_flops(model) / 1e9,
                         "encoder_gflop": conv_flops(model, "block4_pool") / 1e9})
            keras.backend.clear_session()
    return rows


# --------------------------------------------------------------------------- report
def _flop_note() -> str:
    import keras

    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(256, 256, 3))
    to_b4 = conv_flops(vgg, "block4_pool")
    full = conv_flops(vgg)
    keras.backend.clear_session()
    return (f"FLOPs (from the layer shapes, 2 x multiply-adds of every Conv2D, per 256 px image, "
            f"forward): VGG16 to `block4_pool` **{to_b4 / 1e9:.1f} GFLOP** (the issue's \"about 36\"), "
            f"the full conv base to `block5_pool` {full / 1e9:.1f} GFLOP. With the encoder frozen, "
            f"no gradient flows into it, so a training step costs about one encoder forward plus "
            f"forward and twice-as-costly backward of the decoder (column \"fwd GFLOP\" is the "
            f"whole model's forward).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=None, help="default: all of pneumo.model.networks.VARIANTS")
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing, XLA compile)")
    ap.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True runs")
    ap.add_argument("--fine-tune", action="store_true", help="also time unet with the encoder trainable")
    ap.add_argument("--skip-input", action="store_true", help="skip the input-share measurement")
    ap.add_argument("--gpu", action="store_true", help="GPU mode: 256 px, mixed_float16 + XLA, batch 32-128")
    ap.add_argument("--gpu-batches", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args(argv)

    from pneumo.model.networks import VARIANTS

    variants = args.variants or list(VARIANTS)
    command = "python bench/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    head = [SECTION, ""]
    if args.gpu:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "none"
        rows = bench_gpu(variants, args.gpu_batches, max(args.steps, 10), max(args.warmup, 3))
        lines = head + [
            f"Machine: {name} ({len(gpus)} GPU), {os.cpu_count()} CPU cores. Date: "
            f"{dt.date.today().isoformat()}. Command: `{command.strip()}`. 256 px, "
            f"`mixed_float16`, XLA, frozen encoder, constant in-memory batch.",
            "",
            "| variant | batch | images/s | GPU util % | fwd GFLOP/img | achieved fwd TFLOP/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(f"| {r['variant']} | {r['batch']} | {r['images_per_s']:.0f} | {r['gpu_util']:.0f} | "
                         f"{r['forward_gflop']:.1f} | {r['images_per_s'] * r['forward_gflop'] / 1e3:.1f} |")
        lines += ["", _flop_note(), ""]
    else:
        rows = []
        for size in args.sizes:
            for variant in variants:
                for xla in ([False] if args.no_xla else [False, True]):
                    r = bench_model(variant, size, xla, args.batch_size, args.steps, args.warmup)
                    print(json.dumps(r), file=sys.stderr)
                    rows.append(r)
        if args.fine_tune:
            for size in args.sizes[:1]:
                r = bench_model("unet", size, False, args.batch_size, args.steps, args.warmup,
                                trainable_encoder=True)
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
        share = None if args.skip_input else bench_input_share(
            "unet", min(args.sizes), args.batch_size, args.steps, args.warmup)
        elapsed = time.perf_counter() - started
        load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"

        base = {(r["variant"], r["size"]): r["images_per_s"] for r in rows
                if not r["xla"] and not r["trainable_encoder"]}
        blog128 = base.get(("blog", min(args.sizes)))
        lines = head + [
            f"Machine: {os.cpu_count()} cores ({cpu_model()}), no GPU; shared with other agents' "
            f"work while measured ({load}), so figures are indicative (ratios come from the same run). "
            f"Date: {dt.date.today().isoformat()}. Command: `{command.strip()}` "
            f"({elapsed / 60:.1f} min). Each row: `build_model(variant, size, encoder_weights=None, "
            f"freeze_encoder=True)`, Adam(2e-5) + BCE, `model.fit` on one constant uint8 batch of "
            f"{args.batch_size}, {args.warmup} warm-up steps then {args.steps} timed steps; "
            f"TensorFlow's default thread pools (all cores).",
            "",
            "| variant | size | XLA | encoder | images/s | vs frozen, no XLA (same variant, size) | fwd GFLOP/img | achieved fwd GFLOP/s |",
            "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            ref = base.get((r["variant"], r["size"]))
            ratio = f"{r['images_per_s'] / ref:.2f}x" if ref else "-"
            lines.append(
                f"| {r['variant']} | {r['size']} | {'on' if r['xla'] else 'off'} | "
                f"{'trainable' if r['trainable_encoder'] else 'frozen'} | {r['images_per_s']:.2f} | {ratio} | "
                f"{r['forward_gflop']:.1f} | {r['images_per_s'] * r['forward_gflop']:.0f} |")
        lines.append("")
        if blog128:
            lines.append(f"Baseline for cross-row comparison: blog at {min(args.sizes)} px without XLA, "
                         f"{blog128:.2f} images/s.")
            lines.append("")
        if share:
            const_rate, fed_rate = share
            lines += [
                f"Input share (unet, {min(args.sizes)} px, batch {args.batch_size}, frozen encoder, no XLA): "
                f"{const_rate:.2f} images/s on a constant batch, {fed_rate:.2f} images/s fed by "
                f"`make_dataset(augment=True)` from a demo-phantom pack: "
                f"**{100 * max(0.0, 1 - fed_rate / const_rate):.1f}% lost to input** (on a CPU the "
                f"pipeline competes with the model for the same cores; see also the input pipeline "
                f"section).",
                "",
            ]
        lines += [_flop_note(), "",
                  "GPU: pending. No GPU was lent to the task that wrote this section; when one is, run "
                  "`python bench/train.py --gpu --write-docs` (256 px, `mixed_float16` + XLA, batch "
                  "32/64/128, images/s and mean GPU utilisation from `nvidia-smi`) and compare the "
                  "achieved TFLOP/s with the card's dense fp16 peak.", ""]
    publish(SECTION, lines, args.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
