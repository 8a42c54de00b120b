"""Packing speed and memory: the blog's loop against ``python -m pneumo pack folders``.

Same 1024 px PNG pairs (demo phantoms written by ``pneumo demo-data``), packed to 256 px,
in one run:

- blog: ``load_img(f, color_mode='grayscale', target_size=(256, 256))`` then one
  ``out['X_train'][i] = ...`` write per image (Keras' load_img is PIL open, convert("L"),
  nearest resize; done with PIL directly so TensorFlow's import is not timed);
- pneumo: ``python -m pneumo pack folders`` with ``--workers`` 1 and all cores.

Then what recording each source file's identity costs (its SHA-256, hashed in the decoding
workers since issue 18) against decoding and resizing the same pairs, in this process, one
after the other (files in the page cache for both); and peak memory (largest process,
ru_maxrss) of ``pneumo pack demo`` at 500 and 5,000 images, to show it stays flat. Prints a
markdown section for docs/benchmarks.md.

    python bench/pack.py [--pairs 200] [--small 500] [--large 5000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from _common import ROOT, machine_line, publish  # noqa: E402

SECTION = "## Packing (bench/pack.py)"


def _cli(*args: str, cwd: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pneumo", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _blog_loop(images: Path, masks: Path, out: Path, size: int = 256) -> float:
    t = time.perf_counter()
    xs, ys = sorted(images.glob("*.png")), sorted(masks.glob("*.png"))
    with h5py.File(out, "w") as f:
        f.create_dataset("X_train", (len(xs), size, size, 1), dtype="uint8")
        f.create_dataset("Y_train", (len(ys), size, size, 1), dtype="uint8")
        for i in range(len(xs)):
            x = Image.open(xs[i]).convert("L").resize((size, size), Image.Resampling.NEAREST)
            y = Image.open(ys[i]).convert("L").resize((size, size), Image.Resampling.NEAREST)
            f["X_train"][i, :, :, :] = np.asarray(x, dtype=np.float32)[..., None].astype("uint8")
            f["Y_train"][i, :, :, :] = np.asarray(y, dtype=np.float32)[..., None].astype("uint8")
    return time.perf_counter() - t


def _peak_rss_mib(*args: str, cwd: Path) -> tuple[float, float]:
    """Wall time and the largest resident set of the command and its workers, in MiB."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        f"subprocess.run([sys.executable, '-m', 'pneumo', *{list(args)!r}], check=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]) / 1024


def _identity_cost(images: Path, masks: Path, size: int = 256) -> tuple[float, float]:
    """Seconds per pair to decode and resize (``load_for_pack``) and to hash (``file_identity``)."""
    from pneumo.ingest import sources
    from pneumo.ingest.pixels import file_identity

    samples = sources.folder_source(images, masks).samples
    t = time.perf_counter()
    for s in samples:
        sources.load_for_pack(s, size)
    decode = time.perf_counter() - t
    t = time.perf_counter()
    for s in samples:
        file_identity(s.image)
    return decode / len(samples), (time.perf_counter() - t) / len(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200, help="1024 px PNG pairs for the speed comparison")
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--large", type=int, default=5000)
    ap.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _cli("demo-data", "ph", "--count", str(a.pairs), "--size", "1024", cwd=tmp)
        images, masks = tmp / "ph" / "train", tmp / "ph" / "masks"
        blog = _blog_loop(images, masks, tmp / "blog.h5")
        one = _cli("pack", "folders", str(images), str(masks), "--out", "p1.h5", "--workers", "1", "--quiet", cwd=tmp)
        allc = _cli("pack", "folders", str(images), str(masks), "--out", "pn.h5", "--workers", str(cores), "--quiet", cwd=tmp)
        decode, digest = _identity_cost(images, masks)
        mem = {}
        for n in (a.small, a.large):
            mem[n] = _peak_rss_mib("pack", "demo", "--count", str(n), "--size", "256", "--out", f"m{n}.h5", "--quiet", cwd=tmp)
    cmd = f"python bench/pack.py --pairs {a.pairs} --small {a.small} --large {a.large}"
    lines = [SECTION, "",
             f"Machine: {machine_line()}; {date.today()}; `{cmd}`. The ratios compare runs made "
             "one after another in the same process.", "",
             f"{a.pairs} pairs of 1024 px PNGs (demo phantoms from `pneumo demo-data`) packed to 256 px; "
             "times include each command's start-up:", "",
             "| method | seconds | pairs/s | speed-up vs blog |", "|---|---:|---:|---:|"]
    for name, t in (("blog loop (PIL load, one write per image)", blog),
                    ("pneumo pack folders --workers 1", one),
                    (f"pneumo pack folders --workers {cores}", allc)):
        lines.append(f"| {name} | {t:.1f} | {a.pairs / t:.1f} | {blog / t:.2f}x |")
    lines += ["", f"Recording each source file's identity (size, mtime and SHA-256 of the PNG, in the decoding "
              f"workers): {digest * 1e3:.2f} ms per image against {decode * 1e3:.1f} ms to decode and resize it "
              f"({digest / decode:.1%} of the decoding, one process, files in the page cache).",
              "", "Peak memory of `pneumo pack demo --size 256` (largest process, workers included):", "",
              "| images | seconds | peak RSS MiB |", "|---:|---:|---:|"]
    for n, (t, rss) in mem.items():
        lines.append(f"| {n} | {t:.1f} | {rss:.0f} |")
    publish(SECTION, lines, a.write_docs)

if __name__ == "__main__":
    main()
