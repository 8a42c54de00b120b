"""Prediction cost per image: ``pneumo predict`` against decoding and resizing alone.

One run, on ``--images`` generated SIIM-shaped DICOMs (1024x1024 8-bit MONOCHROME2, JPEG
baseline inside, as the Kaggle files; tests/siim_fixtures.py) in a temporary folder, with the
quick-demo-sized model (``unet-bn`` width 0.25 at 128 px, random weights, saved in a run folder
with its last layer set to give ~0 everywhere, so that every image comes out negative, as 78% of
SIIM does; the extra cost of a positive image is measured apart, on the finishing stage):

- decode + resize alone: ``read_image`` then the area-averaging resize to 128 px, one process;
- the serial path before this change (``pneumo/predict.py`` at commit ``--old-commit``);
- ``python -m pneumo predict RUN DICOM_DIR --siim-csv`` with ``--workers`` 0 (everything in
  one process), 1 and 2, and 2 with ``--no-overlays``.

Each is a fresh process (the commands as a user runs them), timed on all images and on the
first ``--small`` (one batch): per-image CPU seconds (the process and its workers) and wall
seconds are the difference divided by ``images - small``, so start-up (TensorFlow's import,
the model load, the first batch's tracing) is left out.
Each path runs right after its own decode + resize run, and its ratios are to that run
(load from elsewhere hits both alike); medians over ``--rounds``. Prints a markdown section;
``--write-docs`` puts it into docs/benchmarks.md.

    python bench/predict.py --write-docs
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import ROOT, machine_line, publish  # noqa: E402

SECTION = "## Prediction on every core (bench/predict.py)"
SIZE = 128  # the quick demo's model size

# Run a command and print its wall seconds and the CPU seconds of its whole process tree
# (pool workers are waited for by their parent, so they count in RUSAGE_CHILDREN).
_TIMER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
          "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
          "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
          "print(time.perf_counter() - t, r.ru_utime + r.ru_stime)")

_DECODE = ("import sys; from pathlib import Path; from pneumo.ingest.imageio import read_image; "
           "from pneumo.predict_images import resize_to\n"
           "for f in sys.argv[2:]: resize_to(read_image(f), int(sys.argv[1]))")

_OLD = ("import sys; sys.path.insert(0, sys.argv[1]); import old_predict; "
        "old_predict.predict_files(sys.argv[2], sys.argv[5:], sys.argv[3], siim_csv=sys.argv[4])")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")


def _timed(cmd: list[str]) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _TIMER, *cmd], env=_env(), check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[0]), float(out[1])


def _make_run(run: Path) -> None:
    """A run folder with an untrained quick-demo-sized model whose output is ~0 everywhere."""
    code = f"""
import numpy as np
from pneumo.config import TrainConfig
from pneumo.model.networks import build_model
from pneumo.store.config_file import save_config
from pneumo.store.run import RunFolder
folder = RunFolder({str(run)!r}); folder.path.mkdir(parents=True, exist_ok=True)
save_config(TrainConfig(pack="none.h5", variant="unet-bn", width=0.25, encoder_weights=None), folder.config)
m = build_model("unet-bn", {SIZE}, encoder_weights=None, width=0.25)
layer = m.get_layer("final_conv"); k, b = layer.get_weights(); layer.set_weights([k * 0, b - 30.0])
m.save(folder.checkpoint("best"))
"""
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True, capture_output=True)


def _old_module(commit: str, folder: Path) -> Path | None:
    r = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:pneumo/predict.py"], capture_output=True, text=True)
    if r.returncode:
        return None
    (folder / "old_predict.py").write_text(r.stdout, encoding="utf-8")
    return folder


def _finish_costs(files: list[str]) -> tuple[float, float, float]:
    """CPU seconds of the finishing stage (mask, overlay, both PNGs, RLE) for a negative image
    and for a positive one (an ellipse over ~5% of the film), and of encoding a negative's
    overlay PNG alone, averaged over ``files``."""
    import numpy as np

    from pneumo import evaluate as ev
    from pneumo.predict_images import _finish, _prepare, png_bytes

    yy, xx = np.mgrid[:SIZE, :SIZE]
    lesion = np.where(((yy - 40) / 20) ** 2 + ((xx - 90) / 12) ** 2 < 1, 230, 5).astype(np.uint8)
    empty = np.full((SIZE, SIZE), 5, np.uint8)
    prepared = [(Path(f), _prepare(Path(f), SIZE)) for f in files]
    costs = []
    with tempfile.TemporaryDirectory() as tmp:
        for levels in (empty, lesion):
            t = time.process_time()
            for f, (image, _, ident) in prepared:
                _finish(f, image, ident, levels, ev.DEFAULT_TRIPLET, Path(tmp), f.stem, True, True)
            costs.append((time.process_time() - t) / len(prepared))
    t = time.process_time()
    for _, (image, _, _) in prepared:
        png_bytes(image)
    return costs[0], costs[1], (time.process_time() - t) / len(prepared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="generated 1024 px DICOMs (default 200)")
    ap.add_argument("--small", type=int, default=16,
                    help="images of the run subtracted, so start-up and the model's first batch are left out "
                         "(default 16: one batch)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of every path, interleaved; medians are shown")
    ap.add_argument("--old-commit", default="12c32fa", help="commit of the serial predict to compare with")
    ap.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from siim_fixtures import write_siim_tree

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dicom_dir, _ = write_siim_tree(tmp / "siim", a.images, 1024, 0, jpeg=True)
        files = sorted(str(p) for p in dicom_dir.rglob("*.dcm"))
        run = tmp / "run"
        _make_run(run)
        old = _old_module(a.old_commit, tmp)
        baseline = ("decode + resize alone (1 process)",
                    lambda fs, out: [sys.executable, "-c", _DECODE, str(SIZE), *fs])
        paths: list[tuple[str, Callable]] = []
        if old is not None:
            paths.append((f"serial predict before (commit {a.old_commit})",
                          lambda fs, out: [sys.executable, "-c", _OLD, str(old), str(run), str(out), str(out / "s.csv"),
                                           *fs]))
        for workers, extra in (("0", []), ("1", []), ("2", []), ("2", ["--no-overlays"])):
            label = f"pneumo predict --workers {workers}" + (" --no-overlays" if extra else "")
            paths.append((label, lambda fs, out, w=workers, x=extra: [
                sys.executable, "-m", "pneumo", "predict", str(run), *fs, "--out", str(out),
                "--siim-csv", str(out / "s.csv"), "--workers", w, *x]))

        def per_image(command: Callable, name: str) -> tuple[float, float, float]:
            """(seconds on all images, CPU-s per image, wall s per image) of one fresh run."""
            small = _timed(command(files[:a.small], tmp / f"{name}_small"))
            full = _timed(command(files, tmp / f"{name}_all"))
            n = len(files) - a.small
            return full[0], (full[1] - small[1]) / n, (full[0] - small[0]) / n

        # Every path is measured right after its own decode + resize baseline, and its ratios
        # are to that baseline: a burst of load elsewhere hits both alike. Rounds repeat this,
        # interleaved; the table gives medians over the rounds.
        runs: dict[str, list[tuple[float, ...]]] = {label: [] for label, _ in [baseline, *paths]}
        for r in range(a.rounds):
            for k, (label, command) in enumerate(paths):
                if r and label.startswith("serial predict before"):
                    continue  # 20x slower than the rest: one round says enough
                base = per_image(baseline[1], f"base{r}_{k}")
                got = per_image(command, f"path{r}_{k}")
                runs[baseline[0]].append((*base, 1.0, 1.0))
                runs[label].append((*got, got[1] / base[1], got[2] / base[2]))
        rows = [(label, *(statistics.median(v[i] for v in values) for i in range(5)))
                for label, values in runs.items()]
        negative, positive, overlay_png = _finish_costs(files[:20])
    load_after = os.getloadavg()
    cmd = f"python bench/predict.py --images {a.images} --small {a.small} --rounds {a.rounds}"
    lines = [SECTION, "",
             f"Machine: {machine_line()}; {date.today()}; `{cmd}`; load average {load_before[0]:.2f} before, "
             f"{load_after[0]:.2f} after (1 min).", "",
             f"{a.images} generated SIIM-shaped DICOMs (1024x1024, JPEG inside), the quick-demo-sized model "
             f"(`unet-bn` width 0.25, {SIZE} px) with random weights and its last layer set to give ~0 "
             "everywhere: every image comes out negative (the timing does not depend on what a model learned). "
             "Outputs: a mask and an "
             "overlay PNG per image (1024 px) and the SIIM CSV. Each path is a fresh process, timed on all "
             f"{a.images} images and on the first {a.small} (one batch): per image is the difference divided by "
             f"{a.images - a.small} (start-up and the first batch left out); CPU counts the process and its "
             "workers. Each path ran right after its own decode + resize run, and its ratios are to that run; "
             f"medians of {a.rounds} interleaved rounds (the serial path before: one round).", "",
             "| path | seconds (all images) | CPU-s / image | wall img/s | CPU vs decode+resize "
             "| wall vs decode+resize |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, total, cpu, wall, cpu_ratio, wall_ratio in rows:
        lines.append(f"| {label} | {total:.1f} | {cpu:.3f} | {1 / wall:.1f} | {cpu_ratio:.2f}x | {wall_ratio:.2f}x |")
    lines += ["", f"Finishing a negative image costs {1000 * negative:.1f} ms of CPU, of which "
              f"{1000 * overlay_png:.1f} ms encode its overlay PNG (the gray input, 1024x1024, 1 MB through zlib level 1); "
              f"a positive one (an ellipse over ~5% of the film: mask upsampling, overlay drawing, RLE) "
              f"{1000 * positive:.1f} ms; at SIIM's 22% positives that adds {220 * (positive - negative):.1f} ms "
              "per image on average."]
    publish(SECTION, lines, a.write_docs)


if __name__ == "__main__":
    main()
