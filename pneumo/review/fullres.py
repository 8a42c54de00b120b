"""Full-resolution reading for review: native pixels with their values kept for windowing.

Where :func:`pneumo.ingest.imageio.read_image` makes 8 bits at once (for packing), this keeps what a
viewer needs to window and level: DICOM's 12/16-bit values after the modality transform and the
file's own default window; :func:`pneumo.ingest.windowing.window_to_uint8` then draws any window.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pneumo.ingest import windowing
from pneumo.errors import InputError
from pneumo.ingest.dicom import dicom_pixels, is_dicom
from pneumo.ingest.imageio import open_pillow, pillow_luma
from pneumo.ingest.pixels import (BLOCK_PIXELS, MAX_PIXELS, checked_file, decoding, file_identity, finite_range,
                                  luma_gray)
from pneumo.ingest.windowing import full_range_window, window_to_uint8

__all__ = [
    "FullImage",
    "ImageCache",
    "SourceCheck",
    "check_source",
    "size_mismatch",
    "crop_box",
    "default_centre",
    "native_target",
    "siim_labels",
    "draw_crop",
    "draw_overview",
    "file_key",
    "overview_step",
    "sources_by_id",
    "zoom_factor",
    "pack_copy",
    "prediction_at",
    "read_full_resolution",
    "target_at",
    "window_to_uint8",
    "ZOOMS",
]


@dataclass(frozen=True)
class FullImage:
    """An image at its native resolution with its values kept for windowing."""

    pixels: np.ndarray  # (H, W): uint8/uint16/int16/int32 stored or modality values, or float32
    center: float  # default window (LINEAR, see pneumo.ingest.windowing): the file's own, else the full range
    width: float
    invert: bool  # MONOCHROME1: high values are dark; pass to window_to_uint8
    photometric: str  # "MONOCHROME1", "MONOCHROME2", "RGB" (converted to luma), "L", "I;16" ...
    window_source: str  # "file" (WindowCenter/Width), "voi-lut" (its input range), "full-range"
    path: str


def _compact(table: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A modality table in the smallest exact dtype for the values the stored range can take
    (``valid``): uint16, int16, int32, else float32; entries outside that range are clipped."""
    used = table[valid]
    if table.dtype.kind == "f" and not np.all(used == np.rint(used)):
        return table.astype(np.float32)
    lo, hi = float(used.min()), float(used.max())
    for dt in (np.uint16, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.clip(table, info.min, info.max).astype(dt)
    return table.astype(np.float32)


def _first(value) -> float:
    """The first value of a possibly multi-valued DS element (several windows: the first)."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)


def _dicom_full(path: Path, max_pixels: int | None) -> FullImage:
    from pydicom.pixels import apply_modality_lut

    ds, pixels = dicom_pixels(path, max_pixels, "image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:
        bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or pixels.dtype.itemsize * 8)
        return FullImage(luma_gray(pixels, bits), *full_range_window(0, 255), False, photometric, "full-range", str(path))
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    full = full_range_window(*windowing.output_range(ds, pixels.dtype))
    if pixels.dtype.type in (np.uint8, np.int8, np.uint16, np.int16):
        table = windowing.modality_table(ds, pixels.dtype)
        if not (table.dtype == pixels.dtype and np.array_equal(table, windowing.table_keys(pixels.dtype))):
            keys = windowing.table_keys(pixels.dtype)
            lo, hi = windowing.stored_range(ds, pixels.dtype)
            table = _compact(table, (keys >= lo) & (keys <= hi))  # a rescale or Modality LUT
            pixels = table[pixels.view(f"uint{pixels.dtype.itemsize * 8}")]
    else:  # wider than 16 bits: float32, block by block
        out = np.empty(pixels.shape, np.float32)
        flat_in, flat_out = pixels.reshape(-1), out.reshape(-1)
        for start in range(0, flat_in.size, BLOCK_PIXELS):
            flat_out[start : start + BLOCK_PIXELS] = apply_modality_lut(flat_in[start : start + BLOCK_PIXELS], ds)
        pixels = out
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    seq = ds.get("VOILUTSequence")
    window, source = None, ""
    try:
        if center is not None and width is not None:
            window, source = (_first(center), _first(width)), "file"
    except (TypeError, ValueError, IndexError):
        pass  # a damaged window tag: fall back as if it were absent
    if window is None and seq and seq[0].get("LUTDescriptor") is not None:
        entries, first_map = int(seq[0].LUTDescriptor[0]) or 65536, int(seq[0].LUTDescriptor[1])
        window, source = full_range_window(first_map, first_map + entries - 1), "voi-lut"
    if window is None:
        window, source = full, "full-range"
    return FullImage(pixels, window[0], window[1], photometric == "MONOCHROME1", photometric, source, str(path))


def read_full_resolution(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> FullImage:
    """Read an image at its native resolution with its values kept for windowing.

    DICOM: stored values through pydicom's modality transform (uint16/int16/int32 when whole
    numbers, else float32; never 8-bit), the default window the file's first
    WindowCenter/WindowWidth, else the input range of its VOI LUT, else the full modality range;
    ``invert`` for MONOCHROME1. PNG/TIFF/...: 8-bit gray as is (window 0..255); 16/32-bit and
    float values kept, window their actual range (what :func:`read_image` stretches over); colour
    as 8-bit luma. ``window_to_uint8(f.pixels, f.center, f.width, f.invert)`` is then the image
    :func:`read_image` gives (up to rounding; a VOI LUT is approximated by a linear window). Same pixel budget and errors as :func:`read_image`.
    """
    path = checked_file(path)
    with decoding(path, "image"):
        if is_dicom(path):
            return _dicom_full(path, max_pixels)
        img = open_pillow(path, max_pixels)
        with img:
            mode = img.mode
            if mode.startswith("I") or mode == "F":
                values = np.asarray(img)
                if values.dtype.byteorder == ">":
                    values = values.astype(values.dtype.newbyteorder("="))
                span = finite_range(values) or (0.0, 0.0)
                return FullImage(values, *full_range_window(*span), False, mode, "full-range", str(path))
            gray = np.array(img if mode == "L" else pillow_luma(img), dtype=np.uint8)
        return FullImage(gray, *full_range_window(0, 255), False, mode, "full-range", str(path))



# --------------------------------------------------------------------------- the review viewer
# The Review page's full-resolution view (pneumo_app/review_fullres.py) draws only what is seen:
# the visible crop at native pixels (integer zoom, nearest) and a small overview with the crop
# box. Encoding a whole 9 Mpx image as PNG costs ~210 ms (docs/benchmarks.md); a 768 px crop
# a few ms.

#: Zoom levels of the viewer: screen pixels per native pixel; "fit" shows the whole image.
ZOOMS: tuple[str, ...] = ("fit", "1:1", "2:1", "4:1", "8:1")


def prediction_at(levels: np.ndarray, triplet, height: int, width: int) -> np.ndarray:
    """The post-processed prediction at ``(height, width)``: exactly
    :func:`pneumo.predict.mask_at_resolution` (presence decided with ``triplet`` at the model's
    size, where it was tuned; the mask drawn from bilinearly upsampled probabilities).

    ``levels``: ``(S, S)`` or ``(S, S, 1) uint8``; returns ``(height, width) uint8`` {0, 255}.
    """
    from pneumo.predict import mask_at_resolution

    lv = np.asarray(levels)
    return mask_at_resolution(lv.reshape(lv.shape[0], lv.shape[1]), triplet, int(height), int(width))[0]


def target_at(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """The pack's ``(S, S)`` mask resized to ``(height, width)`` nearest: ``uint8`` {0, 255}.
    (Nearest keeps it binary; the pack's own mask was made by resizing the native one.)"""
    from PIL import Image

    m = np.asarray(mask)
    m = np.where(m.reshape(m.shape[0], m.shape[1]) > 0, np.uint8(255), np.uint8(0))
    if m.shape == (height, width):
        return m
    return np.asarray(Image.fromarray(m).resize((int(width), int(height)), Image.Resampling.NEAREST))


def pack_copy(image: np.ndarray, path: str = "pack") -> FullImage:
    """The pack's ``(S, S) uint8`` copy of an image as a :class:`FullImage` (window 0..255):
    what the viewer shows when the source file is not available."""
    img = np.asarray(image)
    return FullImage(img.reshape(img.shape[0], img.shape[1]), *full_range_window(0, 255), False, "L",
                     "full-range", path)


@dataclass(frozen=True)
class SourceCheck:
    """Whether an image's source can be read: ``path`` when it can, else ``reason`` (one line)."""

    path: str | None
    reason: str | None
    height: int = 0
    width: int = 0


def check_source(ref) -> SourceCheck:
    """Check a :class:`pneumo.store.pack.SourceRef` (or ``None``: the pack has no source references).

    A reference is usable when it names a regular file that exists and, where the pack recorded
    the file's identity, is still that file: same byte size and SHA-256 (hashed once per file
    version: path, size, mtime). A demo phantom (``demo:<seed>``) has no file. Never raises.
    After decoding, :func:`size_mismatch` compares the dimensions too (all a pack made before
    identities were recorded can be checked against)."""
    if ref is None:
        return SourceCheck(None, "this pack has no source references (packed before they were recorded)")
    if ref.path.startswith("demo:"):
        return SourceCheck(None, f"this image is a generated phantom ({ref.path}), it has no source file")
    if not os.path.isfile(ref.path):
        return SourceCheck(None, f"the source file is gone: {ref.path}")
    changed = _changed(ref)
    if changed is not None:
        return SourceCheck(None, f"the source file changed since it was packed ({changed}): {ref.path}")
    return SourceCheck(ref.path, None, int(ref.height), int(ref.width))


def _changed(ref) -> str | None:
    """How the file at ``ref.path`` differs from the one packed, or None (also when unrecorded)."""
    size, sha = getattr(ref, "size", None), getattr(ref, "sha256", None)
    try:
        st = os.stat(ref.path)
        if size is not None and st.st_size != size:
            return f"{st.st_size:,} bytes now, {size:,} then"
        if sha and _sha256(ref.path, st.st_size, st.st_mtime_ns) != sha:
            return "its content differs"
    except (OSError, InputError) as e:
        return f"it cannot be read: {e}"
    return None


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, once per version (path, size, mtime): Next in the Review page does
    not hash the same DICOM again."""
    return file_identity(path)[2]


def size_mismatch(check: SourceCheck, full: FullImage) -> str | None:
    """Why a decoded source is not the image packed (its dimensions differ from those the pack
    recorded), or None: the page then shows the pack's copy instead."""
    height, width = (int(v) for v in full.pixels.shape[:2])
    if check.height and check.width and (height, width) != (check.height, check.width):
        return (f"the source file changed since it was packed (it is {width}x{height} now, {check.width}x"
                f"{check.height} then): {check.path}")
    return None


class ImageCache:
    """A least-recently-used cache of decoded images bounded in bytes (``max_bytes``), not by
    count: one 7000x7000 float32 image weighs as much as 25 2000 px 8-bit ones. Keys should
    carry the file's identity (path, size, mtime) so a replaced file is read again. Values
    larger than ``max_bytes`` are returned but not kept. Thread-safe (Streamlit sessions).
    ``sizeof(value)`` gives a value's bytes (default: a :class:`FullImage`'s pixels)."""

    def __init__(self, max_bytes: int, sizeof: Callable[[Any], int] | None = None) -> None:
        import threading
        from collections import OrderedDict

        self.max_bytes = int(max_bytes)
        self._sizeof = sizeof or (lambda value: value.pixels.nbytes)  # FullImage by default
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _size(self, value: Any) -> int:
        return int(self._sizeof(value))

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key, load):
        """The value of ``key``, calling ``load()`` (outside the lock) when it is not held."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()
        size = self._size(value)
        with self._lock:
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = value
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= self._size(old)
        return value


def file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(path, size, mtime_ns)``: a cache key that changes when the file is replaced."""
    st = os.stat(path)
    return str(path), int(st.st_size), int(st.st_mtime_ns)


def zoom_factor(zoom: str) -> int:
    """``"4:1"`` -> 4; ``"fit"`` -> 0. :class:`InputError` for anything else."""
    if zoom == "fit":
        return 0
    if zoom not in ZOOMS:
        raise InputError(f"unknown zoom {zoom!r}; choose one of {', '.join(ZOOMS)}")
    return int(zoom.split(":")[0])


def crop_box(height: int, width: int, view: int, zoom: int, cx: int, cy: int) -> tuple[int, int, int, int]:
    """The native-pixel region ``(top, left, h, w)`` shown in a ``view`` px square at integer
    ``zoom`` (screen px per native px) centred as near ``(cx, cy)`` as the image allows.

    The region is ``view // zoom`` native pixels a side (the whole side when the image is
    smaller) and always lies inside the image: near an edge the centre moves inwards."""
    if zoom < 1 or view < 1:
        raise InputError(f"zoom and view must be >= 1, got {zoom} and {view}")
    side = max(1, view // zoom)
    h, w = min(side, int(height)), min(side, int(width))
    top = int(min(max(int(cy) - h // 2, 0), height - h))
    left = int(min(max(int(cx) - w // 2, 0), width - w))
    return top, left, h, w


def default_centre(*masks: np.ndarray | None) -> tuple[int, int] | None:
    """``(cx, cy)``: the centre of the bounding box of the first non-empty mask (the
    prediction, then the target, say), or ``None`` when all are empty."""
    for m in masks:
        if m is None:
            continue
        rows, cols = np.flatnonzero(np.any(m, axis=1)), np.flatnonzero(np.any(m, axis=0))
        if rows.size:
            return int((cols[0] + cols[-1] + 1) // 2), int((rows[0] + rows[-1] + 1) // 2)
    return None


def _outline_in(mask: np.ndarray, top: int, left: int, h: int, w: int, thickness: int = 1) -> np.ndarray:
    """The outline of ``mask`` inside the region, computed with a margin so the region's own
    border is not taken for the mask's: ``(h, w) bool``."""
    from pneumo.review.viz import outline

    t0, l0 = max(0, top - thickness), max(0, left - thickness)
    t1, l1 = min(mask.shape[0], top + h + thickness), min(mask.shape[1], left + w + thickness)
    o = outline(mask[t0:t1, l0:l1] > 0, thickness)
    return o[top - t0 : top - t0 + h, left - l0 : left - l0 + w]


def _paint(rgb: np.ndarray, where: np.ndarray, color) -> None:
    rgb[where] = np.asarray(color, np.uint8)


def draw_crop(full: FullImage, center: float, width: float, box: tuple[int, int, int, int], zoom: int,
              masks: list[tuple[np.ndarray, tuple[int, int, int]]] = ()) -> np.ndarray:
    """The region ``box`` = ``(top, left, h, w)`` of ``full`` windowed with ``(center, width)``
    (and ``full.invert``), each mask's 1-native-pixel outline painted in its colour (``masks``:
    ``[(mask (H, W) any dtype, (r, g, b)), ...]``, later on top), enlarged ``zoom`` times
    nearest so every native pixel is a ``zoom x zoom`` square: ``(h * zoom, w * zoom, 3) uint8``.
    Only the region is windowed: the cost does not grow with the image."""
    top, left, h, w = box
    gray = window_to_uint8(full.pixels[top : top + h, left : left + w], center, width, full.invert)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for mask, color in masks:
        _paint(rgb, _outline_in(mask, top, left, h, w), color)
    if zoom > 1:
        rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    return rgb


def overview_step(height: int, width: int, size: int) -> int:
    """The integer stride that fits a ``(height, width)`` image in ``size`` px."""
    return max(1, -(-max(int(height), int(width)) // int(size)))


def draw_overview(full: FullImage, center: float, width: float, size: int,
                  masks: list[tuple[np.ndarray, tuple[int, int, int]]] = (),
                  box: tuple[int, int, int, int] | None = None,
                  box_color: tuple[int, int, int] = (255, 214, 0)) -> np.ndarray:
    """The whole image at most ``size`` px a side (every ``k``-th native pixel,
    :func:`overview_step`; a mask pixel is kept when any native pixel of its ``k x k`` block is
    set, so a thin band stays visible), windowed, mask outlines painted, and ``box`` (native
    ``(top, left, h, w)``) drawn as a rectangle: ``(ceil(H / k), ceil(W / k), 3) uint8``."""
    from pneumo.review.viz import outline

    H, W = full.pixels.shape[:2]
    k = overview_step(H, W, size)
    gray = window_to_uint8(full.pixels[::k, ::k], center, width, full.invert)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    oh, ow = gray.shape
    for mask, color in masks:
        m = np.asarray(mask) > 0
        if k > 1:
            padded = np.zeros((oh * k, ow * k), bool)
            padded[:H, :W] = m
            m = padded.reshape(oh, k, ow, k).any(axis=(1, 3))
        _paint(rgb, outline(m, 1), color)
    if box is not None:
        top, left, h, w = box
        t, l = top // k, left // k
        b, r = min(oh - 1, (top + h - 1) // k), min(ow - 1, (left + w - 1) // k)
        c = np.asarray(box_color, np.uint8)
        rgb[t, l : r + 1] = c
        rgb[b, l : r + 1] = c
        rgb[t : b + 1, l] = c
        rgb[t : b + 1, r] = c
    return rgb


def sources_by_id(pack_path: str | os.PathLike, split: str) -> dict | None:
    """``{image id: SourceRef}`` of a pack's split (:func:`pneumo.store.pack.read_sources` keyed by
    ``ids_<split>``), or ``None`` for a pack written without source references."""
    from pneumo.store.pack import read_sources
    from pneumo.store.stamps import pack_split_ids

    refs = read_sources(pack_path, split)
    if refs is None:
        return None
    return dict(zip(pack_split_ids(pack_path, split), refs))



def siim_labels(pack_path: str | os.PathLike) -> tuple[str, bool] | None:
    """``(label CSV path, relative RLE starts)`` recorded by a SIIM pack (its report's
    ``info["labels_csv"]``), or ``None`` (another source, or a pack made before it was recorded)."""
    from pneumo.store.pack import read_info

    info = read_info(pack_path)
    if info.attrs.get("source") != "siim":
        return None
    found = (info.report.get("info") or {})
    csv_path = found.get("labels_csv")
    if not csv_path:
        return None
    return str(csv_path), found.get("rle_format", "relative") == "relative"


def native_target(labels: dict, image_id: str, height: int, width: int, relative: bool) -> np.ndarray | None:
    """The target decoded from the label CSV's RLE at the native ``(height, width)``: ``uint8``
    {0, 255}; ``None`` when the CSV has no row for ``image_id`` or the RLE does not fit.
    ``labels``: :func:`pneumo.ingest.siim_labels.read_labels`'s first result."""
    from pneumo.ingest.rle import EMPTY, union_decode

    entries = labels.get(image_id)
    if not entries:
        return None
    rles = tuple(dict.fromkeys(rle for _, rle, _ in entries if rle != EMPTY))
    try:
        return union_decode(rles, int(height), int(width), relative)
    except ValueError:
        return None
