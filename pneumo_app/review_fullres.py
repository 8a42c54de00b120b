"""The Review page's full-resolution view of a case (issue 14 item 2, issue 19): what to draw.

The original image read from its source (the pack's source reference; DICOM through
:func:`pneumo.review.fullres.read_full_resolution` with its own window as the default), the
model's cached probabilities resized to the original size and post-processed exactly as
``python -m pneumo predict`` does (:func:`pneumo.review.fullres.prediction_at`), and the target
at the original size (a SIIM pack's RLE decoded again, else the pack's mask resized nearest).
When the source is gone, replaced, or the pack has no source references, :attr:`Source.reason`
says so in one line and the pack's copy is drawn instead. The picture itself is
:func:`pneumo.review.picture.source_picture` (the same toolbar as the pack's view; the window
in the source's own units).

Everything here is built in the script's thread as a *job*: a plain function over objects
fetched from the caches beforehand, which the prefetcher may run in its background thread for
the next case (Next within half a second with full resolution on). Decoded sources, masks at
native size and encoded pictures are shared by every session in byte-bounded caches
(:mod:`pneumo_app.review_cache`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pneumo import evaluate
from pneumo.errors import InputError
from pneumo.review import cases as review
from pneumo.review import fullres, picture
from pneumo_app import review_cache


@dataclass(frozen=True)
class Source:
    """What the full-resolution view draws for one case: ``full`` (values ``lo..hi`` in
    ``units``), the ``target`` and ``pred`` masks at its size (``target_how`` says how the
    target was made); ``native`` False with a ``reason`` when the pack's copy stands in."""

    full: fullres.FullImage
    lo: float
    hi: float
    native: bool
    reason: str | None
    units: str
    target: np.ndarray
    target_how: str
    pred: np.ndarray

    def caption(self, pack_size: int) -> str:
        """Where the pixels and both masks come from, in one sentence."""
        h, w = self.full.pixels.shape[:2]
        where = "source" if self.native else "pack copy"
        return (f"{w}x{h} ({where}); window from the file: {self.full.center:g} / {self.full.width:g} "
                f"({self.full.window_source}{', MONOCHROME1 inverted' if self.full.invert else ''}). "
                f"Target (green): {self.target_how}. Prediction (red): the cached {pack_size} px probabilities "
                f"resized bilinearly to {w}x{h}, post-processed as `pneumo predict` does.")


def _units(full: fullres.FullImage, native: bool) -> str:
    if not native:
        return "pack values 0-255"
    return "DICOM units" if full.photometric.startswith("MONOCHROME") else "image values"


def source_job(data: review.ReviewData, get_case: Callable[[int], review.Case], index: int, case_id: str,
               triplet: tuple[float, float, int]) -> Callable[[], Source]:
    """A job making case ``index``'s :class:`Source` (safe to run in another thread): the
    pack's source references and SIIM labels are fetched here, in the script's thread."""
    stamp = data.pack_stamp
    refs = review_cache.sources(str(data.pack_path), stamp.size, stamp.mtime_ns, data.split)
    check = fullres.check_source(None if refs is None else refs.get(case_id))
    labels_csv = review_cache.pack_labels(str(data.pack_path), stamp.size, stamp.mtime_ns)
    labels = None
    if labels_csv is not None and Path(labels_csv[0]).is_file():
        try:
            labels = review_cache.labels(*fullres.file_key(labels_csv[0]))
        except (InputError, OSError):
            labels = None
    load_full, masks = review_cache.full_getter(), review_cache.masks_cache()
    pred_key = (str(data.predictions_path), data.predictions_stamp.mtime_ns, int(index), tuple(triplet))
    t = evaluate.Triplet(*triplet)

    def job() -> Source:
        case = get_case(index)
        size = int(case.image.shape[0])
        full, native, reason = None, False, check.reason
        lo, hi = 0.0, 255.0
        if check.path is not None:
            try:
                full, lo, hi = load_full(check.path)
                native = True
            except InputError as e:
                reason = f"the source file cannot be read ({e})"
            if full is not None and (mismatch := fullres.size_mismatch(check, full)) is not None:
                full, native, reason = None, False, mismatch  # another picture now at that path
        if full is None:
            full, lo, hi = fullres.pack_copy(case.image), 0.0, 255.0
        height, width = (int(v) for v in full.pixels.shape[:2])
        pred = masks.get((*pred_key, height, width), lambda: fullres.prediction_at(case.probs, t, height, width))
        target, how = None, ""
        if native and labels is not None:
            target = masks.get(("rle", labels_csv[0], case_id, height, width),
                               lambda: fullres.native_target(labels, case_id, height, width, labels_csv[1]))
            how = f"the RLE of {Path(labels_csv[0]).name} decoded at {width}x{height}"
        if target is None:
            target = masks.get(("pack", str(data.pack_path), stamp.mtime_ns, case_id, height, width),
                               lambda: fullres.target_at(case.target, height, width))
            how = (f"the pack's {size} px mask resized nearest to {width}x{height}" if (height, width) != (size, size)
                   else f"the pack's {size} px mask")
        return Source(full, lo, hi, native, reason, _units(full, native), target, how, pred)

    return job


def picture_job(source: Callable[[], Source], get_case: Callable[[int], review.Case], index: int,
                settings: picture.ViewSettings, out_px: int) -> review_cache.PictureJob:
    """The job drawing case ``index`` at full resolution (:func:`pneumo.review.picture.source_picture`)."""

    def job():
        src, case = source(), get_case(index)
        pic = picture.source_picture(src.full, src.lo, src.hi, src.target, src.pred, case.probs, settings, out_px,
                                     src.units)
        return pic.png(), pic.without_pixels()

    return job


def source_stamp(data: review.ReviewData, case_id: str) -> tuple | None:
    """What identifies case ``case_id``'s source file now (path, size, mtime; None without one):
    part of a cached picture's key, so a replaced file is drawn again."""
    stamp = data.pack_stamp
    refs = review_cache.sources(str(data.pack_path), stamp.size, stamp.mtime_ns, data.split)
    check = fullres.check_source(None if refs is None else refs.get(case_id))
    if check.path is None:
        return None
    try:
        return fullres.file_key(check.path)
    except OSError:
        return None


def source_of(data: review.ReviewData, get_case: Callable[[int], review.Case], index: int, case_id: str,
              triplet: tuple[float, float, int]) -> Source:
    """Case ``index``'s :class:`Source` now (waiting for a prefetch of it under way)."""
    return source_job(data, get_case, index, case_id, triplet)()
