"""What a source describes: :class:`Sample` records (one image/mask pair each, picklable, decoded
later in a worker) and the :class:`Manifest` that holds them with what was skipped and why."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Sample", "Manifest"]


@dataclass(frozen=True)
class Sample:
    """One (image, mask) pair of a manifest; picklable, decoded by :func:`pneumo.ingest.sources.load_pair`."""

    id: str  # unique in a manifest; stored in the pack's ids_<split>
    patient: str  # grouping key: salted hash of PatientID (SIIM), else the id
    kind: str  # a source kind: pneumo.config.SOURCE_KINDS
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
