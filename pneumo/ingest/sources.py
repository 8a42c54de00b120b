"""Data sources: folders of image/mask files, the SIIM-ACR DICOM tree + RLE CSV, demo phantoms.

Each source kind (:data:`pneumo.config.SOURCE_KINDS`) has its module (:mod:`pneumo.ingest.folders`,
:mod:`pneumo.ingest.siim`, :mod:`pneumo.ingest.demo`) and its entry in :data:`SOURCES`: how a
source spec becomes a :class:`Manifest` of :class:`Sample` records quickly (file names, CSV and
DICOM headers only), how one sample is decoded (in a worker process when packing) through
:mod:`pneumo.ingest.imageio`, and whether it is positive. :func:`manifest_from_spec` is the one
entry point that turns a source description (the CLI's arguments, the Data page's form) into a
manifest; :func:`load_pair` and :func:`sample_positive` dispatch a sample to its kind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pneumo.config import SOURCE_KINDS, check_registry
from pneumo.errors import InputError
from pneumo.ingest import demo, folders, siim
from pneumo.ingest.demo import demo_source
from pneumo.ingest.folders import folder_source
from pneumo.ingest.imageio import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    checked_file,
    gray_file_at,
    read_dicom_meta,
    read_image,
    read_mask,
    resize_pair,
)
from pneumo.ingest.manifest import Manifest, Sample
from pneumo.ingest.pixels import file_identity
from pneumo.ingest.siim import hash_patient_id, siim_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "Manifest",
    "Sample",
    "SOURCES",
    "SourceKind",
    "demo_source",
    "folder_source",
    "hash_patient_id",
    "load_pair",
    "find_labels_csv",
    "load_for_pack",
    "manifest_from_spec",
    "read_dicom_meta",
    "read_image",
    "read_mask",
    "resize_pair",
    "sample_positive",
    "siim_source",
    "source_identity",
    "source_path",
]


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


def _folders(images: Any = None, masks: Any = None, root: Any = None, **_: Any) -> Manifest:
    if root is not None:
        images = Path(root) / str(_given(images or "images", "image folder"))
        masks = Path(root) / str(_given(masks or "masks", "mask folder"))
    return folder_source(_given(images, "image folder"), _given(masks, "mask folder"))


def _siim(dicom: Any = None, labels: Any = None, root: Any = None, salt: str | None = None, rle_format: str = "auto",
          workers: int | None = None, isolate: bool = False, memory_limit: int | None = None, **_: Any) -> Manifest:
    if root is not None:
        dicom, labels = root, find_labels_csv(root)
    return siim_source(_given(dicom, "DICOM folder"), _given(labels, "label CSV"), salt=salt,
                       workers=workers, rle_format=rle_format, isolate=isolate, memory_limit=memory_limit)


def _demo(count: int = 400, size: int = 256, seed: int = 0, **_: Any) -> Manifest:
    return demo_source(count, size=size, seed=seed)


@dataclass(frozen=True)
class SourceKind:
    """What pneumo does with one kind of source."""

    from_spec: Callable[..., Manifest]  # manifest_from_spec's keywords -> the manifest
    load_pair: Callable[[Sample, int | None, str], tuple[np.ndarray, np.ndarray]]  # see load_pair
    is_positive: Callable[[Sample, int | None], bool]  # see sample_positive, when not known up front


#: The source kinds by name, checked equal to :data:`pneumo.config.SOURCE_KINDS` at import.
SOURCES: dict[str, SourceKind] = {
    "folders": SourceKind(_folders, folders.load_pair, folders.is_positive),
    "siim": SourceKind(_siim, siim.load_pair, siim.is_positive),
    "demo": SourceKind(_demo, demo.load_pair, demo.is_positive),
}
check_registry("pneumo.ingest.sources.SOURCES", SOURCES, SOURCE_KINDS)


def _kind(sample: Sample) -> SourceKind:
    if sample.kind not in SOURCES:
        raise InputError(f"sample {sample.id}: unknown source kind {sample.kind!r}")
    return SOURCES[sample.kind]


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
    return _kind(sample).load_pair(sample, max_pixels, dicom_window)


def load_for_pack(
    sample: Sample, size: int, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi"
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """``resize_pair(*load_pair(sample, max_pixels, dicom_window), size)`` (both ``(size, size)
    uint8``, mask {0, 255}) and the image's native ``(height, width)`` (the pack's source reference).

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


def source_identity(sample: Sample) -> tuple[int, int, str] | None:
    """What identifies a sample's image file (:func:`pneumo.ingest.pixels.file_identity`: byte
    size, mtime in ns, SHA-256), recorded by the pack beside :func:`source_path`; ``None`` for a
    phantom, which has no file."""
    if sample.kind == "demo":
        return None
    return file_identity(sample.image)


def source_path(sample: Sample) -> str:
    """Where a sample's image came from, as the pack records it: the image file (folders;
    SIIM: the DICOM), or ``demo:<phantom seed>`` for a phantom."""
    if sample.kind == "demo":
        return f"demo:{sample.phantom_seed}"
    return str(sample.image)


def sample_positive(sample: Sample, max_pixels: int | None = MAX_PIXELS) -> bool:
    """Whether the sample has pneumothorax: ``sample.positive`` when known, else asked of its kind
    (a folders sample decodes its mask within ``max_pixels``)."""
    if sample.positive is not None:
        return bool(sample.positive)
    return _kind(sample).is_positive(sample, max_pixels)


# ----------------------------------------------------------------------------- one entry point
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
    if kind not in SOURCES:
        raise InputError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
    return SOURCES[kind].from_spec(images=images, masks=masks, dicom=dicom, labels=labels, root=root, count=count,
                                   size=size, seed=seed, salt=salt, rle_format=rle_format, workers=workers,
                                   isolate=isolate, memory_limit=memory_limit)
