"""DICOM modality and VOI transforms as lookup tables, and window/level to 8 bits.

pydicom's ``apply_modality_lut`` / ``apply_voi_lut`` return full-size float64 arrays (72 MB
for a 3000x3000 image). Both are element-wise, so for stored values of up to 16 bits they are
applied here to the 65,536 possible values instead (a 512 kB table) and the image is mapped
through the resulting table: pydicom's own transforms, exactly, at one uint8 (or one value)
per pixel. Wider or float pixel data goes through them row block by row block.

Window convention: DICOM's LINEAR function (PS3.3 C.11.2.1.2.1, what pydicom applies), so
``window_to_uint8`` of a file's own WindowCenter/WindowWidth gives the pack's 8-bit image, and
the "full range" window of ``[lo, hi]`` is ``center = (lo + hi + 1) / 2, width = hi - lo + 1``
(``lo`` -> 0, ``hi`` -> 255).
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "full_range_window",
    "gray_table",
    "has_voi",
    "modality_table",
    "output_range",
    "stored_range",
    "table_keys",
    "window_to_uint8",
]

_BLOCK_PIXELS = 1 << 20  # pixels per block for values wider than 16 bits (8 MB of float64)
_TABLE_DTYPES = (np.uint8, np.int8, np.uint16, np.int16)


def table_keys(dtype: np.dtype) -> np.ndarray:
    """Every value of an 8/16-bit integer ``dtype``, ordered by its unsigned bit pattern, so
    ``table[values.view(unsigned)]`` looks up ``values``."""
    dtype = np.dtype(dtype)
    bits = dtype.itemsize * 8
    return np.arange(2**bits, dtype=np.int64).astype(f"uint{bits}").view(dtype)


def _unsigned(values: np.ndarray) -> np.ndarray:
    values = values if values.dtype.byteorder in ("=", "|") else values.astype(values.dtype.newbyteorder("="))
    return values.view(f"uint{values.dtype.itemsize * 8}")


def stored_range(ds, dtype: np.dtype) -> tuple[int, int]:
    """The stored values' range from BitsStored and PixelRepresentation (dtype bits when absent)."""
    bits = int(ds.get("BitsStored", 0) or 0) or np.dtype(dtype).itemsize * 8
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def output_range(ds, dtype: np.dtype) -> tuple[float, float]:
    """The modality output range (what a window's extremes map to, as pydicom's windowing):
    ``0 .. 2**depth - 1`` for a Modality LUT, else the stored range through the rescale."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        return 0.0, float(2 ** int(seq[0].LUTDescriptor[2]) - 1)
    lo, hi = stored_range(ds, dtype)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return lo, hi


def has_voi(ds) -> bool:
    """Whether the file carries its own display window: a usable VOI LUT Sequence or both
    WindowCenter and WindowWidth."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return True
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def modality_table(ds, dtype: np.dtype) -> np.ndarray:
    """``apply_modality_lut`` over every value of ``dtype`` (``table_keys``): float64 for a
    rescale, uint for a Modality LUT, the keys themselves when the file has neither."""
    from pydicom.pixels import apply_modality_lut

    return apply_modality_lut(table_keys(dtype), ds)


def _integral(values: np.ndarray) -> np.ndarray:
    # pydicom warns (and may mis-index) when a VOI LUT is applied to floats: a rescale by
    # whole numbers gives whole numbers, so hand those over as integers.
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.rint(values)):
        return values.astype(np.int64)
    return values


def _voi(values: np.ndarray, ds, stored: np.dtype) -> tuple[np.ndarray, tuple[float, float]]:
    """pydicom's VOI (LUT preferred, else the first window) and the range its output spans."""
    from pydicom.pixels import apply_voi_lut

    seq = ds.get("VOILUTSequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = apply_voi_lut(_integral(values), ds, index=0, prefer_lut=True)
    if seq and seq[0].get("LUTData") is not None:
        data = seq[0].LUTData
        if isinstance(data, (bytes, bytearray)):  # OW: the descriptor's entries, 16-bit
            data = np.frombuffer(bytes(data), "<u2")
        data = np.asarray(data)
        # The LUT's own values, not its declared depth: many 12-bit LUTs declare 16 bits.
        return out, (float(data.min()), float(data.max()))
    return out, output_range(ds, stored)


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    v = np.nan_to_num(values.astype(np.float64, copy=False), nan=lo)
    return np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def gray_table(ds, dtype: np.dtype, window: str) -> tuple[np.ndarray, str]:
    """The 8-bit table of an 8/16-bit stored ``dtype``: ``(table (2**bits,) uint8, applied)``.

    ``window`` "voi": the modality transform then the file's VOI LUT or first window
    (``applied`` = "voi"); without one, or "full": the modality output's whole range
    (``stored_range`` through the rescale or Modality LUT) stretched to 0..255 (``applied`` =
    "full"). A window pydicom refuses (width < 1, unknown VOI function) also falls back to
    "full": a bad display hint is no reason to lose the image. No inversion here.
    """
    values = modality_table(ds, dtype)
    if window == "voi" and has_voi(ds):
        try:
            out, (lo, hi) = _voi(values, ds, dtype)
            return _to_uint8(out, lo, hi), "voi"
        except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError):
            pass
    lo, hi = output_range(ds, dtype)
    return _to_uint8(values, lo, hi), "full"


def gray_blocks(pixels: np.ndarray, ds, window: str) -> np.ndarray:
    """As :func:`gray_table` for pixel data wider than 16 bits (or float), row block by block."""
    from pydicom.pixels import apply_modality_lut

    voi = window == "voi" and has_voi(ds)
    out = np.empty(pixels.shape, np.uint8)
    flat_in, flat_out = pixels.reshape(-1), out.reshape(-1)
    lo, hi = output_range(ds, pixels.dtype)
    for start in range(0, flat_in.size, _BLOCK_PIXELS):
        block = apply_modality_lut(flat_in[start : start + _BLOCK_PIXELS], ds)
        if voi:
            try:
                block, (vlo, vhi) = _voi(block, ds, pixels.dtype)
                flat_out[start : start + _BLOCK_PIXELS] = _to_uint8(block, vlo, vhi)
                continue
            except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError):
                voi = False
        flat_out[start : start + _BLOCK_PIXELS] = _to_uint8(block, lo, hi)
    return out


def full_range_window(lo: float, hi: float) -> tuple[float, float]:
    """The LINEAR window ``(center, width)`` that maps ``lo`` to 0 and ``hi`` to 255."""
    return (float(lo) + float(hi) + 1.0) / 2.0, float(hi) - float(lo) + 1.0


def _linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    v = values.astype(np.float64, copy=False)
    if width <= 1:  # a step at the centre (DICOM LINEAR with width 1)
        return np.where(v > center - 0.5, np.uint8(255), np.uint8(0))
    v = np.nan_to_num(v, nan=-np.inf)
    y = ((v - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def window_to_uint8(pixels: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Window/level ``pixels`` ``(H, W)`` (any integer or float dtype) to ``(H, W) uint8``.

    DICOM LINEAR: values at or below ``center - 0.5 - (width - 1) / 2`` -> 0, above
    ``center - 0.5 + (width - 1) / 2`` -> 255, linear between (rounded); ``width <= 1`` is a
    step at ``center - 0.5``; NaN -> 0. ``invert`` (MONOCHROME1) gives ``255 - that``. 8/16-bit
    integers go through a 65,536-entry table (a 3000x3000 image in about 30 ms); wider values
    row block by row block, without a full-size float64 copy.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype.type in _TABLE_DTYPES:
        table = _linear(table_keys(pixels.dtype), center, width)
        if invert:
            table = 255 - table
        return table[_unsigned(pixels)]
    out = np.empty(pixels.shape, np.uint8)
    flat_in, flat_out = pixels.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _BLOCK_PIXELS):
        flat_out[start : start + _BLOCK_PIXELS] = _linear(flat_in[start : start + _BLOCK_PIXELS], center, width)
    if invert:
        np.subtract(255, out, out=out)
    return out
