"""The Review page's cached readers, shared by its widget modules (``review_ui``, ``review_case``,
``review_nav``, ``review_readers``, ``review_fullres``); this module imports none of them.

Speed with thousands of images: the per-image histograms are computed once per version of
the predictions and the pack (``st.cache_resource`` keyed by :func:`pneumo.review.cases.identity`:
path, size and mtime of both files and a digest of the split's ids, so a re-packed pack is
never read under the old ids); a threshold change re-scores them in O(N) (``st.cache_data``);
only the shown cases' pixels are read, each with its id from the same read, and kept in a
byte-bounded cache shared by every session. Full-resolution images decoded from their
source files, masks at their size and the encoded case pictures are shared the same way; a
:class:`pneumo.review.prefetch.Prefetcher` draws the next case's picture in a background thread.
Code that may run in that thread gets its cached objects from here in the script's thread
first (``case_getter``, ``full_getter``): no Streamlit call runs outside a script run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st

from pneumo import evaluate
from pneumo.review import cases as review
from pneumo.review import fullres, picture
from pneumo.review.prefetch import Prefetcher

Ident = tuple[str, int, int, str, int, int, str]

# Pixels of the cases shown, shared by every session: bounded in bytes, not entries (a grid
# page of 1024 px cases weighs ~57 MB). The arrays are read-only since sessions share them.
CASES_CACHE_BYTES = 256 * 1024**2
FULLRES_CACHE_BYTES = 512 * 2**20  # decoded source images kept: ~25 3000x3000 16-bit images
PICTURES_CACHE_BYTES = 96 * 2**20  # encoded case views: ~2,000 of ~50 kB, every reader's Next and Previous
MASKS_CACHE_BYTES = 256 * 2**20  # predictions and targets at the source's size: ~14 pairs of 3000x3000


def png_bytes(image: np.ndarray) -> bytes:
    """Encode ``(H, W[, 3]) uint8`` as a fast PNG (zlib level 1).

    ``st.image`` given a numpy RGB array sends a JPEG: lossy, it smears one-pixel outlines and
    the X-ray's texture. A PNG at level 1 is lossless and about 3x faster than the default;
    pass it with ``output_format="PNG"`` or Streamlit re-encodes it as JPEG.
    """
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------- predictions and scores
def files_ident(run_dir: Path, split: str) -> Ident:
    """The cache key of the run's files now; a page run computes it once and passes it down
    (it opens the predictions file and reads config.json)."""
    pred, pack, digest = review.identity(run_dir, split)
    return (pred.path, pred.size, pred.mtime_ns, pack.path, pack.size, pack.mtime_ns, digest)


@st.cache_resource(show_spinner="Reading the cached predictions...", max_entries=4)
def _data(run_dir: str, split: str, ident: Ident) -> review.ReviewData:
    data = review.ReviewData(run_dir, split, pack_path=ident[3])
    _ = data.stats  # one pass over all predictions; everything after is O(N) or per case
    return data


def load_data(run_dir: Path, split: str, ident: Ident | None = None) -> review.ReviewData:
    """The run's :class:`ReviewData` with its histograms, shared by all sessions while the
    predictions file and the pack are unchanged (``ident``: :func:`files_ident` of this page run,
    computed here when not given)."""
    return _data(str(run_dir), split, ident or files_ident(run_dir, split))


@st.cache_data(show_spinner=False, max_entries=64)
def _evaluate(run_dir: str, split: str, ident: Ident, triplet: tuple[float, float, int]) -> review.Evaluation:
    return _data(run_dir, split, ident).evaluate(evaluate.Triplet(*triplet))


def evaluation(run_dir: Path, split: str, triplet: evaluate.Triplet, ident: Ident | None = None
               ) -> review.Evaluation:
    """Scores of every image under ``triplet`` (cached per triplet and file versions)."""
    t = (float(triplet.pixel_threshold), float(triplet.top_threshold), int(triplet.min_area))
    return _evaluate(str(run_dir), split, ident or files_ident(run_dir, split), t)


# --------------------------------------------------------------------------- pixels of the cases shown
def _case_bytes(cases: list[review.Case]) -> int:
    return sum(c.image.nbytes + c.target.nbytes + c.probs.nbytes for c in cases)


@st.cache_resource(show_spinner=False)
def _case_cache() -> fullres.ImageCache:
    return fullres.ImageCache(CASES_CACHE_BYTES, sizeof=_case_bytes)


def _read_only(cases: list[review.Case]) -> list[review.Case]:
    for c in cases:
        for a in (c.image, c.target, c.probs):
            a.setflags(write=False)
    return cases


@st.cache_resource(show_spinner=False)
def _case_loader() -> Prefetcher:
    return Prefetcher(_case_cache())


def _cases(run_dir: str, split: str, ident: Ident, indices: tuple[int, ...]) -> list[review.Case]:
    data = _data(run_dir, split, ident)
    return _case_loader().get((run_dir, split, ident, indices), lambda: _read_only(data.cases(list(indices))))


def read_cases(run_dir: Path, split: str, indices: list[int], ident: Ident | None = None) -> list[review.Case]:
    """Pixels and ids of only these cases (cached per set of indices and file versions)."""
    return _cases(str(run_dir), split, ident or files_ident(run_dir, split), tuple(int(i) for i in indices))


def case_getter(run_dir: Path, split: str, ident: Ident) -> Callable[[int], review.Case]:
    """``get(index) -> Case`` for this page run's files, safe to call from any thread (the
    prefetcher's): the cached objects are fetched here, in the script's thread."""
    data, loader, run, ident = _data(str(run_dir), split, ident), _case_loader(), str(run_dir), tuple(ident)

    def get(index: int) -> review.Case:
        i = int(index)
        return loader.get((run, split, ident, (i,)), lambda: _read_only(data.cases([i])))[0]

    return get


# --------------------------------------------------------------------------- pictures
# Readers reviewing together step through the same cases in the same order: the second
# one's Next reuses the first one's encoded picture, and each reader's next case is drawn
# while they look at the current one (a background thread: pneumo.review.prefetch).
@st.cache_resource(show_spinner=False)
def _pictures() -> Prefetcher:
    return Prefetcher(fullres.ImageCache(PICTURES_CACHE_BYTES, sizeof=lambda v: len(v[0]) + 512))


PictureJob = Callable[[], "tuple[bytes, picture.Picture]"]


def picture_of(key: tuple, job: PictureJob) -> tuple[bytes, picture.Picture]:
    """The encoded picture of ``key`` (made by ``job`` when not held or being made):
    ``(png, the Picture without its pixels)``."""
    return _pictures().get(key, job)


def prefetch_picture(key: tuple, job: PictureJob) -> None:
    """Make the picture of ``key`` in the background (nothing when held or under way)."""
    _pictures().prefetch(key, job)


def pack_picture_job(get_case: Callable[[int], review.Case], index: int, triplet: tuple[float, float, int],
                     settings: picture.ViewSettings, out_px: int) -> PictureJob:
    """The job drawing case ``index``'s pack copy (:func:`pneumo.review.picture.case_picture`)."""

    def job() -> tuple[bytes, picture.Picture]:
        case = get_case(index)
        pic = picture.case_picture(case.image, case.target, case.probs, evaluate.Triplet(*triplet), settings, out_px)
        return pic.png(), pic.without_pixels()

    return job


# --------------------------------------------------------------------------- full resolution
class _Loaded:
    """A decoded image and its value range, as the byte-bounded cache holds it."""

    __slots__ = ("full", "lo", "hi", "pixels")

    def __init__(self, full: fullres.FullImage, lo: float, hi: float) -> None:
        self.full, self.lo, self.hi = full, lo, hi
        self.pixels = full.pixels  # what ImageCache weighs


@st.cache_resource(show_spinner=False)
def _full_loader() -> Prefetcher:
    return Prefetcher(fullres.ImageCache(FULLRES_CACHE_BYTES))


def full_getter() -> Callable[[str], tuple[fullres.FullImage, float, float]]:
    """``get(path) -> (image, lo, hi)``: the decoded source at its native size (cached by path,
    size and mtime, shared by every session) and its value range; safe from any thread."""
    loader = _full_loader()

    def get(path: str) -> tuple[fullres.FullImage, float, float]:
        def _load() -> _Loaded:
            f = fullres.read_full_resolution(path)
            from pneumo.review.view import value_range

            return _Loaded(f, *value_range(f.pixels))

        got = loader.get(fullres.file_key(path), _load)
        return got.full, got.lo, got.hi

    return get


def load_full(path: str) -> tuple[fullres.FullImage, float, float]:
    """:func:`full_getter`'s image of ``path``, from the script's thread."""
    return full_getter()(path)


@st.cache_resource(show_spinner=False)
def masks_cache() -> Prefetcher:
    """Predictions and targets at a source's native size, shared by every session (bounded in bytes)."""
    return Prefetcher(fullres.ImageCache(MASKS_CACHE_BYTES, sizeof=lambda m: getattr(m, "nbytes", 0)))


@st.cache_resource(show_spinner=False, max_entries=8)  # read-only: a hit must not unpickle MBs
def sources(pack_path: str, size: int, mtime_ns: int, split: str) -> dict | None:
    """:func:`pneumo.review.fullres.sources_by_id` of one version (path, size, mtime) of a pack."""
    return fullres.sources_by_id(pack_path, split)


@st.cache_data(show_spinner=False, max_entries=4)
def pack_labels(pack_path: str, size: int, mtime_ns: int) -> tuple[str, bool] | None:
    """:func:`pneumo.review.fullres.siim_labels` of one version of a pack."""
    return fullres.siim_labels(pack_path)


@st.cache_resource(show_spinner=False, max_entries=2)  # read-only: a hit must not unpickle MBs
def labels(path: str, size: int, mtime_ns: int) -> dict:
    """The decoded SIIM label CSV at ``path`` (one version of it), by image id."""
    from pneumo.ingest.siim_labels import read_labels

    return read_labels(Path(path))[0]
