"""A stand-in for ``python -m pneumo quickstart`` without TensorFlow: the real command, with only
its two TensorFlow steps replaced.

Usage (what the app tests do)::

    PNEUMO_TESTING=1 PNEUMO_QUICKSTART_COMMAND="python tests/fake_quickstart.py" ...

Everything else is pneumo's own code: the one-job claim, the job record and its stages, the
demo pack (real phantoms, at ``$PNEUMO_FAKE_PACK_OPTIONS``), the run folder and its lock, the
evaluation job and the scoring. Training writes a run folder the way ``tests/fake_trainer.py``
does (status, progress, history, checkpoints, the pack record); predicting writes fixed
predictions (each image's own mask at 0.9, a faint blob on every third negative), which the real
``evaluate_run`` then scores from its fresh caches: tuned triplet, ``metrics_test.json``, cases.
Environment:

- ``PNEUMO_FAKE_PACK_OPTIONS``: JSON keyword arguments of ``make_demo_pack`` (default 60 at 64 px),
- ``PNEUMO_FAKE_GATE=PATH``: hold after the pack's first image, and again before the first
  epoch (state ``running``), until ``PATH`` exists,
- ``PNEUMO_FAKE_EPOCHS`` (default 2), ``PNEUMO_FAKE_SECONDS_PER_EPOCH`` (default 0.2).

A ``STOP`` in the run folder ends training ``stopped``; SIGTERM is the real command's.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from pneumo import config as C  # noqa: E402
from pneumo._io import now_iso  # noqa: E402
from pneumo.cli import main, quickstart  # noqa: E402
from pneumo.ingest import packer  # noqa: E402
from pneumo.store import run as runs  # noqa: E402
from pneumo.store.config_file import save_config  # noqa: E402
from pneumo.store.pack import Pack, pack_fingerprint  # noqa: E402
from pneumo.store.predictions import create_predictions  # noqa: E402

STEPS = 4


def _hold(run_dir: Path | None = None) -> None:
    gate = os.environ.get("PNEUMO_FAKE_GATE")
    while gate and not Path(gate).exists():
        if run_dir is not None and runs.stop_requested(run_dir):
            return  # a stop asked for while held: the first step honours it
        time.sleep(0.05)


def _gated_pack(real):
    def make(out, *args, progress=None, **kwargs):
        held = []

        def on_image(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if not held:  # the job is seen in its pack stage, with progress, until the gate opens
                held.append(True)
                _hold()

        return real(out, *args, progress=on_image, **kwargs)
    return make


def _train(preset: str, config, info, run_dir: Path) -> dict:
    epochs = int(os.environ.get("PNEUMO_FAKE_EPOCHS", "2"))
    seconds = float(os.environ.get("PNEUMO_FAKE_SECONDS_PER_EPOCH", "0.2"))
    t0 = time.monotonic()
    folder = runs.RunWriter(run_dir, now_iso(), epochs, resumed=False)
    save_config(config, folder.files.config)
    runs.write_pack_record(run_dir, pack_fingerprint(config.pack))
    folder.set_status(epoch=0)
    _hold(run_dir)
    state = "finished"
    for epoch in range(1, epochs + 1):
        for step in range(1, STEPS + 1):
            if runs.stop_requested(run_dir):
                runs.clear_stop(run_dir)
                state = "stopped"
                break
            time.sleep(seconds / STEPS)
            folder.write_progress({"stage": "train", "epoch": epoch, "epochs": epochs, "step": step, "steps": STEPS,
                                   "loss": 0.5 / epoch, "images_per_s": 100.0, "eta_s": 1.0, "updated": now_iso()})
        if state == "stopped":
            break
        folder.append_history({"epoch": epoch, "stage": "train", "loss": 0.5 / epoch, "dice": 0.5, "iou": 0.4,
                               "val_loss": 0.6 / epoch, "val_dice": 0.3 * epoch, "val_iou": 0.2, "lr": 1e-3,
                               "seconds": seconds})
        for name in ("best", "last"):
            folder.files.checkpoint(name).write_bytes(b"fake")
        folder.set_status(epoch=epoch)
    folder.set_status(state=state, ended=now_iso())
    return runs.summary(state, run_dir, epochs, time.monotonic() - t0)


def _fixed_levels(masks: np.ndarray, index: int) -> np.ndarray:
    levels = np.where(masks > 0, 230, 5).astype(np.uint8)  # the lesion at 0.9, the rest at 0.02
    if not masks.any() and index % 3 == 0:
        levels[:, 4:10, 4:10] = 150  # a faint blob: a false positive at a low threshold
    return levels


def _evaluate(run_dir: Path, real=quickstart._evaluate) -> dict:
    config = json.loads(runs.RunFolder(run_dir).config.read_text())
    with Pack(config["pack"]) as pack:
        for split in ("dev", "test"):
            ids, masks = pack.ids(split), pack.masks(split)
            with create_predictions(run_dir, split, ids, pack.size, config["pack"]) as out:
                for i in range(len(ids)):
                    out.write(i, _fixed_levels(masks[i:i + 1], i))
    return real(run_dir)


def _small_preset() -> None:
    """The quick-demo preset at toy scale, so a 60-image pack plans (mechanics, not quality)."""
    small = {**C.to_dict(C.PRESETS[C.QUICK_PRESET]), "batch_size": 4, "steps_per_epoch": STEPS,
             "validation_steps": 1, "epochs": int(os.environ.get("PNEUMO_FAKE_EPOCHS", "2"))}
    C.PRESETS[C.QUICK_PRESET] = C.from_dict(C.TrainConfig, small)


if __name__ == "__main__":
    C.QUICK_PACK_OPTIONS = json.loads(os.environ.get("PNEUMO_FAKE_PACK_OPTIONS") or '{"count": 60, "size": 64}')
    _small_preset()
    packer.make_demo_pack = _gated_pack(packer.make_demo_pack)
    quickstart._train, quickstart._evaluate = _train, _evaluate
    sys.exit(main(["quickstart", *sys.argv[1:]]))
