"""Demo phantoms: determinism, shapes, masks, prevalence, and what a pneumothorax looks like."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pneumo.errors import InputError
from pneumo.ingest.phantom import POSITIVE_RATE, _render, is_positive, make_phantom, sample_seed

SEEDS = range(8)


def _box(f: np.ndarray, k: int) -> np.ndarray:
    p = np.pad(f, k // 2, mode="edge")
    return sum(p[i:i + f.shape[0], j:j + f.shape[1]] for i in range(k) for j in range(k)) / (k * k)


def _detail_var(img: np.ndarray, region: np.ndarray) -> float:
    """Variance over ``region`` of a band-pass (3x3 mean minus 9x9 mean): vessel-sized
    detail, with most of the pixel noise and the slow shading removed."""
    f = img.astype(np.float64)
    return float((_box(f, 3) - _box(f, 9))[region].var())


def _erode(m: np.ndarray, n: int) -> np.ndarray:
    for _ in range(n):
        m = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    return m


def _dilate(m: np.ndarray, n: int) -> np.ndarray:
    for _ in range(n):
        m = m | np.roll(m, 1, 0) | np.roll(m, -1, 0) | np.roll(m, 1, 1) | np.roll(m, -1, 1)
    return m


def test_same_seed_same_arrays_and_different_seeds_differ():
    a_img, a_mask = make_phantom(5, 64, positive=True)
    b_img, b_mask = make_phantom(5, 64, positive=True)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, c_mask = make_phantom(6, 64, positive=True)
    assert np.abs(a_img.astype(int) - c_img).mean() > 2
    assert not np.array_equal(a_mask, c_mask)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shapes_dtypes_and_binary_mask(size):
    img, mask = make_phantom(3, size, positive=True)
    assert img.shape == mask.shape == (size, size)
    assert img.dtype == mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert img.min() < 40 and img.max() > 180      # air and bone both present


def test_negatives_have_empty_masks():
    negatives = [s for s in range(40) if not is_positive(s)]
    assert negatives
    for s in negatives[:5]:
        _, mask = make_phantom(s, 32)
        assert not mask.any()
    _, mask = make_phantom(next(s for s in range(40) if is_positive(s)), 32, positive=False)
    assert not mask.any()


def test_forced_positive_always_has_a_lesion_of_varied_size():
    areas = [(make_phantom(s, 32, positive=True)[1] > 0).mean() for s in range(30)]
    assert min(areas) > 0
    assert max(areas) > 4 * min(areas)                       # small to large
    assert max(areas) < 0.15                                  # a part of one lung


def test_positive_none_follows_is_positive():
    for s in range(12):
        _, mask = make_phantom(s, 32)
        assert mask.any() == is_positive(s)


def test_prevalence_about_22_percent():
    rate = np.mean([is_positive(s) for s in range(2000)])
    assert 0.18 <= rate <= 0.26
    assert POSITIVE_RATE == 0.22


def test_looks_like_a_chest():
    """Lungs darker than the mediastinum, air outside the body darker still."""
    for s in SEEDS:
        img, _, lung = _render(s, 64, False)
        left, right = lung[:, :32].sum(), lung[:, 32:].sum()
        assert left > 200 and right > 150                     # two lung fields
        mediastinum = img[28:44, 29:35].mean()
        assert img[lung].mean() + 25 < mediastinum
        assert img[:, :2].mean() + 15 < img[lung].mean()      # lateral edges: air


@pytest.mark.parametrize("seed", SEEDS)
def test_forced_positive_mask_is_peripheral_inside_one_lung(seed):
    img, mask, lung = _render(seed, 64, True)
    m = mask > 0
    assert m.sum() >= 4
    assert not (m & ~lung).any()                               # inside the lung region
    assert not m[:, 28:36].any()                               # one side, away from the midline
    side = slice(0, 32) if m[:, :32].any() else slice(32, 64)
    assert not m[:, slice(32, 64) if side.start == 0 else slice(0, 32)].any()
    # Peripheral: on the lung's edge, away from its centre, farther out than the lung on average.
    yy, xx = np.mgrid[:64, :64]
    own = lung.copy()
    own[:, slice(32, 64) if side.start == 0 else slice(0, 32)] = False
    # Distance in units of the lung's own spread, as lungs are tall and narrow.
    dist = np.hypot((yy - yy[own].mean()) / yy[own].std(), (xx - xx[own].mean()) / xx[own].std())
    assert (m & ~_erode(own, 1)).any()
    assert dist[m].min() > 0.25 * dist[own].max()
    assert dist[m].mean() > dist[own].mean()


def test_pneumothorax_is_darker_and_lacks_markings():
    """Against the same chest rendered negative, and against the rest of the same lung."""
    checked = 0
    for s in range(12):
        pos, mask, lung = _render(s, 256, True)
        core = _erode(mask > 0, 6)             # clear of the pleural line and the lung edge
        if core.sum() < 30:                    # a thin crescent: nothing to measure inside
            continue
        checked += 1
        neg, _ = make_phantom(s, 256, positive=False)
        rest = _erode(lung & ~_dilate(mask > 0, 3), 6)
        rest[:, 128:] = False if mask[:, :128].any() else rest[:, 128:]    # same lung only
        rest[:, :128] = False if mask[:, 128:].any() else rest[:, :128]
        assert pos[core].mean() < neg[core].mean() - 8
        assert _detail_var(pos, core) < 0.8 * _detail_var(neg, core)
        assert _detail_var(pos, core) < _detail_var(pos, rest)
    assert checked >= 4


def test_positive_switch_changes_only_the_pneumothorax():
    """The lesion has its own random stream: the chest around it is identical."""
    pos, mask = make_phantom(11, 64, positive=True)
    neg, _ = make_phantom(11, 64, positive=False)
    near = _dilate(mask > 0, 4)
    np.testing.assert_array_equal(pos[~near], neg[~near])
    assert (pos[mask > 0] != neg[mask > 0]).any()


def test_sizes_render_the_same_chest():
    """Coordinates are fractions of the size: a 256 px render shrunk to 64 px matches 64 px."""
    big, big_mask, big_lung = _render(5, 256, True)
    small, small_mask, small_lung = _render(5, 64, True)
    shrunk = np.asarray(Image.fromarray(big).resize((64, 64), Image.BOX), dtype=float)
    assert np.abs(shrunk - small).mean() < 6
    lung_64 = np.asarray(Image.fromarray(big_lung.astype(np.uint8) * 255).resize((64, 64), Image.BOX)) > 127
    assert (lung_64 & small_lung).sum() / (lung_64 | small_lung).sum() > 0.9
    # The lesion: same area and place (thin crescents make pixel overlap a poor measure).
    area_big, area_small = (big_mask > 0).mean(), (small_mask > 0).mean()
    assert abs(area_big - area_small) < 0.3 * area_big
    yy, xx = np.mgrid[:256, :256] / 4.0
    y4, x4 = np.mgrid[:64, :64]
    assert abs(yy[big_mask > 0].mean() - y4[small_mask > 0].mean()) < 2
    assert abs(xx[big_mask > 0].mean() - x4[small_mask > 0].mean()) < 2


def test_sample_seed_distinct_and_deterministic():
    seeds = [sample_seed(b, i) for b in range(5) for i in range(400)]
    assert len(set(seeds)) == len(seeds)
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 2) == sample_seed(1, 2) != sample_seed(2, 1)
    make_phantom(sample_seed(7, 3), 32)                       # usable as a phantom seed


def test_global_numpy_random_state_untouched():
    np.random.seed(1234)
    before = np.random.get_state()
    make_phantom(2, 32, positive=True)
    is_positive(9)
    sample_seed(1, 1)
    after = np.random.get_state()
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])


@pytest.mark.parametrize("args", [(-1, 32), (1.5, 32), (True, 32), (0, 4), (0, 32.0)])
def test_bad_input_is_a_clear_error(args):
    with pytest.raises(InputError, match="phantom (seed|size)"):
        make_phantom(*args)
    with pytest.raises(InputError, match="index"):
        sample_seed(0, -3)
