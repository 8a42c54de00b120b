"""The SIIM-ACR source: a tree of DICOM files and the competition's label CSV of RLE masks."""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import numpy as np

from pneumo.errors import InputError
from pneumo.ingest.imageio import MAX_PIXELS, check_pixels, read_dicom_meta, read_image
from pneumo.ingest.manifest import Manifest, Sample
from pneumo.ingest.rle import EMPTY, union_decode
from pneumo.ingest.siim_labels import read_labels as _read_labels
from pneumo.workers import worker_pool

__all__ = ["hash_patient_id", "siim_source", "load_pair", "is_positive"]


def hash_patient_id(patient_id: str, salt: str) -> str:
    """The grouping key kept instead of a PatientID: ``sha256(salt + id)``, 16 hex characters."""
    return hashlib.sha256((salt + patient_id).encode("utf-8")).hexdigest()[:16]


_PARALLEL_HEADERS = 512


def _read_headers(
    paths: list[Path], workers: int | None, isolate: bool = False, memory_limit: int | None = None
) -> list[tuple[str, str, int, int]]:
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if not isolate and (workers <= 1 or len(paths) <= _PARALLEL_HEADERS):
        return [read_dicom_meta(path) for path in paths]
    with worker_pool(max(1, workers), memory_limit) as pool:
        return list(pool.map(read_dicom_meta, paths, chunksize=64))


def siim_source(
    dicom_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    salt: str | None = None,
    *,
    workers: int | None = None,
    rle_format: str = "auto",
    isolate: bool = False,
    memory_limit: int | None = None,
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
    ``isolate``: always read them in worker processes (capped at ``memory_limit`` bytes), never
    in this one (the app: an uploaded file is never parsed inside the server).
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
    headers = _read_headers([path for _, path in labelled], workers, isolate, memory_limit)

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
        "labels_csv": str(labels_csv.absolute()),  # the review re-decodes a mask at native size from it
        "dicom_dir": str(Path(dicom_dir).absolute()),  # with labels_csv: the repack command (pneumo.review.repack)
    }
    return Manifest(kind="siim", samples=samples, skipped=skipped, info=info)


def load_pair(sample: Sample, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi") -> tuple[np.ndarray, np.ndarray]:
    """Decode the DICOM and the union of the sample's RLE regions (see :func:`pneumo.ingest.sources.load_pair`)."""
    if sample.height is not None:
        check_pixels(sample.image, sample.height, sample.width, max_pixels)
    image = read_image(sample.image, max_pixels, dicom_window)
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


def is_positive(sample: Sample, max_pixels: int | None = MAX_PIXELS) -> bool:
    """Whether the sample has an RLE region (no decoding)."""
    return bool(sample.rles)
