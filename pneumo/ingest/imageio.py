"""Image decoding within a pixel budget: PNG, JPEG, TIFF, BMP and DICOM to 8-bit gray.

Every reader checks the image's size from its header *before* decoding (Pillow's lazy
open; DICOM Rows x Columns x frames x samples, read without inflating the pixel data) and
refuses anything above ``max_pixels`` with an :class:`InputError` naming the file and its
size. Pillow's own decompression-bomb check (a warning from 89 Mpx, an error from 179 Mpx) is only
a second guard: its warning is hidden in pneumo's processes, and an image it refuses gets
pneumo's message (its size and ``--max-pixels``).

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

import os
import warnings
from pathlib import Path

import numpy as np

from pneumo.config import DICOM_WINDOWS
from pneumo.errors import InputError
from pneumo.ingest.dicom import dicom_gray, dicom_pixels, is_dicom, read_dicom_meta
from pneumo.ingest.pixels import MAX_PIXELS, check_pixels, checked_file, decoding, finite_range, one_line, stretch

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "check_pixels",
    "checked_file",
    "gray_file_at",
    "is_dicom",
    "open_pillow",
    "pillow_luma",
    "read_dicom_meta",
    "read_image",
    "read_mask",
    "resize_pair",
]

#: File extensions (lower case) that folder sources accept; files without an extension are
#: accepted when they carry the DICOM magic ``DICM``.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
_NONZERO_LUT = [0] + [255] * 255


# ----------------------------------------------------------------------------- Pillow
def open_pillow(path: Path, max_pixels: int | None, *, load: bool = True):
    """Open with Pillow, check frames and size from the header, then (``load``) decode."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # pneumo's own budget (check_pixels below) speaks for oversized images, naming
            # --max-pixels; Pillow's warning would print a second, misleading message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit: refused at open
        size = _header_size(path)
        if size is not None:
            check_pixels(path, *size, max_pixels)  # pneumo's message, naming --max-pixels
        dims = f"{size[1]}x{size[0]}, " if size is not None else ""
        raise InputError(f"{path}: image is too large for the decoder ({dims}more than Pillow opens whatever "
                         f"--max-pixels says: {one_line(e)})") from None
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


def _header_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` from the header, read by Pillow's format plugins as ``Image.open``
    does but without its bomb check (which fires first and does not know ``--max-pixels``)."""
    from PIL import Image

    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is not None and not accept(prefix):
                continue
            fp.seek(0)
            try:
                img = factory(fp, str(path))  # parses the header only
            except Exception:
                continue
            return int(img.size[1]), int(img.size[0])
    return None


def _pillow_gray(path: Path, max_pixels: int | None) -> np.ndarray:
    img = open_pillow(path, max_pixels)
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
            span = finite_range(values)
            if span is None:
                return np.zeros(values.shape, np.uint8)
            return stretch(values, *span)
        return np.array(pillow_luma(img), dtype=np.uint8)


def pillow_luma(img):
    """Any 8-bit Pillow mode as mode "L": "1" -> 0/255, "LA" drops alpha, "P" looks up its
    palette, RGB(A) -> 601-2 luma; CMYK, YCbCr, LAB, HSV through RGB."""
    if img.mode not in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"):
        img = img.convert("RGB")
    return img.convert("L")


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
            return dicom_gray(path, max_pixels, dicom_window)
        return _pillow_gray(path, max_pixels)


def read_mask(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a mask file: ``(H, W) uint8`` in {0, 255}; any non-zero colour value is positive.

    Same formats and pixel budget as :func:`read_image`; an alpha channel is ignored.
    Raises ``InputError``.
    """
    path = checked_file(path)
    with decoding(path, "mask"):
        if is_dicom(path):
            _, values = dicom_pixels(path, max_pixels, "mask")
        else:
            img = open_pillow(path, max_pixels)
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
        img = open_pillow(path, max_pixels, load=False)
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
