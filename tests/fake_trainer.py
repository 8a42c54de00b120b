"""A stand-in for ``python -m pneumo train`` that writes a run folder without TensorFlow.

Usage (what the app tests do)::

    PNEUMO_TESTING=1 PNEUMO_TRAIN_COMMAND="python tests/fake_trainer.py" ...

Accepts the trainer's arguments (``--config C --run-dir R [--resume]``, other options
ignored) and writes ``status.json``, ``progress.json`` and ``history.csv`` per the run
folder contract (docs/architecture.md) over a few seconds. Environment:

- ``PNEUMO_FAKE_EPOCHS`` (default: the config's epochs + fine_tune_epochs, at most 3),
- ``PNEUMO_FAKE_SECONDS_PER_EPOCH`` (default 1.0),
- ``PNEUMO_FAKE_FAIL=1``: end ``failed`` (error "fake failure") after the first epoch,
- ``PNEUMO_FAKE_GATE=PATH``: hold before the first epoch, state ``running``, until ``PATH``
  exists (a test opens the gate when it has seen the run running: no race with a clock).

Honours ``STOP`` in the run folder and SIGTERM (state ``stopped``, ``last.keras`` touched).
Holds the run folder's lock like the real trainer (:func:`pneumo.store.run.writer_lock`, taken
over from the launcher through ``$PNEUMO_RUN_HANDOVER``); refused, it prints ``error: ...``
and exits 2 without writing. Needs only the standard library and ``pneumo.store.run`` (found
from this file's folder), so it runs from any working directory without TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pneumo.errors import InputError  # noqa: E402
from pneumo.store import run as runs  # noqa: E402

STEPS = 5
COLUMNS = "epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", nargs="?")
    parser.add_argument("--config")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume", action="store_true")
    args, _unknown = parser.parse_known_args(argv)

    run = Path(args.run_dir)
    term = {"flag": False}
    # Before the lock: a test that sees this process hold the lock may signal it at once.
    signal.signal(signal.SIGTERM, lambda *_: term.update(flag=True))
    lock = runs.writer_lock(run, "fake training", handover_from=runs.handover_pid())
    try:
        lock.acquire()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        return _train(args, run, term)
    finally:
        lock.release()


def _train(args: argparse.Namespace, run: Path, term: dict) -> int:
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    planned = int(config.get("epochs", 2)) + int(config.get("fine_tune_epochs", 0))
    epochs = int(os.environ.get("PNEUMO_FAKE_EPOCHS", min(planned, 3)))
    seconds = float(os.environ.get("PNEUMO_FAKE_SECONDS_PER_EPOCH", "1.0"))
    fail = os.environ.get("PNEUMO_FAKE_FAIL") == "1"
    batch = int(config.get("batch_size", 32))
    lr = float(config.get("lr", 2e-5))

    started = _now()
    status = {"state": "running", "pid": os.getpid(), "started": started, "updated": started,
              "ended": None, "error": None, "epoch": 0, "epochs": epochs}

    def set_status(**kw) -> None:
        status.update(kw, updated=_now())
        _write(run / "status.json", json.dumps(status, indent=2) + "\n")

    history = run / "history.csv"
    done = 0
    if args.resume and history.exists():
        done = max(0, len(history.read_text().strip().splitlines()) - 1)
    else:
        _write(history, COLUMNS + "\n")
    set_status(epoch=done)
    print(f"fake trainer: {epochs} epochs of {seconds:g} s in {run}", flush=True)

    def stop_now() -> bool:
        if not ((run / "STOP").exists() or term["flag"]):
            return False
        (run / "last.keras").write_bytes(b"fake")
        (run / "STOP").unlink(missing_ok=True)
        set_status(state="stopped", ended=_now())
        print("fake trainer: stopped", flush=True)
        return True

    gate = os.environ.get("PNEUMO_FAKE_GATE")
    while gate and not Path(gate).exists():
        if stop_now():
            return 0
        time.sleep(0.05)

    for epoch in range(done + 1, epochs + 1):
        t0 = time.monotonic()
        for step in range(1, STEPS + 1):
            time.sleep(seconds / STEPS)
            if stop_now():
                return 0
            loss = 0.7 * math.exp(-0.3 * ((epoch - 1) * STEPS + step) / STEPS)
            elapsed = time.monotonic() - t0
            _write(run / "progress.json", json.dumps({
                "stage": "train", "epoch": epoch, "epochs": epochs, "step": step, "steps": STEPS,
                "loss": loss, "images_per_s": step * batch / max(elapsed, 1e-6),
                "eta_s": (epochs - epoch + (STEPS - step) / STEPS) * seconds, "updated": _now(),
            }) + "\n")
        dice = 1 - loss
        row = [epoch, "train", loss, dice, dice * 0.8, loss * 1.1, dice * 0.9, dice * 0.7, lr,
               time.monotonic() - t0]
        with open(history, "a", encoding="utf-8") as f:
            f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")
        (run / "last.keras").write_bytes(b"fake")
        (run / "best.keras").write_bytes(b"fake")
        set_status(epoch=epoch)
        print(f"fake trainer: epoch {epoch}/{epochs} loss {loss:.4f}", flush=True)
        if fail:
            set_status(state="failed", ended=_now(), error="fake failure")
            print("error: fake failure", file=sys.stderr, flush=True)
            return 1
    set_status(state="finished", ended=_now())
    print("fake trainer: finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
