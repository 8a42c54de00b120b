"""pneumo.store.pack_rows: a pack's rows read without h5py (os.preadv, zlib), from many threads."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from pneumo.errors import InputError, PackFormatError
from pneumo.store.pack import Pack, PackWriter
from pneumo.store.pack_rows import SplitRows

S = 16
ROWS = [np.arange(40), np.array([5, 3, 3, 4, 39, 0, 6, 7, 8]), np.arange(39, -1, -1), np.arange(2, 40, 3),
        np.array([], np.int64), np.array([7])]


def _arrays(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, S, S, 1), dtype=np.uint8)
    images[1::2] //= 16  # some compress well, some not at all (HDF5 may then store them unfiltered)
    masks = np.zeros((n, S, S, 1), np.uint8)
    masks[::3, 4:9, 5:7] = 255
    return images, masks


def _file(path, layout: str, images: np.ndarray, masks: np.ndarray):
    kwargs = {"raw": dict(chunks=(1, S, S, 1)), "gzip": dict(chunks=(1, S, S, 1), compression="gzip"),
              "contiguous": {}, "lzf": dict(chunks=(1, S, S, 1), compression="lzf"),
              "shuffle": dict(chunks=(1, S, S, 1), compression="gzip", shuffle=True),
              "four-per-chunk": dict(chunks=(4, S, S, 1))}[layout]
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, **kwargs)
        f.create_dataset("masks", data=masks, **kwargs)
    return path


@pytest.mark.parametrize("layout, mode", [("raw", "raw"), ("gzip", "deflate"), ("contiguous", "contiguous"),
                                          ("lzf", "h5py"), ("shuffle", "h5py"), ("four-per-chunk", "h5py")])
def test_every_layout_reads_what_h5py_reads(tmp_path, layout, mode):
    images, masks = _arrays()
    path = _file(tmp_path / "p.h5", layout, images, masks)
    with h5py.File(path, "r") as f, SplitRows(path, "train", f["images"], f["masks"]) as rows:
        assert rows.images.mode == rows.masks.mode == mode and rows.parallel == (mode != "h5py")
        for r in ROWS:
            x, y = rows.read(r)
            assert x.shape == (len(r), S, S, 1) and x.dtype == np.uint8
            np.testing.assert_array_equal(x, images[r])
            np.testing.assert_array_equal(y, masks[r])
            np.testing.assert_array_equal(rows.images.read(r, threads=3), images[r])
            out = np.empty((len(r), S, S, 1), np.uint8)
            assert rows.masks.read(r, out) is out
            np.testing.assert_array_equal(out, masks[r])


def test_many_threads_share_one_reader(tmp_path):
    images, masks = _arrays(400, seed=1)
    path = _file(tmp_path / "p.h5", "gzip", images, masks)
    batches = [np.random.default_rng(k).integers(0, 400, 32) for k in range(64)]
    with h5py.File(path, "r") as f, SplitRows(path, "train", f["images"], f["masks"]) as rows:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(rows.read, batches))
        # large requests split over threads (blocks of 64 rows)
        np.testing.assert_array_equal(rows.images.read(np.arange(400)[::-1], threads=4), images[::-1])
    for r, (x, y) in zip(batches, got):
        np.testing.assert_array_equal(x, images[r])
        np.testing.assert_array_equal(y, masks[r])


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        for name in ("images", "masks"):
            ds = f.create_dataset(name, shape=(10, S, S, 1), dtype=np.uint8, chunks=(1, S, S, 1), fillvalue=7)
            ds[0], ds[4], ds[9] = 1, 3, 2
    with h5py.File(path, "r") as f, SplitRows(path, "train", f["images"], f["masks"]) as rows:
        assert rows.images.mode == "raw"
        assert rows.images.read(np.arange(10))[:, 0, 0, 0].tolist() == [1, 7, 7, 7, 3, 7, 7, 7, 7, 2]
        assert rows.masks.read([4, 1, 9, 9])[:, 0, 0, 0].tolist() == [3, 7, 2, 2]


def test_the_pack_writers_layouts_are_read_in_parallel(tmp_path):
    images, masks = _arrays()
    for compression, mode in ((None, "raw"), ("gzip", "deflate")):
        path = tmp_path / f"{compression}.h5"
        with PackWriter(path, S, {"train": 40}, compression=compression, sources=False) as w:
            w.append("train", [f"i{k}" for k in range(40)], images, masks)
        with Pack(path) as pack:
            rows = pack.chunk_reader("train")
            try:
                assert rows.images.mode == mode
                np.testing.assert_array_equal(rows.read(ROWS[1])[0], images[ROWS[1]])
                with pytest.raises(InputError, match=r"split train: X_train: rows 38\.\.40 out of range"):
                    rows.images.read([38, 40])
            finally:
                rows.close()
            with pytest.raises(InputError, match="unknown split"):
                pack.chunk_reader("validation")


def test_a_damaged_gzip_chunk_names_the_file_and_row(tmp_path):
    images, masks = _arrays()
    path = _file(tmp_path / "p.h5", "gzip", images // 16, masks)  # every image chunk compressed
    with h5py.File(path, "r") as f:
        info = f["images"].id.get_chunk_info_by_coord((16, 0, 0, 0))
    with open(path, "r+b") as fh:  # garbage inside row 16's deflate stream (~140 bytes)
        fh.seek(info.byte_offset + 2)
        fh.write(b"\xff" * 20)
    with h5py.File(path, "r") as f, SplitRows(path, "train", f["images"], f["masks"]) as rows:
        assert rows.images.mode == "deflate"  # rows 0 and 39 (the opening check) are intact
        np.testing.assert_array_equal(rows.images.read([15, 17]), images[[15, 17]] // 16)
        damaged = r"p\.h5: damaged pack, split train: images row 16 cannot be read \(gzip data .*--verify"
        with pytest.raises(PackFormatError, match=damaged):
            rows.images.read(np.arange(10, 20))
