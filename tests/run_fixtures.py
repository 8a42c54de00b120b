"""Tiny finished run folders for tests (evaluation, prediction, the review page).

``make_trained_run`` writes what ``pneumo.train.loop`` leaves behind (docs/architecture.md, "Run
folder"): ``config.json``, ``status.json`` (finished), ``history.csv``, ``best.keras`` and
``last.keras``, from a 64 px model without pretrained weights fitted for a few steps on the
pack's train split, so its predictions are not constant. It does not use ``pneumo.train.loop``,
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

    The model is ``pneumo.model.networks.build_model(variant, size, encoder_weights=None)`` trained
    ``fit_steps`` batches of 8 on ``X_train`` of ``pack_path`` (whose size must be ``size``);
    on the tiny test pack, 12 steps give positives a peak near 1.0 and negatives about 0.9,
    so the tuned triplet yields a mix of TP/FP/FN/TN. Takes about 30 s on a busy 2-core CPU.
    ``best.keras`` and ``last.keras`` are the same weights; ``last.keras`` is written second.
    """
    import h5py
    import keras
    import numpy as np

    from pneumo.config import TrainConfig
    from pneumo.store.config_file import save_config
    from pneumo.model.networks import build_model

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


#: The post-processing the designed predictions of :func:`make_review_run` are scored with.
REVIEW_TRIPLET = {"pixel_threshold": 0.5, "top_threshold": 0.5, "min_area": 4}


def designed_probs(masks, seed: int = 0):
    """Fixed predictions with every category present: ``(N, S, S, 1) uint8`` levels.

    Positives alternate TP (the mask at 200..240) and FN (nothing above 60); negatives
    alternate FP (a square blob at 180..220, side ``S // 8``) and TN (noise below 60). Levels
    vary by image, so "most confident first" has a fixed order. Depends only on ``masks``
    and ``seed``, never on a model.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n, size = masks.shape[0], masks.shape[1]
    probs = rng.integers(0, 40, masks.shape).astype(np.uint8)
    positive = masks.reshape(n, -1).max(axis=1) > 0
    side = max(3, size // 8)
    kp = kn = 0
    for i in range(n):
        if positive[i]:
            if kp % 2 == 0:  # TP
                probs[i][masks[i] > 0] = 200 + 10 * (kp // 2 % 5)
            kp += 1
        else:
            if kn % 2 == 0:  # FP: a blob away from the image centre
                top = size // 4 + (kn // 2 % 3) * side // 2
                probs[i, top : top + side, top : top + side] = 180 + 10 * (kn // 2 % 5)
            kn += 1
    return probs


def write_cached_predictions(run_dir, split: str, probs, ids, pack_path, checkpoint: str = "best"):
    """Write ``RUN/predictions_<split>.h5`` with the writer ``pneumo.predict`` uses
    (:func:`pneumo.store.predictions.create_predictions`), fresh for the run's current
    checkpoint and pack (so the Review page shows it as current); ``probs (N, S, S, 1) uint8``."""
    from pneumo.store.predictions import create_predictions

    with create_predictions(run_dir, split, ids, probs.shape[1], pack_path, checkpoint) as writer:
        writer.write(0, probs)
    return writer.path


def make_review_run(run_dir: str | os.PathLike, pack_path: str | os.PathLike, *, splits=("dev", "test"),
                    seed: int = 0, state: str = "finished") -> Path:
    """A finished run folder whose predictions are written directly (:func:`designed_probs`),
    not learnt: ``config.json``, ``status.json``, ``history.csv``, a placeholder ``best.keras``
    (its modification time is what freshness checks compare; the page never loads it),
    ``predictions_<split>.h5`` for ``splits`` and ``metrics_<split>.json`` scored with
    :data:`REVIEW_TRIPLET`. FP, FN, TP and TN are all non-empty when the split has at least
    two positives and two negatives. No TensorFlow.
    """
    import h5py

    from pneumo import evaluate
    from pneumo.config import TrainConfig
    from pneumo.store.config_file import save_config
    from pneumo.store.predictions import write_metrics

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(TrainConfig(pack=str(pack_path), encoder_weights=None, epochs=1, seed=seed), run_dir / "config.json")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (run_dir / "history.csv").write_text(
        "epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds\n"
        "1,train,0.5,0.1,0.05,0.5,0.1,0.05,0.0003,1.0\n", encoding="utf-8")
    status = {"state": state, "pid": os.getpid(), "started": now, "updated": now, "ended": now,
              "error": None, "epoch": 1, "epochs": 1}
    (run_dir / "status.json").write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    (run_dir / "best.keras").write_bytes(b"placeholder: review fixtures never load the model")
    triplet = evaluate.Triplet.from_dict(REVIEW_TRIPLET)
    for split in splits:
        with h5py.File(pack_path, "r") as f:
            masks = f[f"Y_{split}"][()]
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f[f"ids_{split}"][()]]
        probs = designed_probs(masks, seed)
        write_cached_predictions(run_dir, split, probs, ids, pack_path)
        summary, _ = evaluate.evaluate_stats(evaluate.prob_stats(probs, masks), triplet, ids)
        write_metrics(run_dir, split, {
            **summary, "triplet": triplet.to_dict(masks.shape[1]), "split": split, "checkpoint": "best",
            "triplet_source": "dev", "dev_siim_score": None, "dev_n_images": 0,
            "pack": str(pack_path), "created": now})
    return run_dir
