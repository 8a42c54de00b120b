"""Which images a pipeline feeds, in which order: index streams for :mod:`pneumo.train.data`.

Indices only, no pixels: the shard of a split's positions a worker feeds (:func:`shard_positions`),
and the numbered batches of local indices, uniform (:func:`uniform_batches`: a stateless
permutation per epoch, or in order; padded with -1 to a fixed number of batches) or balanced
(:func:`balanced_batches`: a fixed number of positives per batch from their own endless stream).
All randomness is stateless, from explicit seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pneumo.errors import InputError

# Fold-in tags keep the random streams apart for one seed (the augmentation's is in pneumo.train.data).
_SHUFFLE_TAG = 0x5348
_POSITIVE_TAG = 0x504F
_NEGATIVE_TAG = 0x4E45
_SHARD_TAG = 0x5348_4152

__all__ = ["shard_positions", "shard_seed", "kept_positions", "endless_permutations", "balanced_batches",
           "uniform_batches"]


def shard_positions(positions: np.ndarray, index: int, count: int) -> np.ndarray:
    """The ``index``-th of ``count`` disjoint shards of ``positions`` ``(M,) int64``, ascending: every
    ``count``-th of a fixed permutation (the same in every worker, whatever the training seed), so
    shard sizes differ by one at most and an ordered split is spread evenly."""
    positions = np.asarray(positions, np.int64)
    if count == 1:
        return positions
    order = np.random.default_rng(_SHARD_TAG).permutation(len(positions))
    return np.sort(positions[order[index::count]])


def shard_seed(seed: int, index: int) -> int:
    """A seed of its own per shard (SeedSequence mixes; no global random state is touched)."""
    state = np.random.SeedSequence([seed, _SHARD_TAG, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) % (2**63)


def kept_positions(n: int, exclude: Any, path: Path, split: str) -> np.ndarray | None:
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


def endless_permutations(indices: np.ndarray, seed: int, tag: int) -> tf.data.Dataset:
    """``indices`` in a fresh stateless permutation per pass, forever (scalars, int64)."""
    values = tf.constant(indices, tf.int64)
    m = len(indices)
    key0 = tf.constant([seed, tag], tf.int64)

    def one_pass(p: tf.Tensor) -> tf.data.Dataset:
        key = tf.random.experimental.stateless_fold_in(key0, p)
        order = tf.argsort(tf.random.stateless_uniform([m], seed=key), stable=True)
        return tf.data.Dataset.from_tensor_slices(tf.gather(values, order))

    return tf.data.Dataset.counter().flat_map(one_pass)


def balanced_batches(flags: np.ndarray, fraction: float, batch_size: int, seed: int,
                      path: Path, where: str, excluded: bool = False) -> tf.data.Dataset:
    """Endless ``(batch_size,) int64`` batches of indices into ``flags`` ``(M,) bool`` (True: a positive
    image): ``round(fraction * batch_size)`` positives first, then negatives, each kind from its own
    endless stream of per-pass permutations. :class:`InputError` naming ``path`` and ``where`` when a
    needed kind is missing (``excluded``: say it is missing after the exclusion)."""
    k = int(round(fraction * batch_size))
    parts = []
    for count, idx, tag, what in ((k, np.flatnonzero(flags), _POSITIVE_TAG, "positive"),
                                  (batch_size - k, np.flatnonzero(~flags), _NEGATIVE_TAG, "empty")):
        if count == 0:
            continue
        if len(idx) == 0:
            left = " left after the exclusion" if excluded else ""
            raise InputError(f"{path}: {where} has no {what} images{left}, so positive_fraction "
                             f"{fraction} cannot be met; use positive_fraction=None (uniform)")
        parts.append(endless_permutations(idx, seed, tag).batch(count, drop_remainder=True))
    if len(parts) == 1:
        return parts[0]
    return tf.data.Dataset.zip(tuple(parts)).map(lambda a, b: tf.concat([a, b], axis=0))


def uniform_batches(m: int, batch_size: int, seed: int, shuffle: bool, repeat: bool,
                     drop_remainder: bool, pad: int | None = None) -> tf.data.Dataset:
    """``(batch number, (k,) int64 indices)`` over ``0..m-1``: permuted per epoch when shuffling,
    endless when repeating, padded with -1 to ``pad`` full batches when given."""
    shuffle_key = tf.constant([seed, _SHUFFLE_TAG], tf.int64)

    def epoch_indices(epoch: tf.Tensor) -> tf.data.Dataset:
        if shuffle:
            key = tf.random.experimental.stateless_fold_in(shuffle_key, epoch)
            order = tf.cast(tf.argsort(tf.random.stateless_uniform([m], seed=key), stable=True), tf.int64)
        else:
            order = tf.range(m, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices(order)

    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    ds = epochs.flat_map(epoch_indices)
    if pad is not None:
        filler = tf.data.Dataset.from_tensors(tf.constant(-1, tf.int64)).repeat(pad * batch_size - m)
        ds, drop_remainder = ds.concatenate(filler), True
    # Numbered before any parallel map: with deterministic=False batches may overtake
    # each other, and each must keep the augmentation seed of its own number.
    return ds.batch(batch_size, drop_remainder=drop_remainder).enumerate()
