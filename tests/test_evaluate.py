"""pneumo.evaluate: hand-computed 4x4 cases for every metric, the triplet rule, tuning, ROC."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from pneumo import evaluate as ev
from pneumo.errors import InputError


def m4(*rows: str) -> np.ndarray:
    """A 4x4 mask from strings like '1100'."""
    return np.array([[c == "1" for c in r] for r in rows], np.uint8) * 255


EMPTY = m4("0000", "0000", "0000", "0000")
A = m4("1100", "1100", "0000", "0000")  # 4 px
B = m4("0110", "0110", "0000", "0000")  # 4 px, 2 shared with A
C = m4("0000", "0000", "0011", "0011")  # disjoint from A


def test_evaluate_imports_without_tensorflow():
    code = "import sys, pneumo.evaluate; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- dice / iou
def test_dice_hand_cases():
    t = np.stack([EMPTY, EMPTY, A, A, A, A])
    p = np.stack([EMPTY, A, EMPTY, A, B, C])
    d = ev.dice_per_image(t, p)
    assert d.dtype == np.float64 and d.shape == (6,)
    # both empty -> 1; one empty -> 0 (both ways); identical -> 1; 2*2/(4+4); disjoint -> 0
    np.testing.assert_allclose(d, [1.0, 0.0, 0.0, 1.0, 0.5, 0.0])
    assert ev.siim_score(t, p) == pytest.approx(2.5 / 6)


def test_dice_accepts_channel_axis_and_any_nonzero():
    t = np.stack([A])[..., None]  # (1, 4, 4, 1) 0/255
    p = (np.stack([B]) > 0).astype(np.float32)[..., None] * 0.3  # any non-zero counts
    assert ev.dice_per_image(t, p)[0] == pytest.approx(0.5)


def test_dice_other_empty_convention_excludes_true_negatives():
    t = np.stack([EMPTY, A, A])
    p = np.stack([EMPTY, A, B])
    d = ev.dice_per_image(t, p, empty_score=math.nan)
    assert math.isnan(d[0])
    assert np.nanmean(d) == pytest.approx(0.75)  # Dice over images with something to find


def test_iou_hand_cases():
    t = np.stack([EMPTY, EMPTY, A, A])
    p = np.stack([EMPTY, A, B, C])
    # both empty -> 1; one empty -> 0; 2 / 6; disjoint -> 0
    np.testing.assert_allclose(ev.iou_per_image(t, p), [1.0, 0.0, 2 / 6, 0.0])


def test_shape_mismatch_is_input_error():
    with pytest.raises(InputError, match="masks_pred"):
        ev.dice_per_image(np.stack([A]), np.zeros((1, 5, 5)))
    with pytest.raises(InputError, match="masks_true"):
        ev.dice_per_image(A, A)  # no batch axis


# --------------------------------------------------------------------------- triplet
P = np.array([[0.9, 0.8, 0.2, 0.0],
              [0.7, 0.6, 0.4, 0.0],
              [0.0, 0.0, 0.3, 0.0],
              [0.0, 0.0, 0.0, 0.0]])


def test_threshold_level_matches_float_comparison():
    for t in [0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.95, 1.0]:
        levels = np.arange(256)
        np.testing.assert_array_equal(levels > ev.threshold_level(t), levels / 255 > t + 1e-12)


def test_postprocess_min_area_boundary_and_top_threshold():
    probs = np.stack([P, P])
    # 3 pixels > 0.65 (0.9, 0.8, 0.7): min_area 3 keeps, 4 empties
    kept = ev.postprocess(probs, ev.Triplet(0.35, 0.65, 3))
    assert kept.dtype == bool and kept.shape == (2, 4, 4)
    np.testing.assert_array_equal(kept[0], P > 0.35)  # 5 pixels: 0.9 .8 .7 .6 .4
    assert kept[0].sum() == 5
    assert not ev.postprocess(probs, ev.Triplet(0.35, 0.65, 4)).any()
    # raising the top threshold above the 3rd largest empties the image
    assert not ev.postprocess(probs, ev.Triplet(0.35, 0.75, 3)).any()
    assert ev.postprocess(probs, ev.Triplet(0.35, 0.75, 2)).sum() == 10
    # min_area 0 = plain thresholding even without anything above top
    np.testing.assert_array_equal(ev.postprocess(probs, ev.Triplet(0.5, 0.99, 0))[0], P > 0.5)


def test_postprocess_uint8_and_float_agree():
    rng = np.random.default_rng(1)
    f = rng.random((5, 8, 8, 1))
    u = ev.quantize(f)
    assert u.dtype == np.uint8
    q = u.astype(np.float64) / 255  # floats exactly at the quantised values
    for trip in [ev.Triplet(0.5, 0.5, 0), ev.Triplet(0.3, 0.8, 3), ev.Triplet(0.6, 0.9, 10)]:
        np.testing.assert_array_equal(ev.postprocess(u, trip), ev.postprocess(q, trip))


def test_triplet_validation_and_scaling():
    with pytest.raises(InputError, match="pixel_threshold"):
        ev.Triplet(1.5, 0.5, 0)
    with pytest.raises(InputError, match="min_area"):
        ev.Triplet(0.5, 0.5, -1)
    t = ev.Triplet(0.3, 0.75, 2000)
    assert t.at_size(1024, 256).min_area == 125  # 2000 / 16
    assert t.min_area_fraction(1024) == pytest.approx(2000 / 1024**2)
    d = t.at_size(1024, 256).to_dict(size=256)
    assert d["size"] == 256 and d["min_area_fraction"] == pytest.approx(125 / 65536)
    assert ev.Triplet.from_dict(d) == ev.Triplet(0.3, 0.75, 125)
    assert ev.Triplet.from_dict(d, size=512).min_area == 500


# --------------------------------------------------------------------------- presence, confusion, roc
def test_presence_scores_kth_largest():
    probs = np.stack([P, np.zeros((4, 4))])
    np.testing.assert_allclose(ev.presence_scores(probs), [0.9, 0.0])
    np.testing.assert_allclose(ev.presence_scores(probs, min_area=3), [0.7, 0.0])
    # score > top <=> count(p > top) >= min_area
    u = ev.quantize(probs)
    for top in [0.5, 0.65, 0.7, 0.75]:
        s = ev.presence_scores(u, 3)
        gate = np.count_nonzero(u.reshape(len(u), -1) > ev.threshold_level(top), axis=1) >= 3
        np.testing.assert_array_equal(s > top, gate)


def test_confusion_counts():
    t = [True, True, False, False, True, False]
    p = [True, False, True, False, True, False]
    assert ev.confusion(t, p) == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}


def test_roc_auc_hand_cases():
    # positives 0.9, 0.4; negatives 0.6, 0.1: pairs won 3 of 4 -> 0.75
    assert ev.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert ev.roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.875)
    assert ev.roc_auc([1, 0], [0.2, 0.2]) == pytest.approx(0.5)
    assert ev.roc_auc([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert ev.roc_auc([0, 1], [1, 0]) == 0.0


def test_roc_curve_points():
    fpr, tpr, thr = ev.roc_curve([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.1])


def test_roc_one_class_is_nan():
    assert math.isnan(ev.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(ev.roc_auc([1, 1], [0.1, 0.2]))
    assert math.isnan(ev.roc_auc([], []))
    fpr, tpr, _ = ev.roc_curve([0, 0], [0.1, 0.2])
    assert np.isnan(tpr).all() and not np.isnan(fpr).any()


# --------------------------------------------------------------------------- categories & summary
def test_categorize_hand_case():
    t = np.stack([A, A, EMPTY, EMPTY])
    pred = np.stack([B, EMPTY, C, EMPTY])
    probs = np.stack([P, P * 0.5, P, np.zeros((4, 4))])
    cases = ev.categorize(t, pred, probs)
    assert list(cases["category"]) == ["TP", "FN", "FP", "TN"]
    np.testing.assert_allclose(cases["dice"], [0.5, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(cases["true_area"], [4, 4, 0, 0])
    np.testing.assert_array_equal(cases["pred_area"], [4, 0, 4, 0])
    np.testing.assert_allclose(cases["score"], [0.9, 0.45, 0.9, 0.0])


def test_evaluate_stats_hand_case():
    # image 0: true A, probs high on A -> TP dice 1; image 1: true A, nothing -> FN;
    # image 2: empty truth, 2 px at 0.8 -> FP at min_area 2, TN at min_area 3; image 3: TN
    p0 = A / 255 * 0.9
    p2 = np.zeros((4, 4)); p2[3, :2] = 0.8
    probs = ev.quantize(np.stack([p0, np.zeros((4, 4)), p2, np.zeros((4, 4))]))
    masks = np.stack([A, A, EMPTY, EMPTY])
    stats = ev.prob_stats(probs, masks)
    s, cases = ev.evaluate_stats(stats, ev.Triplet(0.5, 0.7, 2), ids=list("abcd"))
    assert list(cases["id"]) == list("abcd")
    assert list(cases["category"]) == ["TP", "FN", "FP", "TN"]
    assert s["siim_score"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert s["siim_score_raw"] == pytest.approx(0.5)  # plain 0.5 threshold: same 4 images
    assert s["empty_baseline"] == pytest.approx(0.5)
    assert s["dice_positive_mean"] == pytest.approx(0.5)
    assert (s["n_images"], s["n_positive"]) == (4, 2)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 1, 1, 1)
    # scores (2nd largest prob): pos {0.9, 0}, neg {0.8, 0}; pairs 0.9>0.8, 0.9>0, 0<0.8,
    # 0=0 (half) -> (1 + 1 + 0 + 0.5) / 4
    assert s["auc"] == pytest.approx(0.625)
    assert s["triplet"] == {"pixel_threshold": 0.5, "top_threshold": 0.7, "min_area": 2,
                            "size": 4, "min_area_fraction": 2 / 16}
    s3, cases3 = ev.evaluate_stats(stats, ev.Triplet(0.5, 0.7, 3))
    assert list(cases3["category"]) == ["TP", "FN", "TN", "TN"]
    assert s3["siim_score"] == pytest.approx(0.75)
    assert s3["siim_score_raw"] == pytest.approx(0.5)


def test_summary_keys_and_one_class_auc_is_none():
    s, _ = ev.evaluate_stats(ev.prob_stats(np.zeros((2, 4, 4), np.uint8), np.stack([EMPTY, EMPTY])), ev.DEFAULT_TRIPLET)
    for key in ["siim_score", "siim_score_raw", "dice_positive_mean", "n_images", "n_positive",
                "tp", "fp", "fn", "tn", "auc", "triplet", "empty_baseline"]:
        assert key in s
    assert s["auc"] is None and s["dice_positive_mean"] is None
    assert s["siim_score"] == 1.0 == s["empty_baseline"]


def test_stats_path_matches_direct_computation():
    rng = np.random.default_rng(0)
    n, size = 40, 16
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size, 1), np.uint8)
    probs = rng.random((n, size, size, 1)) * 0.6
    for i in range(0, n, 3):
        m = (yy - rng.integers(4, 12)) ** 2 + (xx - rng.integers(4, 12)) ** 2 < rng.integers(4, 20)
        masks[i, m, 0] = 255
        probs[i, m, 0] = rng.uniform(0.3, 1.0, m.sum())
    u = ev.quantize(probs)
    stats = ev.prob_stats(u, masks, chunk=7)  # chunking must not matter
    for trip in [ev.Triplet(0.5, 0.5, 0), ev.Triplet(0.4, 0.8, 3), ev.Triplet(0.55, 0.7, 12)]:
        summary, cases = ev.evaluate_stats(stats, trip)
        post = ev.postprocess(u, trip)
        direct = ev.categorize(masks, post, u, min_area=trip.min_area)
        for key in ["dice", "true_area", "pred_area", "score"]:
            np.testing.assert_allclose(cases[key], direct[key], err_msg=f"{trip} {key}")
        assert list(cases["category"]) == list(direct["category"])
        assert summary["siim_score"] == pytest.approx(ev.siim_score(masks, post))
        assert summary["siim_score_raw"] == pytest.approx(ev.siim_score(masks, u > 127))


# --------------------------------------------------------------------------- tuning
def test_tune_triplet_finds_known_best():
    # background 0.4 everywhere. Positives: 6 px at 0.9 (the truth). Negatives: a 2-px blob
    # at 0.9 and a 6-px haze at 0.6. Only pixel 0.5 (above the background), top 0.85 (above
    # the haze) and min area 4 (above the blob, within the 6 true px) is perfect.
    n, size = 10, 8
    probs = np.full((n, size, size), 0.4)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if i % 2 == 0:
            masks[i, 2, 1:7] = 255
            probs[i, 2, 1:7] = 0.9
        else:
            probs[i, 6, 2:4] = 0.9
            probs[i, 0, :6] = 0.6
    grid = ev.TripletGrid(pixel_thresholds=(0.3, 0.5), top_thresholds=(0.5, 0.85),
                          min_area_fractions=(0.0, 2 / 64, 4 / 64, 8 / 64))
    trip, score = ev.tune_triplet(ev.quantize(probs), masks, grid)
    assert trip == ev.Triplet(0.5, 0.85, 4)
    assert score == pytest.approx(1.0)
    scores, pt, tt, areas = ev.grid_scores(ev.prob_stats(ev.quantize(probs), masks), grid)
    assert list(areas) == [0, 2, 4, 8]
    # plain thresholding at 0.5: positives perfect, negatives' 2-px blob is an FP -> 0.5
    assert scores[1, 0, 0] == pytest.approx(0.5)
    # min area 8 empties everything -> empty baseline
    assert scores[1, 1, 3] == pytest.approx(0.5)
    assert trip.to_dict()["min_area"] == 4


def test_tune_triplet_empty_split_is_input_error():
    with pytest.raises(InputError, match="empty"):
        ev.tune_triplet(np.zeros((0, 4, 4), np.uint8), np.zeros((0, 4, 4), np.uint8))


def test_tuned_triplet_never_below_the_empty_baseline_on_dev():
    from pneumo.evaluate import siim_score, tune_triplet

    masks = np.zeros((20, 8, 8), np.uint8)
    masks[:3, 2:5, 2:5] = 1  # few positives: predicting nothing scores 17/20
    probs = np.ones((20, 8, 8), np.float32)  # a useless model: certain everywhere, no threshold helps
    triplet, score = tune_triplet(probs, masks)
    empty = siim_score(masks, np.zeros_like(masks))
    assert empty == pytest.approx(0.85)
    assert score >= empty - 1e-12
