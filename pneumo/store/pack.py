"""Pack a manifest into one HDF5 file: the blog's ``X_train ... Y_test`` datasets, done safely.

Layout (format version 1, see docs/architecture.md): ``X_<split>`` and ``Y_<split>`` are
``(N, S, S, 1) uint8`` (masks 0/255), chunked one image per chunk so any single image
reads without touching its neighbours; ``ids_<split>`` are UTF-8 strings; root attributes
describe the pack. Packing streams: images are decoded and resized in worker processes
and written in small blocks, so memory stays flat however many images there are. It is
atomic: everything goes to a temporary file beside ``out`` that is renamed at the end.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np
from PIL import Image

from pneumo import __version__
from pneumo._io import atomic_path
from pneumo.config import DICOM_WINDOWS, PackConfig, SplitConfig, check_size, to_dict
from pneumo.errors import InputError, PackFormatError
from pneumo.ingest.split import SPLITS, format_report, split_samples
from pneumo.workers import worker_pool

FORMAT = "pneumo-pack"
FORMAT_VERSION = 1
DEMO_COUNT = 400  # the demo pack: ~22% positive, 303/49/48 with the blog's proportions
_WRITE_BLOCK = 32  # images buffered per HDF5 write: fewer, larger writes
_REPORT_SKIPPED = 50  # skipped files listed in the report attribute (all are in dataset "skipped")
_INLINE_BELOW = 48  # fewer samples than this: decode in-process (pool start-up costs more)
_CHUNK = 8  # items per task sent to a worker

ProgressFn = Callable[[int, int], None]


@dataclass
class PackInfo:
    """What a pack holds: ``counts`` and ``positive_fractions`` per split, root ``attrs``."""

    path: Path
    size: int
    counts: dict[str, int]
    positive_fractions: dict[str, float]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> dict[str, Any]:
        """Skipped files and source counts recorded at packing time."""
        try:
            return json.loads(self.attrs.get("report", "{}"))
        except (TypeError, json.JSONDecodeError):
            return {}

    def format_report(self) -> str:
        """The split report (the blog's positive-fraction line and a table)."""
        return format_report(self.counts, self.positive_fractions)


# --------------------------------------------------------------------------- reading
def open_pack(path: str | os.PathLike) -> h5py.File:
    """Open a pack read-only after checking its layout.

    Raises :class:`PackFormatError` naming the file for a missing, foreign or damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise PackFormatError(f"{path}: no such pack file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise PackFormatError(f"{path}: not a readable HDF5 file ({e})") from None
    try:
        _check_layout(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _int_attr(f: h5py.File, name: str, path: Path) -> int:
    raw = f.attrs.get(name, 0)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise PackFormatError(f"{path}: damaged pack, attribute {name} is {raw!r}, not a number") from None


def _check_layout(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        raise PackFormatError(f"{path}: not a pneumo pack (format attribute is {fmt!r}); create one with `python -m pneumo pack`")
    version = _int_attr(f, "format_version", path)
    if version > FORMAT_VERSION:
        raise PackFormatError(f"{path}: pack format version {version} is newer than this pneumo reads ({FORMAT_VERSION}); upgrade pneumo")
    size = _int_attr(f, "size", path)
    for split in SPLITS:
        for name in (f"X_{split}", f"Y_{split}", f"ids_{split}"):
            if name not in f:
                raise PackFormatError(f"{path}: damaged pack, dataset {name} is missing")
        x, y, ids = f[f"X_{split}"], f[f"Y_{split}"], f[f"ids_{split}"]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise PackFormatError(f"{path}: damaged pack, X_{split}/Y_{split} are not uint8")
        if x.shape[1:] != (size, size, 1) or y.shape != x.shape or ids.shape != (x.shape[0],):
            raise PackFormatError(
                f"{path}: damaged pack, {split} shapes disagree "
                f"(X {x.shape}, Y {y.shape}, ids {ids.shape}, size {size})"
            )


def read_info(path: str | os.PathLike) -> PackInfo:
    """Counts, positive fractions and attributes of a pack (no image data is read)."""
    with open_pack(path) as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        counts = {s: int(f[f"X_{s}"].shape[0]) for s in SPLITS}
        fractions = {s: float(attrs.get(f"positive_fraction_{s}", 0.0)) for s in SPLITS}
        return PackInfo(Path(path), int(attrs["size"]), counts, fractions, attrs)


def load_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split in memory: images and masks ``(N, S, S, 1) uint8``, and the ids."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    with open_pack(path) as f:
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f[f"ids_{split}"][()]]
        return f[f"X_{split}"][()], f[f"Y_{split}"][()], ids


@dataclass(frozen=True)
class SourceRef:
    """Where one packed image came from (optional datasets ``source_path_<split>``,
    ``source_hw_<split>``; packs made before pneumo 0.x lack them)."""

    path: str  # the image file as the source gave it (SIIM: the DICOM); "demo:<seed>" for a phantom
    height: int  # native size before resizing to the pack's size
    width: int


def read_sources(path: str | os.PathLike, split: str) -> list[SourceRef] | None:
    """The source reference of every image of ``split``, in the order of ``ids_<split>``;
    ``None`` for a pack written without them. ``PackFormatError`` when they are damaged."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    with open_pack(path) as f:
        names = (f"source_path_{split}", f"source_hw_{split}")
        if names[0] not in f and names[1] not in f:
            return None
        n = f[f"ids_{split}"].shape[0]
        if any(name not in f for name in names) or f[names[0]].shape != (n,) or f[names[1]].shape != (n, 2):
            raise PackFormatError(f"{path}: damaged pack, {names[0]}/{names[1]} do not match ids_{split} ({n} images)")
        paths, hw = f[names[0]].asstr()[()], f[names[1]][()]
    return [SourceRef(str(p), int(h), int(w)) for p, (h, w) in zip(paths, hw)]


@dataclass
class DamagedPack:
    """An ``*.h5`` file of the data folder that is not a readable pack, and why."""

    path: Path
    reason: str


def scan_packs(folder: str | os.PathLike | None = None) -> tuple[list[PackInfo], list[DamagedPack]]:
    """Packs (``*.h5``) in ``folder`` (default ``settings.data_dir()``), by name: the valid ones
    and the damaged or foreign ones with the reason. Never raises for a bad file."""
    from pneumo.settings import data_dir

    folder = Path(folder) if folder is not None else data_dir()
    infos: list[PackInfo] = []
    damaged: list[DamagedPack] = []
    try:
        paths = sorted(p for p in folder.glob("*.h5") if not p.name.startswith(".")) if folder.is_dir() else []
    except OSError:
        paths = []
    for p in paths:
        try:
            infos.append(read_info(p))
        except PackFormatError as e:
            damaged.append(DamagedPack(p, str(e)))
        except Exception as e:  # h5py and numpy raise many types for odd attributes
            damaged.append(DamagedPack(p, f"{p}: unreadable pack ({type(e).__name__}: {e})"))
    return infos, damaged


def list_packs(folder: str | os.PathLike | None = None) -> list[PackInfo]:
    """Valid packs (``*.h5``) in ``folder`` (default ``settings.data_dir()``), by name; damaged
    or foreign files are left out (:func:`scan_packs` names them)."""
    return scan_packs(folder)[0]


def out_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The pack file ``folder/name`` (default folder ``settings.data_dir()``; ``.h5`` added when
    missing). ``InputError`` unless ``name`` is a plain file name (no folder, not hidden)."""
    from pneumo.settings import data_dir

    name = name.strip()
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise InputError(f"pack file name {name!r}: give a plain file name such as my-pack.h5")
    if not name.endswith(".h5"):
        name += ".h5"
    return (Path(folder) if folder is not None else data_dir()) / name


# --------------------------------------------------------------------------- writing
def _load_resized(sample: Any, size: int, max_pixels: int | None, dicom_window: str = "voi") -> tuple | str:
    """Worker: decode one pair, resize it, and give its native (height, width); a bad file
    returns its error message."""
    from pneumo.ingest.sources import load_for_pack

    try:
        return load_for_pack(sample, size, max_pixels, dicom_window)
    except InputError as e:
        return str(e)
    except MemoryError:  # the worker's memory cap (PackConfig.worker_memory) was hit
        return f"{getattr(sample, 'image', '') or sample.id}: out of memory while decoding; refused"


def _sample_positive(sample: Any, max_pixels: int | None) -> bool | str:
    from pneumo.ingest.sources import sample_positive

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

        def run_chunk(chunk: list) -> list:
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
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    return workers


def pack_manifest(
    manifest: Any,
    out: str | os.PathLike,
    config: PackConfig = PackConfig(),
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> PackInfo:
    """Split ``manifest`` and write it to the HDF5 pack ``out``; returns the pack's info.

    ``progress(done, total)`` is called in this process after each image. An existing
    ``out`` is refused unless ``force``; it is only replaced once the new pack is complete.
    """
    out = Path(out)
    size = check_size(config.size)
    if config.compression not in (None, "gzip", "lzf"):
        raise InputError(f"compression must be none, gzip or lzf, got {config.compression!r}")
    if config.dicom_window not in DICOM_WINDOWS:
        raise InputError(f"dicom_window must be one of {', '.join(DICOM_WINDOWS)}, got {config.dicom_window!r}")
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; use --force to replace it")
    if out.is_dir():
        raise InputError(f"{out}: is a folder, not a file")
    from pneumo.ingest.sources import source_path

    exclusion = None
    if config.exclude:
        from pneumo.exclude import apply_exclusion

        manifest, exclusion = apply_exclusion(manifest, config.exclude)
    samples = list(manifest.samples)
    if not samples:
        if exclusion is not None and exclusion.excluded:
            raise InputError(f"nothing to pack: {config.exclude} excludes all {len(exclusion.excluded)} images of the source")
        raise InputError("nothing to pack: the source has no image/mask pairs")
    workers = _resolve_workers(config.workers)
    isolation = {"isolate": config.isolate, "memory_limit": config.worker_memory}
    skipped: list[tuple[str, str]] = list(manifest.skipped)

    positives = None
    if config.split.stratify:
        if any(s.positive is None for s in samples):
            with _ordered_map(_sample_positive, samples, (config.max_pixels,), workers, **isolation) as flag_iter:
                flags = list(flag_iter)
            bad = [(s.id, f) for s, f in zip(samples, flags) if isinstance(f, str)]
            if bad and not config.skip_bad:
                raise InputError(bad[0][1])
            skipped += bad
            keep = [i for i, f in enumerate(flags) if not isinstance(f, str)]
            samples = [samples[i] for i in keep]
            positives = [bool(flags[i]) for i in keep]
        else:
            positives = [bool(s.positive) for s in samples]
    parts = split_samples([s.patient for s in samples], config.split, positives)

    order = [(split, i) for split in SPLITS for i in parts[split]]
    total = len(order)
    counts = {s: 0 for s in SPLITS}
    n_pos = {s: 0 for s in SPLITS}
    started = time.time()
    sources_in_order = [samples[i] for _, i in order]
    load_args = (size, config.max_pixels, config.dicom_window)
    with _ordered_map(_load_resized, sources_in_order, load_args, workers, **isolation) as results, \
            atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        kw: dict[str, Any] = {"compression": config.compression} if config.compression else {}
        for split in SPLITS:
            n = len(parts[split])
            for prefix in ("X", "Y"):
                f.create_dataset(
                    f"{prefix}_{split}", shape=(n, size, size, 1), maxshape=(None, size, size, 1),
                    dtype=np.uint8, chunks=(1, size, size, 1), **kw,
                )
            f.create_dataset(f"ids_{split}", shape=(n,), maxshape=(None,), dtype=h5py.string_dtype())
            f.create_dataset(f"source_path_{split}", shape=(n,), maxshape=(None,), dtype=h5py.string_dtype())
            f.create_dataset(f"source_hw_{split}", shape=(n, 2), maxshape=(None, 2), dtype=np.int32)

        buf: dict[str, list] = {s: [] for s in SPLITS}

        def flush(split: str) -> None:
            items = buf[split]
            if not items:
                return
            start = counts[split]
            stop = start + len(items)
            f[f"X_{split}"][start:stop, ..., 0] = np.stack([it[1] for it in items])
            f[f"Y_{split}"][start:stop, ..., 0] = np.stack([it[2] for it in items])
            f[f"ids_{split}"][start:stop] = [it[0] for it in items]
            f[f"source_path_{split}"][start:stop] = [it[3] for it in items]
            f[f"source_hw_{split}"][start:stop] = np.array([it[4] for it in items], np.int32)
            counts[split] = stop
            items.clear()

        for done, ((split, i), result) in enumerate(zip(order, results), 1):
            sample = samples[i]
            if isinstance(result, str):
                if not config.skip_bad:
                    raise InputError(result)
                skipped.append((sample.id, result))
            else:
                image, mask, native = result
                n_pos[split] += bool(mask.any())
                buf[split].append((sample.id, image, mask, source_path(sample), native))
                if len(buf[split]) >= _WRITE_BLOCK:
                    flush(split)
            if progress is not None:
                progress(done, total)
        for split in SPLITS:
            flush(split)
            if counts[split] != len(parts[split]):  # skipped files shrink the split
                for prefix in ("X", "Y", "ids", "source_path", "source_hw"):
                    f[f"{prefix}_{split}"].resize(counts[split], axis=0)

        fractions = {s: (n_pos[s] / counts[s] if counts[s] else 0.0) for s in SPLITS}
        # HDF5 attributes are limited to 64 KiB: the full skipped list is a dataset,
        # the report attribute keeps the first few.
        if skipped:
            f.create_dataset("skipped", data=np.array([[str(a), str(b)] for a, b in skipped], dtype=object),
                             dtype=h5py.string_dtype())
        report = {
            "source": manifest.kind,
            "pairs_found": len(manifest.samples),
            "packed": sum(counts.values()),
            "unused": len(samples) - len(order),
            "n_skipped": len(skipped),
            "skipped": [[str(a), str(b)[:300]] for a, b in skipped[:_REPORT_SKIPPED]],
            "info": dict(getattr(manifest, "info", {}) or {}),
            "seconds": round(time.time() - started, 2),
            "workers": workers,
        }
        if exclusion is not None:
            report["exclusion"] = exclusion.report()
            if exclusion.excluded:
                f.create_dataset("excluded_ids", data=np.array(exclusion.excluded, dtype=object),
                                 dtype=h5py.string_dtype())
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            size=size,
            seed=config.split.seed,
            split=json.dumps(to_dict(config.split)),
            source=manifest.kind,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            pneumo_version=__version__,
            report=json.dumps(report),
            compression=config.compression or "none",
            dicom_window=config.dicom_window,
            excluded=len(exclusion.excluded) if exclusion is not None else 0,
            exclude_list=exclusion.path if exclusion is not None else "",
        )
        for s in SPLITS:
            f.attrs[f"count_{s}"] = counts[s]
            f.attrs[f"positive_fraction_{s}"] = fractions[s]
    return read_info(out)


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
    from pneumo.ingest.sources import demo_source

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
) -> tuple[Path, Path]:
    """Write ``count`` phantoms as ``out_dir/train/*.png`` and ``out_dir/masks/*.png`` (the blog's layout).

    Same ids and pixels as ``demo_source(count, size, seed)``. Returns the two folders.
    """
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    if size < 8:
        raise InputError(f"size must be at least 8 pixels, got {size}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    images, masks = out_dir / "train", out_dir / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    with _ordered_map(_write_phantom_pngs, list(range(count)), (seed, size, images, masks),
                      _resolve_workers(workers)) as written:
        for done, _ in enumerate(written, 1):
            if progress is not None:
                progress(done, count)
    return images, masks
