"""The quick demo on this CPU: where a training step's time goes, and what the hardware offers.

Two parts, each setting in a fresh process (oneDNN and the precision policy are process-wide):

1. **Step sweep.** The quick-demo model, loss and batch (``config.PRESETS["quick-demo"]``:
   ``unet-bn`` width 0.25, 128 px, batch 16, BCE + batch Dice, Adam) fitted on one constant
   in-memory batch, under each setting: float32 (the default), oneDNN off
   (``TF_ENABLE_ONEDNN_OPTS=0``), ``mixed_bfloat16``, XLA (``jit_compile``), and TensorFlow's
   thread pools at 2/1 and 1/1 (intra/inter). Images/s over ``--steps`` steps after warm-up,
   the median of ``--repeats`` processes, as a ratio to float32 in the same run.
2. **One quick-demo epoch, taken apart.** The preset's real input (balanced batches from the
   128 px demo pack, ``pneumo.train.data.make_dataset``) through ``model.fit`` with a callback
   stamping every batch and the validation pass, then one ``model.save`` (what the trainer
   writes per epoch): the share of an epoch spent in train steps on the real input, in the
   input pipeline (the difference to the constant-input step rate), in validation and in the
   checkpoint.

The CPU model and its bfloat16 flags (``avx512_bf16``, ``amx_bf16``) head the section.

    python bench/cpu.py --write-docs          # writes "## The quick demo on this CPU (bench/cpu.py)"
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import ROOT, demo_pack, machine_line, publish  # noqa: E402

SECTION = "## The quick demo on this CPU (bench/cpu.py)"
SETTINGS = {  # name -> (environment, options for _step_rate)
    "float32 (default)": ({}, {}),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "mixed_bfloat16": ({}, {"policy": "mixed_bfloat16"}),
    "XLA (jit_compile)": ({}, {"xla": True}),
    "threads 2/1": ({}, {"threads": [2, 1]}),
    "threads 1/1": ({}, {"threads": [1, 1]}),
}


def cpu_flags() -> dict[str, bool]:
    """Which bfloat16 instructions this CPU has (from /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    words = set(flags.split())
    return {name: name in words for name in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


# --------------------------------------------------------------------------- in a child process
def _model(options: dict):
    import keras

    from pneumo.config import preset
    from pneumo.model.losses import get_loss, get_metrics
    from pneumo.model.networks import build_model

    if options.get("policy"):
        keras.mixed_precision.set_global_policy(options["policy"])
    quick = preset("quick-demo")
    keras.utils.set_random_seed(0)
    model = build_model(quick.variant, input_size=options["size"], encoder_weights=None, width=quick.width)
    model.compile(optimizer=keras.optimizers.Adam(quick.lr), loss=get_loss(quick.loss), metrics=get_metrics(),
                  jit_compile=bool(options.get("xla")))
    return model, quick


def _stamper():
    import keras

    class Stamper(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches: list[float] = []
            self.val: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(time.perf_counter())

        def on_test_begin(self, logs=None):
            self.val.append(time.perf_counter())

        def on_test_end(self, logs=None):
            self.val.append(time.perf_counter())

    return Stamper()


def _step_rate(options: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    if options.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(options["threads"][0])
        tf.config.threading.set_inter_op_parallelism_threads(options["threads"][1])
    model, quick = _model(options)
    size, batch = options["size"], quick.batch_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (batch, size, size, 1), dtype=np.uint8)
    y = (rng.random((batch, size, size, 1)) > 0.9).astype(np.float32)
    stamps = _stamper()
    warm, steps = options["warmup"], options["steps"]
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), steps_per_epoch=warm + steps, epochs=1, verbose=0,
              callbacks=[stamps])
    seconds = stamps.batches[-1] - stamps.batches[warm - 1]
    return {"img_s": steps * batch / seconds}


def _epoch_parts(options: dict) -> dict:
    from pneumo.train.data import make_dataset

    model, quick = _model(options)
    pack, steps = options["pack"], options["steps"]
    train = make_dataset(pack, "train", quick.batch_size, augment=quick.augment, seed=0, shuffle=True,
                         repeat=True, positive_fraction=quick.positive_fraction)
    dev = make_dataset(pack, "dev", quick.batch_size)
    stamps = _stamper()
    # a first epoch warms up (tracing); the second is measured
    model.fit(train, steps_per_epoch=steps, epochs=2, validation_data=dev, verbose=0, callbacks=[stamps])
    second = stamps.batches[steps:]
    train_s = second[-1] - stamps.val[1]  # from the end of epoch 1's validation to epoch 2's last step
    val_s = stamps.val[3] - stamps.val[2]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model.save(Path(tmp) / "last.keras")
        save_s = time.perf_counter() - t0
    return {"train_s": train_s, "val_s": val_s, "save_s": save_s, "steps": steps, "batch": quick.batch_size}


def _child(kind: str, options: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    return {"step": _step_rate, "epoch": _epoch_parts}[kind](options)


def _run(kind: str, options: dict, env: dict) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); sys.path.insert(0, %r); import cpu; "
            "print('RESULT ' + json.dumps(cpu._child(sys.argv[1], json.loads(sys.argv[2]))))"
            % (str(ROOT / "bench"), str(ROOT)))
    out = subprocess.run([sys.executable, "-c", code, kind, json.dumps(options)], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=1800)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} {options} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per process (the preset's epoch: 40)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting (median)")
    parser.add_argument("--only", nargs="*", help="settings to run (default: all)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rates: dict[str, float] = {}
    for name, (env, opts) in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        runs = [_run("step", {**opts, "size": args.size, "steps": args.steps, "warmup": args.warmup}, env)["img_s"]
                for _ in range(args.repeats)]
        rates[name] = statistics.median(runs)
        print(f"{name}: {rates[name]:.1f} img/s ({', '.join(f'{r:.1f}' for r in runs)})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        from pneumo.config import QUICK_PACK_OPTIONS

        pack = demo_pack(Path(tmp) / "quick.h5", count=QUICK_PACK_OPTIONS["count"], size=args.size)
        parts = {name: _run("epoch", {**opts, "size": args.size, "steps": args.steps, "pack": str(pack)}, env)
                 for name, (env, opts) in SETTINGS.items() if name in ("float32 (default)", "mixed_bfloat16")}
    load_after = os.getloadavg()[0]

    flags = cpu_flags()
    base = rates.get("float32 (default)")
    lines = [SECTION, "",
             f"{dt.date.today().isoformat()}, {machine_line()}; bfloat16 instructions: "
             + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
             + f"; load average {load_before:.1f} before, {load_after:.1f} after.",
             f"Command: `python bench/cpu.py --steps {args.steps} --repeats {args.repeats}`.", "",
             "Train step of the quick-demo model on one constant batch (no input pipeline), median of "
             f"{args.repeats} processes:", "",
             "| setting | images/s | vs float32 |", "|---|---|---|"]
    for name, rate in rates.items():
        lines.append(f"| {name} | {rate:.1f} | {rate / base:.2f}x |" if base else f"| {name} | {rate:.1f} | |")
    lines += ["", f"One quick-demo epoch ({args.steps} steps of 16 on the real balanced input, then validation over "
              "the dev split, then one checkpoint save), the second epoch of a fit:", "",
              "| precision | train steps | of which input (vs constant batch) | validation | checkpoint | epoch img/s |",
              "|---|---|---|---|---|---|"]
    for name, p in parts.items():
        const = rates.get(name)
        ideal = p["steps"] * p["batch"] / const if const else float("nan")
        total = p["train_s"] + p["val_s"] + p["save_s"]
        lines.append(f"| {name} | {p['train_s']:.1f} s | {max(0.0, p['train_s'] - ideal):.1f} s | "
                     f"{p['val_s']:.1f} s | {p['save_s']:.2f} s | {p['steps'] * p['batch'] / total:.1f} |")
    publish(SECTION, lines, args.write_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
