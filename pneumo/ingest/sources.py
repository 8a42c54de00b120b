"""Data sources: folders of image/mask files, the SIIM-ACR DICOM tree + RLE CSV, demo phantoms.

Each source builds a :class:`Manifest` of :class:`Sample` records quickly (file names, CSV and
DICOM headers only); :func:`load_pair` decodes one sample's image and mask (in a worker
process when packing) through :mod:`pneumo.ingest.imageio`, which owns decoding, the conversions to
8-bit gray and the pixel budget. :func:`manifest_from_spec` is the one entry point that turns
a source description (the CLI's arguments, the Data page's form) into a manifest.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo.errors import InputError
from pneumo.ingest.imageio import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    check_pixels,
    checked_file,
    gray_file_at,
    is_dicom,
    read_dicom_meta,
    read_image,
    read_mask,
    resize_pair,
)
from pneumo.ingest.rle import EMPTY, union_decode
from pneumo.ingest.siim_labels import read_labels as _read_labels
from pneumo.workers import worker_pool

__all__ = [
    "IMAGE_EXTENSIONS",
    "Manifest",
    "Sample",
    "demo_source",
    "folder_source",
    "hash_patient_id",
    "load_pair",
    "find_labels_csv",
    "load_for_pack",
    "load_resized",
    "manifest_from_spec",
    "read_dicom_meta",
    "read_image",
    "read_mask",
    "resize_pair",
    "sample_positive",
    "siim_source",
    "source_path",
]



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
        elif (not suffix or not suffix[1:].isalpha()) and is_dicom(path):
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
    }
    return Manifest(kind="siim", samples=samples, skipped=skipped, info=info)


# ----------------------------------------------------------------------------- demo


def demo_source(count: int, size: int = 256, seed: int = 0) -> Manifest:
    """``count`` demo phantoms: ids ``phantom-00000``..., rendered at ``size`` on :func:`load_pair`.

    Deterministic in ``seed``; ``positive`` is known up front (``phantom.is_positive``).
    """
    from pneumo.ingest import phantom

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


def load_pair(
    sample: Sample, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one sample at its native resolution: ``(image (H, W) uint8, mask (H, W) uint8 {0,255})``.

    Top-level and picklable (runs in worker processes). Raises ``InputError`` naming the
    file(s) or ImageId for unreadable files, a bad RLE, image/mask shapes that differ or an
    image over ``max_pixels`` (checked from the header before decoding; ``None``: no limit).
    ``dicom_window``: how DICOM images become 8 bits ("voi" or "full", see ``read_image``).
    """
    if sample.kind == "demo":
        from pneumo.ingest import phantom

        check_pixels(sample.id, sample.size, sample.size, max_pixels)
        image, mask = phantom.make_phantom(sample.phantom_seed, sample.size, positive=sample.positive)
        return image, mask
    if sample.kind == "folders":
        image = read_image(sample.image, max_pixels, dicom_window)
        mask = read_mask(sample.mask, max_pixels)
        if image.shape != mask.shape:
            raise InputError(
                f"{sample.image} ({image.shape[0]}x{image.shape[1]}) and its mask {sample.mask} "
                f"({mask.shape[0]}x{mask.shape[1]}) differ in size"
            )
        return image, mask
    if sample.kind == "siim":
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
    raise InputError(f"sample {sample.id}: unknown source kind {sample.kind!r}")


def load_resized(
    sample: Sample, size: int, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi"
) -> tuple[np.ndarray, np.ndarray]:
    """``resize_pair(*load_pair(sample, max_pixels, dicom_window), size)``: both ``(size, size)
    uint8``, mask {0, 255}. Raises like :func:`load_pair`; see :func:`load_for_pack`."""
    return load_for_pack(sample, size, max_pixels, dicom_window)[:2]


def load_for_pack(
    sample: Sample, size: int, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi"
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """:func:`load_resized` plus the image's native ``(height, width)`` (the pack's source reference).

    Folders of 8-bit gray images take a faster path that resizes inside Pillow (packing is
    bound by decoding; full-size numpy copies cost a third as much again).
    """
    if sample.kind == "folders" and sample.mask:
        image_path, mask_path = checked_file(sample.image), checked_file(sample.mask)
        image = gray_file_at(image_path, size, False, max_pixels)
        mask = gray_file_at(mask_path, size, True, max_pixels) if image is not None else None
        if image is not None and mask is not None:
            if image[1] != mask[1]:
                raise InputError(
                    f"{sample.image} ({image[1][0]}x{image[1][1]}) and its mask {sample.mask} "
                    f"({mask[1][0]}x{mask[1][1]}) differ in size"
                )
            return image[0], mask[0], image[1]
    image, mask = load_pair(sample, max_pixels, dicom_window)
    native = (int(image.shape[0]), int(image.shape[1]))
    return (*resize_pair(image, mask, size), native)


def source_path(sample: Sample) -> str:
    """Where a sample's image came from, as the pack records it: the image file (folders;
    SIIM: the DICOM), or ``demo:<phantom seed>`` for a phantom."""
    if sample.kind == "demo":
        return f"demo:{sample.phantom_seed}"
    return str(sample.image)


def sample_positive(sample: Sample, max_pixels: int | None = MAX_PIXELS) -> bool:
    """Whether the sample has pneumothorax: ``sample.positive`` when known, else decode its mask
    (within ``max_pixels``)."""
    if sample.positive is not None:
        return bool(sample.positive)
    if sample.kind == "siim":
        return bool(sample.rles)
    if sample.kind == "demo":
        from pneumo.ingest import phantom

        return bool(phantom.is_positive(sample.phantom_seed))
    if sample.mask is None:
        raise InputError(f"sample {sample.id}: no mask file")
    return bool(read_mask(sample.mask, max_pixels).any())


# ----------------------------------------------------------------------------- one entry point
SOURCE_KINDS = ("folders", "siim", "demo")


def find_labels_csv(root: str | os.PathLike) -> Path:
    """The one label CSV under ``root`` (searched recursively, hidden files ignored).

    Raises ``InputError`` when there is none or more than one.
    """
    root = Path(root)
    found = sorted(p for p in root.rglob("*.csv") if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if len(found) != 1:
        names = ", ".join(str(p.relative_to(root)) for p in found[:5])
        raise InputError(f"expected exactly one label CSV, found {len(found)}" + (f" ({names})" if names else ""))
    return found[0]


def _given(value: str | os.PathLike | None, what: str) -> str | os.PathLike:
    if value is None or not str(value).strip():
        raise InputError(f"give the {what}")
    return value.strip() if isinstance(value, str) else value


def manifest_from_spec(
    kind: str,
    *,
    images: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    dicom: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    count: int = 400,
    size: int = 256,
    seed: int = 0,
    salt: str | None = None,
    rle_format: str = "auto",
    workers: int | None = None,
    isolate: bool = False,
    memory_limit: int | None = None,
) -> Manifest:
    """Build the manifest a source spec describes: the one entry point of the CLI and the app.

    ``kind`` "folders": ``images`` and ``masks`` folders; "siim": the ``dicom`` folder and the
    ``labels`` CSV (``rle_format``, ``salt``); "demo": ``count`` phantoms at ``size`` px from
    ``seed``. With ``root`` (an unpacked upload) the folders are taken inside it (``images`` /
    ``masks`` are names relative to it, default ``images`` and ``masks``), and for SIIM the
    DICOM folder is ``root`` and the label CSV the one CSV it holds. ``workers``/``isolate``/
    ``memory_limit``: how SIIM headers are read (see :func:`siim_source`). Raises ``InputError``.
    """
    if kind == "demo":
        return demo_source(count, size=size, seed=seed)
    if kind == "folders":
        if root is not None:
            images = Path(root) / str(_given(images or "images", "image folder"))
            masks = Path(root) / str(_given(masks or "masks", "mask folder"))
        return folder_source(_given(images, "image folder"), _given(masks, "mask folder"))
    if kind == "siim":
        if root is not None:
            dicom, labels = root, find_labels_csv(root)
        return siim_source(_given(dicom, "DICOM folder"), _given(labels, "label CSV"), salt=salt,
                           workers=workers, rle_format=rle_format, isolate=isolate, memory_limit=memory_limit)
    raise InputError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
