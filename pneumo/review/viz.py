"""Pure-numpy drawing for X-rays and masks: outlines, overlays, window/level, heat maps.

Shared by the app's pages (data browser, augmentation preview, review) so they all draw
the same way. No streamlit, no TensorFlow, no PIL: inputs and outputs are numpy arrays.

Conventions: a gray image is ``(H, W) uint8`` (``(H, W, 1)`` is accepted), an RGB image is
``(H, W, 3) uint8``, a mask is any ``(H, W)`` array where non-zero means inside,
probabilities are ``(H, W) uint8`` as cached on disk (``round(p * 255)``) or float in [0, 1].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumo.errors import InputError
from pneumo.evaluate import threshold_level

Color = tuple[int, int, int]

#: Colours used everywhere for the same meaning (target in green, prediction in red).
TARGET_COLOR: Color = (64, 220, 96)
PRED_COLOR: Color = (255, 64, 64)
#: Thumbnail border colour for each review category.
CATEGORY_COLORS: dict[str, Color] = {
    "TP": (64, 200, 96),
    "FP": (240, 64, 64),
    "FN": (250, 170, 40),
    "TN": (140, 140, 140),
}


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"{name}: expected an (H, W) or (H, W, 1) array, got shape {a.shape}")
    return a


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` uint8 -> ``(H, W, 3) uint8`` (a copy)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image.astype(np.uint8, copy=True)
    gray = _as_2d(image, "image").astype(np.uint8, copy=False)
    return np.repeat(gray[..., None], 3, axis=-1)


def _erode(m: np.ndarray) -> np.ndarray:
    """One step of binary erosion with the 4-neighbourhood; outside the image counts as empty."""
    p = np.pad(m, 1, constant_values=False)
    return m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Inner boundary of a mask: ``(H, W)`` (or ``(H, W, 1)``) any dtype -> ``(H, W) bool``.

    A mask pixel is on the outline when it lies within ``thickness`` 4-neighbour steps of a
    pixel outside the mask; the image border counts as outside, so a mask touching the edge
    is closed there. The outline never leaves the mask.
    """
    if thickness < 1:
        raise InputError(f"outline thickness must be >= 1, got {thickness}")
    m = _as_2d(mask, "mask") != 0
    inner = m
    for _ in range(int(thickness)):
        inner = _erode(inner)
        if not inner.any():
            break
    return m & ~inner


def _blend(rgb: np.ndarray, where: np.ndarray, color: Color, alpha: float | np.ndarray) -> np.ndarray:
    """In place: ``rgb[where] = (1 - alpha) * rgb + alpha * color`` (alpha scalar or per pixel)."""
    c = np.asarray(color, np.float32)
    a = alpha[where][:, None] if isinstance(alpha, np.ndarray) else np.float32(alpha)
    px = rgb[where].astype(np.float32)
    rgb[where] = np.clip(np.rint(px * (1 - a) + c * a), 0, 255).astype(np.uint8)
    return rgb


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: Color = PRED_COLOR,
    alpha: float = 0.4,
    mode: str = "outline",
    thickness: int = 1,
) -> np.ndarray:
    """Draw a mask on an image: ``(H, W)`` gray or ``(H, W, 3)`` uint8 -> ``(H, W, 3) uint8``.

    ``mode="fill"`` tints every mask pixel, ``mode="outline"`` only the outline (``thickness``
    pixels). In both modes a drawn pixel becomes ``round((1 - alpha) * pixel + alpha * color)``,
    so ``alpha=1`` paints the colour opaque and ``alpha=0`` leaves the image unchanged.
    Calling it twice (e.g. target then prediction) layers both.
    """
    if mode not in ("outline", "fill"):
        raise InputError(f"overlay mode must be 'outline' or 'fill', got {mode!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"overlay alpha must be within [0, 1], got {alpha}")
    rgb = _as_rgb(image)
    m = _as_2d(mask, "mask")
    if m.shape != rgb.shape[:2]:
        raise InputError(f"overlay: mask shape {m.shape} differs from image shape {rgb.shape[:2]}")
    where = outline(m, thickness) if mode == "outline" else (m != 0)
    return _blend(rgb, where, color, float(alpha))


def window_level(image: np.ndarray, center: float, width: float) -> np.ndarray:
    """Window/level (brightness/contrast) as on a radiology viewer: ``-> (H, W) uint8``.

    Values at ``center - width/2`` and below become 0, at ``center + width/2`` and above 255,
    linear in between. ``center=127.5, width=255`` leaves a uint8 image unchanged.
    """
    if not width > 0:
        raise InputError(f"window width must be > 0, got {width}")
    img = _as_2d(image, "image").astype(np.float32)
    low = float(center) - float(width) / 2.0
    out = (img - low) * (255.0 / float(width))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _colormap_lut() -> np.ndarray:
    """A 256-entry perceptual 'inferno'-like map, black -> purple -> red -> orange -> pale yellow."""
    stops = np.array([0.0, 0.15, 0.35, 0.55, 0.75, 0.9, 1.0])
    colors = np.array(
        [
            [0, 0, 4],
            [40, 11, 84],
            [101, 21, 110],
            [188, 55, 84],
            [237, 105, 37],
            [251, 180, 26],
            [252, 255, 164],
        ],
        np.float64,
    )
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, stops, colors[:, c]) for c in range(3)], axis=-1)
    return np.rint(lut).astype(np.uint8)


_LUT = _colormap_lut()


def to_uint8_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities ``(H, W[, 1])`` uint8 0..255 or float 0..1 -> ``(H, W) uint8`` 0..255."""
    p = _as_2d(probs, "probs")
    if p.dtype == np.uint8:
        return p
    return np.clip(np.rint(p.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def heatmap(probs: np.ndarray) -> np.ndarray:
    """Colour a probability map: ``(H, W)`` uint8 0..255 or float 0..1 -> ``(H, W, 3) uint8``.

    Uses an inferno-like colour map (0 is black, 1 is pale yellow), monotonic in brightness
    so it also reads in gray.
    """
    return _LUT[to_uint8_probs(probs)]


def heat_overlay(image: np.ndarray, probs: np.ndarray, alpha: float = 0.6, floor: int = 13) -> np.ndarray:
    """Heat map blended onto the X-ray where the model sees something: ``-> (H, W, 3) uint8``.

    Each pixel's opacity is ``alpha * p`` (p in 0..1), so confident regions show strongly and
    the rest of the image stays readable; pixels below ``floor`` (uint8 level) are left alone.
    """
    rgb = _as_rgb(image)
    p8 = to_uint8_probs(probs)
    if p8.shape != rgb.shape[:2]:
        raise InputError(f"heat_overlay: probs shape {p8.shape} differs from image shape {rgb.shape[:2]}")
    where = p8 >= floor
    a = p8.astype(np.float32) * (float(alpha) / 255.0)
    colors = _LUT[p8]
    px = rgb[where].astype(np.float32)
    aa = a[where][:, None]
    rgb[where] = np.clip(np.rint(px * (1 - aa) + colors[where].astype(np.float32) * aa), 0, 255).astype(np.uint8)
    return rgb


def crop(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Cut ``box = (top, left, height, width)`` out of ``(H, W[, C])``; clipped to the image.

    ``None`` returns the image unchanged. An empty result raises ``InputError``.
    """
    if box is None:
        return image
    top, left, h, w = (int(v) for v in box)
    H, W = image.shape[:2]
    t0, l0 = max(0, top), max(0, left)
    t1, l1 = min(H, top + h), min(W, left + w)
    if t1 <= t0 or l1 <= l0:
        raise InputError(f"crop box {box} lies outside the {H}x{W} image")
    return image[t0:t1, l0:l1]


def zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge ``(H, W[, C])`` by an integer ``factor`` with nearest neighbour (crisp pixels)."""
    factor = int(factor)
    if factor < 1:
        raise InputError(f"zoom factor must be >= 1, got {factor}")
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``(H, W[, C])`` to ``(height, width[, C])`` by nearest-neighbour sampling."""
    H, W = image.shape[:2]
    rows = np.minimum((np.arange(height) + 0.5) * H / height, H - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * W / width, W - 1).astype(np.intp)
    return image[rows][:, cols]


def triptych_panels(
    image: np.ndarray,
    target: np.ndarray,
    probs: np.ndarray,
    *,
    pixel_threshold: float = 0.5,
    pred_mask: np.ndarray | None = None,
    pred_view: str = "mask",
    mode: str = "outline",
    alpha: float = 0.4,
    thickness: int = 1,
    window: tuple[float, float] | None = None,
    box: tuple[int, int, int, int] | None = None,
    scale: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blog's input / target / prediction figure, as three ``(h, w, 3) uint8`` panels.

    ``image``, ``target`` (0/255) and ``probs`` (uint8 0..255 or float 0..1) are ``(H, W)``.
    Input: the X-ray after ``window=(center, width)``. Target: the label drawn on it in green.
    Prediction: ``pred_view="mask"`` draws ``pred_mask`` (default ``probs > pixel_threshold``, the
    rule of :mod:`pneumo.evaluate`;
    pass the post-processed mask to show exactly what was scored) in red;
    ``pred_view="heatmap"`` blends the probability heat map onto the X-ray and outlines
    ``pred_mask``. ``box=(top, left, height, width)`` zooms on a region, enlarged ``scale`` times.
    """
    if pred_view not in ("mask", "heatmap"):
        raise InputError(f"pred_view must be 'mask' or 'heatmap', got {pred_view!r}")
    gray = _as_2d(image, "image").astype(np.uint8, copy=False)
    if window is not None:
        gray = window_level(gray, *window)
    p8 = to_uint8_probs(probs)
    if pred_mask is None:
        pred_mask = p8 > threshold_level(float(pixel_threshold))  # exactly what evaluate keeps
    base = _as_rgb(gray)
    target_panel = overlay(base, target, TARGET_COLOR, alpha, mode, thickness)
    if pred_view == "mask":
        pred_panel = overlay(base, pred_mask, PRED_COLOR, alpha, mode, thickness)
    else:
        pred_panel = overlay(heat_overlay(base, p8), pred_mask, PRED_COLOR, 1.0, "outline", thickness)
    panels = [base, target_panel, pred_panel]
    return tuple(zoom(crop(p, box), scale) for p in panels)  # type: ignore[return-value]


def hstack(panels: Sequence[np.ndarray], gap: int = 4, gap_color: Color = (255, 255, 255)) -> np.ndarray:
    """Place equal-height ``(h, w_i, 3) uint8`` panels side by side with a ``gap`` px separator."""
    if not panels:
        raise InputError("hstack: no panels")
    h = panels[0].shape[0]
    parts: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if p.shape[0] != h:
            raise InputError(f"hstack: panel {i} has height {p.shape[0]}, expected {h}")
        if i and gap:
            parts.append(np.broadcast_to(np.asarray(gap_color, np.uint8), (h, gap, 3)))
        parts.append(_as_rgb(p))
    return np.concatenate(parts, axis=1)


def triptych(image: np.ndarray, target: np.ndarray, probs: np.ndarray, gap: int = 4, **kwargs) -> np.ndarray:
    """:func:`triptych_panels` side by side: ``-> (h, 3 * w + 2 * gap, 3) uint8``."""
    return hstack(triptych_panels(image, target, probs, **kwargs), gap=gap)


def thumbnail_grid(
    images: Sequence[np.ndarray],
    cols: int = 6,
    size: int = 96,
    gap: int = 4,
    borders: Sequence[Color | None] | None = None,
    border: int = 3,
    background: Color = (255, 255, 255),
) -> np.ndarray:
    """Tile images (gray or RGB, any size) as ``size`` px thumbnails: ``-> (H, W, 3) uint8``.

    Row-major, ``cols`` per row. ``borders[i]`` frames thumbnail ``i`` in a colour (e.g. its
    category, see :data:`CATEGORY_COLORS`); ``None`` leaves it unframed.
    """
    n = len(images)
    if n == 0:
        return np.full((size, size, 3), background, np.uint8)
    cols = max(1, min(int(cols), n))
    rows = (n + cols - 1) // cols
    cell = size + gap
    grid = np.empty((rows * cell - gap, cols * cell - gap, 3), np.uint8)
    grid[:] = np.asarray(background, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        thumb = resize_nearest(_as_rgb(img), size, size)
        color = borders[i] if borders is not None and i < len(borders) else None
        if color is not None and border > 0:
            thumb[:border] = color
            thumb[-border:] = color
            thumb[:, :border] = color
            thumb[:, -border:] = color
        grid[r * cell : r * cell + size, c * cell : c * cell + size] = thumb
    return grid
