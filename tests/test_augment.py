"""pneumo.train.augment: paired random geometry on tiny arrays."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pneumo.train.augment import (  # noqa: E402
    FILL_MODES,
    apply_transforms,
    augment_batch,
    check_config,
    preview,
    sample_params,
    transforms_from_params,
)
from pneumo.config import AugmentConfig  # noqa: E402
from pneumo.errors import InputError  # noqa: E402

OFF = AugmentConfig(rotation=0, width_shift=0, height_shift=0, zoom=0, horizontal_flip=False)
STRONG = AugmentConfig(rotation=30, width_shift=0.1, height_shift=0.1, zoom=0.2, horizontal_flip=True)


def _images(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)


def _masks(n=6, size=32, seed=0):
    """Random blobs (disks) in {0, 255}, different per sample."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 1), np.uint8)
    for i in range(n):
        for _ in range(3):
            cy, cx = rng.integers(0, size, 2)
            r = rng.integers(2, size // 4)
            out[i, ..., 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
    return out


def _one_pixel(size=9, row=4, col=6):
    x = np.zeros((1, size, size, 1), np.uint8)
    x[0, row, col, 0] = 255
    return x


def _where(t):
    return [tuple(p) for p in np.argwhere(np.asarray(t)[0, ..., 0])]


# --------------------------------------------------------------------------- identity, flips
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_identity_config_returns_input_exactly(fill_mode):
    x, m = _images(), _masks()
    cfg = dataclasses.replace(OFF, fill_mode=fill_mode)
    xo, mo = augment_batch(x, m, cfg, seed=[1, 2])
    assert xo.dtype == tf.uint8 and mo.dtype == tf.uint8
    np.testing.assert_array_equal(xo.numpy(), x)
    np.testing.assert_array_equal(mo.numpy(), m)


def test_identity_transform_through_the_op_is_exact():
    # No short-circuit here: the op itself, bilinear on uint8, must give the input back.
    x = _images()
    t = transforms_from_params({"angle": np.zeros(6, np.float32)}, 32, 32)
    np.testing.assert_array_equal(apply_transforms(x, t).numpy(), x)


def test_flip_only_is_a_mirror_and_both_outcomes_occur():
    x, m = _images(n=16), _masks(n=16)
    cfg = dataclasses.replace(OFF, horizontal_flip=True)
    xo, mo = augment_batch(x, m, cfg, seed=[3, 4])
    xo, mo = xo.numpy(), mo.numpy()
    flips = sample_params(16, cfg, [3, 4])["flip"].numpy()
    assert 0 < flips.sum() < 16
    for i in range(16):
        want_x = x[i, :, ::-1] if flips[i] else x[i]
        want_m = m[i, :, ::-1] if flips[i] else m[i]
        np.testing.assert_array_equal(xo[i], want_x)
        np.testing.assert_array_equal(mo[i], want_m)


@pytest.mark.parametrize("per_batch", [False, True])
def test_flip_only_shortcut_equals_the_projective_resampling(per_batch):
    """The mirror shortcut gives bit for bit what ImageProjectiveTransform gives for the same draw."""
    x, m = _images(n=16, size=40), _masks(n=16, size=40)
    cfg = dataclasses.replace(OFF, horizontal_flip=True, per_batch=per_batch)
    xo, mo = augment_batch(x, m, cfg, seed=[7, 1])
    transforms = transforms_from_params(sample_params(16, cfg, [7, 1]), 40, 40)
    np.testing.assert_array_equal(xo.numpy(), apply_transforms(x, transforms, fill_mode=cfg.fill_mode).numpy())
    np.testing.assert_array_equal(
        mo.numpy(), apply_transforms(m, transforms, interpolation="nearest", fill_mode=cfg.fill_mode).numpy())


# --------------------------------------------------------------------------- sign conventions
def test_positive_angle_turns_content_counter_clockwise():
    t = transforms_from_params({"angle": [90.0]}, 9, 9)
    out = apply_transforms(_one_pixel(), t, interpolation="nearest")
    assert _where(out) == [(2, 4)]  # right of centre -> above centre


def test_positive_shifts_move_content_right_and_down():
    t = transforms_from_params({"shift_x": [2 / 9], "shift_y": [1 / 9]}, 9, 9)
    out = apply_transforms(_one_pixel(), t, interpolation="nearest")
    assert _where(out) == [(5, 8)]


def test_zoom_above_one_zooms_out_like_keras():
    t = transforms_from_params({"zoom_x": [2.0], "zoom_y": [2.0]}, 9, 9)
    out = apply_transforms(_one_pixel(), t, interpolation="nearest")
    assert _where(out) == [(4, 5)]  # two pixels from the centre become one


def test_flip_param_mirrors_columns():
    t = transforms_from_params({"flip": [True]}, 9, 9)
    assert _where(apply_transforms(_one_pixel(), t)) == [(4, 2)]


# --------------------------------------------------------------------------- masks and alignment
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_image_made_from_its_mask_stays_equal_to_augmented_mask(fill_mode):
    cfg = dataclasses.replace(STRONG, fill_mode=fill_mode)
    m = _masks(n=8, size=48)
    for s in range(10):
        xo, mo = augment_batch(m, m, cfg, seed=[s, 7], image_interpolation="nearest")
        np.testing.assert_array_equal(xo.numpy(), mo.numpy())
        assert not np.array_equal(mo.numpy(), m)


@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_batch_mixing_empty_and_nonempty_masks(fill_mode):
    # Empty masks skip the op; the others must still get their own sample's transform.
    cfg = dataclasses.replace(STRONG, fill_mode=fill_mode)
    m = _masks(n=8, size=32)
    m[[0, 3, 4, 7]] = 0
    xo, mo = augment_batch(m, m, cfg, seed=[2, 8], image_interpolation="nearest")
    np.testing.assert_array_equal(xo.numpy(), mo.numpy())
    assert not mo.numpy()[[0, 3, 4, 7]].any()
    _, none = augment_batch(m[[0, 3]], m[[0, 3]], cfg, seed=[2, 8])
    assert none.shape == (2, 32, 32, 1) and not none.numpy().any()


def test_bilinear_image_of_mask_agrees_with_nearest_mask_after_threshold():
    m = _masks(n=8, size=48)
    for s in range(5):
        xo, mo = augment_batch(m, m, AugmentConfig(), seed=[s, 9])
        agree = ((xo.numpy() >= 128) == (mo.numpy() == 255)).mean()
        assert agree > 0.97


@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_masks_stay_binary(fill_mode):
    cfg = dataclasses.replace(STRONG, fill_mode=fill_mode)
    _, mo = augment_batch(_images(n=8), _masks(n=8), cfg, seed=[5, 5])
    values = set(np.unique(mo.numpy()).tolist())
    assert values <= {0, 255} and 255 in values


def test_constant_image_stays_constant_under_bilinear():
    # Catches truncation instead of rounding (199.99998 -> 199) in the uint8 round trip.
    x = np.full((4, 32, 32, 1), 200, np.uint8)
    xo, _ = augment_batch(x, np.zeros_like(x), AugmentConfig(), seed=[0, 1])
    assert np.all(xo.numpy() == 200)


def test_constant_fill_is_black_outside_the_image():
    x = np.full((2, 32, 32, 1), 200, np.uint8)
    cfg = AugmentConfig(rotation=45, width_shift=0, height_shift=0, zoom=0, horizontal_flip=False,
                        fill_mode="constant")
    xo, _ = augment_batch(x, x, cfg, seed=[2, 2])
    assert xo.numpy()[:, 0, 0, 0].max() < 50  # corners come from outside


# --------------------------------------------------------------------------- parameters
def test_sampled_parameters_stay_within_their_ranges_and_fill_them():
    cfg = AugmentConfig(rotation=10, width_shift=0.02, height_shift=0.05, zoom=0.1)
    p = {k: v.numpy() for k, v in sample_params(4000, cfg, [11, 0]).items()}
    for name, lo, hi in (
        ("angle", -10, 10),
        ("shift_x", -0.02, 0.02),
        ("shift_y", -0.05, 0.05),
        ("zoom_x", 0.9, 1.1),
        ("zoom_y", 0.9, 1.1),
    ):
        v = p[name]
        assert v.shape == (4000,)
        assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6, name
        span = hi - lo
        assert v.min() < lo + 0.05 * span and v.max() > hi - 0.05 * span, name
    assert not np.array_equal(p["zoom_x"], p["zoom_y"])  # independent, as Keras
    assert 0.45 < p["flip"].mean() < 0.55


def test_zero_ranges_give_neutral_parameters():
    p = {k: v.numpy() for k, v in sample_params(50, OFF, [1, 1]).items()}
    assert np.all(p["angle"] == 0) and np.all(p["shift_x"] == 0) and np.all(p["shift_y"] == 0)
    assert np.all(p["zoom_x"] == 1) and np.all(p["zoom_y"] == 1) and not p["flip"].any()


def test_per_batch_mode_draws_one_transform_for_all():
    p = sample_params(8, AugmentConfig(per_batch=True), [4, 2])
    for v in p.values():
        assert np.all(v.numpy() == v.numpy()[0])
    x = np.repeat(_images(n=1), 8, axis=0)
    xo, _ = augment_batch(x, x, AugmentConfig(per_batch=True), seed=[4, 2])
    xo = xo.numpy()
    assert all(np.array_equal(xo[0], xo[i]) for i in range(8))
    assert not np.array_equal(xo[0], x[0])


# --------------------------------------------------------------------------- randomness
def test_same_seed_same_batch_different_seed_differs():
    x, m = _images(), _masks()
    a = augment_batch(x, m, AugmentConfig(), seed=[1, 2])
    b = augment_batch(x, m, AugmentConfig(), seed=tf.constant([1, 2], tf.int32))
    c = augment_batch(x, m, AugmentConfig(), seed=[1, 3])
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_int_seed_is_accepted():
    a = augment_batch(_images(), _masks(), AugmentConfig(), seed=5)[0].numpy()
    b = augment_batch(_images(), _masks(), AugmentConfig(), seed=5)[0].numpy()
    np.testing.assert_array_equal(a, b)


def test_transforms_differ_within_a_batch():
    x = np.repeat(_images(n=1), 8, axis=0)
    xo, _ = augment_batch(x, x, AugmentConfig(), seed=[9, 9])
    xo = xo.numpy()
    for i in range(8):
        for j in range(i + 1, 8):
            assert not np.array_equal(xo[i], xo[j])


def test_works_inside_tf_function_with_unknown_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 1], tf.uint8)] * 2)
    def f(x, m):
        return augment_batch(x, m, AugmentConfig(), tf.constant([1, 2], tf.int64))

    xo, mo = f(_images(n=3), _masks(n=3))
    eager = augment_batch(_images(n=3), _masks(n=3), AugmentConfig(), [1, 2])
    np.testing.assert_array_equal(xo.numpy(), eager[0].numpy())
    assert mo.shape == (3, 32, 32, 1)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "changes, words",
    [
        ({"rotation": -1.0}, "rotation"),
        ({"width_shift": -0.1}, "width_shift"),
        ({"height_shift": 1.5}, "height_shift"),
        ({"zoom": 1.0}, "zoom"),
        ({"zoom": float("nan")}, "zoom"),
        ({"rotation": "10"}, "rotation"),
        ({"fill_mode": "mirror"}, "fill_mode"),
        ({"horizontal_flip": "yes"}, "horizontal_flip"),
    ],
)
def test_bad_config_values_raise_input_error(changes, words):
    cfg = dataclasses.replace(AugmentConfig(), **changes)
    with pytest.raises(InputError, match=words):
        check_config(cfg)
    with pytest.raises(InputError, match=words):
        augment_batch(_images(n=1), _masks(n=1), cfg, seed=0)


def test_bad_shapes_and_seeds_raise_input_error():
    with pytest.raises(InputError, match="images"):
        augment_batch(np.zeros((32, 32, 1), np.uint8), np.zeros((32, 32, 1), np.uint8), AugmentConfig(), 0)
    with pytest.raises(InputError, match="height"):
        augment_batch(_images(size=32), _masks(size=48), AugmentConfig(), 0)
    with pytest.raises(InputError, match="seed"):
        augment_batch(_images(), _masks(), AugmentConfig(), [1, 2, 3])


# --------------------------------------------------------------------------- preview
def test_preview_gives_n_different_aligned_pairs():
    m = _masks(n=1, size=48)[0, ..., 0]
    img = np.where(m > 0, 60, 180).astype(np.uint8)
    images, masks = preview(img, m, AugmentConfig(per_batch=True), n=5, seed=3)
    assert images.shape == (5, 48, 48) and masks.shape == (5, 48, 48)
    assert images.dtype == np.uint8 and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) <= {0, 255}
    assert len({im.tobytes() for im in images}) == 5
    for im, mk in zip(images, masks):  # the dark region follows the mask
        assert ((im < 120) == (mk > 0)).mean() > 0.97
    again = preview(img[..., None], m[..., None], AugmentConfig(), n=5, seed=3)
    np.testing.assert_array_equal(again[0], images)


def test_preview_without_mask_and_bad_input():
    images, masks = preview(np.full((32, 32), 7, np.uint8), None, AugmentConfig(), n=2)
    assert images.shape == (2, 32, 32) and not masks.any()
    with pytest.raises(InputError, match="mask shape"):
        preview(np.zeros((32, 32), np.uint8), np.zeros((16, 16), np.uint8), AugmentConfig())
    with pytest.raises(InputError, match="n must"):
        preview(np.zeros((32, 32), np.uint8), None, AugmentConfig(), n=0)
