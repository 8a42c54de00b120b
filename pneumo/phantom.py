"""Synthetic chest radiographs ("phantoms"): the built-in demo data.

Each phantom is a PA chest film rendered from a seed. The anatomy model works in
*anatomical coordinates* ``(x, y)`` in ``[0, 1]`` (x to the image's right = the patient's
left, y down), so every size renders the same chest; a small random rotation, shift and
zoom maps them to pixels. The image is an attenuation map ``A`` (air 0, more tissue or
bone brighter) passed through a random exposure curve, as on a real film:

- body: a torso whose half-width narrows into the neck above the shoulders; soft tissue
  is brighter in the middle where the body is thicker;
- lungs: two dark fields, boxy medially, tapered at the apex, cut below by the domed
  hemidiaphragms (the right one higher) and, on the left, by the heart and aortic knob;
  slightly brighter towards the bases;
- mediastinum and heart: what is not lung between them stays bright; the heart is an
  ellipse bulging to the image's right; a gastric air bubble sits under the left dome;
- bones: a spine with vertebral bodies, posterior ribs (curved bands with bright cortices,
  spaced wider downwards), faint anterior ribs, clavicles and humeral heads;
- vessels: a random branching tree from each hilum, thinning and fading to the periphery;
  plus a mottled parenchymal texture;
- film: exposure window and gamma, a low-frequency nonuniformity, quantum noise.

A pneumothorax (about 22% of seeds) is a crescent along the apical or lateral edge of one
lung: no vessels or texture there, slightly darker, bounded on its inner side by a thin
bright visceral pleural line. The mask is exactly that crescent within the lung. Its
shape comes from a separate random stream, so ``positive=True/False`` renders the same
chest with and without it. Local generators only: the global numpy state is never touched.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pneumo.errors import InputError

POSITIVE_RATE = 0.22
_F = np.float32
_VESSEL_DEPTH = 6   # branching levels below each vessel root


def is_positive(seed: int) -> bool:
    """Whether phantom ``seed`` has a pneumothorax (about 22% do); no rendering."""
    _check_seed(seed)
    return bool(np.random.default_rng([seed, 2]).random() < POSITIVE_RATE)


def sample_seed(base_seed: int, index: int) -> int:
    """Seed of the ``index``-th image of the demo set ``base_seed``: a 63-bit hash of both."""
    _check_seed(base_seed)
    _check_seed(index, "index")
    state = np.random.SeedSequence([base_seed, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def make_phantom(seed: int, size: int = 256, positive: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render phantom ``seed`` at ``size`` px.

    Returns ``(image, mask)``: image ``(size, size) uint8``, mask ``(size, size) uint8`` in
    ``{0, 255}``, all zero for a negative. ``positive=None`` follows :func:`is_positive`.
    """
    image, mask, _ = _render(seed, size, positive)
    return image, mask


def _check_seed(value: int, name: str = "seed") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"phantom {name} must be a non-negative integer, got {value!r}")


def _ramp(v: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 as ``v`` crosses 0 over ``width``: anti-aliased region edges."""
    return np.clip(v * (1.0 / width) + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Unit-ish noise with ``cells`` features across the image, at any ``size``."""
    small = Image.fromarray(rng.standard_normal((cells, cells)).astype(_F), mode="F")
    return np.asarray(small.resize((size, size), Image.BICUBIC))


def _render(seed: int, size: int, positive: bool | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phantom plus its lung region ``(size, size) bool`` (for tests and overlays)."""
    _check_seed(seed)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise InputError(f"phantom size must be an integer >= 8, got {size!r}")
    size = int(size)
    if positive is None:
        positive = is_positive(seed)
    rng = np.random.default_rng([seed, 0])      # anatomy, exposure, noise
    prng = np.random.default_rng([seed, 1])     # pneumothorax only
    u = rng.uniform

    # Pose: pixel centres -> anatomical coordinates (inverse of rotate/zoom/shift).
    ang, zoom = math.radians(rng.normal(0, 2.0)), u(0.93, 1.05)
    shx, shy = u(-0.03, 0.03), u(-0.025, 0.035)
    c, s = math.cos(ang), math.sin(ang)
    p = (np.arange(size, dtype=_F) + 0.5) / size
    dx, dy = p[None, :] - 0.5 - shx, p[:, None] - 0.5 - shy
    x = 0.5 + (c * dx + s * dy) / zoom
    y = 0.5 + (-s * dx + c * dy) / zoom

    def to_px(ax: float, ay: float) -> tuple[float, float]:
        ax, ay = ax - 0.5, ay - 0.5
        return ((0.5 + shx + zoom * (c * ax - s * ay)) * size,
                (0.5 + shy + zoom * (s * ax + c * ay)) * size)

    # Body: torso narrowing into the neck; thicker (brighter) in the middle.
    d = np.abs(x - 0.5)
    chest_hw, y_sh = u(0.43, 0.49), u(0.04, 0.08)
    hw = 0.11 + (chest_hw - 0.11) / (1.0 + np.exp((y_sh - y) / 0.035))
    hw = hw * (1.0 - 0.12 * np.clip((y - 0.8) / 0.2, 0, 1))
    body = _ramp(hw - d, 0.012)
    thick = np.sqrt(np.clip(1.0 - (d / (hw + 0.03)) ** 2, 0, 1))
    A = body * (0.3 + 0.36 * thick)

    # Heart and aortic knob: the left lung is cut where they are.
    # The heart's long axis tilts down to the image's right (its apex).
    hx, hy, ha, hb = 0.5 + u(0.04, 0.07), u(0.62, 0.67), u(0.17, 0.2), u(0.11, 0.14)
    tc, ts = math.cos(u(0.35, 0.6)), math.sin(u(0.35, 0.6))
    hu, hv = (x - hx) * tc - (y - hy) * ts, (x - hx) * ts + (y - hy) * tc
    heart = _ramp(1.0 - (hu / ha) ** 2 - (hv / hb) ** 2, 0.1)
    knob = _ramp(1.0 - ((x - 0.5 - u(0.05, 0.06)) / 0.035) ** 2 - ((y - u(0.28, 0.31)) / 0.035) ** 2, 0.3)
    mediastinum = np.maximum(heart, knob)

    # Lungs, vessel trees and (on one side) the pneumothorax crescent.
    lung_total = np.zeros_like(x)
    vessel_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(vessel_img)
    ptx_side = -1 if prng.random() < 0.5 else 1
    ptx = np.zeros_like(x)
    mask = np.zeros((size, size), bool)
    line = np.zeros_like(x)
    dome_y = {}
    for side in (-1, 1):
        cx = 0.5 + side * u(0.19, 0.22)
        cy, la, lb = u(0.40, 0.45), u(0.15, 0.18), u(0.28, 0.32)
        if side == 1:
            la *= 0.94
        lx = side * (x - cx) / la                       # > 0 towards the chest wall
        ly = (y - cy) / lb
        lx = lx / (1.0 - 0.38 * np.clip(-ly, 0, 1) ** 2)  # apex tapers
        ax_ = np.abs(lx)
        r = np.sqrt(np.where(lx < 0, ax_ * ax_ * ax_, ax_ * ax_) + ly * ly)
        dome_y[side] = base = cy + 0.78 * lb + (0.02 if side == 1 else 0.0) + u(-0.015, 0.015)
        dome = base - u(0.06, 0.09) * (1.0 - ((x - cx - side * 0.2 * la) / (1.1 * la)) ** 2)
        lung = _ramp(1.0 - r, 0.04) * _ramp(dome - y, 0.008)
        lung = lung * (1.0 - (mediastinum if side == 1 else heart))
        lung_total += lung
        _draw_vessels(draw, rng, to_px, cx - side * 0.55 * la, cy + 0.02 * lb, side, la, lb, size)
        if positive and side == ptx_side:
            theta = np.arctan2(ly, lx)                  # 0 lateral, -pi/2 apical
            t0 = math.radians(prng.uniform(-105, 5))
            span = math.radians(prng.uniform(30, 75))
            depth_max = float(np.exp(prng.uniform(math.log(0.07), math.log(0.45))))
            wrap = (theta - t0 + math.pi) % (2 * math.pi) - math.pi
            depth = depth_max * np.sqrt(np.clip(1.0 - (wrap / span) ** 2, 0, 1))
            inner = r - (1.0 - depth)                    # > 0 inside the crescent
            mask = (inner > 0) & (depth > 0.005) & (lung > 0.5)
            ptx = mask * lung
            ln_w = max(1.0 / size, 0.0025) / la          # pleural line, ~1 px or more
            line = np.exp(-((inner / ln_w) ** 2)) * (depth > 0.01) * (lung > 0.3) * ~mask

    lung_total = np.clip(lung_total, 0, 1)
    marked = lung_total * (1.0 - ptx)
    basal = 1.0 - 0.3 * np.clip((y - 0.5) / 0.25, 0, 1)
    A -= u(0.27, 0.36) * lung_total * basal
    # Gastric bubble under the left dome.
    gx, gy = 0.5 + u(0.12, 0.18), dome_y[1] + u(0.04, 0.07)
    A -= 0.12 * _ramp(1.0 - ((x - gx) / 0.055) ** 2 - ((y - gy) / 0.035) ** 2, 0.3) * (y < gy)

    # Bones.
    spine = _ramp(0.024 - d, 0.006) * (0.6 + 0.4 * np.cos(2 * math.pi * y / u(0.045, 0.055)) ** 2)
    rib_sp, rib_q0 = u(0.052, 0.06), u(0.09, 0.12)
    q = y - (1.3 * d * d - 0.15 * d) * (1.0 + 2.0 * np.clip((0.3 - y) / 0.2, 0, 1))
    phase = np.log1p(0.06 * np.maximum(q - rib_q0, 0) / rib_sp) / 0.06
    f = phase % 1.0
    rib_w = u(0.42, 0.5)
    band = (f < rib_w) * (0.7 + 0.3 * np.abs(np.cos(math.pi * f / rib_w)) ** 6)
    ribs = band * (q > rib_q0) * (phase < 10) * _ramp(hw - 0.015 - d, 0.01) * _ramp(d - 0.05, 0.04)
    qa = y - 0.55 * (0.42 - d)
    fa = (qa / 0.085) % 1.0
    ant = (fa < 0.3) * np.sin(math.pi * fa / 0.3) * _ramp(d - 0.16, 0.06) * body * (qa > 0.05) * (qa < 0.55)
    cl_y = u(0.16, 0.2) - 0.32 * (d - 0.05) + 0.5 * (d - 0.05) ** 2
    clav = np.exp(-(((y - cl_y) / (0.013 - 0.012 * d)) ** 4)) * _ramp(d - 0.05, 0.02) * _ramp(0.38 - d, 0.05)
    hum = _ramp(1.0 - ((d - chest_hw - 0.01) ** 2 + (y - y_sh - 0.09) ** 2) / 0.065 ** 2, 0.2)
    see = 0.25 + 0.75 * lung_total   # bones show best against the dark lungs
    A += body * (0.1 * spine + see * (u(0.09, 0.14) * ribs + 0.04 * ant) + 0.16 * clav + 0.08 * hum)

    # Vessels and parenchymal texture, absent in the pneumothorax.
    vessel_img = vessel_img.filter(ImageFilter.GaussianBlur(max(0.5, 0.0025 * size)))
    vessels = np.asarray(vessel_img, dtype=_F) * (1.0 / 255.0)
    A += marked * (u(0.1, 0.14) * vessels + 0.03 * _smooth_noise(rng, 56, size))
    A += ptx * (-u(0.05, 0.08)) + 0.1 * line

    # Film: nonuniform exposure, window, gamma, noise.
    A += 0.03 * _smooth_noise(rng, 4, size)
    lo, hi, gamma = u(-0.06, 0.06), u(0.8, 0.98), u(0.75, 1.3)
    img = np.clip((A - lo) / (hi - lo), 0, 1) ** gamma * 255.0
    img += rng.standard_normal((size, size), dtype=_F) * u(1.5, 4.5)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return image, mask.astype(np.uint8) * 255, lung_total > 0.5


def _draw_vessels(draw: ImageDraw.ImageDraw, rng: np.random.Generator, to_px, hx: float, hy: float,
                  side: int, la: float, lb: float, size: int) -> None:
    """A tree from the hilum ``(hx, hy)``: each branch goes on nearly straight and sends off
    a thinner side branch; widths shrink outwards, so thin vessels fade in the periphery."""
    n = 2048
    bend, turn = rng.normal(0, 0.12, n), rng.uniform(0.35, 0.8, n) * rng.choice((-1, 1), n)
    shrink = rng.uniform(0.75, 0.9, n)
    angles = np.linspace(-1.9, 2.0, 6) + rng.normal(0, 0.12, 6)
    stack = [(hx, hy, float(a), 0.05, 0.013) for a in angles]
    k = 0
    while stack and k < n - 2:
        x0, y0, a, length, width = stack.pop()
        a += float(bend[k])
        x1 = x0 + side * math.cos(a) * length * la / 0.15
        y1 = y0 + math.sin(a) * length * lb / 0.28
        w_px = width * size
        fill = 255 * min(1.0, w_px) * min(1.0, 0.3 + width / 0.012)
        draw.line([to_px(x0, y0), to_px(x1, y1)], fill=int(fill), width=max(1, round(w_px)))
        if width > 0.0018:
            stack.append((x1, y1, a, length * float(shrink[k]), width * 0.84))
            stack.append((x1, y1, a + float(turn[k]), length * float(shrink[k + 1]) * 0.8, width * 0.6))
        k += 2
