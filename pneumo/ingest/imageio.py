"""Image decoding within a pixel budget: PNG, JPEG, TIFF, BMP and DICOM to 8-bit gray.

Every reader checks the image's size from its header *before* decoding (Pillow's lazy
open; DICOM Rows x Columns x frames x samples, read without inflating the pixel data) and
refuses anything above ``max_pixels`` with an :class:`InputError` naming the file and its
size. Pillow's own decompression-bomb check (a warning from 89 Mpx) is only a second guard.

Conversions (documented choices):

- 8-bit images are kept as they are; RGB(A) and palette images become luminance
  (ITU-R 601-2, Pillow's ``convert("L")``); an alpha channel is ignored.
- 16-bit, 32-bit integer and float images (PNG/TIFF) are stretched over the image's *actual*
  range (min -> 0, max -> 255, rounded; a constant image gives 0). Many exports keep 10- or 12-bit
  detector values in a 16-bit container, which a bit-depth scaling would leave nearly black.
- DICOM (``dicom_window``, ``PackConfig.dicom_window``): "voi" (default) applies pydicom's
  modality transform (``apply_modality_lut``) then the file's own VOI LUT Sequence or first
  WindowCenter/WindowWidth (``apply_voi_lut``), the output range mapped to 0..255; a file
  without either, or "full", is scaled by its ``BitsStored`` (the full stored range through the
  modality transform), so 8-bit data is unchanged. Both run as lookup tables
  (:mod:`pneumo.ingest.windowing`). ``MONOCHROME1`` is inverted; colour is converted to luminance;
  multi-frame files are refused.
- Masks: any non-zero pixel in any colour channel is pneumothorax (alpha ignored; a palette
  mask is judged by its colours, not its indices). JPEG masks therefore count compression
  noise as positive: prefer PNG masks.

Memory: 16-bit values go through a 65,536-entry lookup table and wider ones through
row blocks, so no full-size float64 copy is ever made (a 4000x4000 16-bit PNG costs about
3 bytes per pixel on top of the decoded array, not 30).
"""
from __future__ import annotations

import contextlib
import io
import os
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from pneumo.config import DICOM_WINDOWS, PackConfig
from pneumo.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "check_pixels",
    "gray_file_at",
    "is_dicom",
    "FullImage",
    "read_dicom_meta",
    "read_full_resolution",
    "read_image",
    "read_mask",
    "resize_pair",
    "window_to_uint8",
]

#: File extensions (lower case) that folder sources accept; files without an extension are
#: accepted when they carry the DICOM magic ``DICM``.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})

#: Default pixel budget per image (``PackConfig.max_pixels``, 50 Mpx: a 7000x7000 image).
MAX_PIXELS = PackConfig.max_pixels

_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_HEADER_LIMIT = 4 << 20  # a deflated DICOM header must inflate to its pixel data within 4 MiB
_TRAILER_SLACK = 1 << 20  # bytes allowed after a deflated file's pixel data
_BLOCK_PIXELS = 1 << 20  # pixels per block when stretching wide values (8 MB of float64)


# ----------------------------------------------------------------------------- budget
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


# ----------------------------------------------------------------------------- helpers
def is_dicom(path: Path) -> bool:
    """``True`` for a ``.dcm``/``.dicom`` name or a file with the ``DICM`` magic at byte 128."""
    if path.suffix.lower() in _DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"



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
        raise InputError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from None

def checked_file(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path``; ``InputError`` when it is missing or not a file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    return path


def _stretch(values: np.ndarray, lo: float, hi: float, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
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
    for start in range(0, flat_in.size, _BLOCK_PIXELS):
        block = flat_in[start : start + _BLOCK_PIXELS].astype(np.float64)
        if slope != 1.0 or intercept != 0.0:
            block = block * slope + intercept
        block = np.nan_to_num(block, nan=lo)
        flat_out[start : start + _BLOCK_PIXELS] = np.clip(np.rint((block - lo) * scale), 0, 255)
    return out


def _finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of the finite values, block by block; ``None`` when there are none."""
    if values.dtype.kind in "ui":
        return (float(values.min()), float(values.max())) if values.size else None
    lo, hi = np.inf, -np.inf
    flat = values.reshape(-1)
    for start in range(0, flat.size, _BLOCK_PIXELS):
        block = flat[start : start + _BLOCK_PIXELS]
        block = block[np.isfinite(block)]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return None if lo > hi else (lo, hi)


def _luma_gray(rgb: np.ndarray, bits: int) -> np.ndarray:
    """ITU-R 601-2 luma (Pillow's weights) of ``(H, W, 3+)`` values as ``(H, W) uint8``:
    rounded for 8-bit data, else stretched over ``0..2**bits - 1``; row block by row block."""
    out = np.empty(rgb.shape[:2], np.uint8)
    rows = max(1, _BLOCK_PIXELS // max(rgb.shape[1], 1))
    for start in range(0, rgb.shape[0], rows):
        block = rgb[start : start + rows].astype(np.float64)
        luma = block[..., 0] * 0.299 + block[..., 1] * 0.587 + block[..., 2] * 0.114
        if rgb.dtype == np.uint8:
            out[start : start + rows] = np.clip(np.rint(luma), 0, 255)
        else:
            out[start : start + rows] = _stretch(luma, 0.0, float(2**bits - 1))
    return out


# ----------------------------------------------------------------------------- Pillow
def _open_pillow(path: Path, max_pixels: int | None, *, load: bool = True):
    """Open with Pillow, check frames and size from the header, then (``load``) decode."""
    from PIL import Image

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit: refused at open
        raise InputError(f"{path}: image is too large for the decoder ({e})") from None
    try:
        if getattr(img, "n_frames", 1) > 1:
            raise InputError(f"{path}: has {img.n_frames} frames; expected a single image")
        check_pixels(path, img.height, img.width, max_pixels)
        if load:
            img.load()  # decode now so that truncation surfaces here, not later
    except BaseException:
        img.close()
        raise
    return img


def _pillow_gray(path: Path, max_pixels: int | None) -> np.ndarray:
    img = _open_pillow(path, max_pixels)
    with img:
        mode = img.mode
        if mode == "L":
            return np.array(img, dtype=np.uint8)
        if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I (int32), F (float32)
            values = np.asarray(img)
            if values.ndim != 2:
                raise InputError(f"{path}: unsupported image layout {values.shape} (mode {mode})")
            if values.dtype.byteorder == ">":  # I;16B: native order for the lookup table
                values = values.astype(values.dtype.newbyteorder("="))
            img.close()  # free Pillow's copy before making the 8-bit one
            span = _finite_range(values)
            if span is None:
                return np.zeros(values.shape, np.uint8)
            return _stretch(values, *span)
        return np.array(_pillow_luma(img), dtype=np.uint8)


def _pillow_luma(img):
    """Any 8-bit Pillow mode as mode "L": "1" -> 0/255, "LA" drops alpha, "P" looks up its
    palette, RGB(A) -> 601-2 luma; CMYK, YCbCr, LAB, HSV through RGB."""
    if img.mode not in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"):
        img = img.convert("RGB")
    return img.convert("L")


# ----------------------------------------------------------------------------- DICOM
def _inflate(fp, d, buf: bytearray, limit: int) -> None:
    """Inflate from ``fp`` into ``buf`` until it holds ``limit`` bytes or the stream ends."""
    while len(buf) < limit and not d.eof:
        data = d.unconsumed_tail or fp.read(1 << 16)
        if not data:
            break
        buf += d.decompress(data, limit - len(buf))


def _deflated_dataset(path: Path, fp, meta, header_only: bool, max_pixels: int | None):
    """Read a deflated DICOM body without ever inflating more than its header and declared pixels.

    pydicom inflates the whole file even for a header read: a 140 kB file can hold 144 MB of
    zeros. Here the header is inflated alone (at most ``_HEADER_LIMIT``), checked against the
    budget, and the pixel data only up to its declared size.
    """
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    d = zlib.decompressobj(-zlib.MAX_WBITS)
    buf = bytearray()
    _inflate(fp, d, buf, _HEADER_LIMIT)
    reached: list[int] = []
    body = io.BytesIO(bytes(buf))

    def at_pixels(tag, vr, length) -> bool:
        if tag == 0x7FE00010:
            reached.append(body.tell())
            return True
        return False

    try:
        header = read_dataset(body, False, True, stop_when=at_pixels, defer_size=1 << 20)
    except Exception as e:
        if d.eof:
            raise InputError(f"{path}: cannot read deflated DICOM header ({type(e).__name__}: {e})") from None
        reached.clear()
    if not reached and not d.eof:
        raise InputError(f"{path}: deflated DICOM header inflates past {_HEADER_LIMIT >> 20} MiB; refused")
    file_meta = pydicom.dataset.FileMetaDataset(meta)
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # what the inflated bytes are
    if header_only or not reached:
        ds = FileDataset(str(path), header, preamble=None, file_meta=file_meta,
                         is_implicit_VR=False, is_little_endian=True)
        return ds
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    check_pixels(path, rows, cols, max_pixels, frames=frames, samples=samples)
    bits = int(header.get("BitsAllocated", 8) or 8)
    expected = rows * cols * frames * samples * ((bits + 7) // 8)
    cap = reached[0] + 12 + expected + _TRAILER_SLACK
    _inflate(fp, d, buf, cap)
    if not d.eof and len(buf) >= cap:
        raise InputError(
            f"{path}: deflated DICOM inflates past its declared {cols}x{rows} pixel data; refused"
        )
    full = read_dataset(io.BytesIO(bytes(buf)), False, True)
    return FileDataset(str(path), full, preamble=None, file_meta=file_meta,
                       is_implicit_VR=False, is_little_endian=True)


def _dicom_dataset(path: Path, *, header_only: bool, max_pixels: int | None = None):
    """The DICOM dataset of ``path``: its header only, or (after the budget check) all of it."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with open(path, "rb") as fp:
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
            if str(meta.get("TransferSyntaxUID", "")) == _DEFLATED:
                return _deflated_dataset(path, fp, meta, header_only, max_pixels)
        # Values over 1 MB stay on disk in a header read (a huge private tag is not loaded).
        header = pydicom.dcmread(path, stop_before_pixels=True, defer_size=1 << 20)
        if header_only:
            return header
        check_pixels(
            path, int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0), max_pixels,
            frames=int(header.get("NumberOfFrames", 1) or 1),
            samples=int(header.get("SamplesPerPixel", 1) or 1),
        )
        return pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise InputError(f"{path}: not a valid DICOM file ({e})") from None


def _dicom_pixels(path: Path, max_pixels: int | None, what: str) -> tuple[object, np.ndarray]:
    ds = _dicom_dataset(path, header_only=False, max_pixels=max_pixels)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"{path}: multi-frame DICOM ({frames} frames); expected a single {what}")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # missing codec, truncated or corrupt pixel data
        raise InputError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from None
    del ds.PixelData  # the raw bytes are not needed any more
    return ds, pixels


def _dicom_gray(path: Path, max_pixels: int | None, window: str = "voi") -> np.ndarray:
    from pneumo.ingest import windowing

    ds, pixels = _dicom_pixels(path, max_pixels, "image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour: pydicom gives RGB (it converts YBR by default)
        bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or pixels.dtype.itemsize * 8)
        return _luma_gray(pixels, bits)
    if pixels.ndim != 2:
        raise InputError(f"{path}: unsupported DICOM pixel layout {pixels.shape}")
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    if pixels.dtype.type in (np.uint8, np.int8, np.uint16, np.int16):
        table, _ = windowing.gray_table(ds, pixels.dtype, window)
        gray = table[pixels.view(f"uint{pixels.dtype.itemsize * 8}")]
    else:
        gray = windowing.gray_blocks(pixels, ds, window)
    if photometric == "MONOCHROME1":  # 0 is white
        np.subtract(255, gray, out=gray)
    return np.ascontiguousarray(gray)


# ----------------------------------------------------------------------------- public
def read_image(
    path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi"
) -> np.ndarray:
    """Read an image file as 8-bit grayscale: ``(H, W) uint8``.

    PNG, JPEG, TIFF, BMP (8/16-bit, gray, gray+alpha, RGB(A), palette) and DICOM (by a
    ``.dcm``/``.dicom`` extension or the ``DICM`` magic). See the module docstring for how
    16-bit, colour and DICOM values are mapped (``dicom_window`` "voi" or "full"). Raises
    ``InputError`` naming the file and the reason for a missing, unreadable, truncated or
    corrupt file, or one larger than ``max_pixels`` (checked from the header, before decoding;
    ``None``: no limit).
    """
    if dicom_window not in DICOM_WINDOWS:
        raise InputError(f"--dicom-window must be one of {', '.join(DICOM_WINDOWS)}, got {dicom_window!r}")
    path = checked_file(path)
    with decoding(path, "image"):
        if is_dicom(path):
            return _dicom_gray(path, max_pixels, dicom_window)
        return _pillow_gray(path, max_pixels)


def read_mask(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a mask file: ``(H, W) uint8`` in {0, 255}; any non-zero colour value is positive.

    Same formats and pixel budget as :func:`read_image`; an alpha channel is ignored.
    Raises ``InputError``.
    """
    path = checked_file(path)
    with decoding(path, "mask"):
        if is_dicom(path):
            _, values = _dicom_pixels(path, max_pixels, "mask")
        else:
            img = _open_pillow(path, max_pixels)
            with img:
                if img.mode == "P":
                    img = img.convert("RGB")  # judge palette colours, not indices
                elif img.mode == "PA":
                    img = img.convert("RGBA")
                values = np.asarray(img)
                if values.ndim == 3 and values.shape[2] in (2, 4):  # LA / RGBA: drop alpha
                    values = values[..., :-1]
    if values.ndim == 3:
        values = values.any(axis=2)
    if values.ndim != 2:
        raise InputError(f"{path}: unsupported mask layout {values.shape}")
    return np.where(values != 0, np.uint8(255), np.uint8(0))


def read_dicom_meta(path: str | os.PathLike) -> tuple[str, str, int, int]:
    """Read ``(sop_instance_uid, patient_id, rows, cols)`` from a DICOM header, without pixels.

    A deflated file is inflated only as far as its header. Missing SOPInstanceUID or
    PatientID give ``""``; missing Rows/Columns raise ``InputError``.
    """
    path = checked_file(path)
    try:
        ds = _dicom_dataset(path, header_only=True)
        uid = str(ds.get("SOPInstanceUID", "") or "")
        patient = str(ds.get("PatientID", "") or "")
        rows, cols = ds.get("Rows"), ds.get("Columns")
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: cannot read DICOM header ({type(e).__name__}: {e})") from None
    if not rows or not cols:
        raise InputError(f"{path}: DICOM header has no Rows/Columns")
    return uid, patient, int(rows), int(cols)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a pair to ``(size, size)``: the image by area averaging (Pillow's BOX filter),
    the mask by area too and then kept where at least half covered, so it stays in {0, 255}.

    Thresholding the averaged mask keeps it strictly binary and aligned with the image (a
    region keeps the pixels it covers at least half of); nearest-neighbour would instead pick
    arbitrary source pixels and jitter the edge. Non-square inputs are squashed to a square.
    """
    from PIL import Image

    if image.shape != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))
    if mask.shape != (size, size):
        # Masks from read_mask are {0, 255} already; only odd ones pay for re-binarising.
        if mask.dtype != np.uint8 or mask.max(initial=0) not in (0, 255):
            mask = np.where(mask > 0, np.uint8(255), np.uint8(0))
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.BOX))
        return image, np.where(mask >= 128, np.uint8(255), np.uint8(0))
    return image, np.where(mask > 0, np.uint8(255), np.uint8(0))


_NONZERO_LUT = [0] + [255] * 255
_LAZY = {"FullImage": "pneumo.review.fullres", "read_full_resolution": "pneumo.review.fullres", "window_to_uint8": "pneumo.ingest.windowing"}


def __getattr__(name: str):
    # Re-exported lazily: pneumo.review.fullres imports this module.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gray_file_at(
    path: Path, size: int, is_mask: bool, max_pixels: int | None = MAX_PIXELS
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """An 8-bit gray (mode L) PNG/JPEG/TIFF resized in Pillow, without a full-size numpy copy.

    Returns ``(array (size, size) uint8, (height, width) before resizing)``, or ``None`` for
    any other kind of file (the general path handles those). Same pixels as
    ``resize_pair(read_image(...))``; the same pixel budget.
    """
    from PIL import Image

    if is_dicom(path):
        return None
    try:
        img = _open_pillow(path, max_pixels, load=False)
    except InputError:
        raise
    except Exception:
        return None  # the general path reports the error with its own wording
    with img:
        if img.mode != "L":
            return None
        try:
            img.load()
        except Exception:
            return None
        native = (img.height, img.width)
        if is_mask:
            img = img.point(_NONZERO_LUT)  # any non-zero is pneumothorax, as read_mask
        if native != (size, size):
            img = img.resize((size, size), Image.Resampling.BOX)
        values = np.asarray(img)
    if is_mask:
        values = np.where(values >= 128, np.uint8(255), np.uint8(0))
    return values, native
