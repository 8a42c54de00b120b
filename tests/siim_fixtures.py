"""Small SIIM-ACR-like data for tests: DICOM files written with pydicom and a label CSV.

``write_siim_tree(root, n, size, seed)`` mimics the Kaggle layout
(``dicom/<study>/<series>/<SOPInstanceUID>.dcm`` + ``stage_2_train.csv``); ``write_dicom`` writes
one file (8/12/16-bit, MONOCHROME1/2, optionally JPEG-baseline compressed like the real data).
``write_review_tree(root)`` is the full-resolution review fixture (an 8-bit 1024 px DICOM and a
12-bit-in-16 2048 px DICOM with window tags, SIIM layout). Import from tests as
``from siim_fixtures import write_siim_tree, write_dicom``.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

from pneumo.ingest.rle import siim_encode

UID_ROOT = "1.2.276.0.7230010.3.1"  # the prefix the SIIM files use


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    sop_uid: str = "1.2.3.4",
    patient_id: str | None = "patient-0",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    jpeg: bool = False,
    jpeg_quality: int = 95,
    rescale: tuple[float, float] | None = None,
    frames: int | None = None,
    window: tuple | None = None,
    voi_lut: tuple[int, np.ndarray] | None = None,
) -> Path:
    """Write ``pixels`` ``(H, W)`` uint8/uint16/int16 (or ``(F, H, W)`` with ``frames``) as a DICOM file.

    ``bits_stored`` defaults to the dtype's bits; ``jpeg=True`` (uint8 only) JPEG-baseline
    compresses with Pillow and encapsulates, like the SIIM data; ``rescale`` = (slope, intercept);
    ``window`` = (WindowCenter, WindowWidth), each a number or a list (multi-valued);
    ``voi_lut`` = (first mapped value, LUT entries as uint16) for a VOI LUT Sequence.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(pixels)
    bits_allocated = pixels.dtype.itemsize * 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = sop_uid + ".1"
    ds.SeriesInstanceUID = sop_uid + ".2"
    if patient_id is not None:
        ds.PatientID = patient_id
        ds.PatientName = patient_id
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        first, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), first, 16]
        item.LUTData = [int(v) for v in table]
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = [item]
    if frames is not None:
        ds.NumberOfFrames = frames
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if jpeg:
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ValueError("jpeg=True needs (H, W) uint8 pixels")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=jpeg_quality)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW" if bits_allocated > 8 else "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _regions(rng: np.random.Generator, size: int, count: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(count):
        cy, cx = rng.integers(size // 5, 4 * size // 5, 2)
        ry, rx = rng.integers(max(2, size // 12), max(3, size // 5), 2)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return out


def write_siim_tree(
    root: str | Path,
    n: int,
    size: int,
    seed: int,
    *,
    stage: int = 2,
    jpeg: bool = False,
    positive_rate: float = 0.4,
    images_per_patient: int = 2,
) -> tuple[Path, Path]:
    """Write ``n`` SIIM-like DICOM files under ``root/dicom`` and their label CSV; deterministic.

    Images ``size x size`` 8-bit MONOCHROME2, darker inside the pneumothorax; about
    ``positive_rate`` positive, some with two regions (two CSV rows, the mask is their union);
    ``images_per_patient`` consecutive images share a PatientID (``PAT{k:04d}``). ``stage``
    1 writes ``train-rle.csv`` (``ImageId, EncodedPixels`` with the leading spaces), 2 writes
    ``stage_2_train.csv``. Returns ``(dicom_dir, csv_path)``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    dicom_dir = root / "dicom"
    rows: list[tuple[str, str]] = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        uid = f"{UID_ROOT}.4.{seed}.{i}.{1517875000 + i}.{100000 + i}"
        image = 90 + 80 * np.exp(-(((xx - size / 2) / (0.45 * size)) ** 2)) + rng.normal(0, 8, (size, size))
        image -= 40 * (yy / size)
        regions = _regions(rng, size, 1 + int(rng.random() < 0.4)) if rng.random() < positive_rate else []
        for region in regions:
            image[region] -= 45
            rows.append((uid, siim_encode(region)))
        if not regions:
            rows.append((uid, "-1"))
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        path = dicom_dir / f"{uid}.1" / f"{uid}.2" / f"{uid}.dcm"
        write_dicom(path, pixels, sop_uid=uid, patient_id=f"PAT{i // images_per_patient:04d}", jpeg=jpeg)
    if stage == 1:
        csv_path = root / "train-rle.csv"
        text = "ImageId, EncodedPixels\n" + "".join(f"{uid}, {rle}\n" for uid, rle in rows)
    elif stage == 2:
        csv_path = root / "stage_2_train.csv"
        text = "ImageId,EncodedPixels\n" + "".join(f"{uid},{rle}\n" for uid, rle in rows)
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    csv_path.write_text(text, encoding="utf-8")
    return dicom_dir, csv_path


def write_review_tree(root: str | Path, *, small: int = 1024, large: int = 2048, seed: int = 0) -> tuple[Path, Path]:
    """A SIIM-layout tree of two positive images for full-resolution review; deterministic.

    ``small`` px 8-bit MONOCHROME2 (no window) and ``large`` px 12-bit values in 16 bits with
    WindowCenter 1800 / WindowWidth 1600 (values spread over 0..4095, so the pack's "voi" and
    "full" windows differ visibly), each with a thin band-shaped pneumothorax along the edge
    that downsampling to 256 px nearly erases. Returns ``(dicom_dir, csv_path)``
    (``stage_2_train.csv``). Meant for browser/bench tests; unit tests use tiny images.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    dicom_dir = root / "dicom"
    rows: list[tuple[str, str]] = []
    for k, (size, sixteen) in enumerate(((small, False), (large, True))):
        uid = f"{UID_ROOT}.5.{seed}.{k}.{1517875000 + k}"
        yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
        lung = 0.55 + 0.35 * np.exp(-((xx - 0.5) / 0.3) ** 2) - 0.2 * yy
        band = (xx > 0.78) & (xx < 0.80) & (yy > 0.2) & (yy < 0.6)  # thin pleural band
        lung[band] -= 0.3
        lung += rng.normal(0, 0.02, lung.shape).astype(np.float32)
        if sixteen:
            pixels = np.clip(np.rint(lung * 4095), 0, 4095).astype(np.uint16)
            extra = {"bits_stored": 12, "window": (1800, 1600)}
        else:
            pixels = np.clip(np.rint(lung * 255), 0, 255).astype(np.uint8)
            extra = {}
        path = dicom_dir / f"{uid}.1" / f"{uid}.2" / f"{uid}.dcm"
        write_dicom(path, pixels, sop_uid=uid, patient_id=f"REV{k:02d}", **extra)
        rows.append((uid, siim_encode(band)))
    csv_path = root / "stage_2_train.csv"
    csv_path.write_text("ImageId,EncodedPixels\n" + "".join(f"{u},{r}\n" for u, r in rows), encoding="utf-8")
    return dicom_dir, csv_path
