"""What a source describes: :class:`Sample` records (one image/mask pair each, picklable, decoded
later in a worker) and the :class:`Manifest` that holds them with what was skipped and why."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

__all__ = ["Sample", "Manifest", "id_problem", "shown"]

# Characters an image id may not hold, by Unicode category: control characters (C0 with tab,
# CR and LF, DEL, C1) split CSV rows and drive terminals; format characters (bidirectional
# overrides, zero-width spaces) make one id display as another; line and paragraph
# separators break line-based reading; surrogates are file-name bytes that are not UTF-8.
_REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible format character",
                       "Zl": "a line separator", "Zp": "a paragraph separator",
                       "Cs": "bytes that are not valid UTF-8"}


def id_problem(image_id: str) -> str | None:
    """Why ``image_id`` cannot be a pack's id (one phrase), or ``None`` when it can.

    Refused: the characters of ``_REFUSED_CATEGORIES`` and leading or trailing white space
    (exclusion lists are read with their cells trimmed, so such an id could never be listed).
    """
    for c in image_id:
        what = _REFUSED_CATEGORIES.get(unicodedata.category(c))
        if what is not None:
            return f"its id '{shown(image_id)}' holds {what} (U+{ord(c):04X}), which breaks CSV files and terminals"
    if image_id != image_id.strip():
        return f"its id '{shown(image_id)}' starts or ends with white space"
    return None


def shown(text: str) -> str:
    """``text`` safe to print or store: every character :func:`id_problem` refuses escaped
    (``\\r``, ``\\x85``, ``\\u202e``, ``\\udcff``), the rest as it is (so accented names stay
    readable). Used for ids and file names in messages and on the console; showing an already
    shown text changes nothing."""
    if not any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in text):
        return text
    return "".join(c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if unicodedata.category(c) in _REFUSED_CATEGORIES else c for c in text)


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
