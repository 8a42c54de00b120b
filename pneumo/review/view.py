"""The Review page's case view: one large picture of a case, drawn at the size it is shown.

No streamlit, no TensorFlow. The same drawing serves the pack's copy of an image (values
0..255) and the source at full resolution (DICOM values after the modality transform, see
:mod:`pneumo.review.fullres`): a region ``box`` of the image is windowed in the units of those
values, resized to the screen size (smooth or with square pixels), and the target (green) and
the post-processed prediction (red) are outlined *at screen resolution*, so an outline is a
thin line on a magnified image instead of a band as wide as a magnified pixel. The heat map
samples the cached probabilities at each screen pixel (bilinear).

* :data:`WINDOW_PRESETS` and :func:`preset_window`: one window/level control in the units of
  what is shown, presets relative to the image's own default window.
* :func:`focus` and :func:`magnify_box`: zoom centred on the predicted, else the labelled region.
* :func:`render`: the picture; :func:`click_to_image`: where a click on it points.
"""
from __future__ import annotations

import math
import numpy as np

from pneumo.errors import InputError
from pneumo.ingest.windowing import window_to_uint8
from pneumo.review import viz

#: Window presets, in the order the W key cycles through them.
WINDOW_PRESETS = ("default", "contrast", "dark", "full")
WINDOW_LABELS = {
    "default": "Default",        # the image's own window: the file's for DICOM, 0-255 for the pack's copy
    "contrast": "High contrast",  # the same centre, half the width
    "dark": "Dark areas",         # the lower half of the default window stretched: air, lung markings
    "full": "Full range",         # every value of the image from black to white
}
#: Magnifications of the case view (screen size over the whole image's).
MAGNIFY = (1, 2, 3, 4)


def preset_window(preset: str, center: float, width: float, lo: float, hi: float) -> tuple[float, float]:
    """``(center, width)`` of ``preset`` for an image whose own window is ``(center, width)``
    and whose values span ``lo..hi`` (same units). :class:`InputError` for an unknown preset."""
    if preset not in WINDOW_PRESETS:
        raise InputError(f"unknown window preset {preset!r}; choose one of {', '.join(WINDOW_PRESETS)}")
    w = max(float(width), 1e-6)
    if preset == "default":
        return float(center), w
    if preset == "contrast":
        return float(center), w / 2.0
    if preset == "dark":
        return float(center) - w / 4.0, w / 2.0
    span = max(float(hi) - float(lo), 1e-6)
    return (float(lo) + float(hi)) / 2.0, span


def next_preset(preset: str) -> str:
    """The preset after ``preset`` in :data:`WINDOW_PRESETS` (W), wrapping round."""
    k = WINDOW_PRESETS.index(preset) if preset in WINDOW_PRESETS else -1
    return WINDOW_PRESETS[(k + 1) % len(WINDOW_PRESETS)]


def focus(shape: tuple[int, int], *masks: np.ndarray | None) -> tuple[int, int]:
    """``(cx, cy)``: the centre of the bounding box of the first non-empty mask (pass the
    prediction, then the target), else the image's centre."""
    for m in masks:
        if m is None:
            continue
        a = np.asarray(m)
        rows, cols = np.flatnonzero(np.any(a, axis=1)), np.flatnonzero(np.any(a, axis=0))
        if rows.size:
            return int((cols[0] + cols[-1] + 1) // 2), int((rows[0] + rows[-1] + 1) // 2)
    return int(shape[1]) // 2, int(shape[0]) // 2


def magnify_box(height: int, width: int, magnify: int, cx: float, cy: float) -> tuple[int, int, int, int]:
    """``(top, left, h, w)``: the region shown at ``magnify`` (1: the whole image), a
    ``1/magnify`` share of each side centred as near ``(cx, cy)`` as the image allows."""
    m = int(magnify)
    if m < 1:
        raise InputError(f"magnification must be >= 1, got {magnify}")
    h, w = max(1, math.ceil(height / m)), max(1, math.ceil(width / m))
    top = int(min(max(round(cy - h / 2), 0), height - h))
    left = int(min(max(round(cx - w / 2), 0), width - w))
    return top, left, h, w


def out_shape(box: tuple[int, int, int, int], out_px: int) -> tuple[int, int]:
    """The screen size ``(h, w)`` of ``box`` drawn with its longer side ``out_px``."""
    _, _, h, w = box
    scale = out_px / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def click_to_image(box: tuple[int, int, int, int], fx: float, fy: float) -> tuple[int, int]:
    """The image pixel ``(x, y)`` under a click at fractions ``(fx, fy)`` (0..1) of the picture of ``box``."""
    top, left, h, w = box
    fx, fy = min(max(float(fx), 0.0), 1.0), min(max(float(fy), 0.0), 1.0)
    return int(min(left + fx * w, left + w - 1)), int(min(top + fy * h, top + h - 1))


def _resize(a: np.ndarray, box: tuple[float, float, float, float], shape: tuple[int, int], how: str) -> np.ndarray:
    """The region ``box = (left, top, right, bottom)`` (float pixel edges) of ``(H, W) uint8``
    resized to ``shape = (h, w)`` by Pillow (``how``: "nearest", "bilinear" or "box")."""
    from PIL import Image

    method = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
              "box": Image.Resampling.BOX}[how]
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8))
    return np.asarray(img.resize((int(shape[1]), int(shape[0])), method, box=tuple(float(v) for v in box)))


def _mask_at(mask: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """``mask`` over ``box`` at screen ``shape``, ``(h, w) bool``: nearest when enlarging; when
    shrinking, a screen pixel is set when any image pixel it covers is (a thin band stays visible)."""
    top, left, h, w = box
    m = np.asarray(mask)[top:top + h, left:left + w] != 0
    if not m.any():
        return np.zeros(shape, bool)
    # an area average of 0/255 stays above 0 wherever one pixel of the area is set (up to 510
    # pixels an area: images up to ~10,000 px on this screen), so a one-pixel band survives
    m8 = m.view(np.uint8) * np.uint8(255)
    how = "box" if shape[0] < m.shape[0] or shape[1] < m.shape[1] else "nearest"
    return _resize(m8, (0, 0, m.shape[1], m.shape[0]), shape, how) > 0


def _blend(rgb: np.ndarray, where: np.ndarray, color: np.ndarray, alpha: np.ndarray | float) -> None:
    """In place, integer arithmetic: ``rgb[where] = round((1 - a) * rgb + a * color)``: ``alpha``
    a scalar in 0..1 or ``(K,)`` uint8 weights over 255 for the K pixels of ``where``; ``color``
    ``(3,)`` or ``(K, 3)``."""
    a = np.asarray(alpha)
    a = (a if a.ndim else np.full(int(np.count_nonzero(where)), round(float(alpha) * 255))).astype(np.uint16)
    c = (color if color.ndim == 2 else color[None, :]).astype(np.uint16)
    px = rgb[where].astype(np.uint16)
    rgb[where] = ((px * (255 - a)[:, None] + c * a[:, None] + 127) // 255).astype(np.uint8)


def render(pixels: np.ndarray, center: float, width: float, box: tuple[int, int, int, int], out_px: int, *,
           invert: bool = False, smooth: bool = True, target: np.ndarray | None = None,
           pred: np.ndarray | None = None, probs: np.ndarray | None = None, overlay: bool = True,
           heat: bool = False, mode: str = "outline", alpha: float = 0.9, thickness: int = 2) -> np.ndarray:
    """The region ``box = (top, left, h, w)`` of ``pixels`` ``(H, W)`` (any numeric values)
    windowed with ``(center, width)`` (DICOM LINEAR; ``invert`` for MONOCHROME1) and drawn with
    its longer side ``out_px``: ``(oh, ow, 3) uint8``.

    ``smooth``: bilinear when enlarging (the pack's small copy); False shows square pixels (the
    source at 2:1). ``target`` and ``pred`` are ``(H, W)`` masks (any dtype, non-zero inside)
    outlined ``thickness`` screen pixels wide (``mode="fill"`` tints them) in green and red,
    ``alpha`` opaque, when ``overlay``; ``heat`` blends the heat map of ``probs`` (``(S, S)
    uint8`` levels over the whole image, resampled bilinearly to each screen pixel) under the
    outlines. Only the region is windowed and resized: the cost follows the screen, not the image."""
    if mode not in ("outline", "fill"):
        raise InputError(f"overlay mode must be 'outline' or 'fill', got {mode!r}")
    top, left, h, w = (int(v) for v in box)
    H, W = pixels.shape[:2]
    if not (0 <= top and 0 <= left and h > 0 and w > 0 and top + h <= H and left + w <= W):
        raise InputError(f"view box {box} is not inside the {H}x{W} image")
    oh, ow = out_shape((top, left, h, w), out_px)
    # Shrinking: every s-th pixel first, then an area average, so the cost follows the screen
    # and fine texture does not alias into stripes (every k-th pixel alone would).
    k = max(1, -(-min(h // oh, w // ow) // 2))
    gray = window_to_uint8(pixels[top:top + h:k, left:left + w:k], center, width, invert)
    enlarge = oh > gray.shape[0] or ow > gray.shape[1]
    how = ("bilinear" if smooth else "nearest") if enlarge else "box"
    gray = _resize(gray, (0, 0, gray.shape[1], gray.shape[0]), (oh, ow), how)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if heat and probs is not None:
        p = np.asarray(probs).reshape(np.shape(probs)[0], np.shape(probs)[1])
        sy, sx = p.shape[0] / H, p.shape[1] / W
        levels = _resize(p, (left * sx, top * sy, (left + w) * sx, (top + h) * sy), (oh, ow), "bilinear")
        seen = levels >= 13  # below 5 %: nothing drawn, the X-ray stays as it is
        lv = levels[seen]
        _blend(rgb, seen, viz.heatmap(lv[None, :])[0], (lv.astype(np.uint16) * 153 // 255).astype(np.uint8))
    if overlay:
        for mask, color in ((target, viz.TARGET_COLOR), (pred, viz.PRED_COLOR)):
            if mask is not None:
                m = _mask_at(mask, (top, left, h, w), (oh, ow))
                where = viz.outline(m, thickness) if mode == "outline" else m
                _blend(rgb, where, np.asarray(color, np.uint8), alpha)
    return rgb


def pack_window() -> tuple[float, float]:
    """The pack copy's own window: values 0..255 shown as they are (``center, width``)."""
    from pneumo.ingest.windowing import full_range_window

    return full_range_window(0, 255)


def value_range(pixels: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` of the finite values of ``pixels`` (``(0, 1)`` when there are none)."""
    a = np.asarray(pixels)
    if a.dtype.kind == "f":
        a = a[np.isfinite(a)]
    if not a.size:
        return 0.0, 1.0
    return float(a.min()), float(a.max())


def describe_window(center: float, width: float, units: str) -> str:
    """``"centre 1800, width 1600 (DICOM units)"``."""
    return f"centre {center:.6g}, width {width:.6g} ({units})"
