"""Run a trained model: cached split predictions, evaluation files, and new-image prediction.

Files written into the run folder (docs/architecture.md, "Evaluation files"), atomically:

* the predictions file of a split: ``probs (N, S, S, 1) uint8`` = round(p * 255) and ``ids``,
  written by :func:`pneumo.store.predictions.create_predictions` with what they were made
  from (checkpoint name and mtime; pack path, size, mtime and ids digest). It is reused while
  it is fresh (:func:`pneumo.store.predictions.freshness`); a newer checkpoint (training went
  on) or a re-packed pack makes it stale.
* the metrics and the case table of a split: :func:`evaluate_run`.

TensorFlow is imported only when a model has to run, so evaluating from fresh caches (and
the review page) never loads it.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from pneumo import evaluate as ev
from pneumo._io import atomic_path, atomic_write_text, now_iso
from pneumo.config import TrainConfig
from pneumo.store.config_file import load_config
from pneumo.errors import InputError
from pneumo.ingest import imageio
from pneumo.ingest.imageio import is_dicom
from pneumo.store.predictions import (check_split, checkpoint_path, create_predictions, find_pack, freshness,
                                      open_predictions, predictions_path, require_run, run_triplet, write_cases,
                                      write_metrics)
from pneumo.store.run import RunFolder

IMAGE_EXTENSIONS = tuple(sorted(imageio.IMAGE_EXTENSIONS))  # what predict reads from a folder
ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- run folder
def run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The run's config; :class:`InputError` naming the folder if it is not a run."""
    run_dir = Path(run_dir)
    require_run(run_dir)
    return load_config(TrainConfig, RunFolder(run_dir).config)


def pack_path(run_dir: str | os.PathLike) -> Path:
    """The pack named in the run's config, found by :func:`pneumo.store.predictions.find_pack`;
    :class:`InputError` when it is missing."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if not cfg.pack:
        raise InputError(f"{RunFolder(run_dir).config}: no pack given")
    return find_pack(run_dir)


# --------------------------------------------------------------------------- model
def _load_model(path: Path):
    from pneumo.model.networks import load_model  # TensorFlow: only here

    return load_model(path, compile=False)


def _model_size(model) -> int:
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    return int(shape[1])


def _predict_u8(model, images: np.ndarray) -> np.ndarray:
    """``(B, S, S, 1) uint8`` images -> ``(B, S, S, 1) uint8`` probability levels."""
    p = np.asarray(model.predict_on_batch(images))
    return ev.quantize(p.reshape(images.shape))


# --------------------------------------------------------------------------- prediction cache
def cache_is_fresh(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best") -> bool:
    """Whether ``predictions_<split>.h5`` can be reused: made from this checkpoint file as it
    is now and from the run's pack as it is now (:func:`pneumo.store.predictions.freshness`;
    :class:`InputError` when the run has no such checkpoint or pack). No TensorFlow."""
    checkpoint_path(run_dir, checkpoint)
    pack_path(run_dir)
    return freshness(run_dir, split, checkpoint).fresh


def predict_split(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best", *,
                  batch_size: int = 32, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Predict one split of the run's pack and cache it; returns ``RUN/predictions_<split>.h5``.

    Reuses a fresh cache (:func:`cache_is_fresh`) unless ``force``. Otherwise loads
    ``RUN/<checkpoint>.keras``, predicts in batches of ``batch_size`` (on the GPU when
    TensorFlow sees one) and writes ``probs (N, S, S, 1) uint8`` and ``ids`` atomically.
    ``progress(done, total)`` is called after each batch.
    """
    run_dir = Path(run_dir)
    ckpt = checkpoint_path(run_dir, checkpoint)
    pack = pack_path(run_dir)
    out = predictions_path(run_dir, split)
    if not force and cache_is_fresh(run_dir, split, checkpoint):
        return out
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    from pneumo.store.pack import Pack

    with Pack(pack) as p:
        n, size, x = p.counts[split], p.size, p.lazy_images(split)
        # entered before the model loads: a checkpoint saved meanwhile makes the file stale
        with create_predictions(run_dir, split, p.ids(split), size, pack, checkpoint) as writer:
            model = _load_model(ckpt) if n else None
            if model is not None and _model_size(model) != size:
                raise InputError(f"{ckpt}: the model takes {_model_size(model)} px images but pack {pack} "
                                 f"holds {size} px images")
            for a in range(0, n, batch_size):
                b = min(n, a + batch_size)
                writer.write(a, _predict_u8(model, x[a:b]))
                if progress:
                    progress(b, n)
    return out


# --------------------------------------------------------------------------- evaluation
def split_stats(run_dir: str | os.PathLike, split: str) -> tuple[ev.ProbStats, list[str]]:
    """:class:`pneumo.evaluate.ProbStats` of the cached predictions against the pack's masks,
    and the ids (:func:`pneumo.store.predictions.open_predictions` checks the file; read chunk
    by chunk, memory stays small)."""
    preds = open_predictions(run_dir, split, pack_path(run_dir))
    return preds.prob_stats(), preds.ids


def evaluate_run(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best",
                 progress: ProgressFn | None = None, *, force: bool = False, batch_size: int = 32,
                 grid: ev.TripletGrid | None = None, allow_changed_pack: bool = False) -> dict[str, Any]:
    """Predict (or reuse) the dev split and ``split``, tune the triplet on dev, score ``split``.

    Writes ``RUN/metrics_<split>.json`` (the :func:`pneumo.evaluate.summarize` keys plus
    ``split``, ``checkpoint``, ``triplet_source`` ("dev", or "default" when dev is empty),
    ``dev_siim_score``, ``dev_n_images``, ``pack``, ``created``) and ``RUN/cases_<split>.csv``;
    returns the metrics. The triplet is never tuned on test; with ``split="dev"`` the score
    is optimistic (tuned and scored on the same images). ``progress(done, total)`` counts
    the images predicted across both splits (not called when the caches are fresh); the same
    progress goes to ``RUN/evaluate_<split>.progress.json`` (:class:`pneumo.store.eval_progress.EvalProgress`).
    A pack that differs from the run's recorded fingerprint raises :class:`InputError` unless
    ``allow_changed_pack``.
    """
    from pneumo.plan import check_pack
    from pneumo.store.eval_progress import EvalProgress

    run_dir = Path(run_dir)
    check_split(split)
    checkpoint_path(run_dir, checkpoint)
    pack = pack_path(run_dir)
    check_pack(run_dir, pack, allow_changed=allow_changed_pack)
    report = EvalProgress(run_dir, split, progress)
    needed = list(dict.fromkeys(["dev", split]))
    stale = [s for s in needed if force or not cache_is_fresh(run_dir, s, checkpoint)]
    if stale:
        from pneumo.store.pack import Pack

        with Pack(pack) as p:
            counts = {s: p.counts[s] for s in stale}
        total, done = sum(counts.values()), 0
        for s in stale:
            offset = done
            predict_split(run_dir, s, checkpoint, batch_size=batch_size, force=True,
                          progress=lambda d, _n, o=offset: report(o + d, total))
            done += counts[s]

    report.stage("score")
    dev_stats, dev_ids = split_stats(run_dir, "dev")
    if dev_stats.n:
        triplet, dev_score = ev.tune_triplet(None, None, grid, stats=dev_stats)
        source = "dev"
    else:
        triplet, dev_score, source = ev.DEFAULT_TRIPLET, None, "default"
    stats, ids = (dev_stats, dev_ids) if split == "dev" else split_stats(run_dir, split)
    summary, cases = ev.evaluate_stats(stats, triplet, ids)
    metrics = {
        **summary,
        "split": split,
        "checkpoint": checkpoint,
        "triplet_source": source,
        "dev_siim_score": dev_score,
        "dev_n_images": dev_stats.n,
        "pack": str(pack),
        "created": now_iso(),
    }
    write_cases(run_dir, split, cases)
    write_metrics(run_dir, split, metrics)
    report.stage("done")
    return metrics


# --------------------------------------------------------------------------- new images
def collect_inputs(inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[Path]:
    """Files to predict: each input file as given, each folder's image files (recursively,
    by extension: :data:`IMAGE_EXTENSIONS`), sorted, without files under ``exclude``."""
    excl = Path(exclude).resolve() if exclude is not None else None
    files: list[Path] = []
    if not inputs:
        raise InputError("no input given (expected image files or folders)")
    for item in inputs:
        p = Path(item)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in q.relative_to(p).parts)
                           and not (excl and excl in q.resolve().parents))
            if not found:
                raise InputError(f"{p}: no image files in the folder ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        else:
            raise InputError(f"{p}: input not found")
    return files


def _image_id(path: Path) -> str:
    """SOPInstanceUID for DICOM (the SIIM ImageId), else the file stem."""
    if is_dicom(path):
        from pneumo.ingest.imageio import read_dicom_meta

        uid = read_dicom_meta(path)[0]
        if uid:
            return uid
    return path.stem


def _resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W) uint8`` -> ``(size, size) uint8``: area averaging down (as packing does), bilinear up."""
    if image.shape == (size, size):
        return image
    h, w = image.shape
    method = Image.Resampling.BOX if h >= size and w >= size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), method))


def _upsample_levels(levels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(S, S) uint8`` probability levels -> ``(height, width) float32`` levels, bilinear."""
    if levels.shape == (height, width):
        return levels.astype(np.float32)
    img = Image.fromarray(levels.astype(np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR))


def _unique_stem(stem: str, used: set[str]) -> str:
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def mask_at_resolution(levels: np.ndarray, triplet: ev.Triplet, height: int, width: int) -> tuple[np.ndarray, float]:
    """Apply ``triplet`` to one image's ``(S, S) uint8`` levels at the model's size (where it
    was tuned), then draw the mask at ``(height, width)`` from bilinearly upsampled
    probabilities: ``((height, width) uint8 {0, 255}, presence score)``."""
    lv = levels.reshape(levels.shape[0], levels.shape[1])
    keep = np.count_nonzero(lv > ev.threshold_level(triplet.top_threshold)) >= triplet.min_area
    score = float(ev.presence_scores(lv[None], triplet.min_area)[0])
    if not keep:
        return np.zeros((height, width), np.uint8), score
    up = _upsample_levels(lv, height, width)
    mask = up > ev.threshold_level(triplet.pixel_threshold)
    return np.where(mask, np.uint8(255), np.uint8(0)), score


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from pneumo.review.viz import PRED_COLOR, overlay

    thickness = max(1, int(round(min(image.shape) / 256)))
    rgb = overlay(image, mask, PRED_COLOR, alpha=0.3, mode="fill")
    return overlay(rgb, mask, PRED_COLOR, alpha=1.0, mode="outline", thickness=thickness)


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def predict_files(run_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  checkpoint: str = "best", siim_csv: str | os.PathLike | None = None, *,
                  batch_size: int = 8, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Predict new images (PNG/JPEG/TIFF/DICOM files or folders of them) with the run's model.

    Each image is read as gray, resized to the model's size (area averaging), predicted;
    the run's tuned triplet (:func:`run_triplet`) decides presence at the model's size and
    the mask is drawn at the input's own resolution. Writes ``OUT/<stem>_mask.png``
    (``(H, W) uint8`` 0/255) and ``OUT/<stem>_overlay.png`` (RGB, red fill and outline);
    a repeated stem gets ``_2``, ``_3``... With ``siim_csv``, writes a Kaggle submission
    ``ImageId,EncodedPixels`` (ImageId = DICOM SOPInstanceUID, else the stem; ``-1`` for
    empty) at the original resolution. Returns one dict per input: ``input``, ``id``,
    ``present``, ``score``, ``area`` (mask pixels at the input's resolution), ``height``,
    ``width``, ``mask``, ``overlay``, ``triplet_source``. An unreadable input raises
    :class:`InputError` naming the file; images are streamed in batches, so outputs of
    earlier files stay written (each atomically) but the CSV is not written.
    """
    from pneumo.ingest.rle import siim_encode
    from pneumo.ingest.imageio import read_image

    run_dir = Path(run_dir)
    ckpt = checkpoint_path(run_dir, checkpoint)
    out_dir = Path(out_dir)
    files = collect_inputs(inputs, exclude=out_dir)
    model = _load_model(ckpt)
    size = _model_size(model)
    triplet, source = run_triplet(run_dir, size, checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    results: list[dict[str, Any]] = []
    rows: list[tuple[str, str]] = []
    for a in range(0, len(files), batch_size):
        batch = list(range(a, min(len(files), a + batch_size)))
        images = {i: read_image(files[i]) for i in batch}
        ids = {i: _image_id(files[i]) for i in batch}
        x = np.stack([_resize_to(images[i], size) for i in batch])[..., None]
        levels = _predict_u8(model, x)
        for j, i in enumerate(batch):
            img = images[i]
            h, w = img.shape
            mask, score = mask_at_resolution(levels[j, ..., 0], triplet, h, w)
            stem = _unique_stem(files[i].stem, used)
            mask_file, overlay_file = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
            _save_png(mask_file, mask)
            _save_png(overlay_file, _overlay(img, mask))
            area = int(np.count_nonzero(mask))
            results.append({"input": str(files[i]), "id": ids[i], "present": area > 0, "score": score,
                            "area": area, "height": h, "width": w, "mask": str(mask_file),
                            "overlay": str(overlay_file), "triplet_source": source})
            rows.append((ids[i], siim_encode(mask) if area else "-1"))
        if progress:
            progress(batch[-1] + 1, len(files))
    if siim_csv is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("ImageId", "EncodedPixels"))
        w.writerows(rows)
        atomic_write_text(siim_csv, buf.getvalue())
    return results
