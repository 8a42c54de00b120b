"""Widgets of the review page: a radiologist-style pass over a model's predictions.

Every ``*_ui`` function draws one part of the page and returns what the user chose. The model
of the session (categories, sorting, verdicts) is :mod:`pneumo.review.cases`; drawing is
:mod:`pneumo.review.viz`; metrics are :mod:`pneumo.evaluate`. Nothing here runs a model: missing
predictions are computed by a ``python -m pneumo evaluate`` subprocess that the page polls.

Speed with thousands of images: the per-image histograms are computed once per version of
the predictions and the pack (``st.cache_resource`` keyed by :func:`pneumo.review.cases.identity`:
path, size and mtime of both files and a digest of the split's ids, so a re-packed pack is
never read under the old ids); a threshold change re-scores them in O(N) (``st.cache_data``);
only the shown cases' pixels are read, each with its id from the same read. Predictions that
are not fresh for the chosen checkpoint and the pack (:func:`pneumo.store.predictions.freshness`) are
never shown as current. Position and view options live in ``st.session_state`` keyed by run
and split; verdicts and notes live in SQLite (``RUN/reviews.sqlite``, :mod:`pneumo.store.verdicts`),
so nothing entered is lost on reload and a second tab sees them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from pneumo import evaluate, settings
from pneumo.store import predictions as artifacts
from pneumo.review import fullres
from pneumo.train import jobs
from pneumo.review import cases as review
from pneumo.store import verdicts
from pneumo.review.cases import case_panels  # noqa: F401  (bench/review.py times it from here)
from pneumo.errors import InputError
from pneumo.ingest.split import SPLITS
from pneumo_app import review_nav, review_readers

PRED_VIEWS = {"mask": "Thresholded mask", "heatmap": "Probability heat map"}
MODES = ("Case", "Grid")


def png_bytes(image: np.ndarray) -> bytes:
    """Encode ``(H, W[, 3]) uint8`` as a fast PNG (zlib level 1).

    ``st.image`` given a numpy RGB array sends a JPEG: lossy, it smears one-pixel outlines and
    the X-ray's texture. A PNG at level 1 is lossless and about 3x faster than the default;
    pass it with ``output_format="PNG"`` or Streamlit re-encodes it as JPEG.
    """
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _k(name: str, run_dir: Path, split: str) -> str:
    """A session-state key scoped to one run and split."""
    return f"rv_{name}::{run_dir.name}::{split}"


# --------------------------------------------------------------------------- cached readers
Ident = tuple[str, int, int, str, int, int, str]


def _ident(run_dir: Path, split: str) -> Ident:
    """The cache key of the run's files now; a page run computes it once and passes it down
    (it opens the predictions file and reads config.json)."""
    pred, pack, digest = review.identity(run_dir, split)
    return (pred.path, pred.size, pred.mtime_ns, pack.path, pack.size, pack.mtime_ns, digest)


@st.cache_resource(show_spinner="Reading the cached predictions...", max_entries=4)
def _data(run_dir: str, split: str, ident: Ident) -> review.ReviewData:
    data = review.ReviewData(run_dir, split, pack_path=ident[3])
    _ = data.stats  # one pass over all predictions; everything after is O(N) or per case
    return data


def load_data(run_dir: Path, split: str, ident: Ident | None = None) -> review.ReviewData:
    """The run's :class:`ReviewData` with its histograms, shared by all sessions while the
    predictions file and the pack are unchanged (:func:`pneumo.review.cases.identity`; ``ident``:
    :func:`_ident` of this page run, computed here when not given)."""
    return _data(str(run_dir), split, ident or _ident(run_dir, split))


@st.cache_data(show_spinner=False, max_entries=64)
def _evaluate(run_dir: str, split: str, ident: Ident, triplet: tuple[float, float, int]) -> review.Evaluation:
    return _data(run_dir, split, ident).evaluate(evaluate.Triplet(*triplet))


def evaluation(run_dir: Path, split: str, triplet: evaluate.Triplet, ident: Ident | None = None
               ) -> review.Evaluation:
    """Scores of every image under ``triplet`` (cached per triplet and file versions)."""
    t = (float(triplet.pixel_threshold), float(triplet.top_threshold), int(triplet.min_area))
    return _evaluate(str(run_dir), split, ident or _ident(run_dir, split), t)


# Pixels of the cases shown, shared by every session: bounded in bytes, not entries (a grid
# page of 1024 px cases weighs ~57 MB). The arrays are read-only since sessions share them.
CASES_CACHE_BYTES = 256 * 1024**2


def _case_bytes(cases: list[review.Case]) -> int:
    return sum(c.image.nbytes + c.target.nbytes + c.probs.nbytes for c in cases)


@st.cache_resource(show_spinner=False)
def _case_cache() -> fullres.ImageCache:
    return fullres.ImageCache(CASES_CACHE_BYTES, sizeof=_case_bytes)


def _read_only(cases: list[review.Case]) -> list[review.Case]:
    for c in cases:
        for a in (c.image, c.target, c.probs):
            a.setflags(write=False)
    return cases


def _cases(run_dir: str, split: str, ident: Ident, indices: tuple[int, ...]) -> list[review.Case]:
    return _case_cache().get((run_dir, split, ident, indices),
                             lambda: _read_only(_data(run_dir, split, ident).cases(list(indices))))


def read_cases(run_dir: Path, split: str, indices: list[int], ident: Ident | None = None) -> list[review.Case]:
    """Pixels and ids of only these cases (cached per set of indices and file versions)."""
    return _cases(str(run_dir), split, ident or _ident(run_dir, split), tuple(int(i) for i in indices))


# Readers reviewing together step through the same cases in the same order: the second
# one's Next reuses the first one's encoded panels (a third of the server's work per Next).
@st.cache_data(show_spinner=False, max_entries=64)
def _panel_pngs(run_dir: str, split: str, ident: Ident, index: int, triplet: tuple[float, float, int],
                view: dict[str, Any]) -> tuple[tuple[bytes, int], ...]:
    case = _cases(run_dir, split, ident, (index,))[0]
    return tuple((png_bytes(p), int(p.shape[1]))
                 for p in review.case_panels(case, evaluate.Triplet(*triplet), view))


# --------------------------------------------------------------------------- run, split, predictions
def run_ui() -> Path | None:
    """Pick a run that has a model or cached predictions; remembered across pages."""
    from pneumo_app import common

    runs = review.reviewable_runs(settings.runs_dir())
    if not runs:
        st.info("No trained run yet. Train one on the **Training** page, then come back to review it.")
        return None
    paths = [str(p) for p in runs]
    key = "rv_run"
    opened = None
    if st.session_state.get(key) not in paths:
        remembered = st.session_state.get(common.RUN_KEY)
        default, why = review.default_run(runs)
        # a run chosen on another page is kept only if it can be reviewed with a model
        if remembered in paths and artifacts.run_checkpoints(remembered):
            st.session_state[key] = remembered
        else:
            st.session_state[key] = str(default)
            opened = f"Opened **{Path(str(default)).name}**: {why}."
    chosen = st.selectbox("Run", paths, key=key, format_func=lambda p: review.run_label(Path(p)))
    if opened:
        st.caption(opened)
    st.session_state[common.RUN_KEY] = chosen
    return Path(chosen)


def split_checkpoint_ui(run_dir: Path) -> tuple[str, str | None]:
    """Pick the split (test by default) and the checkpoint (best by default)."""
    c1, c2 = st.columns(2)
    split = c1.selectbox("Split", SPLITS, index=SPLITS.index("test"), key="rv_split",
                         help="Review on test; the post-processing defaults were tuned on dev.")
    ckpts = artifacts.run_checkpoints(run_dir)
    checkpoint = c2.selectbox("Checkpoint", ckpts, key=f"rv_ckpt::{run_dir.name}") if ckpts else None
    if not ckpts:
        c2.caption("No checkpoint in this run; reviewing its cached predictions.")
    return split, checkpoint


def _launch(run_dir: Path, split: str, checkpoint: str) -> None:
    try:
        jobs.start_evaluation(run_dir, split, checkpoint)
    except InputError as e:
        st.session_state["rv_launch_error"] = str(e)


def predictions_ui(run_dir: Path, split: str, checkpoint: str | None) -> bool:
    """Make sure predictions are cached; returns True when the page can review them.

    Missing predictions: one button launches ``python -m pneumo evaluate`` (a subprocess:
    the page never runs the model) and a fragment polls its progress.
    """
    if err := st.session_state.pop("rv_launch_error", None):
        st.error(err)
    path = artifacts.predictions_path(run_dir, split)
    job = jobs.evaluation_job(run_dir, split)
    if job and job["state"] == "running":
        _job_progress_ui(run_dir, split)
        return False
    if path.is_file():
        fresh = artifacts.freshness(run_dir, split, checkpoint)
        if fresh.fresh:
            if checkpoint is None:
                st.caption("No checkpoint in this run to check them against; the pack is unchanged.")
            return True
        # never shown as current: say why, offer to recompute
        st.warning(f"The cached predictions for **{split}** are out of date: {fresh.reason}. "
                   "They are not shown, so no verdict lands on the wrong case.")
        if checkpoint is not None:
            st.button(f"Recompute with {checkpoint}.keras", type="primary", key="rv_recompute",
                      on_click=_launch, args=(run_dir, split, checkpoint))
        return False
    if job and job["state"] == "failed":
        st.error(f"Computing the predictions failed: {job.get('error') or 'no message'}")
    if checkpoint is None:
        st.warning(f"No cached predictions for **{split}** and no checkpoint to compute them from.")
        return False
    st.info(
        f"No cached predictions for the **{split}** split yet. Computing them runs the model once "
        f"(`python -m pneumo evaluate {run_dir} --split {split} --checkpoint {checkpoint}`) and "
        "stores the probabilities; after that the review never waits for the model."
    )
    st.button("Compute predictions", type="primary", key="rv_compute",
              on_click=_launch, args=(run_dir, split, checkpoint))
    return False


@st.fragment(run_every=1.0)
def _job_progress_ui(run_dir: Path, split: str) -> None:
    job = jobs.evaluation_job(run_dir, split)
    if job is None or job["state"] != "running":
        st.rerun(scope="app")
        return
    frac = job.get("fraction")
    stage = (job.get("progress") or {}).get("stage")
    detail = {"score": ": scoring", None: " (starting: loading the model)..."}.get(
        stage, f": {frac or 0:.0%}")
    st.progress(frac if frac is not None else 0.0,
                text=f"Computing predictions for {split} with {job.get('checkpoint')}.keras{detail}")
    if st.button("Stop", key="rv_stop_eval"):
        jobs.stop_evaluation(run_dir, split)


# --------------------------------------------------------------------------- post-processing
def triplet_ui(data: review.ReviewData) -> evaluate.Triplet:
    """Pixel threshold, top threshold and minimum area; defaults to the dev-tuned triplet."""
    default = data.default_triplet()
    kp, kt, ka = (_k(n, data.run_dir, data.split) for n in ("pt", "tt", "area"))

    def _reset() -> None:
        st.session_state[kp] = float(default.pixel_threshold)
        st.session_state[kt] = float(default.top_threshold)
        st.session_state[ka] = int(default.min_area)

    if kp not in st.session_state:
        _reset()
    st.markdown("**Post-processing**")
    pt = st.slider("Pixel threshold", 0.0, 0.99, step=0.01, key=kp,
                   help="A pixel is in the predicted mask when its probability exceeds this.")
    tt = st.slider("Top threshold", 0.0, 0.99, step=0.01, key=kt,
                   help="An image is called positive only if at least 'minimum area' pixels exceed this.")
    area = st.number_input(f"Minimum area (px of {data.size}x{data.size})", 0, data.size * data.size,
                           step=max(1, data.size * data.size // 1000), key=ka)
    st.button(f"Reset to the dev-tuned triplet ({default.pixel_threshold:g}, {default.top_threshold:g}, "
              f"{default.min_area})", key=_k("reset", data.run_dir, data.split), on_click=_reset)
    return evaluate.Triplet(float(pt), float(tt), int(area))


# --------------------------------------------------------------------------- summary
def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def summary_ui(ev: review.Evaluation) -> None:
    """SIIM score beside the all-empty baseline, Dice on positives, confusion matrix, ROC."""
    s = ev.summary
    c = st.columns(5)
    delta = None
    if s["siim_score"] is not None and s["empty_baseline"] is not None:
        delta = f"{s['siim_score'] - s['empty_baseline']:+.3f} vs empty"
    c[0].metric("SIIM score", _fmt(s["siim_score"]), delta, help="Mean Dice per image, empty-empty = 1.")
    c[1].metric("All-empty baseline", _fmt(s["empty_baseline"]), help="Score of predicting nothing anywhere.")
    c[2].metric("Dice on positives", _fmt(s["dice_positive_mean"]),
                help="Mean Dice over images with a pneumothorax.")
    c[3].metric("Presence AUC", _fmt(s["auc"]))
    c[4].metric("Images", s["n_images"], f"{s['n_positive']} positive", delta_color="off", delta_arrow="off")
    left, right = st.columns([1, 1])
    with left:
        st.markdown(
            "**Presence confusion matrix**\n\n"
            "| label / model | pneumothorax | none |\n|---|---:|---:|\n"
            f"| **pneumothorax** | {s['tp']} TP | {s['fn']} FN |\n"
            f"| **none** | {s['fp']} FP | {s['tn']} TN |"
        )
        st.caption(f"sensitivity {_fmt(s['sensitivity'])}, specificity {_fmt(s['specificity'])}; "
                   f"plain 0.5 thresholding scored {_fmt(s['siim_score_raw'])}")
    with right:
        st.plotly_chart(review.roc_figure(ev), key="rv_roc", config={"displayModeBar": False})


# --------------------------------------------------------------------------- display options
def view_ui(size: int) -> dict[str, Any]:
    """Prediction as heat map or mask, overlay fill/outline and opacity, window/level, zoom.

    Returns keyword arguments for :func:`pneumo.review.viz.triptych_panels` (plus ``magnify``).
    """
    st.markdown("**Display**")
    pred_view = st.radio("Prediction as", list(PRED_VIEWS), format_func=PRED_VIEWS.get, key="rv_pred_view")
    mode = st.radio("Overlay", ["outline", "fill"], horizontal=True, key="rv_overlay")
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.9 if mode == "outline" else 0.35, 0.05, key=f"rv_alpha_{mode}")
    st.markdown("**Window / level**")
    level = st.slider("Level (brightness centre)", 0.0, 255.0, 127.5, 0.5, key="rv_level")
    width = st.slider("Window (contrast width)", 8.0, 510.0, 255.0, 1.0, key="rv_window")
    window = None if (level, width) == (127.5, 255.0) else (level, width)
    st.markdown("**Zoom**")
    box = None
    scale = st.select_slider("Magnify", [1, 2, 3, 4], value=1, key="rv_magnify")
    if st.toggle("Zoom on a region", key="rv_zoom"):
        side = st.slider("Region size (px)", max(8, size // 16), size, size // 2, max(1, size // 64), key="rv_zoom_side")
        cx = st.slider("Region centre x", 0, size - 1, size // 2, key="rv_zoom_x")
        cy = st.slider("Region centre y", 0, size - 1, size // 2, key="rv_zoom_y")
        top = int(min(max(cy - side // 2, 0), size - side))
        left = int(min(max(cx - side // 2, 0), size - side))
        box = (top, left, int(side), int(side))
        scale = max(scale, size // side)  # a region is shown at least as large as the full image
    return {"pred_view": pred_view, "mode": mode, "alpha": float(alpha), "window": window,
            "box": box, "scale": int(scale), "thickness": max(1, size // 256)}


# --------------------------------------------------------------------------- the case
def case_ui(data: review.ReviewData, ev: review.Evaluation, index: int, view: dict[str, Any],
            ident: Ident | None = None) -> review.Case:
    """The triptych of one case with its numbers; returns the case (its id read with its pixels)."""
    ident = ident or _ident(data.run_dir, data.split)
    case = read_cases(data.run_dir, data.split, [index], ident)[0]
    c = ev.cases
    t = ev.triplet
    panels = _panel_pngs(str(data.run_dir), data.split, ident, int(index),
                         (float(t.pixel_threshold), float(t.top_threshold), int(t.min_area)), view)
    names = (
        "Input",
        f"Target: {int(c['true_area'][index])} px",
        f"Prediction: {int(c['pred_area'][index])} px, Dice {c['dice'][index]:.3f}, score {c['score'][index]:.2f}",
    )
    from pneumo_app.common import md_escape

    st.markdown(f"**{md_escape(case.id)}**: {c['category'][index]}")
    if view["scale"] <= 1:
        cols = st.columns(3)
        for col, (png, _), name in zip(cols, panels, names):
            # Stretched to the column: the three panels stay the same size whatever the pack's
            # resolution (at their natural width a long caption made one panel wider).
            col.image(png, caption=name, output_format="PNG", width="stretch")
        return case
    # Magnified: one panel per row at its rendered width, so zoom enlarges what is seen
    # (three columns would squeeze a 4x panel back to a third of the page).
    for (png, width), name in zip(panels, names):
        st.image(png, caption=name, output_format="PNG", width=width)
    return case


def verdict_ui(store: verdicts.VerdictStore, run_dir: Path, split: str, image_id: str, category: str,
               advance: tuple[str, int] | None = None) -> None:
    """Verdict buttons for the case's category (saved on click; the chosen one clears it) and
    a free note (saved on Enter or leaving the field).

    The note shown follows the store: a note saved in another tab replaces the field's text
    on the next rerun unless this tab has unsaved edits. Saving over a note changed elsewhere
    since it was loaded is refused by the store (:class:`pneumo.store.verdicts.NoteConflict`) and
    the page asks which one to keep.
    """
    run = run_dir.name
    reader = review_readers.current_reader()
    current = store.get(run, split, image_id, reader=reader)
    stored_note = current.note if current else ""

    def _save(verdict: str) -> None:
        store.set_verdict(run, split, image_id, verdict, category=category, reader=reader)
        if advance is not None and st.session_state.get("rv_auto_next", False):
            key, n = advance
            st.session_state[key] = review.step(int(st.session_state.get(key, 0)), n, 1)

    def _clear() -> None:
        store.clear_verdict(run, split, image_id, reader=reader)

    note_key = f"rv_note::{run}::{split}::{image_id}"
    base_key = note_key + "::loaded"  # the stored note this tab's field started from
    conflict_key = note_key + "::conflict"
    if note_key not in st.session_state or (
            st.session_state.get(base_key) != stored_note
            and st.session_state[note_key] == st.session_state.get(base_key)):
        st.session_state[note_key] = stored_note  # no unsaved edit here: show the newer note
        st.session_state[base_key] = stored_note

    def _save_note(force: bool = False) -> None:
        text = st.session_state[note_key]
        try:
            store.set_note(run, split, image_id, text, category=category, reader=reader,
                           expected=None if force else st.session_state.get(base_key, ""))
        except verdicts.NoteConflict as e:
            st.session_state[conflict_key] = e.stored
            return
        st.session_state[base_key] = text
        st.session_state.pop(conflict_key, None)

    def _keep_theirs() -> None:
        theirs = st.session_state.pop(conflict_key, stored_note)
        st.session_state[note_key] = theirs
        st.session_state[base_key] = theirs

    st.markdown(f"**Verdict on this {category}**")
    choices = verdicts.VERDICTS[category]
    cols = st.columns(len(choices) + 1)
    for col, v in zip(cols, choices):
        chosen = current is not None and current.verdict == v
        col.button(v, key=f"rv_verdict::{image_id}::{v}", type="primary" if chosen else "secondary",
                   on_click=_save, args=(v,), width="stretch")
    cols[-1].button("Clear verdict", key=f"rv_clear::{image_id}", on_click=_clear, width="stretch",
                    disabled=current is None or current.verdict is None)
    st.toggle("Go to the next case after a verdict", key="rv_auto_next")
    st.text_input("Note (saved when you press Enter or leave the field)", key=note_key, on_change=_save_note)
    if conflict_key in st.session_state:
        from pneumo_app.common import md_escape

        st.warning("This note was changed in another tab or by another reviewer since you opened it: "
                   f"it now reads \u201c{md_escape(st.session_state[conflict_key])}\u201d. Yours is not saved yet.")
        c1, c2 = st.columns(2)
        c1.button("Overwrite with mine", key=note_key + "::force", on_click=_save_note, args=(True,))
        c2.button("Keep theirs", key=note_key + "::theirs", on_click=_keep_theirs)
    if current is not None and current.verdict:
        st.caption(f"Saved: **{current.verdict}** ({current.category} at the time, {current.updated})")
    elif current is not None:
        st.caption("Note saved; no verdict yet.")
    else:
        st.caption("Not reviewed yet.")


# --------------------------------------------------------------------------- progress, export
def progress_ui(store: verdicts.VerdictStore, run_dir: Path, split: str, ev: review.Evaluation,
                order: np.ndarray, category: str) -> set[str]:
    """"12 of 41 reviewed" for the shown category and the split, by this session's reader
    (:func:`pneumo_app.review_readers.current_reader`); CSV export of every reader's rows (with
    the reader column). Returns the ids this reader reviewed.

    A case counts as reviewed when it has a verdict or a note: exactly the rows exported."""
    run = run_dir.name
    reader = review_readers.current_reader()
    reviewed = store.reviewed_ids(run, split, reader=reader)
    ids = ev.cases["id"]
    shown_ids = [str(ids[i]) for i in order]
    done = sum(1 for i in shown_ids if i in reviewed)
    total_done = sum(1 for i in ids if str(i) in reviewed)
    what = "cases" if category == "all" else f"{category} cases"
    st.progress(done / len(shown_ids) if shown_ids else 0.0,
                text=f"{done} of {len(shown_ids)} {what} reviewed ({total_done} of {len(ids)} in {split}) "
                     f"by you ({reader})")
    rows = store.all(run, split)
    c1, c2 = st.columns([1, 3])
    c1.download_button(
        # made when clicked (not on every Next), so it also holds what was saved since
        f"Export {len(rows)} reviews (CSV)", lambda: store.csv_text(run, split), file_name=f"reviews_{run}_{split}.csv",
        mime="text/csv", key="rv_export", disabled=not rows,
    )
    with c2.expander(f"Reviews so far ({len(rows)})"):
        if rows:
            import pandas as pd

            # a static table wraps long verdicts, notes and dates instead of cutting them
            st.table(pd.DataFrame([r.__dict__ for r in rows], columns=verdicts.EXPORT_COLUMNS).set_index("image_id"))
    return reviewed


# --------------------------------------------------------------------------- the page
def review_page() -> None:
    """The whole review page."""
    from pneumo_app import common

    st.title("Review")
    st.caption("Go through the model's predictions as a radiologist would: false positives first, "
               "then the misses; record a verdict on each.")
    with common.user_errors():
        review_readers.reader_ui()
        run_dir = run_ui()
        if run_dir is None:
            return
        split, checkpoint = split_checkpoint_ui(run_dir)
        if not predictions_ui(run_dir, split, checkpoint):
            return
        ident = _ident(run_dir, split)
        data = load_data(run_dir, split, ident)
        if data.n == 0:
            st.info(f"The {split} split is empty.")
            return
        with st.sidebar:
            triplet = triplet_ui(data)
            view = view_ui(data.size)
        ev = evaluation(run_dir, split, triplet, ident)
        with st.expander("Summary", expanded=True):
            summary_ui(ev)
        review_readers.readers_ui(run_dir, split, ev)
        category, sort, _ = review_nav.filter_ui(ev, run_dir, split)
        t = (float(triplet.pixel_threshold), float(triplet.top_threshold), int(triplet.min_area))
        cases_area(str(run_dir), split, checkpoint, t, category, sort, view)


@st.fragment
def cases_area(run_dir_s: str, split: str, checkpoint: str | None, triplet: tuple[float, float, int],
               category: str, sort: str, view: dict[str, Any]) -> None:
    """Progress, export, grid or case with verdicts. A fragment: Next, Previous, a verdict or a
    note rerun only this part, not the summary above (whose inputs have not changed)."""
    from pneumo_app import common

    run_dir = Path(run_dir_s)
    with common.user_errors():
        if not artifacts.freshness(run_dir, split, checkpoint).fresh:
            st.rerun(scope="app")  # files changed since the page was drawn: the page says why
        ident = _ident(run_dir, split)
        data = load_data(run_dir, split, ident)
        ev = evaluation(run_dir, split, evaluate.Triplet(*triplet), ident)
        order = review.select(ev.cases, category, sort)
        store = verdicts.VerdictStore.for_run(run_dir)
        pos_key = review_nav.pos_key(run_dir, split, category, sort)
        reviewed = progress_ui(store, run_dir, split, ev, order, category)
        st.session_state.setdefault("rv_mode", "Case")
        mode = st.segmented_control("View", MODES, key="rv_mode", required=True)
        if mode == "Grid":
            review_nav.grid_ui(data, ev, order, pos_key, view, reviewed, ident)
            return
        pos = review_nav.nav_ui(pos_key, category, int(order.size))
        if order.size == 0:
            st.info(f"No {category} case with this post-processing." if category != "all" else "No case.")
            return
        index = int(order[pos])
        case = case_ui(data, ev, index, view, ident)
        # -- full-resolution view (pneumo_app/review_fullres.py): a toggle, then the viewer
        from pneumo_app import review_fullres

        review_fullres.fullres_ui(data, case, evaluate.Triplet(*triplet))
        # -- end full-resolution view
        verdict_ui(store, run_dir, split, case.id, str(ev.cases["category"][index]),
                   advance=(pos_key, int(order.size)))
