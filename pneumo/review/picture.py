"""One case as the reader sees it: the picture the Review page shows, and what a click on it means.

No streamlit, no TensorFlow. :func:`case_picture` draws the pack's copy of a case (values
0..255, magnified 1-4x about the finding); :func:`source_picture` draws the source image at
full resolution (its own values: DICOM units after the modality transform), whole ("fit") or
a crop at 1:1, 2:1, 4:1 native pixels per screen pixel, with an inset navigator (the whole
image, the crop framed) in a corner. Both take the same :class:`ViewSettings` (what the
toolbar and the keys set) and give a :class:`Picture`, whose :meth:`Picture.clicked` turns a
click at fractions of the picture into the image pixel to centre on (a click on the inset
jumps there).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np

from pneumo import evaluate
from pneumo.errors import InputError
from pneumo.review import fullres, view

#: Full-resolution zooms: "fit" (the whole image) or screen pixels per native pixel.
SOURCE_ZOOMS = ("fit", "1:1", "2:1", "4:1")
INSET_SHARE = 0.28  # the navigator's side over the picture's longer side
_INSET_FRAME = (255, 214, 0)


@dataclass(frozen=True)
class ViewSettings:
    """How a case is drawn (hashable: a cache key). ``window``: a preset of
    :data:`pneumo.review.view.WINDOW_PRESETS` or ``"custom"`` with ``custom = (center, width)``
    in the units of what is shown; ``centre``: the image pixel ``(x, y)`` to centre a zoom on
    (None: the finding); ``magnify`` (pack copy) or ``zoom`` (source)."""

    overlay: bool = True
    heat: bool = False
    magnify: int = 1
    zoom: str = "fit"
    window: str = "default"
    custom: tuple[float, float] | None = None
    centre: tuple[int, int] | None = None
    mode: str = "outline"
    alpha: float = 0.9

    def __post_init__(self) -> None:
        if self.magnify not in view.MAGNIFY:
            raise InputError(f"magnification {self.magnify!r}: choose one of {', '.join(map(str, view.MAGNIFY))}")
        if self.zoom not in SOURCE_ZOOMS:
            raise InputError(f"zoom {self.zoom!r}: choose one of {', '.join(SOURCE_ZOOMS)}")
        if self.window != "custom" and self.window not in view.WINDOW_PRESETS:
            raise InputError(f"window {self.window!r}: choose one of {', '.join(view.WINDOW_PRESETS)} or custom")
        if self.window == "custom" and (self.custom is None or not self.custom[1] > 0):
            raise InputError(f"a custom window needs a centre and a width > 0, got {self.custom!r}")


@dataclass(frozen=True)
class Picture:
    """What was drawn: ``rgb`` ``(h, w, 3) uint8``; ``box`` ``(top, left, h, w)`` of the image
    shown in the main area; ``window`` ``(center, width)`` in ``units``; ``inset`` ``(x0, y0,
    x1, y1)`` screen rectangle of the navigator (None without one) and ``step`` image pixels per
    navigator pixel; ``shape`` the image's ``(H, W)``; ``centre`` the image pixel the view is
    centred on."""

    rgb: np.ndarray
    box: tuple[int, int, int, int]
    window: tuple[float, float]
    units: str
    shape: tuple[int, int]
    centre: tuple[int, int]
    inset: tuple[int, int, int, int] | None = None
    step: float = 1.0

    def clicked(self, fx: float, fy: float) -> tuple[int, int]:
        """The image pixel ``(x, y)`` a click at fractions ``(fx, fy)`` of the picture points at:
        inside the navigator, the place it shows; elsewhere, the pixel under the click."""
        h, w = self.rgb.shape[:2]
        sx, sy = float(fx) * w, float(fy) * h
        if self.inset is not None:
            x0, y0, x1, y1 = self.inset
            if x0 <= sx < x1 and y0 <= sy < y1:
                H, W = self.shape
                return (int(min(W - 1, (sx - x0) * self.step)), int(min(H - 1, (sy - y0) * self.step)))
        return view.click_to_image(self.box, fx, fy)

    def without_pixels(self) -> "Picture":
        """The same description with an empty ``(h, w, 0)`` array for pixels (what a cache of
        encoded pictures keeps beside the PNG: :meth:`clicked` needs only the shape)."""
        return replace(self, rgb=np.empty((*self.rgb.shape[:2], 0), np.uint8))

    def png(self) -> bytes:
        """The picture as a fast lossless PNG (zlib level 1)."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(self.rgb)).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


def _window(settings: ViewSettings, default: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    if settings.window == "custom":
        return float(settings.custom[0]), float(settings.custom[1])
    return view.preset_window(settings.window, default[0], default[1], lo, hi)


def case_picture(image: np.ndarray, target: np.ndarray, probs: np.ndarray, triplet: evaluate.Triplet,
                 settings: ViewSettings, out_px: int) -> Picture:
    """The pack's copy of a case: ``image``, ``target`` (0/255) and ``probs`` (levels) each
    ``(S, S) uint8``; the prediction is the post-processed mask that was scored
    (:func:`pneumo.evaluate.postprocess`). Magnified about ``settings.centre``, else the
    prediction's (then the target's) bounding-box centre."""
    image, target, probs = (np.asarray(a).reshape(np.shape(a)[0], np.shape(a)[1]) for a in (image, target, probs))
    pred = evaluate.postprocess(probs[None], triplet)[0]
    H, W = image.shape
    centre = settings.centre or view.focus((H, W), pred, target)
    box = view.magnify_box(H, W, settings.magnify, *centre)
    window = _window(settings, view.pack_window(), 0.0, 255.0)
    rgb = view.render(image, *window, box, out_px, target=target, pred=pred, probs=probs,
                      overlay=settings.overlay, heat=settings.heat, mode=settings.mode, alpha=settings.alpha)
    return Picture(rgb, box, window, "pack values 0-255", (H, W), (int(centre[0]), int(centre[1])))


def source_picture(full: fullres.FullImage, lo: float, hi: float, target: np.ndarray, pred: np.ndarray,
                   probs: np.ndarray, settings: ViewSettings, out_px: int, units: str) -> Picture:
    """The source image at its native size (``full``, values ``lo..hi``) with ``target`` and
    ``pred`` at that size and the cached ``probs`` ``(S, S)`` for the heat map: the whole image
    at ``zoom="fit"``, else a crop of native pixels (square pixels, no smoothing) with an inset
    navigator."""
    H, W = full.pixels.shape[:2]
    centre = settings.centre or view.focus((H, W), pred, target)
    window = _window(settings, (full.center, full.width), lo, hi)
    common = dict(invert=full.invert, target=target, pred=pred, probs=probs, overlay=settings.overlay,
                  heat=settings.heat, mode=settings.mode, alpha=settings.alpha)
    if settings.zoom == "fit":
        box = (0, 0, H, W)
        rgb = view.render(full.pixels, *window, box, out_px, **common)
        return Picture(rgb, box, window, units, (H, W), (int(centre[0]), int(centre[1])))
    zoom = fullres.zoom_factor(settings.zoom)
    box = fullres.crop_box(H, W, out_px, zoom, *centre)
    rgb = view.render(full.pixels, *window, box, box_side(box, zoom, out_px), smooth=False, **common)
    side = max(48, int(max(rgb.shape[:2]) * INSET_SHARE))
    inset = view.render(full.pixels, *window, (0, 0, H, W), side, invert=full.invert, target=target, pred=pred,
                        overlay=settings.overlay, thickness=1)
    ih, iw = inset.shape[:2]
    scale = max(H / ih, W / iw)  # image pixels per navigator pixel
    top, left, h, w = box
    y0, x0 = int(top / scale), int(left / scale)
    y1, x1 = min(ih - 1, int((top + h - 1) / scale)), min(iw - 1, int((left + w - 1) / scale))
    inset[[y0, y1], x0:x1 + 1] = _INSET_FRAME  # the crop's place in the whole image
    inset[y0:y1 + 1, [x0, x1]] = _INSET_FRAME
    if ih + 4 > rgb.shape[0] or iw + 4 > rgb.shape[1]:  # a picture too small for a navigator
        return Picture(rgb, box, window, units, (H, W), (int(centre[0]), int(centre[1])))
    rgb = rgb.copy()
    x0, y0 = rgb.shape[1] - iw - 2, 2
    rgb[y0 - 2:y0 + ih + 2, x0 - 2:x0 + iw + 2] = _INSET_FRAME
    rgb[y0:y0 + ih, x0:x0 + iw] = inset
    return Picture(rgb, box, window, units, (H, W), (int(centre[0]), int(centre[1])), (x0, y0, x0 + iw, y0 + ih),
                   scale)


def box_side(box: tuple[int, int, int, int], zoom: int, out_px: int) -> int:
    """The screen size of a crop at ``zoom`` screen pixels per native pixel (at most ``out_px``)."""
    return min(int(out_px), max(box[2], box[3]) * int(zoom))


def with_centre(settings: ViewSettings, centre: tuple[int, int] | None) -> ViewSettings:
    """``settings`` centred on ``centre`` (None: back to the finding)."""
    return replace(settings, centre=None if centre is None else (int(centre[0]), int(centre[1])))
