"""Time-to-quality of the quick demo: test-split scores against images seen and wall time.

For each seed, trains ``config.PRESETS["quick-demo"]`` (plus ``--set key=value`` overrides)
on a task's 128 px pack through ``pneumo.train.loop.train``, exactly as ``python -m pneumo
quickstart`` does, and keeps a copy of ``last.keras`` after every epoch (copy time is not
counted). Afterwards each snapshot is scored on the test split with the triplet tuned on
dev (``pneumo.predict.evaluate_run``): SIIM score, the all-empty baseline, mean Dice on
positives and presence AUC. The final row of a seed is the run's ``best.keras``, what the
user gets.

Tasks: ``phantoms`` (the quick demo's own pack: ``config.QUICK_PACK_OPTIONS``) and
``ellipses`` (a different synthetic task written here: faint elongated lesions on smooth
textured backgrounds, with round distractors of the same contrast that are *not* lesions;
~22% positive).

    python bench/quality.py --seeds 0 1 2 --task phantoms --write-docs
    python bench/quality.py --seeds 0 --task ellipses --write-docs
    python bench/quality.py --seeds 0 --set width=0.125 --set positive_fraction=null   # a candidate

Writes a PNG chart (``docs/quality-<task>.png``) and, with ``--write-docs``, the table into
docs/benchmarks.md under "## Quick demo quality (bench/quality.py)" (one sub-section per task).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import BENCHMARKS_MD, ROOT, machine_line  # noqa: E402

import numpy as np  # noqa: E402

SECTION = "## Quick demo quality (bench/quality.py)"


# --------------------------------------------------------------------------- tasks
def ellipses_pack(path: Path, count: int = 1000, size: int = 128, seed: int = 0) -> Path:
    """A pack of a task unlike the phantoms; layout as docs/architecture.md ("Pack").

    Background: smooth random texture (sum of a few low-frequency cosines) plus noise.
    Lesion (22% of images): a rotated ellipse, 3-6x longer than wide, 25-40 gray levels
    brighter. Distractors (0-2 per image, any image): discs of the same contrast, not in
    the mask, so "a bright blob" is not enough to call an image positive.
    """
    from pneumo.store.pack import PackWriter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    counts = (int(round(count * 250 / 330)), int(round(count * 40 / 330)))
    counts = (counts[0], counts[1], count - counts[0] - counts[1])
    with PackWriter(path, size, dict(zip(("train", "dev", "test"), counts)), sources=False) as writer:
        for split, n in zip(("train", "dev", "test"), counts):
            X = np.zeros((n, size, size, 1), np.uint8)
            Y = np.zeros((n, size, size, 1), np.uint8)
            for i in range(n):
                img = np.full((size, size), 100.0, np.float32)
                for _ in range(3):
                    fx, fy = rng.uniform(0.5, 3, 2) * 2 * np.pi / size
                    img += rng.uniform(5, 20) * np.cos(fx * xx + fy * yy + rng.uniform(0, 2 * np.pi))
                img += rng.normal(0, 8, img.shape)
                for _ in range(rng.integers(0, 3)):
                    cy, cx = rng.uniform(0.15, 0.85, 2) * size
                    r = rng.uniform(0.04, 0.08) * size
                    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] += rng.uniform(25, 40)
                if rng.random() < 0.22:
                    cy, cx = rng.uniform(0.2, 0.8, 2) * size
                    a = rng.uniform(0.12, 0.25) * size
                    b = a / rng.uniform(3, 6)
                    t = rng.uniform(0, np.pi)
                    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
                    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
                    m = (u / a) ** 2 + (v / b) ** 2 <= 1
                    img[m] += rng.uniform(25, 40)
                    Y[i, ..., 0] = m * 255
                X[i, ..., 0] = np.clip(img, 0, 255).astype(np.uint8)
            writer.append(split, [f"{split}-{i:05d}" for i in range(n)], X, Y)
        writer.finish(seed=seed, split=json.dumps({"proportions": list(counts)}), source="bench/quality.py ellipses")
    return path


def task_pack(task: str, folder: Path, count: int | None) -> Path:
    """The pack of ``task`` in ``folder`` (made once; reused across seeds)."""
    from pneumo.config import QUICK_PACK_OPTIONS
    from pneumo.ingest.packer import make_demo_pack

    if task == "phantoms":
        options = dict(QUICK_PACK_OPTIONS)
        if count:
            options["count"] = count
        path = folder / "phantoms.h5"
        if not path.is_file():
            make_demo_pack(path, **options)
        return path
    path = folder / "ellipses.h5"
    if not path.is_file():
        ellipses_pack(path, count=count or 1000)
    return path


# --------------------------------------------------------------------------- one run
def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value not in ("",) else None
    return out


def train_and_score(pack: Path, seed: int, overrides: dict, work: Path) -> dict:
    """Train the preset once; score every epoch's snapshot and best.keras on test."""
    import keras

    from pneumo import predict
    from pneumo.config import PRESETS, from_dict, to_dict
    from pneumo.train.loop import train

    base = to_dict(PRESETS["quick-demo"])
    base.update(overrides)
    base.update(pack=str(pack), seed=seed)
    config = from_dict(type(PRESETS["quick-demo"]), base, where="--set")
    run = work / f"run-seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    snaps = work / f"snaps-seed{seed}"
    shutil.rmtree(snaps, ignore_errors=True)
    snaps.mkdir(parents=True)
    keras.utils.set_random_seed(seed)  # the process entry point's job, as in the CLI
    state = {"pause": 0.0, "mtime": None, "t0": time.monotonic(), "rows": []}

    def progress(info: dict) -> None:
        last = run / "last.keras"
        if not last.is_file() or last.stat().st_mtime_ns == state["mtime"]:
            return
        t = time.monotonic()
        state["mtime"] = last.stat().st_mtime_ns
        shutil.copy2(last, snaps / f"epoch{info['epoch']:03d}.keras")
        state["rows"].append({"epoch": info["epoch"], "seconds": t - state["t0"] - state["pause"],
                              "images": info["epoch"] * info["steps"] * config.batch_size,
                              "images_per_s": info.get("images_per_s")})
        state["pause"] += time.monotonic() - t

    load = os.getloadavg()[0]
    summary = train(config, run, progress=progress, verbose=0)
    seconds = summary["seconds"] - state["pause"]
    load = max(load, os.getloadavg()[0])
    curve = []
    for row in state["rows"]:
        best = run / "best.keras"
        keep = best.read_bytes() if best.is_file() else None
        shutil.copy2(snaps / f"epoch{row['epoch']:03d}.keras", best)  # evaluate_run scores best.keras
        m = predict.evaluate_run(run, "test", "best", force=True)
        if keep is not None:
            best.write_bytes(keep)
        curve.append({**row, **_pick(m)})
    final = _pick(predict.evaluate_run(run, "test", "best", force=True))
    return {"seed": seed, "seconds": seconds, "load": load, "config": to_dict(config), "curve": curve,
            "final": final, "best_epoch": summary["best_epoch"],
            "images": state["rows"][-1]["images"] if state["rows"] else 0}


def _pick(m: dict) -> dict:
    return {k: m.get(k) for k in ("siim_score", "empty_baseline", "dice_positive_mean", "auc", "n_images",
                                  "n_positive")}


# --------------------------------------------------------------------------- report
def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(task: str, results: list[dict], command: str, params: int, pack_info: str) -> str:
    cfg = results[0]["config"]
    lines = [
        f"### Task: {task}",
        "",
        f"Machine: {machine_line()}. Date: {dt.date.today().isoformat()}. Command: `{command}`.",
        f"Pack: {pack_info}. Model: {cfg['variant']} width {cfg['width']} ({params:,} parameters); "
        f"{cfg['epochs']} x {cfg['steps_per_epoch']} steps of {cfg['batch_size']}, lr {cfg['lr']} "
        f"({cfg['lr_schedule']}), loss {cfg['loss']}, positive_fraction {cfg['positive_fraction']}.",
        "The load is the 1-minute load average (`uptime`; 2 cores), the higher of its values at the start and "
        "the end of training: above ~0.5 the machine was shared and the seconds are longer than on an idle "
        "one; images seen is machine independent. Train s is the whole "
        "`pneumo.train.loop.train` call (build, trace, validation each epoch) minus the snapshot copies.",
        "",
        "Final (best.keras, test split, triplet tuned on dev):",
        "",
        "| seed | SIIM | all-empty | SIIM - empty | Dice on positives | AUC | train s | img/s (last epoch) | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f = r["final"]
        gain = None if f["siim_score"] is None else f["siim_score"] - f["empty_baseline"]
        rate = r["curve"][-1]["images_per_s"] if r["curve"] else None
        lines.append(f"| {r['seed']} | {_fmt(f['siim_score'])} | {_fmt(f['empty_baseline'])} | {_fmt(gain, '+.3f')} | "
                     f"{_fmt(f['dice_positive_mean'])} | {_fmt(f['auc'])} | {r['seconds']:.0f} | {_fmt(rate, '.1f')} | "
                     f"{r['load']:.2f} |")
    lines += ["", "Per epoch (last.keras of that epoch):", "",
              "| seed | epoch | images seen | train s | SIIM | all-empty | Dice+ | AUC |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for c in r["curve"]:
            lines.append(f"| {r['seed']} | {c['epoch']} | {c['images']:,} | {c['seconds']:.0f} | {_fmt(c['siim_score'])} | "
                         f"{_fmt(c['empty_baseline'])} | {_fmt(c['dice_positive_mean'])} | {_fmt(c['auc'])} |")
    return "\n".join(lines) + "\n"


def chart(task: str, results: list[dict], out: Path) -> None:
    """PNG: test SIIM (solid), Dice on positives (thin) and all-empty (gray) against images seen.

    Drawn with Pillow (no plotting library needed); one colour per seed.
    """
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 640, 360, 50, 130, 20, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xmax = max((c["images"] for r in results for c in r["curve"]), default=1)

    def xy(images: float, score: float) -> tuple[float, float]:
        return (left + (w - left - right) * images / xmax, top + (h - top - bottom) * (1 - score))

    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line([xy(0, v), xy(xmax, v)], fill=(230, 230, 230))
        d.text((5, xy(0, v)[1] - 6), f"{v:.2f}", fill="black")
    for k in range(0, 5):
        x = xmax * k / 4
        d.text((xy(x, 0)[0] - 10, h - bottom + 5), f"{int(x):,}", fill="black")
    d.text((left + 150, h - 18), "training images seen", fill="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    if results and results[0]["curve"]:
        e = results[0]["curve"][0]["empty_baseline"]
        d.line([xy(0, e), xy(xmax, e)], fill=(120, 120, 120), width=2)
        d.text((w - right + 8, xy(0, e)[1] - 6), "all-empty", fill=(120, 120, 120))
    for i, r in enumerate(results):
        c = colours[i % len(colours)]
        pts = [xy(p["images"], p["siim_score"] or 0) for p in r["curve"]]
        dpts = [xy(p["images"], p["dice_positive_mean"] or 0) for p in r["curve"]]
        if len(pts) > 1:
            d.line(pts, fill=c, width=3)
            d.line(dpts, fill=c, width=1)
        d.text((w - right + 8, top + 14 * i), f"seed {r['seed']}: SIIM (thick)", fill=c)
    d.text((w - right + 8, top + 14 * len(results)), "thin: Dice on +", fill="black")
    d.text((left, 3), f"Quick demo on {task}: test split", fill="black")
    img.save(out)


def write_docs(task: str, text: str) -> None:
    """Put ``text`` under SECTION, replacing that task's sub-section (other tasks kept)."""
    from pneumo._io import atomic_write_text

    doc = BENCHMARKS_MD.read_text(encoding="utf-8")
    intro = (f"{SECTION}\n\nThe quick demo (`config.PRESETS[\"quick-demo\"]`) trained from random weights, "
             "scored on the test split after every epoch. Targets (issue 10): phantoms SIIM >= all-empty + 0.10, "
             "Dice on positives >= 0.75, AUC >= 0.95 in <= 3 min on an idle 2-core machine; another task "
             "all-empty + 0.05 and Dice+ >= 0.5. Candidates tried are listed at the end.\n\n")
    if SECTION not in doc:
        doc = doc.rstrip() + "\n\n" + intro
    start = doc.index(SECTION)
    nxt = doc.find("\n## ", start + len(SECTION))
    end = len(doc) if nxt < 0 else nxt + 1
    body = doc[start:end]
    head = f"### Task: {task}"
    if head in body:
        s = body.index(head)
        e = body.find("\n### ", s + len(head))
        body = body[:s] + text.rstrip() + "\n" + (body[e:] if e >= 0 else "\n")
    else:
        body = body.rstrip() + "\n\n" + text.rstrip() + "\n\n"
    atomic_write_text(BENCHMARKS_MD, doc[:start] + body + doc[end:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("phantoms", "ellipses"), default="phantoms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--count", type=int, help="images in the task's pack (default: the quick demo's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a preset field, e.g. --set width=0.125 --set positive_fraction=null")
    p.add_argument("--work", type=Path, help="folder for packs and runs (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    work = args.work or Path(tempfile.mkdtemp(prefix="pneumo-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    overrides = _parse_set(args.set)
    pack = task_pack(args.task, work, args.count)
    from pneumo.model.networks import build_model
    from pneumo.store.pack import read_info

    results = []
    for seed in args.seeds:
        r = train_and_score(pack, seed, overrides, work)
        results.append(r)
        f = r["final"]
        print(f"seed {seed}: SIIM {_fmt(f['siim_score'])} vs all-empty {_fmt(f['empty_baseline'])}, Dice+ "
              f"{_fmt(f['dice_positive_mean'])}, AUC {_fmt(f['auc'])}, {r['seconds']:.0f} s train, load {r['load']:.2f}",
              flush=True)
    cfg = results[0]["config"]
    params = build_model(cfg["variant"], read_info(pack).size, None, width=cfg["width"]).count_params()
    info = read_info(pack)
    pack_info = f"{args.task}, {info.size} px, train/dev/test {info.counts['train']}/{info.counts['dev']}/{info.counts['test']}"
    command = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(args.task, results, command, params, pack_info)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    # The docs' chart only with --write-docs: a candidate's run must not replace it.
    chart(args.task, results, (ROOT / "docs" if args.write_docs else work) / f"quality-{args.task}.png")
    if args.write_docs:
        write_docs(args.task, text + f"\n![quality on {args.task}](quality-{args.task}.png)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
