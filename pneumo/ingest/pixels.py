"""What every decoder shares: the pixel budget, damaged-file errors, and value conversions to 8 bits.

Every reader checks the image's size from its header *before* decoding and refuses anything
above ``max_pixels`` (:func:`check_pixels`) with an :class:`InputError` naming the file and its
size. Wide values become 8 bits through a lookup table (up to 16 bits) or row block by row
block (:func:`stretch`, :func:`luma_gray`), so no full-size float64 copy is ever made.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from pneumo.config import PackConfig
from pneumo.errors import InputError

__all__ = ["MAX_PIXELS", "BLOCK_PIXELS", "check_pixels", "decoding", "checked_file", "file_identity", "one_line",
           "stretch", "finite_range", "luma_gray"]

#: Default pixel budget per image (``PackConfig.max_pixels``, 50 Mpx: a 7000x7000 image).
MAX_PIXELS = PackConfig.max_pixels
BLOCK_PIXELS = 1 << 20  # pixels per block when stretching wide values (8 MB of float64)


def _mpx(n: int) -> str:
    return f"{n / 1e6:.1f} Mpx"


def check_pixels(
    path: str | os.PathLike, height: int, width: int, max_pixels: int | None, *, frames: int = 1, samples: int = 1
) -> None:
    """Raise ``InputError`` naming ``path`` and its size when ``height x width x frames x samples``
    exceeds ``max_pixels`` (``None``: no limit)."""
    if max_pixels is None:
        return
    total = int(height) * int(width) * max(int(frames), 1) * max(int(samples), 1)
    if total > max_pixels:
        extra = (f" x {frames} frames" if frames > 1 else "") + (f" x {samples} samples" if samples > 1 else "")
        raise InputError(
            f"{path}: image is {width}x{height}{extra} ({_mpx(total)}); the limit is "
            f"{_mpx(max_pixels)} (--max-pixels)"
        )


@contextlib.contextmanager
def decoding(path: str | os.PathLike, what: str = "image") -> Iterator[None]:
    """Turn whatever a decoder raises for a damaged file into an :class:`InputError` naming
    ``path`` (Pillow and pydicom raise many types); running out of memory says so."""
    try:
        yield
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: out of memory while decoding") from None
    except Exception as e:
        raise InputError(f"{path}: cannot read {what} ({type(e).__name__}: {one_line(e)})") from None


def one_line(e: BaseException | str) -> str:
    """An error's message on one line (decoders' messages span several: list, tab, list)."""
    return " ".join(str(e).split())


def checked_file(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path``; ``InputError`` when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    return path


def file_identity(path: str | os.PathLike) -> tuple[int, int, str]:
    """``(byte size, mtime in ns, SHA-256 hex digest)`` of a file: what a pack records of each
    source image, so a viewer can tell the file now at that path from the one packed.

    Size and mtime are taken before hashing: a file replaced meanwhile then shows as changed.
    ``InputError`` naming the file when it cannot be read.
    """
    import hashlib

    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            digest = hashlib.sha256()
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as e:
        raise InputError(f"{path}: cannot read the file to record it ({e.strerror or e})") from None
    return int(st.st_size), int(st.st_mtime_ns), digest.hexdigest()


def stretch(values: np.ndarray, lo: float, hi: float, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Map ``values * slope + intercept`` from [lo, hi] linearly onto 0..255 (rounded, clipped)
    as uint8; NaN gives 0.

    Integers of up to 16 bits go through a lookup table; wider values row block by row
    block, so the float64 temporaries stay small whatever the image size.
    """
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    scale = 255.0 / (hi - lo)
    if values.dtype in (np.uint8, np.int8, np.uint16, np.int16):
        bits = values.dtype.itemsize * 8
        unsigned = np.dtype(f"uint{bits}")
        # Index by the unsigned view: signed values wrap to the top half of the table.
        keys = np.arange(2**bits, dtype=np.int64).astype(unsigned).view(values.dtype).astype(np.float64)
        if slope != 1.0 or intercept != 0.0:
            keys = keys * slope + intercept
        lut = np.clip(np.rint((keys - lo) * scale), 0, 255).astype(np.uint8)
        return lut[values.view(unsigned)]
    out = np.empty(values.shape, np.uint8)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, BLOCK_PIXELS):
        block = flat_in[start : start + BLOCK_PIXELS].astype(np.float64)
        if slope != 1.0 or intercept != 0.0:
            block = block * slope + intercept
        block = np.nan_to_num(block, nan=lo)
        flat_out[start : start + BLOCK_PIXELS] = np.clip(np.rint((block - lo) * scale), 0, 255)
    return out


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of the finite values, block by block; ``None`` when there are none."""
    if values.dtype.kind in "ui":
        return (float(values.min()), float(values.max())) if values.size else None
    lo, hi = np.inf, -np.inf
    flat = values.reshape(-1)
    for start in range(0, flat.size, BLOCK_PIXELS):
        block = flat[start : start + BLOCK_PIXELS]
        block = block[np.isfinite(block)]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return None if lo > hi else (lo, hi)


def luma_gray(rgb: np.ndarray, bits: int) -> np.ndarray:
    """ITU-R 601-2 luma (Pillow's weights) of ``(H, W, 3+)`` values as ``(H, W) uint8``:
    rounded for 8-bit data, else stretched over ``0..2**bits - 1``; row block by row block."""
    out = np.empty(rgb.shape[:2], np.uint8)
    rows = max(1, BLOCK_PIXELS // max(rgb.shape[1], 1))
    for start in range(0, rgb.shape[0], rows):
        block = rgb[start : start + rows].astype(np.float64)
        luma = block[..., 0] * 0.299 + block[..., 1] * 0.587 + block[..., 2] * 0.114
        if rgb.dtype == np.uint8:
            out[start : start + rows] = np.clip(np.rint(luma), 0, 255)
        else:
            out[start : start + rows] = stretch(luma, 0.0, float(2**bits - 1))
    return out
