"""The folders source: an images folder and a masks folder, paired by file stem."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pneumo.errors import InputError
from pneumo.ingest.imageio import IMAGE_EXTENSIONS, MAX_PIXELS, is_dicom, read_image, read_mask
from pneumo.ingest.manifest import Manifest, Sample

__all__ = ["folder_source", "load_pair", "is_positive"]


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
        # the folders given, so the Review page can print the repack command (pneumo.review.repack)
        "images_dir": str(images_dir.absolute()),
        "masks_dir": str(masks_dir.absolute()),
    }
    return Manifest(kind="folders", samples=samples, skipped=skipped, info=info)


def load_pair(sample: Sample, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi") -> tuple[np.ndarray, np.ndarray]:
    """Decode the sample's image and mask files at their native size (see :func:`pneumo.ingest.sources.load_pair`)."""
    image = read_image(sample.image, max_pixels, dicom_window)
    mask = read_mask(sample.mask, max_pixels)
    if image.shape != mask.shape:
        raise InputError(
            f"{sample.image} ({image.shape[0]}x{image.shape[1]}) and its mask {sample.mask} "
            f"({mask.shape[0]}x{mask.shape[1]}) differ in size"
        )
    return image, mask


def is_positive(sample: Sample, max_pixels: int | None = MAX_PIXELS) -> bool:
    """Whether the sample's mask file has a non-zero pixel (decoded within ``max_pixels``)."""
    if sample.mask is None:
        raise InputError(f"sample {sample.id}: no mask file")
    return bool(read_mask(sample.mask, max_pixels).any())
