"""Packing: a manifest split and written into one pack, safely and in bounded memory.

Images are decoded and resized in worker processes and written in small blocks through
:class:`pneumo.store.pack.PackWriter`, so memory stays flat however many images there are,
and the pack appears only once complete (the writer renames a temporary file at the end).
Also the demo data: :func:`make_demo_pack` and the blog's folder layout as PNGs
(:func:`write_demo_folders`).
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from pneumo._io import atomic_folder, atomic_path, refuse_existing
from pneumo.config import DICOM_WINDOWS, SPLITS, PackConfig, SplitConfig, check_size, to_dict
from pneumo.errors import InputError
from pneumo.settings import check_writable
from pneumo.exclude import exclusion_of
from pneumo.ingest.manifest import id_problem, shown
from pneumo.ingest.sources import (Manifest, demo_source, load_for_pack, sample_positive, source_identity,
                                  source_path)
from pneumo.ingest.split import split_samples
from pneumo.store.pack import PackInfo, PackWriter, SourceRef, read_info
from pneumo.workers import stop_workers, worker_pool

__all__ = ["DEMO_COUNT", "ProgressFn", "pack_manifest", "make_demo_pack", "write_demo_folders"]

DEMO_COUNT = 400  # the demo pack: ~22% positive, 303/49/48 with the blog's proportions
_WRITE_BLOCK = 32  # images buffered per HDF5 write: fewer, larger writes
_INLINE_BELOW = 48  # fewer samples than this: decode in-process (pool start-up costs more)
_CHUNK = 8  # items per task sent to a worker

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- workers
def _load_resized(sample: Any, size: int, max_pixels: int | None, dicom_window: str = "voi") -> tuple | str:
    """Worker: decode one pair, resize it, and give its native (height, width) and the source
    file's identity (:func:`source_identity`, hashed here, beside the decoding); a bad file
    returns its error message."""
    try:
        return (*load_for_pack(sample, size, max_pixels, dicom_window), source_identity(sample))
    except InputError as e:
        return str(e)
    except MemoryError:  # the worker's memory cap (PackConfig.worker_memory) was hit
        return f"{getattr(sample, 'image', '') or sample.id}: out of memory while decoding; refused"


def _sample_positive(sample: Any, max_pixels: int | None) -> bool | str:
    try:
        return sample_positive(sample, max_pixels)
    except InputError as e:
        return str(e)
    except MemoryError:
        return f"{getattr(sample, 'mask', '') or sample.id}: out of memory while decoding; refused"


def _apply_chunk(fn: Callable, chunk: list, args: tuple) -> list:
    return [fn(item, *args) for item in chunk]


@contextlib.contextmanager
def _ordered_map(
    fn: Callable, items: list, args: tuple, workers: int, *, isolate: bool = False, memory_limit: int | None = None
) -> Iterator[Iterator[Any]]:
    """A context giving ``map(fn, items)`` in order over worker processes, with a bounded
    number in flight.

    ``Executor.map`` would queue every item at once; a window of a few per worker keeps
    memory flat for 100,000 images while keeping the workers busy. The pool starts on
    entering (so forked workers never inherit files opened inside the block, such as the
    pack being written) and is shut down on leaving, even when the consumer stops early.
    ``isolate`` always uses worker processes (each capped at ``memory_limit`` bytes).
    """
    if not isolate and (workers <= 1 or len(items) < _INLINE_BELOW):
        yield (fn(item, *args) for item in items)
        return
    pool = worker_pool(workers, memory_limit)
    try:
        pool.submit(int).result()  # start the workers now, before the caller opens files

        def run_chunk(chunk: list) -> Future:
            return pool.submit(_apply_chunk, fn, chunk, args)

        def results() -> Iterator[Any]:
            # Items go out in chunks: one future and one message per chunk, not per image,
            # so the parent (which also writes the pack) spends its core on writing.
            chunks = (items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK))
            window: collections.deque[Future] = collections.deque()
            for chunk in chunks:
                window.append(run_chunk(chunk))
                if len(window) >= 2 * workers:
                    break
            for chunk in chunks:
                yield from window.popleft().result()
                window.append(run_chunk(chunk))
            while window:
                yield from window.popleft().result()

        yield results()
    except BaseException:
        stop_workers(pool)  # an error or SIGTERM: do not wait for the decodes in flight
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    return workers


# --------------------------------------------------------------------------- packing
def _check_config(config: PackConfig, out: Path, force: bool) -> int:
    size = check_size(config.size)
    if config.compression not in (None, "gzip", "lzf"):
        raise InputError(f"compression must be none, gzip or lzf, got {config.compression!r}")
    if config.dicom_window not in DICOM_WINDOWS:
        raise InputError(f"dicom_window must be one of {', '.join(DICOM_WINDOWS)}, got {config.dicom_window!r}")
    refuse_existing(out, force)
    check_writable(out.parent, "the pack is written there")
    if out.is_dir():
        raise InputError(f"{out}: is a folder, not a file")
    return size


def pack_manifest(
    manifest: Manifest,
    out: str | os.PathLike,
    config: PackConfig = PackConfig(),
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    on_skipped: Callable[[str, str], None] | None = None,
) -> PackInfo:
    """Split ``manifest`` and write it to the HDF5 pack ``out``; returns the pack's info.

    The whole manifest is split, then the ids of ``config.exclude`` are left out (every other
    id keeps its split). Ids holding control characters, line separators or bidirectional
    overrides (:func:`pneumo.ingest.manifest.id_problem`) are refused naming the file, as an
    unreadable file is: an ``InputError``, or with ``config.skip_bad`` skipped, reported to
    ``on_skipped(id, reason)`` (in this process, as it happens) and listed in the report.
    ``progress(done, total)`` is called in this process after each image. An existing
    ``out`` is refused unless ``force``; it is only replaced once the new pack is complete.
    """
    out = Path(out)
    size = _check_config(config, out, force)
    samples = list(manifest.samples)
    if not samples:
        raise InputError("nothing to pack: the source has no image/mask pairs")
    workers = _resolve_workers(config.workers)
    isolation = {"isolate": config.isolate, "memory_limit": config.worker_memory}
    skipped: list[tuple[str, str]] = list(manifest.skipped)

    def skip(sample_id: str, reason: str) -> None:
        if not config.skip_bad:
            raise InputError(reason)
        skipped.append((sample_id, reason))
        if on_skipped is not None:
            on_skipped(sample_id, reason)

    # Ids that would break the pack's CSVs and terminals are refused before any decoding.
    bad_ids = {i for i, s in enumerate(samples) if id_problem(s.id) is not None}
    for i in sorted(bad_ids):
        s = samples[i]  # named as shown (escaped): the raw id may not even be valid UTF-8 for the report
        skip(shown(s.id), f"{shown(s.image or s.id)}: {id_problem(s.id)}; rename the file")
    exclusion = exclusion_of(manifest, config.exclude) if config.exclude else None
    left_out = set(exclusion.excluded) if exclusion is not None else set()

    positives = None
    if config.split.stratify:
        if any(s.positive is None for s in samples):
            with _ordered_map(_sample_positive, samples, (config.max_pixels,), workers, **isolation) as flag_iter:
                flags = list(flag_iter)
            keep = []
            for i, (s, f) in enumerate(zip(samples, flags)):
                if not isinstance(f, str):
                    keep.append(i)
                elif s.id not in left_out and i not in bad_ids:  # a listed or refused id needs no flag
                    skip(s.id, f)
            samples = [samples[i] for i in keep]
            bad_ids = {k for k, i in enumerate(keep) if i in bad_ids}
            positives = [bool(flags[i]) for i in keep]
        else:
            positives = [bool(s.positive) for s in samples]
    # The whole source is split first, then listed ids are dropped: every other id keeps the
    # split it has without the list, so runs before and after curation stay comparable.
    parts = split_samples([s.patient for s in samples], config.split, positives)
    unused = len(samples) - sum(len(p) for p in parts.values())
    order = [(split, i) for split in SPLITS for i in parts[split] if samples[i].id not in left_out and i not in bad_ids]
    if not order:
        if exclusion is not None and exclusion.excluded:
            raise InputError(f"nothing to pack: {config.exclude} excludes all {len(exclusion.excluded)} images of the source")
        raise InputError("nothing to pack: no image/mask pair is left")
    started = time.time()
    load_args = (size, config.max_pixels, config.dicom_window)
    capacity = collections.Counter(split for split, _ in order)
    with _ordered_map(_load_resized, [samples[i] for _, i in order], load_args, workers, **isolation) as results, \
            PackWriter(out, size, capacity, compression=config.compression) as writer:
        buf: dict[str, list] = {s: [] for s in SPLITS}

        def flush(split: str) -> None:
            items = buf[split]
            if items:
                writer.append(split, [it[0] for it in items], np.stack([it[1] for it in items]),
                              np.stack([it[2] for it in items]), [it[3] for it in items])
                items.clear()

        for done, ((split, i), result) in enumerate(zip(order, results), 1):
            sample = samples[i]
            if isinstance(result, str):
                skip(sample.id, result)
            else:
                image, mask, (height, width), identity = result
                ref = SourceRef(source_path(sample), height, width, *(identity or (None, None, None)))
                buf[split].append((sample.id, image, mask, ref))
                if len(buf[split]) >= _WRITE_BLOCK:
                    flush(split)
            if progress is not None:
                progress(done, len(order))
        for split in SPLITS:
            flush(split)
        report = {
            "source": manifest.kind,
            "pairs_found": len(manifest.samples),
            "unused": unused,
            "info": dict(getattr(manifest, "info", {}) or {}),
            "seconds": round(time.time() - started, 2),
            "workers": workers,
        }
        writer.finish(report=report, skipped=skipped, exclusion=exclusion, seed=config.split.seed,
                      split=json.dumps(to_dict(config.split)), source=manifest.kind, dicom_window=config.dicom_window)
    return read_info(out)


# --------------------------------------------------------------------------- demo data
def make_demo_pack(
    out: str | os.PathLike,
    count: int = DEMO_COUNT,
    size: int = 256,
    seed: int = 0,
    *,
    split: SplitConfig = SplitConfig(),
    workers: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> PackInfo:
    """Render ``count`` demo phantoms at ``size`` px and pack them (what the app does on first launch)."""
    config = PackConfig(size=size, split=split, workers=workers)
    return pack_manifest(demo_source(count, size=size, seed=seed), out, config, force=force, progress=progress)


def _write_phantom_pngs(index: int, seed: int, size: int, images: Path, masks: Path) -> None:
    from pneumo.ingest.phantom import make_phantom, sample_seed

    image, mask = make_phantom(sample_seed(seed, index), size)
    name = f"phantom-{index:05d}.png"
    for folder, arr in ((images, image), (masks, mask)):
        with atomic_path(folder / name) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")


def write_demo_folders(
    out_dir: str | os.PathLike,
    count: int,
    size: int = 1024,
    seed: int = 0,
    *,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write ``count`` phantoms as ``out_dir/train/*.png`` and ``out_dir/masks/*.png`` (the blog's layout).

    Same ids and pixels as ``demo_source(count, size, seed)``. Returns the two folders. An
    existing ``train`` or ``masks`` folder is refused unless ``force``, which replaces both
    whole once the new ones are complete (no mix of old and new phantoms).
    """
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    if size < 8:
        raise InputError(f"size must be at least 8 pixels, got {size}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    images, masks = refuse_existing(out_dir / "train", force), refuse_existing(out_dir / "masks", force)
    with atomic_folder(images) as tmp_images, atomic_folder(masks) as tmp_masks:
        with _ordered_map(_write_phantom_pngs, list(range(count)), (seed, size, tmp_images, tmp_masks),
                          _resolve_workers(workers)) as written:
            for done, _ in enumerate(written, 1):
                if progress is not None:
                    progress(done, count)
    return images, masks
