"""pneumo.review.viz: hand-computed 4x4 outlines, overlay colours and alpha, window/level, heat maps."""
from __future__ import annotations

import numpy as np
import pytest

from pneumo.review import viz
from pneumo.errors import InputError


def _m(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


def test_outline_filled_square_in_4x4_is_its_ring():
    mask = _m(["....", ".##.", ".##.", "...."]).astype(np.uint8) * 255
    # A 2x2 block has no interior: every pixel touches the outside.
    assert (viz.outline(mask) == (mask > 0)).all()


def test_outline_full_image_border_counts_as_outside():
    mask = np.ones((4, 4), np.uint8)
    expected = _m(["####", "#..#", "#..#", "####"])
    assert (viz.outline(mask) == expected).all()
    # Thickness 2 eats the 2x2 centre too.
    assert viz.outline(mask, thickness=2).all()


def test_outline_plus_shape_uses_4_neighbourhood():
    mask = _m([".#..", "###.", ".#..", "...."])
    out = viz.outline(mask)
    # The centre (1,1) has all four neighbours inside: it is interior.
    expected = _m([".#..", "#.#.", ".#..", "...."])
    assert (out == expected).all()
    assert out.dtype == bool and out.shape == (4, 4)


def test_outline_empty_and_channel_axis():
    assert not viz.outline(np.zeros((4, 4, 1), np.uint8)).any()
    m = np.zeros((4, 4, 1), np.uint8)
    m[1:3, 1:3, 0] = 255
    assert viz.outline(m).sum() == 4
    with pytest.raises(InputError, match="thickness"):
        viz.outline(m, thickness=0)


def test_overlay_fill_blends_colour_with_alpha():
    image = np.full((4, 4), 100, np.uint8)
    mask = _m(["....", ".##.", ".##.", "...."])
    out = viz.overlay(image, mask, color=(200, 0, 50), alpha=0.25, mode="fill")
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    # 0.75 * 100 + 0.25 * c
    assert tuple(out[1, 1]) == (125, 75, 88)  # 87.5 rounds half to even -> 88
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert (out[~mask] == 100).all()


def test_overlay_outline_only_touches_outline_and_alpha_limits():
    image = np.full((4, 4), 10, np.uint8)
    mask = np.ones((4, 4), np.uint8)
    out = viz.overlay(image, mask, color=(255, 0, 0), alpha=1.0, mode="outline")
    ring = viz.outline(mask)
    assert (out[ring] == (255, 0, 0)).all()
    assert (out[~ring] == 10).all()
    same = viz.overlay(image, mask, alpha=0.0, mode="fill")
    assert (same == 10).all()


def test_overlay_does_not_modify_input_and_layers_on_rgb():
    image = np.full((4, 4, 3), 50, np.uint8)
    before = image.copy()
    a = viz.overlay(image, _m(["#...", "....", "....", "...."]), (0, 255, 0), 1.0, "fill")
    b = viz.overlay(a, _m(["...#", "....", "....", "...."]), (0, 0, 255), 1.0, "fill")
    assert (image == before).all()
    assert tuple(b[0, 0]) == (0, 255, 0) and tuple(b[0, 3]) == (0, 0, 255)


def test_overlay_rejects_bad_arguments():
    image = np.zeros((4, 4), np.uint8)
    with pytest.raises(InputError, match="mode"):
        viz.overlay(image, image, mode="dots")
    with pytest.raises(InputError, match="alpha"):
        viz.overlay(image, image, alpha=2)
    with pytest.raises(InputError, match="shape"):
        viz.overlay(image, np.zeros((3, 3)))


def test_window_level_by_hand():
    image = np.array([[0, 50, 100, 150, 200, 255]], np.uint8)
    # Window 100..200: below 100 -> 0, above 200 -> 255, 150 -> 127.5 -> 128 (round half even)
    out = viz.window_level(image, center=150, width=100)
    assert out.tolist() == [[0, 0, 0, 128, 255, 255]]
    assert out.dtype == np.uint8
    full = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (viz.window_level(full, 127.5, 255) == full).all()
    with pytest.raises(InputError, match="width"):
        viz.window_level(full, 100, 0)


def test_heatmap_is_monotonic_and_accepts_float_and_uint8():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = viz.heatmap(levels)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    lum = rgb.astype(float) @ [0.299, 0.587, 0.114]
    assert (np.diff(lum.ravel()) >= -1e-9).all()
    assert tuple(rgb[0, 0]) == (0, 0, 4)
    f = viz.heatmap(levels.astype(np.float32) / 255.0)
    assert (f == rgb).all()


def test_heat_overlay_leaves_low_probabilities_alone():
    image = np.full((2, 2), 90, np.uint8)
    probs = np.array([[0, 5], [128, 255]], np.uint8)
    out = viz.heat_overlay(image, probs, alpha=1.0)
    assert (out[0, 0] == 90).all() and (out[0, 1] == 90).all()
    assert tuple(out[1, 1]) == tuple(viz.heatmap(probs)[1, 1])


def test_crop_zoom_resize():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert viz.crop(image, (1, 2, 2, 5)).tolist() == [[6, 7], [10, 11]]
    assert viz.crop(image, None) is image
    with pytest.raises(InputError, match="outside"):
        viz.crop(image, (5, 5, 2, 2))
    z = viz.zoom(image[:2, :2], 2)
    assert z.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [4, 4, 5, 5], [4, 4, 5, 5]]
    assert viz.resize_nearest(z, 2, 2).tolist() == [[0, 1], [4, 5]]


def test_triptych_panels_colours_target_and_prediction():
    image = np.full((8, 8), 100, np.uint8)
    target = np.zeros((8, 8), np.uint8)
    target[1:3, 1:3] = 255
    probs = np.zeros((8, 8), np.uint8)
    probs[5:7, 5:7] = 230
    a, b, c = viz.triptych_panels(image, target, probs, mode="fill", alpha=1.0)
    assert (a == 100).all()
    assert tuple(b[1, 1]) == viz.TARGET_COLOR and tuple(b[5, 5]) == (100, 100, 100)
    assert tuple(c[5, 5]) == viz.PRED_COLOR and tuple(c[1, 1]) == (100, 100, 100)
    # Zoom on the prediction, twice as large.
    _, _, cz = viz.triptych_panels(image, target, probs, mode="fill", alpha=1.0, box=(4, 4, 4, 4), scale=2)
    assert cz.shape == (8, 8, 3) and tuple(cz[2, 2]) == viz.PRED_COLOR
    # Heat map view: the prediction panel differs from the plain X-ray only where probs are high.
    _, _, h = viz.triptych_panels(image, target, probs, pred_view="heatmap")
    assert (h[:4, :4] == 100).all() and not (h[5, 5] == 100).all()
    t = viz.triptych(image, target, probs, gap=2)
    assert t.shape == (8, 8 * 3 + 4, 3)


def test_thumbnail_grid_layout_and_borders():
    imgs = [np.full((10, 10), v, np.uint8) for v in (0, 50, 100, 150, 200)]
    g = viz.thumbnail_grid(imgs, cols=3, size=8, gap=2, borders=[(255, 0, 0)] + [None] * 4, border=1)
    assert g.shape == (8 * 2 + 2, 8 * 3 + 4, 3)
    assert tuple(g[0, 0]) == (255, 0, 0) and tuple(g[4, 4]) == (0, 0, 0)
    assert tuple(g[4, 10 + 4]) == (50, 50, 50)
    assert tuple(g[10 + 4, 10 + 4]) == (200, 200, 200)
    assert tuple(g[10 + 4, 20 + 4]) == (255, 255, 255)  # empty cell = background


def test_prediction_threshold_is_evaluates_strict_rule_on_a_4x4():
    """The drawn prediction keeps p > threshold, as pneumo.evaluate scores it; a pixel at
    exactly the threshold (level 127 = floor(0.5 * 255)) is not drawn."""
    from pneumo import evaluate

    image = np.full((4, 4), 100, np.uint8)
    target = np.zeros((4, 4), np.uint8)
    probs = np.array([[0, 127, 128, 255],
                      [0, 127, 128, 255],
                      [0, 0, 0, 0],
                      [0, 0, 0, 0]], np.uint8)
    _, _, pred = viz.triptych_panels(image, target, probs, mode="fill", alpha=1.0, pixel_threshold=0.5)
    drawn = (pred == viz.PRED_COLOR).all(axis=-1)
    kept = evaluate.postprocess(probs[None], evaluate.Triplet(0.5, 0.5, 1)).reshape(4, 4) > 0
    np.testing.assert_array_equal(drawn, kept)
    assert drawn.sum() == 4 and not drawn[:, 1].any()
