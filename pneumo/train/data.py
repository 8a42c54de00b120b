"""``tf.data`` input pipelines from an HDF5 pack.

One pipeline for every split, built from an index stream so that the in-memory and the
streaming paths give exactly the same batches:

0. the positions fed: ``0..N-1`` less ``exclude_indices``; with ``shard=(i, n)`` the i-th of n
   disjoint shards of them (:func:`shard_positions`: dealt out by a fixed permutation, so a
   periodic order in the pack cannot put every positive in one shard; sizes differ by one at
   most; ascending), chosen before any image is read, so a worker reads, decodes and holds only
   its shard. Steps 1-3 work on the shard's local indices ``0..M-1``;
1. local indices per epoch, permuted (stateless, from ``seed`` and the epoch number) when
   shuffling, repeated forever when repeating;
2. ``batch`` (the last partial batch is kept unless ``drop_remainder``); with ``pad_to_batches=K``
   exactly ``K`` full batches: the shard's images, then copies of its first image (weight 0);
   or, with ``positive_fraction``, two endless streams, one over the shard's positive images
   (a non-empty mask) and one over its negatives, each permuted per pass with its own seed,
   cut into ``round(fraction * B)`` and ``B - that`` per batch and concatenated (positives
   first): every batch, so every replica's batch under ``distribute_datasets_from_function``,
   holds that many positives;
3. fetch, several batches at once: numpy indexing into the shard held in memory, or a read of
   the rows from the file through :meth:`pneumo.store.pack.Pack.chunk_reader` (``os.preadv``
   and zlib outside h5py's global lock, so readers run in parallel; rows lying back to back
   are one read);
4. augment, batched (one projective op per batch, per-sample parameters), with the seed
   derived from ``(seed, batch number)``, in parallel;
5. masks to float32 {0, 1}, weights when asked; ``prefetch``.

With several shards each folds its index into ``seed``: shards draw different orders and
transforms. Images stay ``uint8`` to the end: scaling and the gray-to-RGB step live in the model.

Memory rule (``in_memory="auto"``): a split is loaded when the images and masks of this
pipeline's shard (``2 * M * S * S`` bytes) take at most half of the memory available when the
pipeline is built (``MemAvailable`` in ``/proc/meminfo``, else free pages from ``os.sysconf``;
up to 2 GiB if neither is known), else streamed. Each split is judged on its own, in the order
built (the trainer builds train, then dev, which sees what train took). Loading reads the rows
straight into the final arrays (no second copy); positives are found from those masks, or
when streaming 256 masks at a time. Streaming holds only the batches in flight and prefetched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pneumo.train.augment import augment_batch, check_config, is_identity
from pneumo.config import IN_MEMORY, SPLITS, AugmentConfig
from pneumo.errors import InputError
from pneumo.store.pack import Pack, positive_flags
from pneumo.train.sampling import (balanced_batches, kept_positions, shard_positions, shard_seed,
                                   uniform_batches)

# Fold-in tag of the augmentation's random stream (pneumo.train.sampling has the others).
_AUGMENT_TAG = 0x4147
_MEMORY_FRACTION = 0.5
_FALLBACK_MEMORY = 2 * 1024**3
_LOAD_THREADS = 8  # at most, readers filling an in-memory split (fewer on fewer cores)
_OLD_IN_MEMORY = {True: "yes", False: "no", None: "auto"}  # the values before "auto"/"yes"/"no"

__all__ = ["SPLITS", "make_dataset", "memory_available", "fits_in_memory", "shard_positions"]


# --------------------------------------------------------------------------- pack access
def _open_split(pack_path: str | os.PathLike, split: str) -> Pack:
    """Open ``pack_path`` (:class:`pneumo.store.pack.Pack`) after checking ``split``.

    Raises :class:`InputError` for an unknown split and :class:`PackFormatError` (an
    ``InputError``) for a missing file or anything that is not a well-formed pneumo pack.
    """
    path = Path(pack_path)
    if split not in SPLITS:
        raise InputError(f"{path}: unknown split {split!r} (choose from {', '.join(SPLITS)})")
    return Pack(path)


# --------------------------------------------------------------------------- memory rule
def memory_available() -> int | None:
    """Bytes of memory available now (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(nbytes: int) -> bool:
    """The documented rule: at most half of the available memory (2 GiB when unknown)."""
    available = memory_available()
    if available is None:
        return nbytes <= _FALLBACK_MEMORY
    return nbytes <= _MEMORY_FRACTION * available


# --------------------------------------------------------------------------- reads
class _H5Reader:
    """Rows of one split, read through :meth:`Pack.chunk_reader`: safe and parallel from several
    threads, so tf.data's parallel map reads several batches at once. Holds the pack open."""

    def __init__(self, path: Path, split: str):
        self.path, self.split = path, split
        self._pack: Pack | None = Pack(path)
        try:
            self._rows = self._pack.chunk_reader(split)
        except BaseException:
            self.close()
            raise

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images, masks)`` ``(k, S, S, 1) uint8`` of pack rows ``rows``."""
        return self._rows.read(rows)

    def masks(self, rows: np.ndarray) -> np.ndarray:
        return self._rows.masks.read(rows)

    def load(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The whole of ``rows`` in memory, read by several threads straight into the arrays."""
        return self._rows.read(rows, threads=min(_LOAD_THREADS, os.cpu_count() or 1))

    def close(self) -> None:
        pack, self._pack = self._pack, None
        if pack is not None:
            if hasattr(self, "_rows"):
                self._rows.close()
            pack.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class _ShardMasks:
    """A shard's masks read on slicing, for :func:`positive_flags` (256 at a time, never all)."""

    def __init__(self, reader: _H5Reader, positions: np.ndarray):
        self._reader, self._positions = reader, positions

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, key: slice) -> np.ndarray:
        return self._reader.masks(self._positions[key])


# --------------------------------------------------------------------------- dataset
def _resolve_augment(augment: Any) -> AugmentConfig | None:
    if augment is False or augment is None:
        return None
    if augment is True:
        return AugmentConfig()
    if isinstance(augment, AugmentConfig):
        check_config(augment)
        return None if is_identity(augment) else augment
    raise InputError(f"augment: expected False, True or an AugmentConfig, got {augment!r}")


def _seed_int(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed: expected an integer, got {seed!r}")
    return int(seed) % (2**63)


def _count(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{option}: expected a positive integer, got {value!r}")
    return int(value)


def _in_memory_mode(value: Any) -> str:
    """``in_memory`` as one of ``IN_MEMORY``; True/False/None (the old values) as "yes"/"no"/"auto"."""
    if value is None or isinstance(value, bool):
        return _OLD_IN_MEMORY[value]
    if value not in IN_MEMORY:
        raise InputError(f"in_memory: expected one of {', '.join(IN_MEMORY)}, got {value!r}")
    return value


def _check_shard(shard: Any) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        index, count = shard
    except (TypeError, ValueError):
        raise InputError(f"shard: expected (index, count), got {shard!r}") from None
    count = _count(count, "shard count")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise InputError(f"shard: index must be in 0..{count - 1}, got {index!r}")
    return int(index), count


def make_dataset(
    pack_path: str | os.PathLike,
    split: str,
    batch_size: int = 32,
    augment: bool | AugmentConfig = False,
    seed: int = 0,
    *,
    shuffle: bool | None = None,
    repeat: bool | None = None,
    drop_remainder: bool = False,
    in_memory: str | bool | None = "auto",
    deterministic: bool = True,
    positive_fraction: float | None = None,
    exclude_indices: np.ndarray | None = None,
    shard: tuple[int, int] | None = None,
    pad_to_batches: int | None = None,
    weights: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(images (B, S, S, 1) uint8, masks (B, S, S, 1) float32 in {0, 1})``, with
    ``weights (B,) float32`` third when ``weights``.

    ``split``: "train", "dev" or "test". ``shuffle`` and ``repeat`` default to True for
    train and False otherwise (dev/test: in order, one pass, last partial batch kept
    unless ``drop_remainder``). ``augment``: False, True (the blog's ranges) or an
    :class:`AugmentConfig`; it is never on by default, callers pass it for training.
    ``seed`` fixes the shuffling and the augmentation: the same seed gives the same
    stream. ``positive_fraction`` (0..1; needs ``repeat``): every batch holds exactly
    ``round(positive_fraction * batch_size)`` images with a non-empty mask, the rest
    empty ones (the shard must have both when both counts are non-zero); None draws
    uniformly. ``exclude_indices``: positions in the split (int, ``(K,)``) that never enter a
    batch (``train --exclude``); the split is then the ``N - K`` others, in order, with the
    same shuffling, balancing and step rules.

    Several replicas and workers: ``batch_size`` is this pipeline's batch (under
    ``strategy.distribute_datasets_from_function``, ``ctx.get_per_replica_batch_size``: each
    batch is one replica's part of a global batch, balanced on its own). ``shard=(index,
    count)`` feeds only that shard of the kept positions (:func:`shard_positions`; module
    docstring, step 0), with a seed of its own. ``pad_to_batches=K`` (needs ``repeat=False``): exactly ``K`` batches
    of ``batch_size``, the shard's images then padding (copies of its first image; zeros for an
    empty shard), so every replica runs the same number of steps; ``weights`` (1 for an image, 0
    for padding) keep a score exact. An empty shard is an empty stream (without padding).

    ``in_memory``: "auto" chooses by the memory rule (module docstring), "yes" loads, "no"
    streams (True, False, None: the same); all give identical batches. ``deterministic=False``
    lets parallel fetching and augmentation hand batches out of order (each batch's content is
    still fixed by ``seed``). Errors name the file and split: missing file, foreign or damaged
    file, missing or empty split, a shard with nothing to repeat.
    """
    path = Path(pack_path)
    batch_size = _count(batch_size, "batch_size")
    seed = _seed_int(seed)
    config = _resolve_augment(augment)
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    repeat = split == "train" if repeat is None else bool(repeat)
    mode = _in_memory_mode(in_memory)
    index, count = _check_shard(shard)
    pad = None if pad_to_batches is None else _count(pad_to_batches, "pad_to_batches")
    if pad is not None and repeat:
        raise InputError("pad_to_batches needs repeat=False (it pads one pass to a fixed number of batches)")
    if positive_fraction is not None:
        if isinstance(positive_fraction, bool) or not isinstance(positive_fraction, (int, float)) \
                or not 0 <= positive_fraction <= 1:
            raise InputError(f"positive_fraction: expected a number in 0..1 or None, got {positive_fraction!r}")
        if not repeat:
            raise InputError("positive_fraction needs repeat=True (balanced batches have no natural end)")
    if count > 1:
        seed = shard_seed(seed, index)
    where = f"split {split!r}" + (f" (shard {index} of {count})" if count > 1 else "")

    with _open_split(path, split) as pack:
        n, size = pack.counts[split], pack.size
        if n == 0:
            raise InputError(f"{path}: split {split!r} is empty (0 samples); nothing to feed")
        keep = kept_positions(n, exclude_indices, path, split)
    kept = np.arange(n, dtype=np.int64) if keep is None else keep
    positions = shard_positions(kept, index, count)
    m = len(positions)
    if m == 0:
        if repeat:
            raise InputError(f"{path}: {where} holds no images ({len(kept)} images for {count} shards); "
                             "use fewer workers")
        return _empty_pipeline(size, batch_size, pad or 0, weights)
    if pad is not None and m > pad * batch_size:
        raise InputError(f"pad_to_batches={pad}: {where} of {path} has {m} images, more than {pad} "
                         f"batches of {batch_size}")

    load = mode == "yes" or (mode == "auto" and fits_in_memory(2 * m * size * size))
    reader = _H5Reader(path, split)
    try:
        held = reader.load(positions) if load else None
        flags = None
        if positive_fraction is not None:  # chunk by chunk either way: no copy of all the masks
            flags = positive_flags(held[1] if held is not None else _ShardMasks(reader, positions))
    except BaseException:
        reader.close()
        raise
    if held is not None:
        reader.close()

    # ---- 1-2. index stream and batches (local indices 0..m-1; -1 marks padding)
    if positive_fraction is not None:
        ds = balanced_batches(flags, float(positive_fraction), batch_size, seed, path, where,
                              keep is not None).enumerate()
    else:
        ds = uniform_batches(m, batch_size, seed, shuffle, repeat, drop_remainder, pad)
    fixed = drop_remainder or positive_fraction is not None or pad is not None
    spec_shape = [batch_size if fixed else None, size, size, 1]
    fetch = _memory_fetch(*held) if held is not None else _stream_fetch(reader, positions)
    return _finish_pipeline(ds, spec_shape, fetch, config, seed, deterministic, weights)


def _empty_pipeline(size: int, batch_size: int, batches: int, weights: bool) -> tf.data.Dataset:
    """An empty shard: ``batches`` batches of zero images, masks and weights (none without padding)."""
    zeros = (tf.zeros([batch_size, size, size, 1], tf.uint8), tf.zeros([batch_size, size, size, 1], tf.float32))
    return tf.data.Dataset.from_tensors(zeros + ((tf.zeros([batch_size], tf.float32),) if weights else ())) \
        .repeat(batches)


def _memory_fetch(x_all: np.ndarray, y_all: np.ndarray) -> Any:
    def fetch(idx: tf.Tensor) -> list[tf.Tensor]:
        # numpy_function, not a captured constant: a tf constant would copy the whole shard
        # (and the dataset graph serialises captured constants again).
        return tf.numpy_function(lambda i: (x_all[i], y_all[i]), [idx], [tf.uint8, tf.uint8], stateful=False)
    return fetch


def _stream_fetch(reader: _H5Reader, positions: np.ndarray) -> Any:
    rows_of = tf.constant(positions, tf.int64)

    def fetch(idx: tf.Tensor) -> list[tf.Tensor]:
        return tf.numpy_function(reader, [tf.gather(rows_of, idx)], [tf.uint8, tf.uint8], stateful=False)
    return fetch


def _finish_pipeline(ds: tf.data.Dataset, spec_shape: list, fetch: Any, config: AugmentConfig | None,
                     seed: int, deterministic: bool, weights: bool) -> tf.data.Dataset:
    """Steps 3-5 of the module docstring on numbered index batches."""

    def read(batch_number: tf.Tensor, idx: tf.Tensor) -> tuple[tf.Tensor, ...]:
        w = tf.cast(idx >= 0, tf.float32)  # padding (-1) reads a copy of the first image, weight 0
        x, y = fetch(tf.maximum(idx, 0))
        x.set_shape(spec_shape)
        y.set_shape(spec_shape)
        return batch_number, x, y, w

    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    # ---- 4-5. augment (per-batch seed from the batch number) and finish the masks
    augment_key = tf.constant([seed, _AUGMENT_TAG], tf.int64)

    def finish(batch_number: tf.Tensor, images: tf.Tensor, masks: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, ...]:
        if config is not None:
            key = tf.random.experimental.stateless_fold_in(augment_key, batch_number)
            images, masks = augment_batch(images, masks, config, key)
        masks = tf.cast(masks >= 128, tf.float32)
        return (images, masks, w) if weights else (images, masks)

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)
