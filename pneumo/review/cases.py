"""Reviewing a model's predictions case by case, as a radiologist would: the model of a session.

No streamlit and no TensorFlow: the review page (``app_pages/review.py``) is a thin view over this.
File names, freshness and the triplet rule are :mod:`pneumo.store.predictions`; verdicts are
:mod:`pneumo.store.verdicts`.

* :class:`ReviewData` reads a run's cached predictions (``RUN/predictions_<split>.h5``,
  written by ``python -m pneumo evaluate``) and the pack's images and masks for that split,
  lazily: per-image histograms once (:func:`pneumo.evaluate.prob_stats`), then any triplet is
  re-scored in milliseconds by :func:`pneumo.evaluate.evaluate_stats`; pixels are read only
  for the cases shown, each with its id from the same read.
* :func:`identity`: what a cache of a :class:`ReviewData` must be keyed by.
* :func:`select`: filter by category (FP first by default) and sort; :func:`near_misses`: what
  an empty category offers instead (the cases the post-processing put on the other side,
  closest first); :func:`shown_category`: the next non-empty category when there are none
  either; :func:`step` moves through them. Which run a review opens: :mod:`pneumo.review.runs`;
  the case's picture: :mod:`pneumo.review.picture`.
* Missing predictions are computed by an evaluation job: :func:`pneumo.train.jobs.start_evaluation`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pneumo import evaluate
from pneumo.errors import InputError
from pneumo.store import predictions
from pneumo.store.stamps import FileStamp, pack_split_digest

CATEGORIES = ("FP", "FN", "TP", "TN")  # review order: false positives first
FILTERS = CATEGORIES + ("all",)
SORTS = ("most confident first", "worst Dice", "largest predicted area")
#: A category in a sentence ("no false positives at these thresholds").
CATEGORY_NAMES = {"FP": "false positives", "FN": "misses", "TP": "true positives", "TN": "true negatives",
                  "all": "cases"}


# --------------------------------------------------------------------------- data
@dataclass
class Case:
    """One case at the pack's resolution: ``image``, ``target`` (0/255) and ``probs``
    (levels 0..255), each ``(S, S) uint8``; ``index`` into the predictions file; ``id`` as
    read from the pack together with the pixels."""

    index: int
    id: str
    image: np.ndarray
    target: np.ndarray
    probs: np.ndarray


@dataclass
class Evaluation:
    """Scores of one triplet: ``summary`` (see :func:`pneumo.evaluate.summarize`), ``cases``
    (``(N,)`` columns ``id``, ``category``, ``dice``, ``true_area``, ``pred_area``, ``score``),
    and the ROC curve of the presence score ``roc = (fpr, tpr, thresholds)``."""

    triplet: evaluate.Triplet
    summary: dict[str, Any]
    cases: dict[str, np.ndarray]
    roc: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """Images per category, ``{"FP": .., "FN": .., "TP": .., "TN": ..}``."""
        return {c: int(self.summary[c.lower()]) for c in CATEGORIES}


def identity(run_dir: str | os.PathLike, split: str) -> tuple[FileStamp, FileStamp, str]:
    """What the content of a :class:`ReviewData` depends on: stamps (path, size, mtime) of the
    predictions file and of its pack, and a digest of the pack split's ids. A cache keyed by
    this never serves pixels of a re-packed pack under the old ids."""
    pack = predictions.find_pack(run_dir, predictions.predictions_pack(run_dir, split))
    return (FileStamp.of(predictions.predictions_path(run_dir, split)), FileStamp.of(pack),
            pack_split_digest(pack, split))


class ReviewData:
    """A run's cached predictions for one split, with the pack's images and masks.

    Opening reads only ids and attributes (:func:`pneumo.store.predictions.open_predictions`
    checks the file). :attr:`stats` (per-image histograms, one pass over the probabilities and
    masks) is computed on first use and kept; :meth:`evaluate` then costs O(N). :meth:`case`
    and :meth:`cases` read only the requested images.
    """

    def __init__(self, run_dir: str | os.PathLike, split: str, pack_path: str | os.PathLike | None = None):
        self.predictions = predictions.open_predictions(run_dir, split, pack_path)
        self.run_dir = Path(run_dir)
        self.split = split
        self.ids: list[str] = self.predictions.ids
        self._stats: evaluate.ProbStats | None = None

    @property
    def predictions_path(self) -> Path:
        return self.predictions.path

    @property
    def predictions_stamp(self) -> FileStamp:
        return self.predictions.stamp

    @property
    def pack_path(self) -> Path:
        return self.predictions.pack_path

    @property
    def pack_stamp(self) -> FileStamp:
        return self.predictions.pack_stamp

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return self.predictions.size

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the predictions were made from (``best``/``last``), None if unrecorded."""
        return self.predictions.checkpoint

    # ---- scoring
    @property
    def stats(self) -> evaluate.ProbStats:
        """Per-image histograms of all predictions (computed once, chunked reads)."""
        if self._stats is None:
            self._stats = self.predictions.prob_stats(chunk=64)
        return self._stats

    def evaluate(self, triplet: evaluate.Triplet) -> Evaluation:
        """Every category, Dice and the summary for ``triplet`` (O(N), by :mod:`pneumo.evaluate`)."""
        summary, cases = evaluate.evaluate_stats(self.stats, triplet, self.ids)
        true_pos = cases["true_area"] > 0
        roc = evaluate.roc_curve(true_pos, cases["score"])
        return Evaluation(triplet, summary, cases, roc)

    # ---- pixels
    def cases(self, indices: Sequence[int]) -> list[Case]:
        """Read only these cases (indices into the predictions), in the given order.

        Each case's id is read from the pack in the same read as its pixels and must be the
        id the predictions hold for it; a pack rewritten since opening raises
        :class:`InputError` instead of showing one image under another's id.
        """
        from pneumo.store.pack import Pack

        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.n:
                raise InputError(f"case index {i} out of range 0..{self.n - 1}")
        if not idx:
            return []
        rows = self.predictions.rows[idx]
        probs = self.predictions.read(idx)[..., 0]
        with Pack(self.pack_path) as pack:
            images, masks = pack.images(self.split, rows)[..., 0], pack.masks(self.split, rows)[..., 0]
            ids = pack.ids(self.split, rows)
        out = []
        for k, i in enumerate(idx):
            if ids[k] != self.ids[i]:
                raise InputError(
                    f"{self.pack_path}: the pack changed since these predictions were opened (row "
                    f"{int(rows[k])} now holds {ids[k]!r}, not {self.ids[i]!r}); reload the page"
                )
            out.append(Case(i, ids[k], images[k], masks[k], probs[k]))
        return out

    def case(self, index: int) -> Case:
        """One case: image, target and probabilities at the pack's resolution."""
        return self.cases([index])[0]

    def default_triplet(self) -> evaluate.Triplet:
        """The run's triplet by the one rule of :func:`pneumo.store.predictions.run_triplet` (made with
        this file's checkpoint first), at this pack's size. :class:`InputError` naming a damaged
        metrics file."""
        return predictions.run_triplet(self.run_dir, self.size, self.checkpoint)[0]


# --------------------------------------------------------------------------- navigation
def confidence(cases: dict[str, np.ndarray]) -> np.ndarray:
    """How sure the model is of its own call, ``(N,) float``: the presence score for images it
    called positive, ``1 - score`` for those it called negative."""
    score = np.asarray(cases["score"], np.float64)
    called = np.asarray(cases["pred_area"]) > 0
    return np.where(called, score, 1.0 - score)


def select(cases: dict[str, np.ndarray], category: str = "FP", sort: str = SORTS[0]) -> np.ndarray:
    """Indices of the cases in ``category`` (or ``"all"``), ordered by ``sort``: ``(K,) int64``.

    ``"most confident first"``: the model's surest calls first (:func:`confidence`), so the
    most confident false positives and the most confidently missed cases lead.
    ``"worst Dice"``: lowest Dice first. ``"largest predicted area"``: biggest post-processed
    mask first. Ties keep file order, so the order is deterministic.
    """
    if category not in FILTERS:
        raise InputError(f"unknown category filter {category!r}; choose one of {', '.join(FILTERS)}")
    if sort not in SORTS:
        raise InputError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
    cat = np.asarray(cases["category"])
    idx = np.arange(cat.size) if category == "all" else np.flatnonzero(cat == category)
    conf = confidence(cases)[idx]
    if sort == SORTS[0]:
        keys = (idx, -conf)
    elif sort == SORTS[1]:
        keys = (idx, -conf, np.asarray(cases["dice"], np.float64)[idx])
    else:
        keys = (idx, -conf, -np.asarray(cases["pred_area"], np.float64)[idx])
    return idx[np.lexsort(keys)].astype(np.int64)


def shown_category(counts: dict[str, int], category: str) -> tuple[str, str | None]:
    """The category to show for the chosen ``category`` filter, and a one-line note when it
    differs: an empty category falls back to the next non-empty one in review order
    (``"No false positives at these thresholds: showing misses."``), then to ``"all"``.
    The chosen filter itself is kept by the caller, so it returns when cases come back."""
    if category not in FILTERS:
        raise InputError(f"unknown category filter {category!r}; choose one of {', '.join(FILTERS)}")
    if category == "all" or counts.get(category, 0) > 0:
        return category, None
    k = CATEGORIES.index(category)
    for c in (*CATEGORIES[k + 1 :], *CATEGORIES[:k]):
        if counts.get(c, 0) > 0:
            return c, f"No {CATEGORY_NAMES[category]} at these thresholds: showing {CATEGORY_NAMES[c]}."
    return "all", f"No {CATEGORY_NAMES[category]} at these thresholds."


#: Where the near misses of an empty category are: the cases with the same label that the
#: post-processing put on the other side (an empty FP list offers true negatives it dropped).
NEAR_MISS_OF = {"FP": "TN", "TP": "FN", "FN": "TP", "TN": "FP"}


@dataclass(frozen=True)
class NearMisses:
    """The near misses standing in for an empty ``category``: cases of ``shown`` (its
    :data:`NEAR_MISS_OF`), the closest to crossing first. ``indices``, ``top`` (the highest
    pixel probability of each) and ``dropped`` (pixels above the pixel threshold that the
    presence gate dropped; 0 for cases called positive) are ``(K,)`` arrays."""

    category: str
    shown: str
    indices: np.ndarray
    top: np.ndarray
    dropped: np.ndarray

    @property
    def note(self) -> str:
        """One line saying what is shown instead, and in which order."""
        n, what = int(self.indices.size), CATEGORY_NAMES[self.shown]
        if self.shown in ("TN", "FN"):
            why = ("the post-processing dropped (a region above the pixel threshold, or a pixel above the top "
                   "threshold, in an image called negative), highest top probability first")
        else:
            why = "called positive the closest to the presence gate, lowest presence score first"
        return (f"No {CATEGORY_NAMES[self.category]} at these thresholds. Near misses: {n} {what} {why}.")


def top_probability(stats: evaluate.ProbStats) -> np.ndarray:
    """The highest pixel probability of each image, ``(N,) float64`` (``level / 255``)."""
    # above[:, L] > 0 for every L below the image's highest level and for none from it on
    return np.count_nonzero(stats.above[:, :255] > 0, axis=1) / 255.0


def near_misses(stats: evaluate.ProbStats, cases: dict[str, np.ndarray], triplet: evaluate.Triplet,
                category: str) -> NearMisses:
    """The near misses of ``category`` (one of :data:`CATEGORIES`) under ``triplet``.

    FP or TP empty: the label-negative (TN) or label-positive (FN) cases called negative in
    which something passed a threshold and the presence gate dropped it: a region above the
    pixel threshold, or a pixel above the top threshold; highest top probability first (then
    the most pixels dropped). FN or TN empty: the cases called positive (TP, FP), lowest
    presence score first. Ties keep file order."""
    if category not in CATEGORIES:
        raise InputError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
    shown = NEAR_MISS_OF[category]
    cat = np.asarray(cases["category"])
    idx = np.flatnonzero(cat == shown)
    top = top_probability(stats)[idx]
    lp, lt = evaluate.threshold_level(triplet.pixel_threshold), evaluate.threshold_level(triplet.top_threshold)
    if shown in ("TN", "FN"):
        dropped = stats.above[idx, lp].astype(np.int64)
        keep = (dropped > 0) | (stats.above[idx, lt] > 0)
        idx, top, dropped = idx[keep], top[keep], dropped[keep]
        order = np.lexsort((idx, -dropped, -top))
    else:
        dropped = np.zeros(idx.size, np.int64)
        order = np.lexsort((idx, np.asarray(cases["score"], np.float64)[idx]))
    return NearMisses(category, shown, idx[order].astype(np.int64), top[order], dropped[order])


def step(position: int, total: int, delta: int) -> int:
    """Move ``delta`` cases, clamped to ``0..total-1`` (0 when empty)."""
    if total <= 0:
        return 0
    return int(min(max(position + delta, 0), total - 1))


# --------------------------------------------------------------------------- drawing
def case_thumbnail(case: Case, category: str, triplet: evaluate.Triplet, view: dict[str, Any],
                   size: int) -> np.ndarray:
    """A grid thumbnail ``(size, size, 3) uint8``: target (green) and post-processed prediction
    (red) over the windowed image, framed in the category's colour."""
    from pneumo.review import viz

    pred_mask = evaluate.postprocess(case.probs[None], triplet)[0]
    gray = viz.window_level(case.image, *view["window"]) if view["window"] else case.image
    img = viz.overlay(gray, case.target, viz.TARGET_COLOR, view["alpha"], view["mode"])
    img = viz.overlay(img, pred_mask, viz.PRED_COLOR, view["alpha"], view["mode"])
    return viz.thumbnail_grid([img], cols=1, size=size, gap=0, borders=[viz.CATEGORY_COLORS[category]])


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def roc_figure(ev: Evaluation) -> dict[str, Any]:
    """The presence ROC curve with the triplet's operating point, as a plotly figure dict
    (a dict skips plotly's slow validation: the page redraws it on every click)."""
    s = ev.summary
    fpr, tpr, _ = ev.roc
    data: list[dict[str, Any]] = []
    if fpr.size and np.isfinite(fpr).all() and np.isfinite(tpr).all():
        data.append({"type": "scatter", "x": fpr.tolist(), "y": tpr.tolist(), "mode": "lines",
                     "name": f"ROC (AUC {_fmt(s['auc'])})", "line": {"color": "#3366cc"}})
        tp, fp, fn, tn = s["tp"], s["fp"], s["fn"], s["tn"]
        if tp + fn and fp + tn:
            data.append({"type": "scatter", "x": [fp / (fp + tn)], "y": [tp / (tp + fn)], "mode": "markers",
                         "name": "current triplet", "marker": {"size": 11, "color": "#d62728"}})
    data.append({"type": "scatter", "x": [0, 1], "y": [0, 1], "mode": "lines", "name": "chance",
                 "line": {"dash": "dot", "color": "#999"}})
    layout = {"height": 280, "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
              "title": {"text": "ROC of the presence score"},
              "xaxis": {"title": {"text": "false positive rate"}, "range": [0, 1]},
              "yaxis": {"title": {"text": "true positive rate"}, "range": [0, 1.02]}}
    return {"data": data, "layout": layout}
