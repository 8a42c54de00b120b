"""pneumo.train.data: tf.data pipelines from a tiny pack (tests/conftest.py writes the layout)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import write_test_pack  # noqa: E402

from pneumo.train import data as data_mod  # noqa: E402
from pneumo.config import AugmentConfig  # noqa: E402
from pneumo.train.data import fits_in_memory, make_dataset  # noqa: E402
from pneumo.store.pack import Pack  # noqa: E402
from pneumo.errors import InputError, PackFormatError  # noqa: E402


def _split(pack, split):
    with h5py.File(pack, "r") as f:
        return f[f"X_{split}"][()], f[f"Y_{split}"][()]


def _take(ds, n):
    return [tuple(t.numpy() for t in element) for element in ds.take(n)]


def _keys(images):
    return [im.tobytes() for im in images]


# --------------------------------------------------------------------------- shapes and order
def test_dev_is_ordered_once_with_partial_final_batch(tiny_pack):
    X, Y = _split(tiny_pack, "dev")  # 16 samples
    batches = _take(make_dataset(tiny_pack, "dev", batch_size=5), 100)
    assert [b[0].shape[0] for b in batches] == [5, 5, 5, 1]
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8 and images.shape == (16, 64, 64, 1)
    assert masks.dtype == np.float32 and set(np.unique(masks).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(images, X)
    np.testing.assert_array_equal(masks, Y / 255.0)


def test_element_spec_and_drop_remainder(tiny_pack):
    ds = make_dataset(tiny_pack, "test", batch_size=5, drop_remainder=True)
    assert ds.element_spec[0].shape.as_list() == [5, 64, 64, 1]
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.float32
    assert [b[0].shape[0] for b in _take(ds, 100)] == [5, 5, 5]
    assert make_dataset(tiny_pack, "dev", 4).element_spec[0].shape.as_list() == [None, 64, 64, 1]


def test_train_shuffles_each_epoch_and_repeats(tiny_pack):
    X, Y = _split(tiny_pack, "train")  # 48 samples
    batches = _take(make_dataset(tiny_pack, "train", batch_size=8, seed=1), 12)  # two epochs
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    first, second = images[:48], images[48:]
    assert sorted(_keys(first)) == sorted(_keys(X))  # one epoch = a permutation
    assert sorted(_keys(second)) == sorted(_keys(X))
    assert _keys(first) != _keys(X) and _keys(first) != _keys(second)
    # Masks travel with their images.
    where = {k: i for i, k in enumerate(_keys(X))}
    for im, mk in zip(images, masks):
        np.testing.assert_array_equal(mk, Y[where[im.tobytes()]] / 255.0)


def test_shuffle_and_repeat_overrides(tiny_pack):
    X, _ = _split(tiny_pack, "train")
    batches = _take(make_dataset(tiny_pack, "train", 10, shuffle=False, repeat=False), 100)
    assert [b[0].shape[0] for b in batches] == [10, 10, 10, 10, 8]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), X)
    dev = _take(make_dataset(tiny_pack, "dev", 16, shuffle=True, repeat=True, seed=3), 3)
    assert len(dev) == 3 and _keys(dev[0][0]) != _keys(dev[1][0])


# --------------------------------------------------------------------------- augmentation and seeds
def test_augment_true_changes_images_and_keeps_masks_binary(tiny_pack):
    plain = _take(make_dataset(tiny_pack, "train", 8, seed=2), 2)
    aug = _take(make_dataset(tiny_pack, "train", 8, augment=True, seed=2), 2)
    for (px, pm), (ax, am) in zip(plain, aug):
        assert ax.shape == px.shape and ax.dtype == np.uint8
        assert set(np.unique(am).tolist()) <= {0.0, 1.0}
        assert not np.array_equal(ax, px)
        # Same samples in the same order (augmentation does not touch the index stream):
        # the image mean moves little under small geometry.
        assert np.abs(ax.astype(float).mean(axis=(1, 2, 3)) - px.astype(float).mean(axis=(1, 2, 3))).max() < 6


def test_identity_augment_config_is_no_augmentation(tiny_pack):
    off = AugmentConfig(rotation=0, width_shift=0, height_shift=0, zoom=0, horizontal_flip=False)
    a = _take(make_dataset(tiny_pack, "train", 8, augment=off, seed=4), 3)
    b = _take(make_dataset(tiny_pack, "train", 8, augment=False, seed=4), 3)
    for (ax, am), (bx, bm) in zip(a, b):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(am, bm)


def test_same_seed_same_stream_different_seed_differs(tiny_pack):
    a = _take(make_dataset(tiny_pack, "train", 8, augment=True, seed=5), 7)
    b = _take(make_dataset(tiny_pack, "train", 8, augment=True, seed=5), 7)
    c = _take(make_dataset(tiny_pack, "train", 8, augment=True, seed=6), 7)
    for (ax, am), (bx, bm) in zip(a, b):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(am, bm)
    assert any(not np.array_equal(ax, cx) for (ax, _), (cx, _) in zip(a, c))


def test_augmentation_differs_between_epochs_on_the_same_order(tiny_pack):
    # No shuffling: batch k of epoch 2 holds the same samples as batch k of epoch 1,
    # but gets a new seed (from the batch number), so a new transform.
    batches = _take(make_dataset(tiny_pack, "train", 16, augment=True, shuffle=False, seed=0), 6)
    for k in range(3):
        assert not np.array_equal(batches[k][0], batches[k + 3][0])


@pytest.mark.parametrize("split, kwargs", [
    ("train", dict(augment=True, seed=7)),
    ("train", dict(augment=AugmentConfig(per_batch=True), seed=8, drop_remainder=True)),
    ("dev", dict()),
])
def test_streaming_equals_in_memory(tiny_pack, split, kwargs):
    mem = _take(make_dataset(tiny_pack, split, 6, in_memory=True, **kwargs), 10)
    disk = _take(make_dataset(tiny_pack, split, 6, in_memory=False, **kwargs), 10)
    assert len(mem) == len(disk) > 0
    for (mx, mm), (dx, dm) in zip(mem, disk):
        np.testing.assert_array_equal(mx, dx)
        np.testing.assert_array_equal(mm, dm)


def test_streaming_batch_across_epochs_with_repeated_index(tmp_path):
    # 5 samples, batch 4, shuffled and repeated: batches straddle epochs and may hold the
    # same index twice; h5py fancy reads need unique sorted indices.
    pack = write_test_pack(tmp_path / "p.h5", counts=(5, 2, 2), size=32)
    mem = _take(make_dataset(pack, "train", 4, seed=1, in_memory=True), 10)
    disk = _take(make_dataset(pack, "train", 4, seed=1, in_memory=False), 10)
    for (mx, _), (dx, _) in zip(mem, disk):
        np.testing.assert_array_equal(mx, dx)


def test_nondeterministic_mode_gives_the_same_batches(tiny_pack):
    a = _take(make_dataset(tiny_pack, "dev", 4, augment=True, deterministic=False), 100)
    b = _take(make_dataset(tiny_pack, "dev", 4, augment=True), 100)
    assert sorted(x.tobytes() for x, _ in a) == sorted(x.tobytes() for x, _ in b)


# --------------------------------------------------------------------------- memory rule
def test_memory_rule(monkeypatch):
    monkeypatch.setattr(data_mod, "memory_available", lambda: 1000)
    assert fits_in_memory(500) and not fits_in_memory(501)
    monkeypatch.setattr(data_mod, "memory_available", lambda: None)
    assert fits_in_memory(2 * 1024**3) and not fits_in_memory(2 * 1024**3 + 1)


def test_automatic_choice_streams_when_memory_is_short(tiny_pack, monkeypatch):
    monkeypatch.setattr(data_mod, "memory_available", lambda: 1000)
    opened = []
    original = data_mod._H5Reader.__call__

    def spy(self, idx):
        opened.append(len(idx))
        return original(self, idx)

    monkeypatch.setattr(data_mod._H5Reader, "__call__", spy)
    X, _ = _split(tiny_pack, "dev")
    got = np.concatenate([b[0] for b in _take(make_dataset(tiny_pack, "dev", 8), 10)])
    np.testing.assert_array_equal(got, X)
    assert opened == [8, 8]


def test_memory_available_reads_something():
    value = data_mod.memory_available()
    assert value is None or value > 0


# --------------------------------------------------------------------------- errors
def test_split_sizes(tiny_pack, tmp_path):
    with Pack(tiny_pack) as pack:
        assert [pack.counts[s] for s in ("train", "dev", "test")] == [48, 16, 16]
    with Pack(write_test_pack(tmp_path / "e.h5", counts=(4, 0, 2), size=32)) as pack:
        assert pack.counts["dev"] == 0 and len(pack.masks("dev")) == len(pack.positives("dev")) == 0


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(InputError, match="nope.h5"):
        make_dataset(missing, "train")
    with pytest.raises(InputError, match="nope.h5"):
        Pack(missing)


def test_not_hdf5(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("hello")
    with pytest.raises(PackFormatError, match="notes.h5"):
        make_dataset(bad, "train")


def test_foreign_hdf5(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("X_train", data=np.zeros((2, 32, 32, 1), np.uint8))
        f.attrs["format"] = "something-else"
    with pytest.raises(PackFormatError, match="foreign.h5.*not a pneumo pack"):
        make_dataset(foreign, "train")


def test_missing_split_datasets(tmp_path):
    pack = write_test_pack(tmp_path / "cut.h5", counts=(4, 2, 2), size=32)
    with h5py.File(pack, "a") as f:
        del f["Y_dev"]
    with pytest.raises(PackFormatError, match=r"cut\.h5.*Y_dev"):
        make_dataset(pack, "dev")


def test_empty_split(tmp_path):
    pack = write_test_pack(tmp_path / "e.h5", counts=(4, 0, 2), size=32)
    with pytest.raises(InputError, match=r"e\.h5.*'dev'.*empty"):
        make_dataset(pack, "dev")
    assert len(_take(make_dataset(pack, "test", 8), 5)) == 1  # other splits still work


def test_bad_arguments(tiny_pack):
    with pytest.raises(InputError, match="unknown split 'validation'"):
        make_dataset(tiny_pack, "validation")
    with pytest.raises(InputError, match="batch_size"):
        make_dataset(tiny_pack, "dev", batch_size=0)
    with pytest.raises(InputError, match="augment"):
        make_dataset(tiny_pack, "dev", augment="yes")
    with pytest.raises(InputError, match="fill_mode"):
        make_dataset(tiny_pack, "dev", augment=AugmentConfig(fill_mode="bogus"))
    with pytest.raises(InputError, match="seed"):
        make_dataset(tiny_pack, "dev", seed=1.5)


# --------------------------------------------------------------------------- positive-aware sampling (issue 10)
def _positive_count(masks: np.ndarray) -> list[int]:
    return [int(m.any()) for m in masks]


def test_positive_fraction_fixes_the_positives_per_batch(tiny_pack):
    X, Y = _split(tiny_pack, "train")  # 48 samples, 16 positive
    pos_keys = {x.tobytes() for x, y in zip(X, Y) if y.any()}
    batches = _take(make_dataset(tiny_pack, "train", batch_size=8, seed=3, positive_fraction=0.5), 10)
    for x, y in batches:
        assert x.shape == (8, 64, 64, 1)
        assert sum(_positive_count(y)) == 4
        assert sum(im.tobytes() in pos_keys for im in x) == 4  # images and masks stay paired
    # the 16 positives come as a permutation per pass (4 batches of 4), then a new order
    seen = [im.tobytes() for x, _ in batches for im in x[:4]]
    assert sorted(seen[:16]) == sorted(pos_keys) and sorted(seen[16:32]) == sorted(pos_keys)
    assert seen[:16] != seen[16:32]
    # rounding: 0.3 of 8 = 2 (round(2.4))
    _, y = _take(make_dataset(tiny_pack, "train", batch_size=8, positive_fraction=0.3), 1)[0]
    assert sum(_positive_count(y)) == 2


def test_positive_fraction_is_deterministic_and_seeded(tiny_pack):
    def stream(seed, in_memory):
        ds = make_dataset(tiny_pack, "train", 6, seed=seed, positive_fraction=0.5, in_memory=in_memory)
        return [x.tobytes() for x, _ in _take(ds, 6)]

    a = stream(7, True)
    assert a == stream(7, True) == stream(7, False)  # streamed and in-memory agree
    assert a != stream(8, True)


def test_positive_fraction_extremes_and_errors(tiny_pack, tmp_path):
    _, y = _take(make_dataset(tiny_pack, "train", 4, positive_fraction=1.0), 1)[0]
    assert _positive_count(y) == [1, 1, 1, 1]
    _, y = _take(make_dataset(tiny_pack, "train", 4, positive_fraction=0.0), 1)[0]
    assert _positive_count(y) == [0, 0, 0, 0]
    for bad in (1.5, -0.1, True, "half"):
        with pytest.raises(InputError, match="positive_fraction"):
            make_dataset(tiny_pack, "train", 4, positive_fraction=bad)
    with pytest.raises(InputError, match="repeat"):
        make_dataset(tiny_pack, "dev", 4, positive_fraction=0.5)
    no_pos = write_test_pack(tmp_path / "neg.h5", counts=(8, 4, 4), size=32)
    with h5py.File(no_pos, "r+") as f:
        f["Y_train"][...] = 0
    with pytest.raises(InputError, match=r"neg\.h5.*no positive images"):
        make_dataset(no_pos, "train", 4, positive_fraction=0.5)
    ds = make_dataset(no_pos, "train", 4, positive_fraction=0.0)  # no positives needed
    assert _take(ds, 1)[0][0].shape == (4, 32, 32, 1)


# --------------------------------------------------------------------------- exclude_indices (train --exclude)
def _positions(images: np.ndarray, X: np.ndarray) -> list[int]:
    """The split position of each yielded image (the tiny pack's noise images are all distinct)."""
    where = {im.tobytes(): i for i, im in enumerate(X)}
    assert len(where) == len(X)
    return [where[im.tobytes()] for im in images]


@pytest.mark.parametrize("in_memory", [True, False])
def test_excluded_positions_never_enter_a_batch(tiny_pack, in_memory):
    X, _ = _split(tiny_pack, "train")  # 48 samples
    dropped = np.array([0, 5, 6, 7, 30, 47])
    kept = sorted(set(range(48)) - set(dropped.tolist()))
    # shuffled and repeated: each 42-image epoch is a permutation of the kept ones
    ds = make_dataset(tiny_pack, "train", 6, seed=4, in_memory=in_memory, exclude_indices=dropped)
    seen = _positions(np.concatenate([b[0] for b in _take(ds, 14)]), X)  # two epochs
    assert sorted(seen[:42]) == kept and sorted(seen[42:]) == kept and seen[:42] != seen[42:]
    # in order, once: exactly the kept positions (dev-style)
    Xd, _ = _split(tiny_pack, "dev")
    ds = make_dataset(tiny_pack, "dev", 5, in_memory=in_memory, exclude_indices=np.array([1, 15]))
    batches = _take(ds, 100)
    assert [b[0].shape[0] for b in batches] == [5, 5, 4]
    assert _positions(np.concatenate([b[0] for b in batches]), Xd) == [i for i in range(16) if i not in (1, 15)]


def test_excluded_positions_with_positive_fraction(tiny_pack):
    X, Y = _split(tiny_pack, "train")
    positives = np.flatnonzero(Y.reshape(48, -1).max(axis=1) >= 128)
    dropped = np.concatenate([positives[:4], np.flatnonzero(Y.reshape(48, -1).max(axis=1) < 128)[:3]])
    for in_memory in (True, False):
        ds = make_dataset(tiny_pack, "train", 8, seed=2, positive_fraction=0.5, in_memory=in_memory,
                          exclude_indices=dropped)
        batches = _take(ds, 12)
        seen = set(_positions(np.concatenate([b[0] for b in batches]), X))
        assert not seen & set(dropped.tolist())
        assert [int((y.reshape(8, -1).max(axis=1) > 0).sum()) for _, y in batches] == [4] * 12
        assert seen >= set(positives[4:].tolist())  # 12 batches x 4 positives cycle every kept positive


def test_no_exclusion_gives_the_same_stream(tiny_pack):
    """An empty or absent exclusion is today's pipeline, batch for batch."""
    a = _take(make_dataset(tiny_pack, "train", 8, seed=5), 7)
    for none in (None, np.array([], np.int64)):
        b = _take(make_dataset(tiny_pack, "train", 8, seed=5, exclude_indices=none), 7)
        assert all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(a, b, strict=True))


def test_bad_exclusions(tiny_pack):
    with pytest.raises(InputError, match=r"exclude_indices: expected positions in 0\.\.15"):
        make_dataset(tiny_pack, "dev", 4, exclude_indices=np.array([3, 16]))
    with pytest.raises(InputError, match="exclude_indices"):
        make_dataset(tiny_pack, "dev", 4, exclude_indices=np.array([0.5]))
    with pytest.raises(InputError, match="every image of split 'dev' is excluded"):
        make_dataset(tiny_pack, "dev", 4, exclude_indices=np.arange(16))
    with pytest.raises(InputError, match="no positive images left after the exclusion"):
        _, Y = _split(tiny_pack, "train")
        positives = np.flatnonzero(Y.reshape(48, -1).max(axis=1) >= 128)
        make_dataset(tiny_pack, "train", 4, positive_fraction=0.5, exclude_indices=positives)


# --------------------------------------------------------------------------- issue 17: modes, shards, padding
def _gzip_copy(src, dst):
    """The same pack with gzip chunks (the reader inflates them itself)."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        g.attrs.update(dict(f.attrs))
        for name, ds in f.items():
            kwargs = dict(chunks=ds.chunks, compression="gzip") if ds.chunks else {}
            g.create_dataset(name, data=ds[()], dtype=ds.dtype, **kwargs)
    return dst


@pytest.fixture(scope="module")
def gzip_pack(tiny_pack, tmp_path_factory):
    return _gzip_copy(tiny_pack, tmp_path_factory.mktemp("gz") / "tiny-gzip.h5")


@pytest.mark.parametrize("split, kwargs", [
    ("train", dict(augment=True, seed=7)),
    ("train", dict(seed=3, positive_fraction=0.5, shard=(1, 3))),
    ("dev", dict(pad_to_batches=3, weights=True, shard=(0, 2))),
])
@pytest.mark.parametrize("pack", ["tiny_pack", "gzip_pack"])
def test_in_memory_modes_give_identical_batches(request, pack, split, kwargs):
    """yes, no (the parallel chunk reader) and auto give the same batches, also from a gzip pack."""
    path = request.getfixturevalue(pack)
    streams = {mode: _take(make_dataset(path, split, 6, in_memory=mode, **kwargs), 8) for mode in ("yes", "no", "auto")}
    assert [data_mod._in_memory_mode(v) for v in (True, False, None)] == ["yes", "no", "auto"]  # the old values
    first = streams["yes"]
    assert len(first) > 0
    for mode, got in streams.items():
        assert len(got) == len(first), mode
        for a, b in zip(first, got):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
    if pack == "gzip_pack":  # and the gzip pack's batches are the plain pack's
        plain = _take(make_dataset(request.getfixturevalue("tiny_pack"), split, 6, in_memory="no", **kwargs), 8)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(plain, first))


def test_streaming_reads_in_parallel_threads(tiny_pack, gzip_pack):
    """The streamed path reads through Pack.chunk_reader without h5py (so threads read at once)."""
    for path, mode in ((tiny_pack, "raw"), (gzip_pack, "deflate")):
        reader = data_mod._H5Reader(path, "train")
        try:
            assert reader._rows.parallel and reader._rows.images.mode == mode
        finally:
            reader.close()


def test_bad_in_memory_and_shard_arguments(tiny_pack):
    with pytest.raises(InputError, match="in_memory: expected one of auto, yes, no"):
        make_dataset(tiny_pack, "dev", 4, in_memory="sometimes")
    for bad in ((2, 2), (-1, 2), (0, 0), 3, (0, 1, 2), (True, 2)):
        with pytest.raises(InputError, match="shard"):
            make_dataset(tiny_pack, "dev", 4, shard=bad)
    with pytest.raises(InputError, match="pad_to_batches needs repeat=False"):
        make_dataset(tiny_pack, "train", 4, pad_to_batches=3)
    with pytest.raises(InputError, match=r"pad_to_batches=3: split 'dev' \(shard 0 of 2\) of .* has 8 images"):
        make_dataset(tiny_pack, "dev", 2, pad_to_batches=3, shard=(0, 2))
    with pytest.raises(InputError, match=r"split 'train' \(shard 60 of 64\) holds no images"):
        make_dataset(tiny_pack, "train", 4, shard=(60, 64))


def _is_positive(masks: np.ndarray) -> np.ndarray:
    return masks.reshape(len(masks), -1).max(axis=1) > 0


def test_shard_positions_partition_evenly_and_spread_an_ordered_split():
    kept = np.setdiff1d(np.arange(50), [3, 4, 17])
    for count in (1, 2, 3, 7, 60):
        shards = [data_mod.shard_positions(kept, i, count) for i in range(count)]
        assert sorted(np.concatenate(shards).tolist()) == kept.tolist()  # disjoint and covering
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert all(list(s) == sorted(s) for s in shards)
    # every third image positive (the tiny pack's order): a stride would give shard 0 all of them
    assert all((data_mod.shard_positions(np.arange(48), i, 3) % 3 == 0).any() for i in range(3))
    assert np.array_equal(data_mod.shard_positions(kept, 0, 1), kept)


def _shard(i: int, count: int, n: int = 48) -> list[int]:
    return data_mod.shard_positions(np.arange(n), i, count).tolist()


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_every_batch_of_every_shard_is_balanced(tiny_pack, in_memory):
    """Per replica: batch 8 at 0.5 gives 4 positives in every batch of every shard; each shard feeds
    only its positions and the two together cover every positive and negative over passes."""
    X, Y = _split(tiny_pack, "train")  # 48 images, 16 positive
    flags = _is_positive(Y)
    seen = []
    for i in range(2):
        batches = _take(make_dataset(tiny_pack, "train", 8, seed=1, positive_fraction=0.5, shard=(i, 2),
                                     in_memory=in_memory), 16)
        assert [int(_is_positive(y).sum()) for _, y in batches] == [4] * 16
        where = _positions(np.concatenate([x for x, _ in batches]), X)
        assert set(where) <= set(_shard(i, 2))
        assert all(flags[p] == (k % 8 < 4) for k, p in enumerate(where))  # positives first, masks paired
        seen += where
    assert set(seen) == set(range(48))  # 16 batches x 4 cycle through each shard's positives and negatives


def test_uniform_shards_are_disjoint_covering_and_differently_ordered(tiny_pack):
    X, _ = _split(tiny_pack, "train")
    epochs = []
    for i in range(2):  # 24 images per shard: 3 batches of 8 = one epoch
        where = _positions(np.concatenate([x for x, _ in _take(make_dataset(
            tiny_pack, "train", 8, seed=5, shard=(i, 2)), 3)]), X)
        assert sorted(where) == _shard(i, 2)
        epochs.append([_shard(i, 2).index(p) for p in where])  # the local order within the shard
    assert epochs[0] != epochs[1]  # the shard index is folded into the seed
    one = _take(make_dataset(tiny_pack, "train", 8, seed=5, shard=(0, 1)), 4)
    plain = _take(make_dataset(tiny_pack, "train", 8, seed=5), 4)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(one, plain))  # one shard is no sharding


@pytest.mark.parametrize("in_memory", ["yes", "no"])
def test_a_shard_reads_only_its_positions(tiny_pack, monkeypatch, in_memory):
    """Loading, finding positives and streaming all read the shard's rows and nothing else."""
    from pneumo.store import pack_rows

    reads = []
    real = pack_rows.RowReader.read

    def spy(self, rows, *args, **kwargs):
        reads.append(np.asarray(rows).tolist())
        return real(self, rows, *args, **kwargs)

    monkeypatch.setattr(pack_rows.RowReader, "read", spy)
    mine = set(_shard(1, 3))
    _take(make_dataset(tiny_pack, "train", 4, positive_fraction=0.5, shard=(1, 3), in_memory=in_memory), 6)
    read = {r for rows in reads for r in rows}
    assert read and read <= mine
    if in_memory == "yes":  # the shard itself was held: each of its rows read once (images and masks)
        assert sorted(r for rows in reads for r in rows) == sorted(list(mine) * 2)


@pytest.mark.parametrize("count", [1, 3, 5, 20])
def test_padded_shards_score_every_image_exactly_once(tiny_pack, count):
    """K batches exactly; weights sum to the shard's images; weighted images over all shards are the
    split exactly once; an empty shard (count 20 > 16 images) is K batches of zeros at weight 0."""
    X, Y = _split(tiny_pack, "dev")  # 16 images
    b = 3
    k = -(-max(len(_shard(i, count, 16)) for i in range(count)) // b)  # ceil(largest shard / batch)
    weighted = []
    for i in range(count):
        batches = [tuple(t.numpy() for t in e) for e in make_dataset(
            tiny_pack, "dev", b, shard=(i, count), pad_to_batches=k, weights=True)]
        assert len(batches) == k and all(x.shape[0] == b for x, _, _ in batches)
        w = np.concatenate([w for _, _, w in batches])
        assert w.dtype == np.float32 and set(w.tolist()) <= {0.0, 1.0}
        assert w.sum() == len(_shard(i, count, 16))
        images = np.concatenate([x for x, _, _ in batches])
        masks = np.concatenate([y for _, y, _ in batches])
        where = _positions(images[w == 1], X)
        assert where == _shard(i, count, 16)  # the shard's images, in order, then padding
        assert list(w[:len(where)]) == [1.0] * len(where)
        np.testing.assert_array_equal(masks[w == 1], Y[where] / 255.0)
        if not where:
            assert not images.any() and not masks.any()
        weighted += where
    assert sorted(weighted) == list(range(16))


def test_weights_without_padding_are_ones(tiny_pack):
    batches = [tuple(t.numpy() for t in e) for e in make_dataset(tiny_pack, "dev", 5, weights=True)]
    assert [w.tolist() for _, _, w in batches] == [[1.0] * 5] * 3 + [[1.0]]
    # an empty shard without padding is an empty stream
    assert _take(make_dataset(tiny_pack, "dev", 5, shard=(17, 18)), 5) == []


def test_auto_rule_counts_the_shard_only(tiny_pack, monkeypatch):
    """'auto' judges the bytes of this pipeline's shard: 16 dev images of 64 px are 131,072 bytes of
    images and masks, a shard of 4 a quarter of that."""
    asked = []
    monkeypatch.setattr(data_mod, "fits_in_memory", lambda nbytes: asked.append(nbytes) or False)
    make_dataset(tiny_pack, "dev", 4)
    make_dataset(tiny_pack, "dev", 4, shard=(1, 4))
    make_dataset(tiny_pack, "dev", 4, in_memory="yes")  # forced: not asked
    make_dataset(tiny_pack, "dev", 4, in_memory="no")
    assert asked == [2 * 16 * 64 * 64, 2 * 4 * 64 * 64]


_MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]  # before TensorFlow initialises its devices
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pneumo.train.data import make_dataset
pack, global_batch = sys.argv[1], 16
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

def positives(dist):
    it, out = iter(dist), []
    for _ in range(4):
        _, masks = next(it)
        out.append([int(tf.reduce_sum(tf.cast(tf.reduce_max(m, axis=[1, 2, 3]) > 0, tf.int32)))
                    for m in strategy.experimental_local_results(masks)])
    return out

def per_replica(ctx):
    return make_dataset(pack, "train", ctx.get_per_replica_batch_size(global_batch), positive_fraction=0.5,
                        shard=(ctx.input_pipeline_id, ctx.num_input_pipelines))

new = positives(strategy.distribute_datasets_from_function(per_replica))
old = positives(strategy.experimental_distribute_dataset(
    make_dataset(pack, "train", global_batch, positive_fraction=0.5)))
print(json.dumps({"new": new, "old": old, "replicas": strategy.num_replicas_in_sync}))
"""


def test_every_replica_gets_its_share_of_positives_under_mirrored_strategy(tiny_pack):
    """MirroredStrategy on 2 logical CPUs, per-replica pipelines through
    distribute_datasets_from_function: each replica's 8 images hold 4 positives at every step. The
    old path (one global batch split by experimental_distribute_dataset) gives replica 0 all 8
    positives and replica 1 none: the check below would fail on it."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _MIRRORED, str(tiny_pack)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["replicas"] == 2
    assert got["new"] == [[4, 4]] * 4
    assert got["old"] == [[8, 0]] * 4  # what the issue saw: the balanced global batch split by class


def test_in_memory_option_in_config_and_cli(tmp_path):
    """TrainConfig.in_memory (default auto, an old config.json without it loads as auto), checked
    against IN_MEMORY; `train --in-memory no` sets it."""
    from pneumo import config as C
    from pneumo.cli import build_parser
    from pneumo.cli.train import config_from_args

    assert C.TrainConfig().in_memory == "auto" and C.IN_MEMORY == ("auto", "yes", "no")
    old = C.to_dict(C.TrainConfig(pack="p.h5"))
    del old["in_memory"]
    assert C.from_dict(C.TrainConfig, old).in_memory == "auto"
    with pytest.raises(InputError, match="in_memory 'sometimes' is unknown"):
        C.check_options(C.TrainConfig(pack="p.h5", in_memory="sometimes"))
    args = build_parser().parse_args(["train", str(tmp_path / "p.h5"), "--in-memory", "no"])
    assert config_from_args(args).in_memory == "no"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "p.h5", "--in-memory", "maybe"])
