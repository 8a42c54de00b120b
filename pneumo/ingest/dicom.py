"""DICOM reading within the pixel budget: headers without pixel data, deflated files inflated only
as far as needed, and 8-bit gray through :mod:`pneumo.ingest.windowing`'s lookup tables.

``dicom_window`` "voi" (default) applies pydicom's modality transform then the file's own VOI
LUT Sequence or first WindowCenter/WindowWidth, the output range mapped to 0..255; a file
without either, or "full", is scaled by its ``BitsStored``. ``MONOCHROME1`` is inverted; colour
is converted to luminance; multi-frame files are refused.
"""
from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np

from pneumo.errors import InputError
from pneumo.ingest.pixels import check_pixels, checked_file, luma_gray, one_line

__all__ = ["is_dicom", "dicom_pixels", "dicom_gray", "read_dicom_meta"]

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_HEADER_LIMIT = 4 << 20  # a deflated DICOM header must inflate to its pixel data within 4 MiB
_TRAILER_SLACK = 1 << 20  # bytes allowed after a deflated file's pixel data


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


def dicom_pixels(path: Path, max_pixels: int | None, what: str) -> tuple[object, np.ndarray]:
    ds = _dicom_dataset(path, header_only=False, max_pixels=max_pixels)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"{path}: multi-frame DICOM ({frames} frames); expected a single {what}")
    missing = _missing_decoder(ds)
    if missing is not None:
        raise InputError(f"{path}: cannot decode DICOM pixel data: {missing}")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # truncated or corrupt pixel data
        raise InputError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {one_line(e)})") from None
    del ds.PixelData  # the raw bytes are not needed any more
    return ds, pixels


def _missing_decoder(ds) -> str | None:
    """Why no installed plugin can decode ``ds``'s compressed pixel data (one line naming the
    transfer syntax and what to install), or None."""
    uid = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if not uid or not getattr(uid, "is_compressed", False):
        return None
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(uid)
    except Exception:  # pydicom knows no decoder for this syntax at all
        return f"pydicom has no decoder for its transfer syntax {getattr(uid, 'name', uid)} ({uid})"
    if decoder.is_available:
        return None
    needs = [dep.split(" - requires ", 1)[-1] for dep in decoder.missing_dependencies]
    return (f"no decoder for its transfer syntax {uid.name} ({uid}) is installed; install one of: "
            f"{' | '.join(needs) or 'a pydicom pixel data plugin'}")


def dicom_gray(path: Path, max_pixels: int | None, window: str = "voi") -> np.ndarray:
    from pneumo.ingest import windowing

    ds, pixels = dicom_pixels(path, max_pixels, "image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if pixels.ndim == 3:  # colour: pydicom gives RGB (it converts YBR by default)
        bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or pixels.dtype.itemsize * 8)
        return luma_gray(pixels, bits)
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
