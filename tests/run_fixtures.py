"""Tiny finished run folders for tests (evaluation, prediction, the review page).

``make_trained_run`` writes what ``pneumo.train`` leaves behind (docs/architecture.md, "Run
folder"): ``config.json``, ``status.json`` (finished), ``history.csv``, ``best.keras`` and
``last.keras``, from a 64 px model without pretrained weights fitted for a few steps on the
pack's train split, so its predictions are not constant. It does not use ``pneumo.train``,
so these tests do not depend on the training loop.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_trained_run(run_dir: str | os.PathLike, pack_path: str | os.PathLike, variant: str = "unet",
                     size: int = 64, *, fit_steps: int = 12, seed: int = 0) -> Path:
    """Create a finished run folder at ``run_dir`` (created if needed) and return it.

    The model is ``pneumo.model.build_model(variant, size, encoder_weights=None)`` trained
    ``fit_steps`` batches of 8 on ``X_train`` of ``pack_path`` (whose size must be ``size``);
    on the tiny test pack, 12 steps give positives a peak near 1.0 and negatives about 0.9,
    so the tuned triplet yields a mix of TP/FP/FN/TN. Takes about 30 s on a busy 2-core CPU.
    ``best.keras`` and ``last.keras`` are the same weights; ``last.keras`` is written second.
    """
    import h5py
    import keras
    import numpy as np

    from pneumo.config import TrainConfig, save_config
    from pneumo.model import build_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(pack=str(pack_path), variant=variant, encoder_weights=None, epochs=1,
                      steps_per_epoch=fit_steps, batch_size=8, lr=3e-4, seed=seed)
    save_config(cfg, run_dir / "config.json")

    with h5py.File(pack_path, "r") as f:
        x = f["X_train"][:48]
        y = (f["Y_train"][:48] > 0).astype("float32")
    if x.shape[1] != size:
        raise ValueError(f"pack {pack_path} has size {x.shape[1]}, not {size}")

    keras.utils.set_random_seed(seed)  # test helper, not library code: reproducible weights
    model = build_model(variant, input_size=size, encoder_weights=None)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="binary_crossentropy")
    if fit_steps > 0:
        reps = int(np.ceil(fit_steps * 8 / len(x)))
        xs, ys = np.concatenate([x] * reps)[: fit_steps * 8], np.concatenate([y] * reps)[: fit_steps * 8]
        hist = model.fit(xs, ys, batch_size=8, epochs=1, shuffle=False, verbose=0)
        loss = float(hist.history["loss"][-1])
    else:
        loss = float("nan")
    # a fresh uncompiled copy: the files hold weights only (no Adam state), a third the size
    plain = build_model(variant, input_size=size, encoder_weights=None)
    plain.set_weights(model.get_weights())
    plain.save(run_dir / "best.keras")
    plain.save(run_dir / "last.keras")

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (run_dir / "history.csv").write_text(
        "epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds\n"
        f"1,train,{loss:.6f},0.0,0.0,{loss:.6f},0.0,0.0,0.0003,1.0\n", encoding="utf-8")
    status = {"state": "finished", "pid": os.getpid(), "started": now, "updated": now, "ended": now,
              "error": None, "epoch": 1, "epochs": 1}
    (run_dir / "status.json").write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    return run_dir
