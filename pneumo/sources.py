"""Data sources: folders of image/mask files, the SIIM-ACR DICOM tree + RLE CSV, demo phantoms.

Each source builds a :class:`Manifest` of :class:`Sample` records quickly (file names, CSV and
DICOM headers only); :func:`load_pair` decodes one sample's image and mask in a worker process.

Conversions (documented choices):

- 8-bit images are kept as they are; RGB(A) and palette images become luminance
  (ITU-R 601-2, Pillow's ``convert("L")``); an alpha channel is ignored.
- 16-bit, 32-bit integer and float images (PNG/TIFF) are stretched over the image's *actual*
  range (min -> 0, max -> 255, rounded; a constant image gives 0). Many exports keep 10- or 12-bit
  detector values in a 16-bit container, which a bit-depth scaling would leave nearly black.
- DICOM is scaled by its ``BitsStored`` (the full stored range, after ``RescaleSlope`` /
  ``RescaleIntercept``), so 8-bit data is unchanged; ``MONOCHROME1`` is inverted; colour is
  converted to luminance; multi-frame files are refused. VOI windowing is not applied.
- Masks: any non-zero pixel in any colour channel is pneumothorax (alpha ignored; a palette
  mask is judged by its colours, not its indices). JPEG masks therefore count compression
  noise as positive: prefer PNG masks.
"""
from __future__ import annotations

import csv
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .rle import EMPTY, detect_format, rle_runs, union_decode

__all__ = [
    "IMAGE_EXTENSIONS",
    "Manifest",
    "Sample",
    "demo_source",
    "folder_source",
    "hash_patient_id",
    "load_pair",
    "read_dicom_meta",
    "read_image",
    "read_mask",
    "sample_positive",
    "siim_source",
]

#: File extensions (lower case) that folder_source accepts; files without an extension are
#: accepted when they carry the DICOM magic ``DICM``.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})


@dataclass(frozen=True)
class Sample:
    """One (image, mask) pair of a manifest; picklable, decoded by :func:`load_pair`."""

    id: str  # unique in a manifest; stored in the pack's ids_<split>
    patient: str  # grouping key: salted hash of PatientID (SIIM), else the id
    kind: str  # "folders" | "siim" | "demo"
    image: str = ""  # file path (folders, siim)
    mask: str | None = None  # file path (folders)
    rles: tuple[str, ...] = ()  # SIIM RLE strings; the mask is their union; () = negative
    rle_relative: bool = True  # SIIM: the competition's relative starts (False: absolute)
    height: int | None = None  # SIIM mask size when known up front (else read from DICOM)
    width: int | None = None
    phantom_seed: int | None = None  # demo
    size: int | None = None  # demo: render size
    positive: bool | None = None  # known up front (siim, demo) or None (folders)


@dataclass
class Manifest:
    """The samples of one source, plus what was skipped (and why) and counts for the report."""

    kind: str
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file or ImageId, reason)
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- images


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto 0..255 (rounded, clipped) as uint8."""
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    out = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of ``(H, W, 3+)`` values, as float64 (same weights as Pillow)."""
    rgb = rgb.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _open_pillow(path: Path):
    from PIL import Image

    img = Image.open(path)
    try:
        if getattr(img, "n_frames", 1) > 1:
            raise InputError(f"{path}: has {img.n_frames} frames; expected a single image")
        img.load()  # decode now so that truncation surfaces here, not later
    except BaseException:
        img.close()
        raise
    return img


def _pillow_gray(path: Path) -> np.ndarray:
    img = _open_pillow(path)
    with img:
        mode = img.mode
        if mode == "L":
            return np.array(img, dtype=np.uint8)
        if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I (int32), F (float32)
            values = np.asarray(img)
            if values.ndim != 2:
                raise InputError(f"{path}: unsupported image layout {values.shape} (mode {mode})")
            values = values.astype(np.float64)
            finite = values[np.isfinite(values)]
            if not finite.size:
                return np.zeros(values.shape, np.uint8)
            values = np.nan_to_num(values, nan=finite.min())
            return _stretch(values, float(finite.min()), float(finite.max()))
        if mode not in ("1", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"):
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...
        # "1" -> 0/255; "LA" drops alpha; "P" looks up its palette; RGB(A) -> 601-2 luma.
        return np.array(img.convert("L"), dtype=np.uint8)


def _dicom_dataset(path: Path, **kwargs):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError as e:
        raise InputError(f"{path}: not a valid DICOM file ({e})") from None


def _dicom_gray(path: Path) -> np.ndarray:
    ds = _dicom_dataset(path)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"{path}: multi-frame DICOM ({frames} frames); expected a single image")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # missing codec, truncated or corrupt pixel data
        raise InputError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or pixels.dtype.itemsize * 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if pixels.ndim == 3:  # colour: pydicom gives RGB (it converts YBR by default)
        if pixels.dtype == np.uint8:
            return np.clip(np.rint(_luminance(pixels)), 0, 255).astype(np.uint8)
        return _stretch(_luminance(pixels), 0.0, float(2**bits - 1))
    if pixels.ndim != 2:
        raise InputError(f"{path}: unsupported DICOM pixel layout {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if bits == 8 and not signed and slope == 1 and intercept == 0:
        gray = pixels.astype(np.uint8, copy=False)
    else:
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        # Map the stored range through the rescale too: a negative slope flips the image.
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
        gray = _stretch(pixels.astype(np.float64) * slope + intercept, lo, hi)
    if photometric == "MONOCHROME1":  # 0 is white
        gray = 255 - gray
    return np.ascontiguousarray(gray)


def _checked_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    return path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as 8-bit grayscale: ``(H, W) uint8``.

    PNG, JPEG, TIFF, BMP (8/16-bit, gray, gray+alpha, RGB(A), palette) and DICOM (by a
    ``.dcm``/``.dicom`` extension or the ``DICM`` magic). See the module docstring for how
    16-bit, colour and DICOM values are mapped. Raises ``InputError`` naming the file and the
    reason for a missing, unreadable, truncated or corrupt file.
    """
    path = _checked_file(path)
    try:
        if _is_dicom(path):
            return _dicom_gray(path)
        return _pillow_gray(path)
    except InputError:
        raise
    except Exception as e:  # Pillow/pydicom raise many types for damaged files
        raise InputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file: ``(H, W) uint8`` in {0, 255}; any non-zero colour value is positive.

    Same formats as :func:`read_image`; an alpha channel is ignored. Raises ``InputError``.
    """
    path = _checked_file(path)
    try:
        if _is_dicom(path):
            ds = _dicom_dataset(path)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if frames > 1:
                raise InputError(f"{path}: multi-frame DICOM ({frames} frames); expected a single mask")
            values = ds.pixel_array
        else:
            img = _open_pillow(path)
            with img:
                if img.mode == "P":
                    img = img.convert("RGB")  # judge palette colours, not indices
                elif img.mode == "PA":
                    img = img.convert("RGBA")
                values = np.asarray(img)
                if values.ndim == 3 and values.shape[2] in (2, 4):  # LA / RGBA: drop alpha
                    values = values[..., :-1]
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: cannot read mask ({type(e).__name__}: {e})") from None
    if values.ndim == 3:
        values = values.any(axis=2)
    if values.ndim != 2:
        raise InputError(f"{path}: unsupported mask layout {values.shape}")
    return np.where(values != 0, np.uint8(255), np.uint8(0))


def read_dicom_meta(path: str | os.PathLike) -> tuple[str, str, int, int]:
    """Read ``(sop_instance_uid, patient_id, rows, cols)`` from a DICOM header, without pixels.

    Missing SOPInstanceUID or PatientID give ``""``; missing Rows/Columns raise ``InputError``.
    """
    path = _checked_file(path)
    try:
        ds = _dicom_dataset(
            path,
            stop_before_pixels=True,
            specific_tags=["SOPInstanceUID", "PatientID", "Rows", "Columns"],
        )
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


# ----------------------------------------------------------------------------- folders


def _image_files(folder: Path, role: str) -> tuple[dict[str, Path], int]:
    """Supported image files of ``folder`` by stem (non-recursive), and the count of ignored files."""
    if not folder.exists():
        raise InputError(f"{folder}: {role} folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: {role} folder is not a directory")
    by_stem: dict[str, Path] = {}
    ignored = 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            ignored += 1
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            stem = path.stem
        elif (not suffix or not suffix[1:].isalpha()) and _is_dicom(path):
            stem = path.name  # extension-less DICOM (e.g. named by its UID "1.2.840...")
        else:
            ignored += 1
            continue
        if stem in by_stem:
            raise InputError(
                f"{folder}: two {role} files with the stem {stem!r}: {by_stem[stem].name} and {path.name}"
            )
        by_stem[stem] = path
    if not by_stem:
        raise InputError(
            f"{folder}: {role} folder has no image files "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))} or extension-less DICOM)"
        )
    return by_stem, ignored


def folder_source(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> Manifest:
    """Pair ``images_dir`` and ``masks_dir`` files by file stem (case-sensitive), never by position.

    Unpaired files go to ``skipped`` naming the missing side; hidden and non-image files are
    ignored (counted in ``info["ignored_files"]``). Raises ``InputError`` for a missing or empty
    folder, a stem used twice in one folder (``a.png`` and ``a.jpg``), or no pair at all.
    Samples: ``id`` = ``patient`` = stem, ``positive`` None (decode the mask to know).
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images, ignored_images = _image_files(images_dir, "images")
    masks, ignored_masks = _image_files(masks_dir, "masks")
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for stem, image in images.items():
        mask = masks.get(stem)
        if mask is None:
            skipped.append((str(image), f"no mask named {stem}.* in {masks_dir}"))
            continue
        samples.append(
            Sample(id=stem, patient=stem, kind="folders", image=str(image.absolute()), mask=str(mask.absolute()))
        )
    for stem, mask in masks.items():
        if stem not in images:
            skipped.append((str(mask), f"no image named {stem}.* in {images_dir}"))
    if not samples:
        raise InputError(
            f"no image/mask pairs: no file stem of {images_dir} matches one of {masks_dir} "
            f"(pairs are matched by name, e.g. images/a.png with masks/a.png)"
        )
    info = {
        "images": len(images),
        "masks": len(masks),
        "pairs": len(samples),
        "images_without_mask": len(images) - len(samples),
        "masks_without_image": len(masks) - len(samples),
        "ignored_files": ignored_images + ignored_masks,
    }
    return Manifest(kind="folders", samples=samples, skipped=skipped, info=info)


# ----------------------------------------------------------------------------- SIIM


def hash_patient_id(patient_id: str, salt: str) -> str:
    """The grouping key kept instead of a PatientID: ``sha256(salt + id)``, 16 hex characters."""
    return hashlib.sha256((salt + patient_id).encode("utf-8")).hexdigest()[:16]


def _read_labels(labels_csv: Path, rle_format: str = "auto") -> tuple[dict[str, list[tuple[int, str, int]]], int, str]:
    """ImageId -> [(line number, RLE, end of its last run)], the number of rows, and the RLE format.

    Validates each RLE's numbers (not yet against the image size, which needs the header).
    ``rle_format`` "auto" detects relative or absolute starts from all rows (``rle.detect_format``).
    """
    if rle_format not in ("auto", "relative", "absolute"):
        raise InputError(f"--rle-format must be auto, relative or absolute, got {rle_format!r}")
    if not labels_csv.exists():
        raise InputError(f"{labels_csv}: label CSV not found")
    if not labels_csv.is_file():
        raise InputError(f"{labels_csv}: label CSV is not a file")
    labels: dict[str, list[tuple[int, str, int]]] = {}
    raw: list[tuple[str, int, str]] = []
    count = 0
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            columns = [c.strip() for c in header] if header else []
            if "ImageId" not in columns or "EncodedPixels" not in columns:
                raise InputError(
                    f"{labels_csv}: expected the columns ImageId and EncodedPixels "
                    f"(SIIM train-rle.csv or stage_2_train.csv), found {columns or 'no header'}"
                )
            id_col, rle_col = columns.index("ImageId"), columns.index("EncodedPixels")
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) != len(columns):
                    raise InputError(
                        f"{labels_csv}: line {line}: expected {len(columns)} fields, found {len(row)}"
                    )
                image_id, rle = row[id_col].strip(), row[rle_col].strip()
                if not image_id:
                    raise InputError(f"{labels_csv}: line {line}: empty ImageId")
                raw.append((image_id, line, rle))
    except InputError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{labels_csv}: cannot read label CSV ({type(e).__name__}: {e})") from None
    if rle_format == "auto":
        rle_format = detect_format(rle for _, _, rle in raw)
    relative = rle_format == "relative"
    for image_id, line, rle in raw:
        try:
            starts, lengths = rle_runs(rle, relative)
        except ValueError as e:
            raise InputError(f"{labels_csv}: line {line}: ImageId {image_id}: bad RLE: {e}") from None
        end = int((starts + lengths).max()) if len(starts) else 0
        labels.setdefault(image_id, []).append((line, rle, end))
        count += 1
    return labels, count, rle_format


_PARALLEL_HEADERS = 512


def _read_headers(paths: list[Path], workers: int | None) -> list[tuple[str, str, int, int]]:
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if workers <= 1 or len(paths) <= _PARALLEL_HEADERS:
        return [read_dicom_meta(path) for path in paths]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read_dicom_meta, paths, chunksize=64))


def siim_source(
    dicom_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    salt: str | None = None,
    *,
    workers: int | None = None,
    rle_format: str = "auto",
) -> Manifest:
    """The SIIM-ACR layout: ``.dcm`` files found recursively under ``dicom_dir`` + the label CSV.

    The id is the file stem (the SOPInstanceUID). The CSV is stage 1 ``train-rle.csv``
    (``ImageId, EncodedPixels``, values `` -1``) or stage 2 ``stage_2_train.csv``; several rows of
    one image are the union of their regions. Images without a label row are skipped (named in
    ``skipped``, counted in ``info["images_without_label"]``); label rows without an image are
    counted in ``info["labels_without_image"]`` (distinct ImageIds; not listed, there may be
    thousands). Only labelled images' headers are read (Rows/Columns, PatientID); PatientID is
    kept only as :func:`hash_patient_id` with ``salt`` (default: random per call), the image id
    when missing. Raises ``InputError`` for a missing/empty folder, an unreadable CSV, wrong
    columns, a malformed RLE or a run past the image (naming the line and ImageId) or an
    unreadable header. A second file with the same id is skipped (named in ``skipped``).

    ``rle_format``: "relative" (the competition's stage 1 encoding), "absolute" (standard
    RLE, as some stage 2 copies have) or "auto" (detected from the CSV; in ``info["rle_format"]``).

    Headers are read in ``workers`` processes (default: all cores, at most 8) when there are
    more than ``_PARALLEL_HEADERS`` of them: pydicom needs about 1 ms of CPU per header.
    """
    dicom_dir, labels_csv = Path(dicom_dir), Path(labels_csv)
    if not dicom_dir.exists():
        raise InputError(f"{dicom_dir}: DICOM folder not found")
    if not dicom_dir.is_dir():
        raise InputError(f"{dicom_dir}: DICOM folder is not a directory")
    files: dict[str, Path] = {}
    duplicates: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(dicom_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(".dcm"):
                continue
            path = Path(root) / name
            stem = path.stem
            if stem in files:  # the same SOP instance twice (e.g. copied into two folders)
                duplicates.append((str(path), f"duplicate of {files[stem]} (same ImageId {stem}); not used"))
                continue
            files[stem] = path
    if not files:
        raise InputError(f"{dicom_dir}: no .dcm files found (searched recursively)")
    labels, rows, rle_format = _read_labels(labels_csv, rle_format)
    if not labels:
        raise InputError(f"{labels_csv}: label CSV has no rows")
    if salt is None:
        salt = secrets.token_hex(16)

    skipped = duplicates + [
        (str(path), f"no label row for ImageId {image_id} in {labels_csv.name}")
        for image_id, path in files.items()
        if image_id not in labels
    ]
    labelled = [(image_id, path) for image_id, path in files.items() if image_id in labels]
    headers = _read_headers([path for _, path in labelled], workers)

    samples: list[Sample] = []
    missing_patient = uid_mismatch = 0
    for (image_id, path), (uid, patient_id, height, width) in zip(labelled, headers):
        entries = labels[image_id]
        if uid and uid != image_id:
            uid_mismatch += 1
        rles = tuple(dict.fromkeys(rle for _, rle, _ in entries if rle != EMPTY))  # ordered, no duplicates
        for line, _, end in entries:
            if end > height * width:
                raise InputError(
                    f"{labels_csv}: line {line}: ImageId {image_id}: bad RLE: run past the image "
                    f"(it ends at pixel {end - 1}, the {height}x{width} image in {path} has {height * width})"
                )
        if patient_id:
            patient = hash_patient_id(patient_id, salt)
        else:
            missing_patient += 1
            patient = image_id
        samples.append(
            Sample(
                id=image_id,
                patient=patient,
                kind="siim",
                image=str(path.absolute()),
                rles=rles,
                height=height,
                width=width,
                positive=bool(rles),
                rle_relative=rle_format == "relative",
            )
        )
    if not samples:
        raise InputError(f"no labelled images: no .dcm file under {dicom_dir} has a row in {labels_csv}")
    positives = sum(s.positive for s in samples)
    info = {
        "dicom_files": len(files),
        "label_rows": rows,
        "labelled_ids": len(labels),
        "samples": len(samples),
        "positive": positives,
        "negative": len(samples) - positives,
        "images_without_label": len(files) - len(samples),
        "labels_without_image": sum(1 for image_id in labels if image_id not in files),
        "duplicate_files": len(duplicates),
        "missing_patient_id": missing_patient,
        "sop_uid_differs_from_file_name": uid_mismatch,
        "rle_format": rle_format,
    }
    return Manifest(kind="siim", samples=samples, skipped=skipped, info=info)


# ----------------------------------------------------------------------------- demo


def demo_source(count: int, size: int = 256, seed: int = 0) -> Manifest:
    """``count`` demo phantoms: ids ``phantom-00000``..., rendered at ``size`` on :func:`load_pair`.

    Deterministic in ``seed``; ``positive`` is known up front (``phantom.is_positive``).
    """
    from . import phantom

    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"--count: need a positive number of demo images, got {count!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"--size: need a positive image size, got {size!r}")
    samples = []
    for index in range(int(count)):
        phantom_seed = phantom.sample_seed(seed, index)
        sample_id = f"phantom-{index:05d}"
        samples.append(
            Sample(
                id=sample_id,
                patient=sample_id,
                kind="demo",
                phantom_seed=phantom_seed,
                size=int(size),
                positive=bool(phantom.is_positive(phantom_seed)),
            )
        )
    positives = sum(s.positive for s in samples)
    return Manifest(
        kind="demo",
        samples=samples,
        skipped=[],
        info={"samples": len(samples), "positive": positives, "negative": len(samples) - positives, "seed": seed},
    )


# ----------------------------------------------------------------------------- loading


def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Decode one sample at its native resolution: ``(image (H, W) uint8, mask (H, W) uint8 {0,255})``.

    Top-level and picklable (runs in worker processes). Raises ``InputError`` naming the
    file(s) or ImageId for unreadable files, a bad RLE or image/mask shapes that differ.
    """
    if sample.kind == "demo":
        from . import phantom

        image, mask = phantom.make_phantom(sample.phantom_seed, sample.size, positive=sample.positive)
        return image, mask
    if sample.kind == "folders":
        image = read_image(sample.image)
        mask = read_mask(sample.mask)
        if image.shape != mask.shape:
            raise InputError(
                f"{sample.image} ({image.shape[0]}x{image.shape[1]}) and its mask {sample.mask} "
                f"({mask.shape[0]}x{mask.shape[1]}) differ in size"
            )
        return image, mask
    if sample.kind == "siim":
        image = read_image(sample.image)
        height, width = image.shape
        if sample.height is not None and (sample.height, sample.width) != (height, width):
            raise InputError(
                f"{sample.image}: ImageId {sample.id}: pixel data is {height}x{width} but the "
                f"header says {sample.height}x{sample.width}"
            )
        try:
            mask = union_decode(sample.rles, height, width, sample.rle_relative)
        except ValueError as e:
            raise InputError(f"{sample.image}: ImageId {sample.id}: bad RLE: {e}") from None
        return image, mask
    raise InputError(f"sample {sample.id}: unknown source kind {sample.kind!r}")


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


def _gray_file_at(path: Path, size: int, is_mask: bool) -> tuple[np.ndarray, tuple[int, int]] | None:
    """An 8-bit gray (mode L) PNG/JPEG/TIFF resized in Pillow, without a full-size numpy copy.

    Returns ``(array, (height, width) before resizing)``, or ``None`` for any other kind of
    file (the general path handles those). Same pixels as ``resize_pair(read_image(...))``.
    """
    from PIL import Image

    if _is_dicom(path):
        return None
    try:
        img = _open_pillow(path)
    except InputError:
        raise
    except Exception:
        return None  # the general path reports the error with its own wording
    with img:
        if img.mode != "L":
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


def load_resized(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``resize_pair(*load_pair(sample), size)``: both ``(size, size) uint8``, mask {0, 255}.

    Folders of 8-bit gray images take a faster path that resizes inside Pillow (packing is
    bound by decoding; full-size numpy copies cost a third as much again). Raises like
    :func:`load_pair`.
    """
    if sample.kind == "folders" and sample.mask:
        image_path, mask_path = _checked_file(sample.image), _checked_file(sample.mask)
        image = _gray_file_at(image_path, size, is_mask=False)
        mask = _gray_file_at(mask_path, size, is_mask=True) if image is not None else None
        if image is not None and mask is not None:
            if image[1] != mask[1]:
                raise InputError(
                    f"{sample.image} ({image[1][0]}x{image[1][1]}) and its mask {sample.mask} "
                    f"({mask[1][0]}x{mask[1][1]}) differ in size"
                )
            return image[0], mask[0]
    return resize_pair(*load_pair(sample), size)


def sample_positive(sample: Sample) -> bool:
    """Whether the sample has pneumothorax: ``sample.positive`` when known, else decode its mask."""
    if sample.positive is not None:
        return bool(sample.positive)
    if sample.kind == "siim":
        return bool(sample.rles)
    if sample.kind == "demo":
        from . import phantom

        return bool(phantom.is_positive(sample.phantom_seed))
    if sample.mask is None:
        raise InputError(f"sample {sample.id}: no mask file")
    return bool(read_mask(sample.mask).any())
