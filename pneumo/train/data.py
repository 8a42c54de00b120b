"""``tf.data`` input pipelines from an HDF5 pack.

One pipeline for every split, built from an index stream so that the in-memory and the
streaming paths give exactly the same batches:

1. indices ``0..N-1`` per epoch (without ``exclude_indices``: then the positions kept, in
   order), permuted (stateless, from ``seed`` and the epoch number) when shuffling, repeated
   forever when repeating;
2. ``batch`` (the last partial batch is kept unless ``drop_remainder``); or, with
   ``positive_fraction``, two such endless streams, one over the positive images (a
   non-empty mask) and one over the negatives, each permuted per pass with its own seed,
   cut into ``round(fraction * B)`` and ``B - that`` per batch and concatenated
   (positives first);
3. fetch: numpy indexing into the split held in memory (parallel), or a read from the
   HDF5 file (one thread: h5py serialises access anyway; one read per run of
   consecutive indices, so an in-order batch is a single slice);
4. augment, batched (one projective op per batch, per-sample parameters), with the
   seed derived from ``(seed, batch number)``, in parallel;
5. masks to float32 {0, 1}; ``prefetch``.

Images stay ``uint8`` to the end: scaling and the gray-to-RGB step live in the model.

Memory rule (``in_memory=None``): a split is loaded when its images and masks together
take at most half of the memory available now (``MemAvailable`` in ``/proc/meminfo``,
else free pages from ``os.sysconf``; if neither is known, up to 2 GiB). Otherwise it is
streamed from the file.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pneumo.train.augment import augment_batch, check_config, is_identity
from pneumo.config import SPLITS, AugmentConfig
from pneumo.errors import InputError
from pneumo.store.pack import Pack, positive_flags

# Fold-in tags keep the shuffling and augmentation random streams apart for one seed.
_SHUFFLE_TAG = 0x5348
_AUGMENT_TAG = 0x4147
_POSITIVE_TAG = 0x504F
_NEGATIVE_TAG = 0x4E45
_MEMORY_FRACTION = 0.5
_FALLBACK_MEMORY = 2 * 1024**3

__all__ = ["SPLITS", "make_dataset", "memory_available", "fits_in_memory"]


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


# --------------------------------------------------------------------------- streaming reads
class _H5Reader:
    """Reads batches of samples by index from one split; the pack is opened lazily.

    Called from a single ``tf.numpy_function`` map with no parallelism, so one thread at a
    time touches the file; the lock makes that explicit.
    """

    def __init__(self, path: Path, split: str):
        self.path, self.split = path, split
        self._pack: Pack | None = None
        self._lock = threading.Lock()

    def __call__(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._pack is None:
                self._pack = Pack(self.path)
            # Pack reads per run of consecutive indices: an in-order batch is one slice.
            return self._pack.images(self.split, idx), self._pack.masks(self.split, idx)

    def close(self) -> None:
        with self._lock:
            if self._pack is not None:
                self._pack.close()
                self._pack = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


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
    in_memory: bool | None = None,
    deterministic: bool = True,
    positive_fraction: float | None = None,
    exclude_indices: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images (B, S, S, 1) uint8, masks (B, S, S, 1) float32 in {0, 1})``.

    ``split``: "train", "dev" or "test". ``shuffle`` and ``repeat`` default to True for
    train and False otherwise (dev/test: in order, one pass, last partial batch kept
    unless ``drop_remainder``). ``augment``: False, True (the blog's ranges) or an
    :class:`AugmentConfig`; it is never on by default, callers pass it for training.
    ``seed`` fixes the shuffling and the augmentation: the same seed gives the same
    stream. ``positive_fraction`` (0..1; needs ``repeat``): every batch holds exactly
    ``round(positive_fraction * batch_size)`` images with a non-empty mask, the rest
    empty ones (the split must have both when both counts are non-zero); None draws
    uniformly. ``exclude_indices``: positions in the split (int, ``(K,)``) that never enter a
    batch (``train --exclude``); the split is then the ``N - K`` others, in order, with the
    same shuffling, balancing and step rules. ``in_memory``: None chooses by the memory rule (module docstring), True/False
    forces it; both give identical batches. ``deterministic=False`` lets parallel
    augmentation hand batches out of order (each batch's content is still fixed by
    ``seed``). Errors name the file and split: missing file, foreign or damaged file,
    missing or empty split.
    """
    path = Path(pack_path)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size: expected a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    seed = _seed_int(seed)
    config = _resolve_augment(augment)
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    repeat = split == "train" if repeat is None else bool(repeat)

    with _open_split(path, split) as pack:
        n, size = pack.counts[split], pack.size
        if n == 0:
            raise InputError(f"{path}: split {split!r} is empty (0 samples); nothing to feed")
        keep = _kept_positions(n, exclude_indices, path, split)
        nbytes = 2 * n * size * size
        if in_memory is None:
            in_memory = fits_in_memory(nbytes)
        if in_memory:
            x_all, y_all = pack.images(split), pack.masks(split)
        if positive_fraction is not None:
            if isinstance(positive_fraction, bool) or not isinstance(positive_fraction, (int, float)) \
                    or not 0 <= positive_fraction <= 1:
                raise InputError(f"positive_fraction: expected a number in 0..1 or None, got {positive_fraction!r}")
            if not repeat:
                raise InputError("positive_fraction needs repeat=True (balanced batches have no natural end)")
            # chunk by chunk either way: no temporary copy of the whole split's masks
            flags = positive_flags(y_all) if in_memory else pack.positives(split)

    # ---- 1-2. index stream and batches
    if positive_fraction is not None:
        ds = _balanced_batches(flags, float(positive_fraction), batch_size, seed, path, split, keep).enumerate()
    else:
        ds = _uniform_batches(n, batch_size, seed, shuffle, repeat, drop_remainder, keep)
    spec_shape = [batch_size if (drop_remainder or positive_fraction is not None) else None, size, size, 1]
    return _finish_pipeline(ds, spec_shape, in_memory, x_all if in_memory else None,
                            y_all if in_memory else None, path, split, config, seed, deterministic)


def _kept_positions(n: int, exclude: Any, path: Path, split: str) -> np.ndarray | None:
    """The sorted positions of ``0..n-1`` not in ``exclude`` (int64), or None when nothing is left out."""
    if exclude is None:
        return None
    exclude = np.asarray(exclude)
    if exclude.size and (exclude.dtype.kind not in "iu" or exclude.min() < 0 or exclude.max() >= n):
        raise InputError(f"exclude_indices: expected positions in 0..{n - 1} of split {split!r}, "
                         f"got {exclude.dtype} values {exclude.min()}..{exclude.max()}")
    if exclude.size == 0:
        return None
    keep = np.setdiff1d(np.arange(n, dtype=np.int64), exclude.astype(np.int64))
    if keep.size == 0:
        raise InputError(f"{path}: every image of split {split!r} is excluded; nothing to feed")
    return keep


def _endless_permutations(indices: np.ndarray, seed: int, tag: int) -> tf.data.Dataset:
    """``indices`` in a fresh stateless permutation per pass, forever (scalars, int64)."""
    values = tf.constant(indices, tf.int64)
    m = len(indices)
    key0 = tf.constant([seed, tag], tf.int64)

    def one_pass(p: tf.Tensor) -> tf.data.Dataset:
        key = tf.random.experimental.stateless_fold_in(key0, p)
        order = tf.argsort(tf.random.stateless_uniform([m], seed=key), stable=True)
        return tf.data.Dataset.from_tensor_slices(tf.gather(values, order))

    return tf.data.Dataset.counter().flat_map(one_pass)


def _balanced_batches(flags: np.ndarray, fraction: float, batch_size: int, seed: int,
                      path: Path, split: str, keep: np.ndarray | None = None) -> tf.data.Dataset:
    """Endless index batches with ``round(fraction * batch_size)`` positives first, then negatives
    (drawn from the positions in ``keep`` when given)."""
    k = int(round(fraction * batch_size))
    kept = np.ones(len(flags), bool)
    if keep is not None:
        kept = np.zeros(len(flags), bool)
        kept[keep] = True
    positives = np.flatnonzero(flags & kept)
    negatives = np.flatnonzero(~flags & kept)
    parts = []
    for count, idx, tag, what in ((k, positives, _POSITIVE_TAG, "positive"),
                                  (batch_size - k, negatives, _NEGATIVE_TAG, "empty")):
        if count == 0:
            continue
        if len(idx) == 0:
            left = " left after the exclusion" if keep is not None else ""
            raise InputError(f"{path}: split {split!r} has no {what} images{left}, so positive_fraction "
                             f"{fraction} cannot be met; use positive_fraction=None (uniform)")
        parts.append(_endless_permutations(idx, seed, tag).batch(count, drop_remainder=True))
    if len(parts) == 1:
        return parts[0]
    return tf.data.Dataset.zip(tuple(parts)).map(lambda a, b: tf.concat([a, b], axis=0))


def _uniform_batches(n: int, batch_size: int, seed: int, shuffle: bool, repeat: bool,
                     drop_remainder: bool, keep: np.ndarray | None = None) -> tf.data.Dataset:
    """Numbered index batches over ``0..n-1`` (or the positions in ``keep``): permuted per epoch
    when shuffling, endless when repeating."""
    # ---- 1. index stream
    shuffle_key = tf.constant([seed, _SHUFFLE_TAG], tf.int64)
    positions = None if keep is None else tf.constant(keep, tf.int64)
    if keep is not None:
        n = len(keep)

    def epoch_indices(epoch: tf.Tensor) -> tf.data.Dataset:
        if shuffle:
            key = tf.random.experimental.stateless_fold_in(shuffle_key, epoch)
            order = tf.argsort(tf.random.stateless_uniform([n], seed=key), stable=True)
            order = tf.cast(order, tf.int64)
        else:
            order = tf.range(n, dtype=tf.int64)
        if positions is not None:
            order = tf.gather(positions, order)
        return tf.data.Dataset.from_tensor_slices(order)

    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    ds = epochs.flat_map(epoch_indices)
    # Numbered before any parallel map: with deterministic=False batches may overtake
    # each other, and each must keep the augmentation seed of its own number.
    return ds.batch(batch_size, drop_remainder=drop_remainder).enumerate()


def _finish_pipeline(ds: tf.data.Dataset, spec_shape: list, in_memory: bool, x_all: Any, y_all: Any,
                     path: Path, split: str, config: AugmentConfig | None, seed: int,
                     deterministic: bool) -> tf.data.Dataset:
    """Steps 3-5 of the module docstring on numbered index batches."""

    # ---- 3. fetch. Both paths hand numpy batches to TensorFlow through numpy_function:
    # capturing a whole split as a tf constant would copy it (and the dataset graph
    # serialises captured constants again), doubling peak memory for large packs.
    if in_memory:
        def read(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return x_all[idx], y_all[idx]

        parallel = tf.data.AUTOTUNE
    else:
        read = _H5Reader(path, split)
        parallel = None  # a single reader thread (h5py serialises access anyway)

    def fetch(batch_number: tf.Tensor, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(read, [idx], [tf.uint8, tf.uint8], stateful=not in_memory)
        x.set_shape(spec_shape)
        y.set_shape(spec_shape)
        return batch_number, x, y

    if parallel is None:
        ds = ds.map(fetch)
    else:
        ds = ds.map(fetch, num_parallel_calls=parallel, deterministic=deterministic)

    # ---- 4-5. augment (per-batch seed from the batch number) and finish the masks
    augment_key = tf.constant([seed, _AUGMENT_TAG], tf.int64)

    def finish(batch_number: tf.Tensor, images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if config is not None:
            key = tf.random.experimental.stateless_fold_in(augment_key, batch_number)
            images, masks = augment_batch(images, masks, config, key)
        return images, tf.cast(masks >= 128, tf.float32)

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)
