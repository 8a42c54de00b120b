"""Scoring segmentations the way the SIIM-ACR leaderboard did, in pure numpy (no TensorFlow).

Conventions (the competition's):

* A mask is positive where it is non-zero; masks are ``(N, H, W)`` or ``(N, H, W, 1)``.
* Dice of one image is ``2|X & Y| / (|X| + |Y|)``; when **both** masks are empty it is 1
  (a correct "no pneumothorax"), when exactly one is empty it is 0. ``siim_score`` is the
  mean over images, so predicting nothing everywhere already scores the negative fraction
  (about 0.78 on SIIM): the "empty baseline", always reported beside the score.
* ``dice_positive_mean`` is the other convention: the mean Dice over images whose true
  mask is non-empty only (empty truths excluded), which measures outlining quality.

Probabilities are ``uint8`` levels ``round(p * 255)`` (the on-disk cache) or floats in
``[0, 1]``. A threshold ``t`` keeps pixels with ``p > t``; on uint8 levels that is
``level > floor(t * 255)``, which is exactly ``p > t`` for the quantised values.

Post-processing is the winners' "triplet" (:class:`Triplet`): an image is declared
positive only if at least ``min_area`` pixels exceed ``top_threshold``; its mask is then
the pixels above ``pixel_threshold``, otherwise it is emptied. ``min_area`` is a pixel
count at the evaluated (model) size; :meth:`Triplet.at_size` rescales it by area.

Speed: :func:`prob_stats` reduces probabilities and true masks to per-image cumulative
histograms once (``(N, 256)`` counts); :func:`evaluate_stats` and :func:`tune_triplet`
then work on those counts alone, so re-scoring thousands of images under new thresholds
takes milliseconds (the review page relies on this).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pneumo.errors import InputError

LEVELS = 256  # uint8 probability levels
CATEGORIES = ("TP", "FP", "FN", "TN")
_EPS = 1e-9  # guards floor(t * 255) against 0.6 * 255 = 152.99999999999997


# --------------------------------------------------------------------------- masks
def _flat_bool(masks: np.ndarray, name: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, 1)`` -> ``(N, H*W)`` bool (non-zero is positive)."""
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 3:
        raise InputError(f"{name}: expected shape (N, H, W) or (N, H, W, 1), got {np.shape(masks)}")
    return m.reshape(m.shape[0], -1) != 0


def _pair(masks_true: np.ndarray, masks_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = _flat_bool(masks_true, "masks_true")
    p = _flat_bool(masks_pred, "masks_pred")
    if t.shape != p.shape:
        raise InputError(f"masks_true {np.shape(masks_true)} and masks_pred {np.shape(masks_pred)} differ in shape")
    return t, p


def _dice_from_counts(inter: np.ndarray, area_true: np.ndarray, area_pred: np.ndarray,
                      empty_score: float = 1.0) -> np.ndarray:
    denom = (area_true + area_pred).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 2.0 * inter / denom
    return np.where(denom == 0, empty_score, d)


def dice_per_image(masks_true: np.ndarray, masks_pred: np.ndarray, *, empty_score: float = 1.0) -> np.ndarray:
    """Dice of each image, ``(N,) float64``.

    Masks ``(N, H, W)`` or ``(N, H, W, 1)``, any dtype, non-zero = positive. Both empty gives
    ``empty_score``: 1 by the SIIM convention; pass ``float('nan')`` to mark such images
    for exclusion (then ``np.nanmean`` is the Dice over images with something to find).
    One empty and the other not gives 0.
    """
    t, p = _pair(masks_true, masks_pred)
    inter = np.count_nonzero(t & p, axis=1)
    return _dice_from_counts(inter, t.sum(1), p.sum(1), empty_score)


def iou_per_image(masks_true: np.ndarray, masks_pred: np.ndarray, *, empty_score: float = 1.0) -> np.ndarray:
    """Intersection over union of each image, ``(N,) float64``; both empty gives ``empty_score`` (1)."""
    t, p = _pair(masks_true, masks_pred)
    inter = np.count_nonzero(t & p, axis=1).astype(np.float64)
    union = np.count_nonzero(t | p, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = inter / union
    return np.where(union == 0, empty_score, v)


def siim_score(masks_true: np.ndarray, masks_pred: np.ndarray) -> float:
    """The SIIM-ACR leaderboard metric: mean of :func:`dice_per_image` (both empty = 1); nan for N = 0."""
    d = dice_per_image(masks_true, masks_pred)
    return float(d.mean()) if d.size else math.nan


# --------------------------------------------------------------------------- triplet
@dataclass(frozen=True)
class Triplet:
    """Winners' post-processing: pixel threshold, presence ("top") threshold, minimum area.

    An image is positive iff ``count(p > top_threshold) >= min_area``; a positive image's
    mask is ``p > pixel_threshold``, a negative one's is emptied. ``min_area`` counts pixels
    at the size the probabilities have (the model's input size); ``min_area = 0`` turns the
    presence gate off (plain thresholding), ``1`` means "any pixel above top_threshold".
    """

    pixel_threshold: float = 0.5
    top_threshold: float = 0.5
    min_area: int = 0

    def __post_init__(self) -> None:
        for name in ("pixel_threshold", "top_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise InputError(f"triplet {name} must be within [0, 1], got {v!r}")
        if not isinstance(self.min_area, (int, np.integer)) or isinstance(self.min_area, bool) or self.min_area < 0:
            raise InputError(f"triplet min_area must be a non-negative integer, got {self.min_area!r}")

    def min_area_fraction(self, size: int | tuple[int, int]) -> float:
        """``min_area`` as a fraction of an image of ``size`` (side, or (H, W)) pixels."""
        h, w = (size, size) if isinstance(size, (int, np.integer)) else size
        return self.min_area / float(h * w)

    def at_size(self, from_size: int | tuple[int, int], to_size: int | tuple[int, int]) -> "Triplet":
        """The same triplet for images of ``to_size``: ``min_area`` scaled by the area ratio."""
        fh, fw = (from_size, from_size) if isinstance(from_size, (int, np.integer)) else from_size
        th, tw = (to_size, to_size) if isinstance(to_size, (int, np.integer)) else to_size
        area = self.min_area * (th * tw) / float(fh * fw)
        return dataclasses.replace(self, min_area=int(math.ceil(area - 1e-9)) if self.min_area else 0)

    def to_dict(self, size: int | None = None) -> dict[str, Any]:
        """JSON-ready; with ``size`` also records the size and ``min_area_fraction``."""
        d: dict[str, Any] = {"pixel_threshold": float(self.pixel_threshold),
                             "top_threshold": float(self.top_threshold), "min_area": int(self.min_area)}
        if size is not None:
            d["size"] = int(size)
            d["min_area_fraction"] = self.min_area_fraction(size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], size: int | None = None) -> "Triplet":
        """Read :meth:`to_dict` output; with ``size`` (and a stored ``size``) rescale ``min_area``."""
        try:
            t = cls(float(d["pixel_threshold"]), float(d["top_threshold"]), int(d["min_area"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"triplet: expected pixel_threshold, top_threshold, min_area; got {dict(d)!r} ({e})") from None
        if size is not None and d.get("size") and int(d["size"]) != int(size):
            t = t.at_size(int(d["size"]), int(size))
        return t


DEFAULT_TRIPLET = Triplet(0.5, 0.5, 0)  # plain 0.5 thresholding: what siim_score_raw measures


def threshold_level(t: float) -> int:
    """The uint8 level ``L`` with ``level > L`` <=> ``level / 255 > t`` (``floor(t * 255)``)."""
    return int(min(255, max(0, math.floor(float(t) * 255 + _EPS))))


def quantize(probs: np.ndarray) -> np.ndarray:
    """Float probabilities in [0, 1] -> uint8 levels ``round(p * 255)`` (uint8 passes through)."""
    p = np.asarray(probs)
    if p.dtype == np.uint8:
        return p
    return np.round(np.clip(p.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _flat_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim == 4 and p.shape[-1] == 1:
        p = p[..., 0]
    if p.ndim != 3:
        raise InputError(f"probs: expected shape (N, H, W) or (N, H, W, 1), got {np.shape(probs)}")
    if p.dtype != np.uint8 and not np.issubdtype(p.dtype, np.floating):
        raise InputError(f"probs: expected uint8 levels or floats in [0, 1], got dtype {p.dtype}")
    return p


def _above(p: np.ndarray, t: float) -> np.ndarray:
    return p > threshold_level(t) if p.dtype == np.uint8 else p > t


def postprocess(probs: np.ndarray, triplet: Triplet) -> np.ndarray:
    """Apply ``triplet`` to probabilities; returns ``(N, H, W) bool`` masks.

    ``probs``: ``(N, H, W)`` or ``(N, H, W, 1)``, uint8 levels (``round(p * 255)``) or
    floats in [0, 1] (compared directly, unquantised).
    """
    p = _flat_probs(probs)
    n = p.shape[0]
    keep = np.count_nonzero(_above(p, triplet.top_threshold).reshape(n, -1), axis=1) >= triplet.min_area
    return _above(p, triplet.pixel_threshold) & keep[:, None, None]


# --------------------------------------------------------------------------- presence
def presence_scores(probs: np.ndarray, min_area: int = 1) -> np.ndarray:
    """Per-image presence score ``(N,) float64`` in [0, 1]: the ``min_area``-th largest probability.

    With ``min_area <= 1`` it is the maximum probability. It is chosen so that
    ``score > top_threshold`` <=> ``count(p > top_threshold) >= min_area``: thresholding it
    reproduces the triplet's presence gate, and the ROC curve passes through that point.
    """
    p = _flat_probs(probs)
    n = p.shape[0]
    flat = p.reshape(n, -1)
    k = max(int(min_area), 1)
    if k > flat.shape[1]:
        return np.zeros(n)
    kth = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k]
    return kth.astype(np.float64) / 255.0 if p.dtype == np.uint8 else kth.astype(np.float64)


def confusion(true_pos: Sequence[bool] | np.ndarray, pred_pos: Sequence[bool] | np.ndarray) -> dict[str, int]:
    """Image-level confusion counts ``{"tp", "fp", "fn", "tn"}`` from two ``(N,)`` bool arrays."""
    t = np.asarray(true_pos, bool)
    p = np.asarray(pred_pos, bool)
    if t.shape != p.shape:
        raise InputError(f"true_pos {t.shape} and pred_pos {p.shape} differ in shape")
    return {"tp": int(np.sum(t & p)), "fp": int(np.sum(~t & p)),
            "fn": int(np.sum(t & ~p)), "tn": int(np.sum(~t & ~p))}


def roc_curve(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, each ``(K,) float64``, as sklearn draws them.

    Point ``k`` predicts positive where ``score >= thresholds[k]``; the first point is
    ``(0, 0)`` at ``+inf``; tied scores move together (a diagonal segment). With only one
    class present the undefined rate is all nan (and :func:`roc_auc` is nan).
    """
    y = np.asarray(labels, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    if y.shape != s.shape:
        raise InputError(f"labels {y.shape} and scores {s.shape} differ in shape")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], int)
    tps = np.r_[0, np.cumsum(y)[last]].astype(np.float64)
    fps = np.r_[0, np.cumsum(~y)[last]].astype(np.float64)
    thresholds = np.r_[np.inf, s[last]]
    npos, nneg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / npos if npos else np.full_like(tps, np.nan)
        fpr = fps / nneg if nneg else np.full_like(fps, np.nan)
    return fpr, tpr, thresholds


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (ties count half); nan when only one class is present."""
    fpr, tpr, _ = roc_curve(labels, scores)
    if fpr.size < 2 or np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


# --------------------------------------------------------------------------- per-image stats
@dataclass(frozen=True)
class ProbStats:
    """Per-image cumulative histograms: enough to score any triplet without the pixels.

    ``above[i, L]`` = pixels of image i with level > L, ``above_true[i, L]`` = those also in
    the true mask (``(N, 256) int64``, L = 0..255); ``true_area`` ``(N,) int64``;
    ``pixels`` = H * W; ``size`` = (H, W).
    """

    above: np.ndarray
    above_true: np.ndarray
    true_area: np.ndarray
    pixels: int
    size: tuple[int, int]

    @property
    def n(self) -> int:
        return int(self.true_area.shape[0])

    def ge(self) -> np.ndarray:
        """``(N, 256)``: pixels with level >= L."""
        return np.concatenate([np.full((self.n, 1), self.pixels, np.int64), self.above[:, :-1]], axis=1)


def prob_stats(probs: np.ndarray, masks_true: np.ndarray, *, chunk: int = 64) -> ProbStats:
    """Reduce probabilities ``(N, H, W[, 1])`` (uint8 or float, quantised to 1/255) and true
    masks ``(N, H, W[, 1])`` (non-zero positive) to :class:`ProbStats`. Reads in chunks of
    ``chunk`` images, so ``probs`` may be an h5py dataset."""
    n = len(probs)
    if len(masks_true) != n:
        raise InputError(f"probs has {n} images but masks_true has {len(masks_true)}")
    shape = tuple(np.shape(probs))
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] != 1):
        raise InputError(f"probs: expected shape (N, H, W) or (N, H, W, 1), got {shape}")
    h, w = shape[1], shape[2]
    hist = np.zeros((n, 2 * LEVELS), np.int64)
    offs = np.arange(chunk, dtype=np.int64)[:, None] * (2 * LEVELS)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        p = quantize(np.asarray(probs[a:b])).reshape(b - a, -1)
        m = np.asarray(masks_true[a:b]).reshape(b - a, -1)
        if p.shape[1] != m.shape[1]:
            raise InputError(f"probs {shape} and masks_true {np.shape(masks_true)} differ in image size")
        # one bincount for the chunk: bin = image * 512 + 256 * in_mask + level
        idx = p.astype(np.int64) + offs[: b - a]
        idx += (m != 0) * LEVELS
        hist[a:b] = np.bincount(idx.ravel(), minlength=(b - a) * 2 * LEVELS).reshape(b - a, 2 * LEVELS)
    h_out, h_in = hist[:, :LEVELS], hist[:, LEVELS:]
    h_all = h_out + h_in

    def _above_counts(hst: np.ndarray) -> np.ndarray:
        # count(level > L) = sum of bins L+1..255
        rev = np.cumsum(hst[:, ::-1], axis=1)[:, ::-1]
        return np.concatenate([rev[:, 1:], np.zeros((hst.shape[0], 1), np.int64)], axis=1)

    return ProbStats(above=_above_counts(h_all), above_true=_above_counts(h_in),
                     true_area=h_in.sum(1), pixels=int(h * w), size=(int(h), int(w)))


def _scores_from_ge(ge: np.ndarray, min_area: int) -> np.ndarray:
    # the k-th largest level = number of levels L >= 1 with count(p >= L) >= k (ge is non-increasing)
    k = max(int(min_area), 1)
    return np.count_nonzero(ge[:, 1:] >= k, axis=1) / 255.0


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def evaluate_stats(stats: ProbStats, triplet: Triplet, ids: Sequence[str] | None = None
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score ``triplet`` from :class:`ProbStats` in O(N); returns ``(summary, cases)``.

    ``summary``: see :func:`summarize` (JSON-ready; undefined values are None).
    ``cases``: columns of ``(N,)`` arrays: ``id`` (if given), ``category`` (``"TP"``,
    ``"FP"``, ``"FN"``, ``"TN"`` by image-level presence), ``dice``, ``true_area``,
    ``pred_area`` (after post-processing, pixels at the stats' size), ``score``
    (:func:`presence_scores` with the triplet's ``min_area``). ``pandas.DataFrame(cases)``
    gives the table.
    """
    lp, lt = threshold_level(triplet.pixel_threshold), threshold_level(triplet.top_threshold)
    keep = stats.above[:, lt] >= triplet.min_area
    pred_area = np.where(keep, stats.above[:, lp], 0)
    inter = np.where(keep, stats.above_true[:, lp], 0)
    dice = _dice_from_counts(inter, stats.true_area, pred_area)
    raw_l = threshold_level(DEFAULT_TRIPLET.pixel_threshold)
    dice_raw = _dice_from_counts(stats.above_true[:, raw_l], stats.true_area, stats.above[:, raw_l])
    score = _scores_from_ge(stats.ge(), triplet.min_area)
    true_pos = stats.true_area > 0
    pred_pos = pred_area > 0
    cases: dict[str, np.ndarray] = {}
    if ids is not None:
        if len(ids) != stats.n:
            raise InputError(f"{len(ids)} ids for {stats.n} images")
        cases["id"] = np.asarray([str(i) for i in ids], dtype=object)
    cases.update(category=_categories(true_pos, pred_pos), dice=dice,
                 true_area=stats.true_area.copy(), pred_area=pred_area.astype(np.int64), score=score)
    summary = summarize(dice, true_pos, pred_pos, score, triplet, dice_raw=dice_raw, size=stats.size[0])
    return summary, cases


def _categories(true_pos: np.ndarray, pred_pos: np.ndarray) -> np.ndarray:
    # index = 2 * (not true) + (not pred) -> TP, FN, FP, TN
    table = np.array(["TP", "FN", "FP", "TN"], dtype=object)
    return table[2 * (~true_pos).astype(int) + (~pred_pos).astype(int)]


def categorize(masks_true: np.ndarray, masks_pred_post: np.ndarray, probs: np.ndarray | None = None,
               *, min_area: int = 1) -> dict[str, np.ndarray]:
    """Per-image case table from masks: columns ``category``, ``dice``, ``true_area``,
    ``pred_area`` (``(N,)`` each) and ``score`` (:func:`presence_scores` of ``probs`` with
    ``min_area``; nan when ``probs`` is None). Presence = the mask is non-empty."""
    t, p = _pair(masks_true, masks_pred_post)
    true_area, pred_area = t.sum(1).astype(np.int64), p.sum(1).astype(np.int64)
    inter = np.count_nonzero(t & p, axis=1)
    score = presence_scores(probs, min_area) if probs is not None else np.full(t.shape[0], np.nan)
    return {"category": _categories(true_area > 0, pred_area > 0),
            "dice": _dice_from_counts(inter, true_area, pred_area),
            "true_area": true_area, "pred_area": pred_area, "score": score}


def summarize(dice: np.ndarray, true_pos: np.ndarray, pred_pos: np.ndarray, scores: np.ndarray,
              triplet: Triplet | None = None, *, dice_raw: np.ndarray | None = None,
              size: int | None = None) -> dict[str, Any]:
    """The metrics dict (JSON-ready; nan becomes None) from per-image ``(N,)`` arrays.

    Keys: ``siim_score`` (mean Dice after post-processing), ``siim_score_raw`` (mean Dice of
    plain 0.5 thresholding, ``dice_raw``; None when not given), ``empty_baseline`` (score of
    predicting nothing = fraction of negatives), ``dice_positive_mean`` (mean Dice over true
    positives), ``n_images``, ``n_positive``, ``tp``, ``fp``, ``fn``, ``tn``,
    ``sensitivity``, ``specificity``, ``auc`` (of ``scores`` for presence), ``triplet``.
    """
    dice = np.asarray(dice, np.float64)
    t = np.asarray(true_pos, bool)
    n = int(t.size)
    npos = int(t.sum())
    c = confusion(t, pred_pos)
    return {
        "siim_score": _json_float(float(dice.mean())) if n else None,
        "siim_score_raw": _json_float(float(np.mean(dice_raw))) if dice_raw is not None and n else None,
        "empty_baseline": (n - npos) / n if n else None,
        "dice_positive_mean": _json_float(float(dice[t].mean())) if npos else None,
        "n_images": n,
        "n_positive": npos,
        **c,
        "sensitivity": _rate(c["tp"], c["tp"] + c["fn"]),
        "specificity": _rate(c["tn"], c["tn"] + c["fp"]),
        "auc": _json_float(roc_auc(t, scores)),
        "triplet": triplet.to_dict(size) if triplet is not None else None,
    }


# --------------------------------------------------------------------------- tuning
@dataclass(frozen=True)
class TripletGrid:
    """Candidates for :func:`tune_triplet`; ``min_area_fractions`` are of the image area
    (the SIIM winners used about 2000 px of 1024^2, 0.0019). The last fraction, above 1,
    empties every image: the all-empty prediction is a candidate, so a tuned triplet never
    scores below the empty baseline on dev."""

    pixel_thresholds: tuple[float, ...] = tuple(float(x) for x in np.round(np.arange(0.10, 0.951, 0.05), 2))
    top_thresholds: tuple[float, ...] = tuple(float(x) for x in np.round(np.arange(0.10, 0.951, 0.05), 2)) + (0.97, 0.99)
    min_area_fractions: tuple[float, ...] = (0.0, 0.0001, 0.0005, 0.001, 0.002, 0.003, 0.005,
                                             0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 1.01)

    def min_areas(self, pixels: int) -> np.ndarray:
        """Distinct pixel counts for an image of ``pixels`` pixels (0 stays 0, else at least 1)."""
        a = [0 if f <= 0 else max(1, int(round(f * pixels))) for f in self.min_area_fractions]
        return np.array(sorted(set(a)), np.int64)


def grid_scores(stats: ProbStats, grid: TripletGrid | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean Dice of every grid triplet: ``(scores (P, T, A) float64, pixel_thresholds (P,),
    top_thresholds (T,), min_areas (A,))``."""
    grid = grid or TripletGrid()
    pt = np.asarray(grid.pixel_thresholds, np.float64)
    tt = np.asarray(grid.top_thresholds, np.float64)
    areas = grid.min_areas(stats.pixels)
    if stats.n == 0:
        return np.full((pt.size, tt.size, areas.size), np.nan), pt, tt, areas
    lp = np.array([threshold_level(x) for x in pt])
    lt = np.array([threshold_level(x) for x in tt])
    d = _dice_from_counts(stats.above_true[:, lp], stats.true_area[:, None], stats.above[:, lp])  # (N, P)
    e = (stats.true_area == 0).astype(np.float64)  # dice of an emptied image
    keep = (stats.above[:, lt][:, :, None] >= areas[None, None, :]).astype(np.float64)  # (N, T, A)
    # mean over images of keep ? d : e  ==  (sum e + keep^T (d - e)) / N
    gain = np.einsum("nta,np->pta", keep, d - e[:, None])
    return (e.sum() + gain) / stats.n, pt, tt, areas


def tune_triplet(probs_dev: np.ndarray | None, masks_dev: np.ndarray | None, grid: TripletGrid | None = None,
                 *, stats: ProbStats | None = None) -> tuple[Triplet, float]:
    """The grid triplet maximising :func:`siim_score` on the dev split: ``(triplet, score)``.

    Give ``probs_dev`` ``(N, H, W[, 1])`` and ``masks_dev``, or precomputed ``stats``. Ties go
    to the first in grid order (lowest pixel threshold, then top threshold, then min area).
    Never tune on the split you report. An empty split raises :class:`InputError`.
    """
    if stats is None:
        stats = prob_stats(probs_dev, masks_dev)
    if stats.n == 0:
        raise InputError("cannot tune the triplet on an empty split")
    scores, pt, tt, areas = grid_scores(stats, grid)
    # rounding makes float-summation noise irrelevant to tie-breaking
    i, j, k = np.unravel_index(int(np.argmax(np.round(scores, 12))), scores.shape)
    return Triplet(float(pt[i]), float(tt[j]), int(areas[k])), float(scores[i, j, k])
