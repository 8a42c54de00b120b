"""The Review page's full-resolution view of the current case (issue 14, item 2).

The original image read from its source (the pack's source reference; DICOM through
:func:`pneumo.review.fullres.read_full_resolution` with its own window as the default), the model's
cached probabilities resized to the original size and post-processed exactly as
``python -m pneumo predict`` does (:func:`pneumo.review.fullres.prediction_at`), the target at the
original size, and pan/zoom that show real pixels: a crop of native pixels (integer zoom,
nearest) with a navigator (the whole image small, the crop box drawn). Only the crop and the
navigator are windowed, drawn and sent, never the whole image. When the source is gone or
the pack has no source references, one line says so and the pack's copy is shown instead.

Decoded images are shared by all sessions in a byte-bounded LRU (:class:`pneumo.review.fullres.ImageCache`
in ``st.cache_resource``, :func:`pneumo_app.review_cache.load_full`) keyed by (path, size, mtime):
``st.cache_data`` would bound them by count only and copy the array on every hit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from pneumo import evaluate
from pneumo.errors import InputError
from pneumo.review import cases as review
from pneumo.review import fullres
from pneumo.review.viz import PRED_COLOR, TARGET_COLOR
from pneumo_app import review_cache

VIEW_PX = 768  # side of the crop on screen (screen px): a 768 px PNG encodes in a few ms
NAV_PX = 256  # side of the navigator


def fullres_ui(data: review.ReviewData, case: review.Case, triplet: evaluate.Triplet) -> None:
    """A "Full resolution" toggle; when on, the viewer of ``case`` at its original size."""
    if not st.toggle("Full resolution", key="rv_fullres",
                     help="The original image from its source file at its own resolution and window, "
                          "with the target and the post-processed prediction drawn at that size."):
        return
    stamp = data.pack_stamp
    refs = review_cache.sources(str(data.pack_path), stamp.size, stamp.mtime_ns, data.split)
    check = fullres.check_source(None if refs is None else refs.get(case.id))
    full = None
    lo, hi = 0.0, 255.0
    native = False
    reason = check.reason
    if check.path is not None:
        try:
            full, lo, hi = review_cache.load_full(check.path)
            native = True
        except InputError as e:
            reason = f"the source file cannot be read ({e})"
    size = int(case.image.shape[0])
    if full is None:
        st.caption(f"Full resolution unavailable: {reason}; showing the pack's {size}x{size} copy.")
        full = fullres.pack_copy(case.image)
    height, width = (int(v) for v in full.pixels.shape[:2])
    t = (float(triplet.pixel_threshold), float(triplet.top_threshold), int(triplet.min_area))
    pred = review_cache.prediction_at((str(data.predictions_path), data.predictions_stamp.mtime_ns, case.index),
                                      case.probs, t, height, width)
    target = _native_target(data, case.id, height, width) if native else None
    if target is not None:
        target, target_how = target
    else:
        target = fullres.target_at(case.target, height, width)
        target_how = (f"the pack's {size} px mask resized nearest to {width}x{height}" if (height, width) != (size, size)
                      else f"the pack's {size} px mask")
    _viewer(case.id, full, lo, hi, pred, target, native=native, pack_size=size, target_how=target_how)


def _native_target(data: review.ReviewData, image_id: str, height: int, width: int) -> tuple[np.ndarray, str] | None:
    """A SIIM pack's target re-decoded from its label CSV at the native size, and how it was
    made; ``None`` when the pack did not record the CSV or the CSV is gone or unreadable."""
    found = review_cache.pack_labels(str(data.pack_path), data.pack_stamp.size, data.pack_stamp.mtime_ns)
    if found is None or not Path(found[0]).is_file():
        return None
    try:
        labels = review_cache.labels(*fullres.file_key(found[0]))
    except (InputError, OSError):
        return None
    mask = fullres.native_target(labels, image_id, height, width, found[1])
    if mask is None:
        return None
    return mask, f"the RLE of {Path(found[0]).name} decoded at {width}x{height}"


def _viewer(image_id: str, full: fullres.FullImage, lo: float, hi: float, pred: np.ndarray, target: np.ndarray,
            *, native: bool, pack_size: int, target_how: str) -> None:
    height, width = full.pixels.shape[:2]
    k = f"rv_fr::{image_id}::{height}x{width}"  # each case (and source) starts from its own defaults
    lo, hi = min(lo, full.center), max(hi, full.center)
    span = max(1.0, hi - lo + 1.0)
    step = 1.0 if full.pixels.dtype.kind in "iu" else max(span / 1000.0, 1e-6)
    hi = max(hi, lo + step)  # a uniform image at its window centre: a slider needs min < max
    c1, c2, c3 = st.columns([2, 2, 3])
    center = c1.slider("Window centre", float(lo), float(hi), float(full.center), step, key=k + "::c",
                       help=f"Starts from the file's own window ({full.window_source}).")
    wmax = float(max(span, full.width, 2 * step))
    wwidth = c2.slider("Window width", float(step), wmax, float(min(max(full.width, step), wmax)), step,
                       key=k + "::w")
    zoom_name = c3.select_slider("Zoom (screen px per image px)", fullres.ZOOMS, value="1:1", key=k + "::z")
    zoom = fullres.zoom_factor(zoom_name)
    masks = [(target, TARGET_COLOR), (pred, PRED_COLOR)]
    where = "source" if native else "pack copy"
    if zoom == 0:  # fit: the whole image, every k-th pixel
        img = fullres.draw_overview(full, center, wwidth, VIEW_PX, masks)
        st.image(review_cache.png_bytes(img), output_format="PNG", width=int(img.shape[1]),
                 caption=f"{width}x{height} ({where}), whole image at 1/{fullres.overview_step(height, width, VIEW_PX)}")
        box = None
    else:
        default = fullres.default_centre(pred, target) or (width // 2, height // 2)
        side = max(1, VIEW_PX // zoom)
        nav, pos = st.columns([1, 2])
        with pos:
            # a 1 px side has nothing to pan (and a slider needs min < max)
            cx = st.slider("Centre x (image px)", 0, width - 1, int(default[0]), key=k + "::x",
                           disabled=width <= side) if width > 1 else 0
            cy = st.slider("Centre y (image px)", 0, height - 1, int(default[1]), key=k + "::y",
                           disabled=height <= side) if height > 1 else 0
        box = fullres.crop_box(height, width, VIEW_PX, zoom, cx, cy)
        with nav:
            ov = fullres.draw_overview(full, center, wwidth, NAV_PX, masks, box)
            st.image(review_cache.png_bytes(ov), output_format="PNG", width=int(ov.shape[1]),
                     caption="Navigator: the yellow box is shown")
        top, left, h, w = box
        img = fullres.draw_crop(full, center, wwidth, box, zoom, masks)
        st.image(review_cache.png_bytes(img), output_format="PNG", width=int(img.shape[1]),
                 caption=f"{width}x{height} ({where}), x {left}..{left + w - 1}, y {top}..{top + h - 1}, "
                         f"crop {w}x{h} at {zoom_name}")
    st.caption(f"Window {center:g} / {wwidth:g} (file default {full.center:g} / {full.width:g}, {full.window_source}"
               f"{', MONOCHROME1 inverted' if full.invert else ''}). Target (green): {target_how}. "
               f"Prediction (red): the cached {pack_size} px probabilities resized bilinearly to "
               f"{width}x{height}, post-processed as `pneumo predict` does.")
