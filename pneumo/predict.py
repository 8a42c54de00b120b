"""Run a trained model: cached split predictions, evaluation files, and new-image prediction.

Files written into the run folder (docs/architecture.md, "Evaluation files"), atomically:

* the predictions file of a split: ``probs (N, S, S, 1) uint8`` = round(p * 255) and ``ids``,
  written by :func:`pneumo.store.predictions.create_predictions` with what they were made
  from (checkpoint name and mtime; pack path, size, mtime and ids digest). It is reused while
  it is fresh (:func:`pneumo.store.predictions.freshness`); a newer checkpoint (training went
  on) or a re-packed pack makes it stale.
* the metrics and the case table of a split: :func:`evaluate_run`, which scores each batch in
  worker processes while the model predicts the next one.

New images (:func:`predict_files`) go through :mod:`pneumo.predict_images`: decoding and
writing in worker processes around batched inference here. TensorFlow is imported only when
a model has to run, so evaluating from fresh caches (and the review page) never loads it.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pneumo import evaluate as ev
from pneumo._io import atomic_write_text, csv_text, now_iso, refuse_existing
from pneumo.config import TrainConfig
from pneumo.errors import InputError
from pneumo.predict_images import (IMAGE_EXTENSIONS, collect_inputs, mask_at_resolution, output_files, output_stems,
                                   resolve_workers, run_pipeline, stage_pool)
from pneumo.store.config_file import load_config
from pneumo.store.predictions import (Predictions, check_split, checkpoint_path, create_predictions, find_pack,
                                      freshness, open_predictions, predictions_path, require_run, run_triplet,
                                      write_cases, write_metrics)
from pneumo.store.run import RunFolder
from pneumo.workers import InlineExecutor

__all__ = ["IMAGE_EXTENSIONS", "cache_is_fresh", "collect_inputs", "evaluate_run", "mask_at_resolution", "pack_path",
           "predict_files", "predict_split", "run_config", "run_triplet", "split_stats"]

ProgressFn = Callable[[int, int], None]

# Scoring costs ~0.6 ms per 256 px image: below this many images a worker pool's start-up
# (a second per spawned worker) costs more than it saves, unless workers are asked for.
_POOL_FROM_IMAGES = 2000
_STATS_ROWS = 256  # predictions scored per worker task when scoring a cached file
_INLINE_BELOW = 8  # predict fewer files in this process: starting workers costs more (unless asked for)


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


def _predict_u8(model, images: np.ndarray, pad_to: int = 0) -> np.ndarray:
    """``(B, S, S, 1) uint8`` images -> ``(B, S, S, 1) uint8`` probability levels.

    A batch smaller than ``pad_to`` is padded with blank images: every call then has one
    shape, and Keras traces the model once (a second trace, for the last short batch, costs
    as much as predicting a hundred small images)."""
    n = len(images)
    if n < pad_to:
        images = np.concatenate([images, np.zeros((pad_to - n, *images.shape[1:]), images.dtype)])
    p = np.asarray(model.predict_on_batch(images))
    return ev.quantize(p.reshape(images.shape))[:n]


# --------------------------------------------------------------------------- prediction cache
def cache_is_fresh(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best") -> bool:
    """Whether ``predictions_<split>.h5`` can be reused: made from this checkpoint file as it
    is now and from the run's pack as it is now (:func:`pneumo.store.predictions.freshness`;
    :class:`InputError` when the run has no such checkpoint or pack). No TensorFlow."""
    checkpoint_path(run_dir, checkpoint)
    pack_path(run_dir)
    return freshness(run_dir, split, checkpoint).fresh


def _concat_stats(parts: Sequence[ev.ProbStats], size: int) -> ev.ProbStats:
    """Per-image :class:`pneumo.evaluate.ProbStats` of consecutive chunks, as one."""
    if not parts:
        empty = np.zeros((0, size, size, 1), np.uint8)
        return ev.prob_stats(empty, empty)
    return ev.ProbStats(np.concatenate([p.above for p in parts]), np.concatenate([p.above_true for p in parts]),
                        np.concatenate([p.true_area for p in parts]), parts[0].pixels, parts[0].size)


def _predict_splits(run_dir: Path, splits: Sequence[str], checkpoint: str, *, batch_size: int,
                    progress: ProgressFn | None, pool: Executor | None) -> dict[str, tuple[ev.ProbStats, list[str]]]:
    """Predict ``splits`` of the run's pack in batches and write each predictions file; with
    a ``pool``, score each batch there while the model predicts the next (``{split: (stats,
    ids)}``, else ``{}``). ``progress(done, total)`` counts images over all splits."""
    from pneumo.store.pack import Pack

    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    ckpt, pack = checkpoint_path(run_dir, checkpoint), pack_path(run_dir)
    scoring: dict[str, tuple[list[Future], list[str]]] = {}
    with Pack(pack) as p, contextlib.ExitStack() as stack:
        size, total, done = p.size, sum(p.counts[s] for s in splits), 0
        # entered before the model loads: a checkpoint saved meanwhile makes the files stale
        writers = {s: stack.enter_context(create_predictions(run_dir, s, p.ids(s), size, pack, checkpoint))
                   for s in splits}
        model = _load_model(ckpt) if total else None
        if model is not None and _model_size(model) != size:
            raise InputError(f"{ckpt}: the model takes {_model_size(model)} px images but pack {pack} "
                             f"holds {size} px images")
        for s in splits:
            n, x, masks = p.counts[s], p.lazy_images(s), p.lazy_masks(s)
            parts: list[Future] = []
            for a in range(0, n, batch_size):
                b = min(n, a + batch_size)
                levels = _predict_u8(model, x[a:b], pad_to=min(batch_size, total))
                writers[s].write(a, levels)
                if pool is not None:
                    parts.append(pool.submit(ev.prob_stats, levels, masks[a:b]))
                done += b - a
                if progress:
                    progress(done, total)
            if pool is not None:
                scoring[s] = (parts, p.ids(s))
    return {s: (_concat_stats([f.result() for f in parts], size), ids) for s, (parts, ids) in scoring.items()}


def predict_split(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best", *,
                  batch_size: int = 32, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Predict one split of the run's pack and cache it; returns ``RUN/predictions_<split>.h5``.

    Reuses a fresh cache (:func:`cache_is_fresh`) unless ``force``. Otherwise loads
    ``RUN/<checkpoint>.keras``, predicts in batches of ``batch_size`` (on the GPU when
    TensorFlow sees one) and writes ``probs (N, S, S, 1) uint8`` and ``ids`` atomically.
    ``progress(done, total)`` is called after each batch.
    """
    run_dir = Path(run_dir)
    checkpoint_path(run_dir, checkpoint)
    out = predictions_path(run_dir, split)
    if not force and cache_is_fresh(run_dir, split, checkpoint):
        return out
    _predict_splits(run_dir, [split], checkpoint, batch_size=batch_size, progress=progress, pool=None)
    return out


# --------------------------------------------------------------------------- evaluation
def _rows_stats(preds: Predictions, start: int, stop: int) -> ev.ProbStats:
    """Worker: :class:`pneumo.evaluate.ProbStats` of predictions ``start..stop-1`` of a checked file."""
    from pneumo.store.pack import Pack

    with Pack(preds.pack_path) as pack:
        masks = pack.masks(preds.split, preds.rows[start:stop])
    return ev.prob_stats(preds.read(range(start, stop)), masks)


def split_stats(run_dir: str | os.PathLike, split: str, pool: Executor | None = None
                ) -> tuple[ev.ProbStats, list[str]]:
    """:class:`pneumo.evaluate.ProbStats` of the cached predictions against the pack's masks,
    and the ids (:func:`pneumo.store.predictions.open_predictions` checks the file; read chunk
    by chunk, memory stays small); chunks of rows on ``pool``'s workers when given."""
    preds = open_predictions(run_dir, split, pack_path(run_dir))
    if pool is None or isinstance(pool, InlineExecutor) or preds.n <= _STATS_ROWS:
        return preds.prob_stats(), preds.ids
    parts = [pool.submit(_rows_stats, preds, a, min(preds.n, a + _STATS_ROWS)) for a in range(0, preds.n, _STATS_ROWS)]
    return _concat_stats([f.result() for f in parts], preds.size), preds.ids


def evaluate_run(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best",
                 progress: ProgressFn | None = None, *, force: bool = False, batch_size: int = 32,
                 grid: ev.TripletGrid | None = None, allow_changed_pack: bool = False,
                 workers: int | None = None) -> dict[str, Any]:
    """Predict (or reuse) the dev split and ``split``, tune the triplet on dev, score ``split``.

    Writes ``RUN/metrics_<split>.json`` (the :func:`pneumo.evaluate.summarize` keys plus
    ``split``, ``checkpoint``, ``triplet_source`` ("dev", or "default" when dev is empty),
    ``dev_siim_score``, ``dev_n_images``, ``pack``, ``created``) and ``RUN/cases_<split>.csv``;
    returns the metrics. The triplet is never tuned on test; with ``split="dev"`` the score
    is optimistic (tuned and scored on the same images). ``progress(done, total)`` counts
    the images predicted across both splits (not called when the caches are fresh); the same
    progress goes to ``RUN/evaluate_<split>.progress.json`` (:class:`pneumo.store.eval_progress.EvalProgress`).
    A pack that differs from the run's recorded fingerprint raises :class:`InputError` unless
    ``allow_changed_pack``. Scoring runs in ``workers`` processes (None: every core when the
    splits hold at least 2,000 images, else none; 0: none), overlapping inference.
    """
    from pneumo.plan import check_pack
    from pneumo.store.eval_progress import EvalProgress
    from pneumo.store.pack import Pack

    run_dir = Path(run_dir)
    check_split(split)
    checkpoint_path(run_dir, checkpoint)
    pack = pack_path(run_dir)
    check_pack(run_dir, pack, allow_changed=allow_changed_pack)
    report = EvalProgress(run_dir, split, progress)
    needed = list(dict.fromkeys(["dev", split]))
    stale = [s for s in needed if force or not cache_is_fresh(run_dir, s, checkpoint)]
    if workers is None:
        with Pack(pack) as p:
            workers = resolve_workers(None) if sum(p.counts[s] for s in needed) >= _POOL_FROM_IMAGES else 0
    with stage_pool(resolve_workers(workers)) as pool:  # before the model loads: forked workers stay without TF
        scored = _predict_splits(run_dir, stale, checkpoint, batch_size=batch_size, progress=report,
                                 pool=pool) if stale else {}
        report.stage("score")
        for s in needed:
            if s not in scored:
                scored[s] = split_stats(run_dir, s, pool)
    dev_stats, dev_ids = scored["dev"]
    if dev_stats.n:
        triplet, dev_score = ev.tune_triplet(None, None, grid, stats=dev_stats)
        source = "dev"
    else:
        triplet, dev_score, source = ev.DEFAULT_TRIPLET, None, "default"
    stats, ids = scored[split]
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
def _check_outputs(out_dir: Path, stems: Sequence[str], siim_csv: Path | None, overlays: bool, force: bool) -> None:
    """The overwrite rule (:func:`pneumo._io.refuse_existing`) for every file predict would
    write, before any is written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    if siim_csv is not None:
        if siim_csv.is_dir():
            raise InputError(f"{siim_csv}: is a folder, not a file")
        refuse_existing(siim_csv, force)
    if force or not out_dir.is_dir():
        return
    existing = [f for s in stems for f in output_files(out_dir, s, overlays) if f.exists() or f.is_symlink()]
    if existing:
        try:
            refuse_existing(existing[0], force)
        except InputError as e:
            more = len(existing) - 1
            more = f" ({more} more outputs of these inputs exist in {out_dir})" if more else ""
            raise InputError(f"{e}{more}") from None


def predict_files(run_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  checkpoint: str = "best", siim_csv: str | os.PathLike | None = None, *,
                  batch_size: int = 16, progress: ProgressFn | None = None, workers: int | None = None,
                  force: bool = False, overlays: bool = True) -> list[dict[str, Any]]:
    """Predict new images (PNG/JPEG/TIFF/DICOM files or folders of them) with the run's model.

    Each image is read as gray, resized to the model's size (area averaging), predicted;
    the run's tuned triplet (:func:`run_triplet`) decides presence at the model's size and
    the mask is drawn at the input's own resolution. Writes ``OUT/<stem>_mask.png``
    (``(H, W) uint8`` 0/255) and, with ``overlays``, ``OUT/<stem>_overlay.png`` (RGB with
    a red fill and outline where a mask was found; the gray input itself where none was); a repeated stem gets ``_2``, ``_3``... With ``siim_csv``, writes a Kaggle
    submission ``ImageId,EncodedPixels`` (ImageId = DICOM SOPInstanceUID, else the stem, through
    the CSV formula guard; ``-1`` for empty) at the original resolution. Returns one dict per
    input: ``input``, ``id``, ``present``, ``score``, ``area`` (mask pixels at the input's
    resolution), ``height``, ``width``, ``mask``, ``overlay`` (None without overlays),
    ``triplet_source``.

    Any output that exists already (a mask or overlay of these inputs, the CSV) is refused
    before anything is written, unless ``force``. Decoding and writing run in ``workers``
    processes (None: every core, none below 8 files; 0: all in this process, the same
    results) around batches of
    ``batch_size`` on the model; memory holds a few batches, not the input. An unreadable
    input raises :class:`InputError` naming the file once the files before it are written
    (each atomically); nothing after it is written, nor the CSV.
    """
    run_dir = Path(run_dir)
    ckpt = checkpoint_path(run_dir, checkpoint)
    out_dir = Path(out_dir)
    siim_csv = Path(siim_csv) if siim_csv is not None else None
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    files = collect_inputs(inputs, exclude=out_dir)
    stems = output_stems(files)
    _check_outputs(out_dir, stems, siim_csv, overlays, force)
    n_workers = resolve_workers(workers if workers is not None or len(files) >= _INLINE_BELOW else 0)
    with stage_pool(n_workers) as pool:  # before the model loads: forked workers stay without TensorFlow
        model = _load_model(ckpt)
        size = _model_size(model)
        triplet, source = run_triplet(run_dir, size, checkpoint)
        out_dir.mkdir(parents=True, exist_ok=True)
        pad = min(batch_size, len(files))
        results, rles = run_pipeline(pool, files, stems, out_dir, size, triplet, lambda x: _predict_u8(model, x, pad),
                                     batch_size=batch_size, workers=n_workers, overlays=overlays,
                                     rle=siim_csv is not None, progress=progress)
    for r in results:
        r["triplet_source"] = source
    if siim_csv is not None:
        # -1 as a number: the formula guard quotes text cells starting with "-", ids such as =1+20
        rows = [(r["id"], code if code is not None else -1) for r, code in zip(results, rles)]
        atomic_write_text(siim_csv, csv_text([("ImageId", "EncodedPixels"), *rows]))
    return results
