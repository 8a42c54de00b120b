"""Parallel reads of a pack's rows: the chunk layout read once, then ``os.preadv`` from any thread.

h5py serialises every call under one global lock, so threads sharing an h5py file never read
at the same time. For the layouts pneumo writes (one image per chunk, uncompressed or gzip;
also a contiguous dataset) :class:`RowReader` reads where each row lies in the file once
(``chunk_iter``: a few ms for 20,000 chunks), then reads the bytes itself: ``os.preadv``
straight into the caller's numpy buffer, one call per run of rows that lie back to back
(an in-order batch is one read), and :mod:`zlib` for gzip chunks. Both release the GIL, so
several threads read at once. All threads share one descriptor (a ``dup`` of h5py's own, so
the same file even if the path was replaced since): positional reads carry their own offset,
so there is no file position to contend for and one descriptor per thread would add nothing.

Anything else (lzf, shuffle or checksum filters, other chunk shapes, chunks never written,
a file with a user block, a driver without a descriptor, a system without
``os.preadv``) is read through h5py: correct, serial.
The layout's interpretation is checked at opening: the first and last rows read both ways
must agree, or the reader uses h5py.

Opened by :meth:`pneumo.store.pack.Pack.chunk_reader`; the pack's dataset names stay there.
"""
from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h5py
import numpy as np

from pneumo.errors import InputError, PackFormatError

__all__ = ["RowReader", "SplitRows"]

_DEFLATE = 1  # HDF5's filter id of gzip (zlib streams)
_MAX_READ = 8 * 1024**2  # bytes per read call: large reads, yet a long run still spreads over threads
_BLOCK_ROWS = 64  # rows per task when a large request is split over threads


class RowReader:
    """Rows ``(k, *row_shape) uint8`` of one dataset of an open pack, safe to call from many threads.

    ``mode`` says how: ``"raw"`` (uncompressed chunks), ``"contiguous"``, ``"deflate"`` (gzip
    chunks) read with ``os.preadv``; ``"h5py"`` for every other layout. ``fd`` is a descriptor of
    the dataset's file (not owned: :class:`SplitRows` closes it), None to read through h5py.
    """

    def __init__(self, dataset: h5py.Dataset, fd: int | None, path: os.PathLike, split: str,
                 ids: h5py.Dataset | None = None):
        self._ds, self._fd, self._ids, self.path, self.split = dataset, fd, ids, path, split
        self.where = f"{path}: split {split}: {dataset.name.lstrip('/')}"
        self.shape = tuple(dataset.shape)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64))  # bytes per row (uint8)
        self.mode, self._offsets, self._sizes, self._stored_raw = self._layout()
        if self.mode != "h5py" and not self._self_check():
            self.mode = "h5py"

    def __len__(self) -> int:
        return self.shape[0]

    # ------------------------------------------------------------------ layout
    def _layout(self) -> tuple[str, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        ds, n = self._ds, self.shape[0]
        if self._fd is None or ds.dtype != np.uint8 or ds.is_virtual or ds.external or n == 0:
            return "h5py", None, None, None
        if ds.chunks is None:
            start = ds.id.get_offset()  # None while never written: the fill value, h5py gives it
            if start is None:
                return "h5py", None, None, None
            offsets = int(start) + self._row * np.arange(n, dtype=np.int64)
            return "contiguous", offsets, np.full(n, self._row, np.int64), np.ones(n, bool)
        plist = ds.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if tuple(ds.chunks) != (1, *self.shape[1:]) or filters not in ([], [_DEFLATE]):
            return "h5py", None, None, None
        offsets = np.full(n, -1, np.int64)  # -1: a chunk never written (h5py gives the fill value)
        sizes = np.zeros(n, np.int64)
        skipped = np.zeros(n, np.int64)

        def note(info: Any) -> None:
            i = info.chunk_offset[0]
            offsets[i], sizes[i], skipped[i] = info.byte_offset, info.size, info.filter_mask

        ds.id.chunk_iter(note)
        # A set bit in a chunk's filter mask: HDF5 stored it without that filter (deflate did not shrink it).
        raw = (skipped & 1).astype(bool) if filters else np.ones(n, bool)
        return ("deflate" if filters else "raw"), offsets, sizes, raw

    def _self_check(self) -> bool:
        """The first and last rows read from their offsets equal h5py's: else the layout is not what we think."""
        rows = np.unique([0, self.shape[0] - 1])
        try:
            ours = np.empty((len(rows), *self.shape[1:]), np.uint8)
            self._read_unique(rows, np.arange(len(rows)), ours)
            return all(np.array_equal(ours[j], self._ds[int(r)]) for j, r in enumerate(rows))
        except (OSError, ValueError, zlib.error, PackFormatError):
            return False

    # ------------------------------------------------------------------ reading
    def read(self, rows: Any, out: np.ndarray | None = None, *, threads: int = 1) -> np.ndarray:
        """Rows ``rows`` (positions in any order, repeats allowed) as ``(k, *row_shape) uint8``,
        into ``out`` when given (C-contiguous, that shape). ``threads`` > 1 splits a large request
        over that many threads. Raises :class:`InputError` for rows out of range and
        :class:`PackFormatError` naming the file and row for a damaged or truncated chunk."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        k = len(rows)
        if out is None:
            out = np.empty((k, *self.shape[1:]), np.uint8)
        elif out.shape != (k, *self.shape[1:]) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous uint8 array {(k, *self.shape[1:])}, got {out.shape}")
        if k == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise InputError(f"{self.where}: rows {rows.min()}..{rows.max()} out of range ({self.shape[0]} rows)")
        if threads > 1 and k > _BLOCK_ROWS:
            cuts = range(0, k, _BLOCK_ROWS)
            with ThreadPoolExecutor(min(threads, len(cuts))) as pool:
                for f in [pool.submit(self._read_part, rows[a:a + _BLOCK_ROWS], out[a:a + _BLOCK_ROWS])
                          for a in cuts]:
                    f.result()
            return out
        self._read_part(rows, out)
        return out

    def _read_part(self, rows: np.ndarray, out: np.ndarray) -> None:
        uniq, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        self._read_unique(uniq, first, out)
        inverse = inverse.reshape(-1)
        repeats = np.flatnonzero(first[inverse] != np.arange(len(rows)))
        if len(repeats):
            out[repeats] = out[first[inverse[repeats]]]

    def _read_unique(self, uniq: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:
        """Sorted distinct rows ``uniq`` into ``out[dest]``, one read per run of neighbours."""
        if self.mode == "h5py":
            return self._read_h5py(uniq, dest, out)
        offsets, sizes = self._offsets[uniq], self._sizes[uniq]
        missing = offsets < 0
        if missing.any():
            self._read_h5py(uniq[missing], dest[missing], out)
        # a run: consecutive rows, back to back in the file, consecutive places in out, no missing chunk
        joined = (np.diff(uniq) == 1) & (np.diff(dest) == 1) & (np.diff(offsets) == sizes[:-1]) \
            & ~missing[1:] & ~missing[:-1]
        starts = np.r_[0, np.flatnonzero(~joined) + 1]
        ends = np.r_[starts[1:], len(uniq)]
        limit = max(1, _MAX_READ // max(1, self._row))
        for a, b in zip(starts, ends):
            if missing[a]:
                continue
            for c in range(a, b, limit):
                self._read_run(uniq, dest, offsets, sizes, c, min(b, c + limit), out)

    def _read_run(self, uniq: np.ndarray, dest: np.ndarray, offsets: np.ndarray, sizes: np.ndarray,
                  a: int, b: int, out: np.ndarray) -> None:
        first, span = int(offsets[a]), int(offsets[b - 1] + sizes[b - 1] - offsets[a])
        if self.mode != "deflate":
            view = out[dest[a]:dest[a] + b - a]
            try:
                got = os.preadv(self._fd, [memoryview(view).cast("B")], first)
            except OSError as e:
                self._damaged(int(uniq[a]), e.strerror or str(e))
            if got != span:
                self._damaged(int(uniq[a]), f"the file ends {span - got} bytes early")
            return
        try:
            raw = os.pread(self._fd, span, first)
        except OSError as e:
            self._damaged(int(uniq[a]), e.strerror or str(e))
        if len(raw) != span:
            self._damaged(int(uniq[a]), f"the file ends {span - len(raw)} bytes early")
        buffer = memoryview(raw)
        for j in range(a, b):
            lo = int(offsets[j]) - first
            chunk = buffer[lo:lo + int(sizes[j])]
            try:
                pixels = chunk if self._stored_raw[uniq[j]] else zlib.decompress(chunk)
            except zlib.error as e:
                self._damaged(int(uniq[j]), f"gzip data does not inflate ({e})")
            if len(pixels) != self._row:
                self._damaged(int(uniq[j]), f"{len(pixels)} bytes instead of {self._row}")
            out[dest[j]] = np.frombuffer(pixels, np.uint8).reshape(self.shape[1:])

    def _read_h5py(self, uniq: np.ndarray, dest: np.ndarray, out: np.ndarray) -> None:
        """The general path: h5py (serialised by its lock), one call per run of consecutive rows."""
        cuts = np.flatnonzero((np.diff(uniq) != 1) | (np.diff(dest) != 1)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(uniq)]):
            try:
                self._ds.read_direct(out, np.s_[int(uniq[a]):int(uniq[b - 1]) + 1],
                                     np.s_[int(dest[a]):int(dest[a]) + b - a])
            except (OSError, RuntimeError) as e:
                self._damaged(int(uniq[a]), str(e).splitlines()[0] if str(e) else type(e).__name__)

    def _damaged(self, row: int, why: str) -> None:
        """Raise the pack's one-line error for a damaged row (as :mod:`pneumo.store.pack_faults` words it)."""
        what = f"{self._ds.name.lstrip('/')} row {row}"
        try:
            what += f" (id {self._ids[row].decode('utf-8')})" if self._ids is not None else ""
        except (OSError, UnicodeDecodeError, AttributeError, IndexError):
            pass
        raise PackFormatError(f"{self.path}: damaged pack, split {self.split}: {what} cannot be read ({why}); "
                              f"`python -m pneumo info {self.path} --verify` lists every damaged row")


class SplitRows:
    """The images and masks of one split as :class:`RowReader` objects (``images``, ``masks``), read
    from any thread. Valid while the :class:`pneumo.store.pack.Pack` that made it is open (the
    general path reads through its h5py file); :meth:`close` releases the descriptor."""

    def __init__(self, path: os.PathLike, split: str, images: h5py.Dataset, masks: h5py.Dataset,
                 ids: h5py.Dataset | None = None):
        self.path, self.split = path, split
        file = images.file
        self._fd: int | None = None
        if file.driver == "sec2" and not file.userblock_size and hasattr(os, "preadv"):  # no preadv on Windows
            self._fd = os.dup(file.id.get_vfd_handle())
        try:
            self.images = RowReader(images, self._fd, path, split, ids)
            self.masks = RowReader(masks, self._fd, path, split, ids)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.images)

    @property
    def parallel(self) -> bool:
        """Whether both images and masks are read without h5py (so threads read at once)."""
        return self.images.mode != "h5py" and self.masks.mode != "h5py"

    def read(self, rows: Any, *, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(images, masks)`` of ``rows``, each ``(k, S, S, 1) uint8`` (:meth:`RowReader.read`)."""
        return self.images.read(rows, threads=threads), self.masks.read(rows, threads=threads)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "SplitRows":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
