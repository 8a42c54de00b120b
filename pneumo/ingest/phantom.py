"""Synthetic chest radiographs ("phantoms"): the built-in demo data.

Each phantom is a PA chest film rendered from a seed. The anatomy is drawn in
*anatomical coordinates* ``(x, y)`` in ``[0, 1]`` (x to the image's right = the patient's
left, y down), so every size renders the same chest, as an attenuation map ``A`` (air 0,
more tissue or bone brighter); a small random rotation, shift and zoom then maps it to the
film, and a random exposure curve and quantum noise make the 8-bit image:

- body: a torso whose half-width narrows into the neck above the shoulders; soft tissue
  is brighter in the middle where the body is thicker;
- lungs: two dark fields, boxy medially, rounded at the apex, cut below by the domed
  hemidiaphragms (the right one higher) and medially by the heart and aortic knob;
  slightly brighter towards the bases;
- mediastinum and heart: what is not lung between them stays bright, with the trachea's
  air column above; the heart (a tilted ellipse plus the right atrium) bulges to the
  image's right; a gastric air bubble sits under the left dome;
- bones: a spine with vertebral bodies, posterior ribs (curved bands with bright cortices,
  spaced wider downwards, seen best over the lungs), faint anterior ribs, clavicles;
- vessels: a branching tree from each hilum whose branches thin, and so fade, towards the
  periphery, over a mottled parenchymal texture;
- film: exposure window and gamma, a low-frequency nonuniformity, quantum noise.

A pneumothorax (about 22% of seeds) is a crescent along the apical or lateral edge of one
lung, small to large: no vessels or texture there, darker, bounded on its inner side by a
thin bright visceral pleural line. The mask is exactly that crescent within the lung. Its
shape comes from a separate random stream, so ``positive=True/False`` renders the same chest
with and without it. Local generators only: the global numpy state is never touched.
Expensive fields are computed only inside the boxes where they can be non-zero.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pneumo.errors import InputError

POSITIVE_RATE = 0.22
_F = np.float32


def is_positive(seed: int) -> bool:
    """Whether phantom ``seed`` has a pneumothorax (about 22% do); no rendering."""
    _check_int(seed, "seed")
    return bool(np.random.default_rng([seed, 2]).random() < POSITIVE_RATE)


def sample_seed(base_seed: int, index: int) -> int:
    """Seed of the ``index``-th image of demo set ``base_seed``: a 62-bit hash of both."""
    _check_int(base_seed, "base seed")
    _check_int(index, "index")
    state = np.random.SeedSequence([base_seed, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 30) | (int(state[1]) >> 2)


def make_phantom(seed: int, size: int = 256, positive: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render phantom ``seed`` at ``size`` px.

    Returns ``(image, mask)``: image ``(size, size) uint8``, mask ``(size, size) uint8`` in
    ``{0, 255}``, all zero for a negative. ``positive=None`` follows :func:`is_positive`.
    """
    image, mask, _ = _render(seed, size, positive, with_lung=False)
    return image, mask


def _check_int(value: int, name: str, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"phantom {name} must be an integer >= {low}, got {value!r}")


def _ramp(v: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 as ``v`` crosses 0 over ``width``: anti-aliased region edges."""
    return np.clip(v * (1.0 / width) + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Unit-ish noise with ``cells`` features across the image, at any ``size``."""
    small = Image.fromarray(rng.standard_normal((cells, cells)).astype(_F))
    return np.asarray(small.resize((size, size), Image.BICUBIC))


def _render(seed: int, size: int, positive: bool | None,
            with_lung: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The phantom plus its lung region ``(size, size) bool`` (for tests), if ``with_lung``."""
    _check_int(seed, "seed")
    _check_int(size, "size", 8)
    S = int(size)
    if positive is None:
        positive = is_positive(seed)
    rng = np.random.default_rng([seed, 0])      # anatomy, exposure, noise
    prng = np.random.default_rng([seed, 1])     # pneumothorax only
    u = rng.uniform
    g = (np.arange(S, dtype=_F) + 0.5) / S
    X, Y = g[None, :], g[:, None]              # anatomical coordinates, broadcast

    def box(x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        r0, r1 = max(0, int(y0 * S)), min(S, int(math.ceil(y1 * S)))
        c0, c1 = max(0, int(x0 * S)), min(S, int(math.ceil(x1 * S)))
        return slice(r0, r1), slice(c0, c1), X[:, c0:c1], Y[r0:r1]

    # Body: torso narrowing into the neck; thicker (brighter) in the middle.
    d = np.abs(X - 0.5)
    lung_par = {side: (0.5 + side * u(0.2, 0.225), u(0.43, 0.47),       # centre x, y
                       u(0.16, 0.19) * (0.94 if side == 1 else 1.0), u(0.3, 0.34))  # half axes
                for side in (-1, 1)}
    chest_hw = max(abs(cx - 0.5) + la for cx, _, la, _ in lung_par.values()) + u(0.035, 0.06)
    y_sh = u(0.04, 0.08)
    hw = 0.11 + (chest_hw - 0.11) / (1.0 + np.exp((y_sh - Y) / 0.035))
    hw *= 1.0 - 0.12 * np.clip((Y - 0.8) / 0.2, 0, 1)
    body = _ramp(hw - d, 0.012)
    A = body * (0.22 + 0.42 * np.sqrt(np.clip(1.0 - (d / (hw + 0.03)) ** 2, 0, 1)))

    # Heart (tilted ellipse + right atrium) and aortic knob, as a field over their box.
    hx, hy, ha, hb = 0.5 + u(0.07, 0.1), u(0.63, 0.67), u(0.14, 0.17), u(0.11, 0.13)
    tilt, ra = u(0.25, 0.45), u(0.065, 0.085)
    kx, ky = 0.5 + u(0.035, 0.045), u(0.28, 0.31)
    hr, hc, hX, hY = box(0.38, hx + ha + 0.02, ky - 0.04, hy + hb + 0.03)
    hu = (hX - hx) * math.cos(tilt) + (hY - hy) * math.sin(tilt)
    hv = (hY - hy) * math.cos(tilt) - (hX - hx) * math.sin(tilt)
    heart = np.maximum(_ramp(1.0 - (hu / ha) ** 2 - (hv / hb) ** 2, 0.1),
                       _ramp(1.0 - ((hX - 0.47) ** 2 + (hY - hy - 0.03) ** 2) / ra ** 2, 0.15))
    heart = np.maximum(heart, _ramp(1.0 - ((hX - kx) / 0.04) ** 2 - ((hY - ky) / 0.04) ** 2, 0.3))
    cut = np.ones((S, S), _F)
    cut[hr, hc] -= heart

    # Lungs and (on one side) the pneumothorax crescent.
    lungs = np.zeros((S, S), _F)
    ptx = np.zeros((S, S), _F)
    line = np.zeros((S, S), _F)
    mask = np.zeros((S, S), bool)
    ptx_side = -1 if prng.random() < 0.5 else 1
    trees = []
    domes = {}
    for side in (-1, 1):
        cx, cy, la, lb = lung_par[side]
        base = cy + 0.78 * lb + (0.02 if side == 1 else 0.0) + u(-0.015, 0.015)
        dome_h, domes[side] = u(0.06, 0.09), base
        rs, cs, lX, lY = box(cx - 1.1 * la, cx + 1.1 * la, cy - 1.05 * lb, base + 0.01)
        lx = side * (lX - cx) / la                              # > 0 towards the chest wall
        ly = (lY - cy) / lb
        lx = lx / (1.0 - 0.25 * np.clip(-ly, 0, 1) ** 2)        # the apex is narrower
        ax2 = lx * lx
        r = np.sqrt(np.where(lx < 0, ax2 * np.abs(lx), ax2) + ly * ly)  # boxier medially
        dome = base - dome_h * (1.0 - ((lX - cx + side * 0.1 * la) / (1.1 * la)) ** 2)
        lung = _ramp(1.0 - r, 0.04) * _ramp(dome - lY, 0.008) * cut[rs, cs]
        lungs[rs, cs] += lung
        trees.append(_vessel_tree(rng, cx - side * 0.55 * la, cy + 0.02 * lb, side, la, lb))
        if positive and side == ptx_side:
            theta = np.arctan2(ly, lx)                          # 0 lateral, -pi/2 apical
            t0 = math.radians(prng.uniform(-105, 5))
            span = math.radians(prng.uniform(30, 80))
            depth_max = math.exp(prng.uniform(math.log(0.07), math.log(0.5)))
            depth_max = max(depth_max, 1.2 / (S * la))           # at least ~1 px thick
            wrap = (theta - t0 + math.pi) % (2 * math.pi) - math.pi
            depth = depth_max * np.sqrt(np.clip(1.0 - (wrap / span) ** 2, 0, 1))
            inner = r - (1.0 - depth)                            # > 0 inside the crescent
            m = (inner > 0) & (depth > 0.005) & (lung > 0.5)
            mask[rs, cs] = m
            ptx[rs, cs] = m * lung
            ln_w = max(1.0 / S, 0.0025) / la                     # pleural line, >= ~1 px
            line[rs, cs] = np.exp(-((inner / ln_w) ** 2)) * (depth > 0.01) * (lung > 0.3) * ~m

    np.clip(lungs, 0, 1, out=lungs)
    A -= u(0.3, 0.4) * lungs * (1.0 - 0.3 * np.clip((Y - 0.5) / 0.25, 0, 1))
    # Trachea: an air column down the upper mediastinum.
    A -= 0.06 * _ramp(0.018 - d, 0.012) * _ramp(u(0.33, 0.37) - Y, 0.03)
    gx, gy = 0.5 + u(0.12, 0.18), domes[1] + u(0.04, 0.07)     # gastric bubble
    gr, gc, gX, gY = box(gx - 0.06, gx + 0.06, gy - 0.04, gy)
    A[gr, gc] -= 0.12 * _ramp(1.0 - ((gX - gx) / 0.055) ** 2 - ((gY - gy) / 0.035) ** 2, 0.3)

    # Bones: ribs are bands of a curved coordinate q, wider apart lower down.
    spine = _ramp(0.03 - d, 0.008) * (0.75 + 0.25 * np.cos(2 * math.pi * Y / u(0.045, 0.055)) ** 2)
    rib_sp, rib_q0, rib_w = u(0.052, 0.06), u(0.09, 0.12), u(0.42, 0.5)
    q = Y - (1.3 * d * d - 0.15 * d) * (1.0 + 2.0 * np.clip((0.3 - Y) / 0.2, 0, 1)) - rib_q0
    phase = q * (1.0 - 0.02 * q / rib_sp) / rib_sp
    t = (phase - np.floor(phase)) / rib_w
    e = (2.0 * t - 1.0) ** 2
    ribs = (t < 1) * (0.7 + 0.3 * e * e * e) * (q > 0) * (phase < 10)
    ribs *= _ramp(hw - 0.015 - d, 0.01) * _ramp(d - 0.05, 0.04)
    qa = Y - 0.55 * (0.42 - d)
    fa = qa / 0.085
    fa = (fa - np.floor(fa)) / 0.3
    ant = (fa < 1) * (1.0 - (2.0 * fa - 1.0) ** 2) * _ramp(d - 0.16, 0.06) * (qa > 0.05) * (qa < 0.55)
    see = 0.25 + 0.75 * lungs                    # bones show best against the dark lungs
    A += body * (0.04 * spine + see * (u(0.06, 0.1) * ribs + 0.04 * ant))
    cr, cc, cX, cY = box(0, 1, 0.02, 0.3)
    cd = np.abs(cX - 0.5)
    cl_y = u(0.19, 0.23) - 0.45 * (cd - 0.05) + 0.9 * (cd - 0.05) ** 2
    clav = np.exp(-(((cY - cl_y) / (0.016 - 0.016 * cd)) ** 2)) * _ramp(cd - 0.05, 0.02) * _ramp(0.38 - cd, 0.05)
    A[cr, cc] += 0.09 * clav * body[cr, cc]

    # Vessels and parenchymal texture, absent in the pneumothorax.
    vessels = _draw_vessels(np.concatenate(trees), S)
    A += (lungs - ptx) * (u(0.1, 0.14) * vessels + 0.03 * _smooth_noise(rng, 56, S))
    A += -u(0.06, 0.1) * ptx + 0.1 * line + 0.03 * _smooth_noise(rng, 4, S)

    # Film: pose (rotate, shift, zoom), then exposure window, gamma and noise.
    A, mask, lung_region = _pose(rng, S, A, mask if positive else None, lungs > 0.5 if with_lung else None)
    lo, hi, gamma = u(-0.06, 0.06), u(0.8, 0.98), u(0.8, 1.5)
    lut = np.linspace(0, 1, 1024, dtype=_F) ** gamma * 255.0   # gamma via a table: pow is slow
    idx = np.clip((A - lo) * (1023.0 / (hi - lo)), 0, 1023).astype(np.int16)
    img = lut[idx] + rng.standard_normal((S, S), dtype=_F) * u(1.5, 4.5)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    mask = np.zeros((S, S), np.uint8) if mask is None else mask.astype(np.uint8) * 255
    return image, mask, lung_region


def _pose(rng: np.random.Generator, S: int, A: np.ndarray, *masks: np.ndarray | None) -> list:
    """Rotate/shift/zoom the anatomy onto the film: bilinear for ``A``, nearest for the
    boolean ``masks`` (``None`` is skipped). ``A`` is edge-padded first so that zooming out
    never shows an empty border."""
    ang = math.radians(float(np.clip(rng.normal(0, 1.5), -4, 4)))
    zoom, shx, shy = rng.uniform(0.96, 1.06), rng.uniform(-0.025, 0.025), rng.uniform(-0.02, 0.03)
    c, s, pad = math.cos(ang) / zoom, math.sin(ang) / zoom, int(0.09 * S) + 2
    h = 0.5 * S
    # Continuous output (px, py) -> input: pad + h + R(-ang)((px, py) - h - shift) / zoom.
    coef = (c, s, pad + h - c * (h + shx * S) - s * (h + shy * S),
            -s, c, pad + h + s * (h + shx * S) - c * (h + shy * S))
    def warp(arr: np.ndarray, mode: str, resample: int) -> np.ndarray:
        src = Image.fromarray(np.pad(arr.astype(_F, copy=False), pad, mode=mode))
        return np.asarray(src.transform((S, S), Image.AFFINE, coef, resample=resample))

    return [warp(A, "edge", Image.BILINEAR)] + [
        None if m is None else warp(m, "constant", Image.NEAREST) > 0.5 for m in masks]


def _vessel_tree(rng: np.random.Generator, hx: float, hy: float, side: int, la: float,
                 lb: float) -> np.ndarray:
    """Segments ``(n, 5)`` of ``x0, y0, x1, y1, width`` of a tree from the hilum ``(hx, hy)``,
    grown a generation at a time: each branch goes on nearly straight and sends off a thinner
    side branch; branches stop when thin enough to vanish, so markings fade outwards."""
    n = 6
    x0, y0 = np.full(n, hx), np.full(n, hy)
    a = np.linspace(-1.9, 2.0, n) + rng.normal(0, 0.12, n)
    length, width = np.full(n, 0.05), np.full(n, 0.013)
    segs = []
    for _ in range(16):
        a = a + rng.normal(0, 0.12, len(a))
        x1 = x0 + side * np.cos(a) * length * (la / 0.15)
        y1 = y0 + np.sin(a) * length * (lb / 0.28)
        segs.append(np.stack([x0, y0, x1, y1, width], 1))
        keep = width > 0.0025
        k = int(keep.sum())
        if not k:
            break
        x1, y1, a, length, width = x1[keep], y1[keep], a[keep], length[keep], width[keep]
        turn = rng.uniform(0.35, 0.8, k) * rng.choice((-1.0, 1.0), k)
        x0, y0 = np.concatenate([x1, x1]), np.concatenate([y1, y1])
        a = np.concatenate([a, a + turn])
        length = np.concatenate([length, 0.8 * length]) * rng.uniform(0.75, 0.9, 2 * k)
        width = np.concatenate([width * 0.84, width * 0.6])
    return np.concatenate(segs)


def _draw_vessels(segs: np.ndarray, S: int) -> np.ndarray:
    """Rasterise segments ``(n, 5)`` (anatomical units) to ``(S, S) float32`` in [0, 1].

    Thick ones go through PIL; sub-2-pixel ones are point-sampled in numpy (one call for
    all, not one per segment) with their brightness scaled by width, then all is blurred."""
    x0, y0, x1, y1, w = (segs * S).T
    val = np.minimum(1.0, w) * np.minimum(1.0, 0.3 + segs[:, 4] / 0.012)
    thick = w >= 2.0
    img = Image.new("L", (S, S), 0)
    draw = ImageDraw.Draw(img)
    for seg in zip(x0[thick], y0[thick], x1[thick], y1[thick], 255 * val[thick], np.round(w[thick])):
        draw.line(seg[:4], fill=int(seg[4]), width=int(seg[5]))
    out = np.asarray(img, dtype=_F) * (1.0 / 255.0)
    thin = np.flatnonzero(~thick)
    thin = thin[np.argsort(val[thin])]                # brightest written last
    steps = np.ceil(np.hypot(x1 - x0, y1 - y0)[thin] * 1.5).astype(int) + 1
    which = np.repeat(thin, steps)
    t = np.arange(len(which)) - np.repeat(np.cumsum(steps) - steps, steps)
    t = t / np.repeat(np.maximum(steps - 1, 1), steps)
    px = (x0[which] + t * (x1 - x0)[which]).astype(int)
    py = (y0[which] + t * (y1 - y0)[which]).astype(int)
    ok = (px >= 0) & (px < S) & (py >= 0) & (py < S)
    out[py[ok], px[ok]] = np.maximum(out[py[ok], px[ok]], val[which[ok]])
    blurred = Image.fromarray((out * 255.0).astype(np.uint8)).filter(ImageFilter.GaussianBlur(max(0.5, 0.0025 * S)))
    return np.asarray(blurred, dtype=_F) * (1.0 / 255.0)
