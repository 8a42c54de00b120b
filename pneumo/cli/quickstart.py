"""``python -m pneumo quickstart``: the command-line twin of the app's "Train a quick demo model".

In the workspace (``PNEUMO_WORKSPACE``, default the current folder) it makes the quick
demo's pack if it is missing (``data/`` + ``config.QUICK_PACK_NAME``), trains the
``quick-demo`` preset into a new run folder under ``runs/`` with a progress bar, scores
the test split (triplet tuned on dev) and prints the SIIM score beside the all-empty
baseline, the Dice on positive images, the presence AUC and the commands that open the
review. Exit status 0 only when all of that worked. Like the app it runs one job at a time in
the workspace: it refuses to start while a training or evaluation runs there, and from its
first step to its last it is the workspace's running job: it records its stage in the runs
folder (.quickstart.json), the app's Home page follows it and shows its test scores, and
the Training and Review pages see its run. The app's "Train a quick demo model" runs this
very command in the background. SIGTERM or Ctrl-C stop it (a pack is never left half-written).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Iterator


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="make the demo pack, train the quick demo, evaluate it, print how to review it",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
    )
    p.add_argument("--pack", metavar="H5",
                   help="train on this pack instead of the quick demo's (made in the workspace if missing)")
    p.add_argument("--preset", default="quick-demo", metavar="NAME",
                   help="preset to train (default quick-demo)")
    p.add_argument("--seed", type=int, help="seed of weights, sampling and augmentation (default: the preset's)")
    p.add_argument("--epochs", type=int, help="epochs (default: the preset's)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: the preset's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from pneumo import config as C
    from pneumo import settings
    from pneumo.train import jobs

    base = C.preset(args.preset)
    changes = {k: getattr(args, k) for k in ("seed", "epochs", "steps_per_epoch") if getattr(args, k) is not None}
    # A workspace that is a file or cannot be written: one line naming it, before any work.
    settings.check_workspace(write=("runs",) if args.pack else ("data", "runs"))
    jobs.refuse_if_busy()  # at once, before any work; checked again when the job is claimed

    if args.pack:
        pack_path = Path(args.pack).expanduser()
        from pneumo.store.pack import read_info

        read_info(pack_path)  # a clear error now rather than after the model is built
    else:
        pack_path = settings.data_dir() / C.QUICK_PACK_NAME
    # The workspace's one job from here on: the app's Home page follows its record.
    with _sigterm_interrupts(), jobs.own_quick_demo() as job:
        job.update(pack=pack_path)
        if not pack_path.is_file():
            _make_pack(pack_path, job)
        else:
            print(f"demo pack: {pack_path} (exists)", flush=True)
        config = dataclasses.replace(base, pack=str(pack_path), **changes)
        return _train_and_evaluate(args.preset, config, job)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (the app's Stop) ends this command like Ctrl-C while inside (the job is recorded
    ``stopped``; training itself turns it into a clean stop); the old handler afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_and_evaluate(preset: str, config, job) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pneumo.plan import plan_run
    from pneumo.store.run_list import new_run_dir
    from pneumo.train import jobs

    info = plan_run(config)  # bad input fails before a run folder exists
    run_dir = new_run_dir(prefix="quickstart")
    job.update(stage="train", run=run_dir)
    try:
        # The app sees this run (then its evaluation) as the running one.
        with jobs.own_training(config, run_dir, what="quickstart"):
            print(f"run folder: {run_dir}", flush=True)
            summary = _train(preset, config, info, run_dir)
    except Exception:
        if not any(run_dir.iterdir()):
            run_dir.rmdir()  # refused: leave no empty run folder behind
        raise
    if summary["state"] != "finished":
        message = f"training {summary['state']} after {summary['epochs_done']} epochs"
        job.end("stopped" if summary["state"] == "stopped" else "failed", message)
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(f"trained {summary['epochs_done']} epochs in {summary['seconds']:.0f} s", flush=True)
    job.update(stage="evaluate")
    with jobs.own_evaluation(run_dir, "test", "best"):
        m = _evaluate(run_dir)
    job.end("finished")
    print(format_result(m, run_dir), flush=True)
    return 0


def _train(preset: str, config, info, run_dir) -> dict:
    """Train ``config`` into ``run_dir`` in this process with a progress bar; ``train``'s summary."""
    import keras
    from tqdm import tqdm

    from pneumo.train.loop import train

    # The process entry point seeds Keras' global generator (weight initialisation).
    keras.utils.set_random_seed(config.seed)
    total = config.epochs * info.steps
    bar = tqdm(total=total, unit="step", desc=f"training {preset}", file=sys.stdout)

    def progress(p: dict) -> None:
        bar.n = min(total, (p["epoch"] - 1) * p["steps"] + p["step"])
        bar.set_postfix(epoch=f"{p['epoch']}/{p['epochs']}", loss=f"{p['loss'] or float('nan'):.3f}", refresh=False)
        bar.refresh()

    try:
        return train(config, run_dir, progress=progress, verbose=0)
    finally:
        bar.close()


def _evaluate(run_dir) -> dict:
    """Score the test split with ``best.keras`` (triplet tuned on dev); the metrics written."""
    from tqdm import tqdm

    from pneumo.predict import evaluate_run

    ebar = None

    def eprogress(done: int, n: int) -> None:
        nonlocal ebar
        if ebar is None:
            ebar = tqdm(total=n, unit="img", desc="evaluating", leave=False, file=sys.stdout)
        ebar.update(done - ebar.n)

    try:
        return evaluate_run(run_dir, "test", "best", eprogress)
    finally:
        if ebar is not None:
            ebar.close()


def _make_pack(path, job) -> None:
    from tqdm import tqdm

    from pneumo import config as C
    from pneumo.ingest.packer import make_demo_pack

    bar = tqdm(total=None, unit="img", desc="making the demo pack", file=sys.stdout)
    recorded = [0]

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        # the record is rewritten (fsynced) about 50 times per pack, not once per image
        if done in (1, total) or done - recorded[0] >= max(1, total // 50):
            recorded[0] = done
            job.update(done=done, total=total)

    try:
        info = make_demo_pack(path, progress=progress, **C.QUICK_PACK_OPTIONS)
    finally:
        bar.close()
    print(f"demo pack: {path} ({info.size} px, train/dev/test "
          f"{info.counts['train']}/{info.counts['dev']}/{info.counts['test']})", flush=True)


def format_result(m: dict, run_dir) -> str:
    """The lines quickstart prints from ``evaluate_run``'s metrics."""

    def f(x, spec=".3f"):
        return "n/a" if x is None else format(x, spec)

    gain = None if m.get("siim_score") is None or m.get("empty_baseline") is None else m["siim_score"] - m["empty_baseline"]
    lines = [
        f"test split: {m['n_images']} images, {m['n_positive']} with a lesion",
        f"  SIIM score          {f(m['siim_score'])}   (all-empty prediction: {f(m['empty_baseline'])}; "
        f"difference {f(gain, '+.3f')})",
        f"  Dice on positives   {f(m['dice_positive_mean'])}",
        f"  presence AUC        {f(m['auc'])}",
    ]
    if gain is not None and gain <= 0:
        lines.append("  note: no better than predicting nothing; train longer (python -m pneumo train --preset ...)")
    lines += [
        "review its mistakes:",
        "  streamlit run streamlit_app.py          (then the Review page; choose this run)",
        f"  python -m pneumo review {run_dir}      (progress and verdict export, no browser)",
    ]
    return "\n".join(lines)
