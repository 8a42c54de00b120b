"""Widgets of the review page: a radiologist-style pass over a model's predictions.

Every ``*_ui`` function draws one part of the page and returns what the user chose. The model
of the session (categories, sorting, verdicts) is :mod:`pneumo.review`; drawing is
:mod:`pneumo.viz`; metrics are :mod:`pneumo.evaluate`. Nothing here runs a model: missing
predictions are computed by a ``python -m pneumo evaluate`` subprocess that the page polls.

Speed with thousands of images: the per-image histograms are computed once per predictions
file (``st.cache_resource`` keyed by path and mtime); a threshold change re-scores them in
O(N) (``st.cache_data``); only the shown cases' pixels are read (``st.cache_data`` per case).
Position and view options live in ``st.session_state`` keyed by run and split; verdicts live
in SQLite (``RUN/reviews.sqlite``), so nothing entered is lost on reload.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from pneumo import evaluate, review, settings, viz
from pneumo.errors import InputError

GRID_COLUMNS = 6
GRID_ROWS = 3
THUMB_SIZE = 160
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


def _mtime(path: str | Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _k(name: str, run_dir: Path, split: str) -> str:
    """A session-state key scoped to one run and split."""
    return f"rv_{name}::{run_dir.name}::{split}"


# --------------------------------------------------------------------------- cached readers
@st.cache_resource(show_spinner="Reading the cached predictions...", max_entries=4)
def _data(run_dir: str, split: str, mtime: float) -> review.ReviewData:
    data = review.ReviewData(run_dir, split)
    _ = data.stats  # one pass over all predictions; everything after is O(N) or per case
    return data


def load_data(run_dir: Path, split: str) -> review.ReviewData:
    """The run's :class:`ReviewData` with its histograms, shared by all sessions until the
    predictions file changes."""
    path = review.predictions_path(run_dir, split)
    return _data(str(run_dir), split, _mtime(path))


@st.cache_data(show_spinner=False, max_entries=64)
def _evaluate(run_dir: str, split: str, mtime: float, triplet: tuple[float, float, int]) -> review.Evaluation:
    return _data(run_dir, split, mtime).evaluate(evaluate.Triplet(*triplet))


def evaluation(run_dir: Path, split: str, triplet: evaluate.Triplet) -> review.Evaluation:
    """Scores of every image under ``triplet`` (cached per triplet)."""
    t = (float(triplet.pixel_threshold), float(triplet.top_threshold), int(triplet.min_area))
    return _evaluate(str(run_dir), split, _mtime(review.predictions_path(run_dir, split)), t)


@st.cache_data(show_spinner=False, max_entries=512)
def _cases(run_dir: str, split: str, mtime: float, indices: tuple[int, ...]) -> list[review.Case]:
    return _data(run_dir, split, mtime).cases(list(indices))


def read_cases(run_dir: Path, split: str, indices: list[int]) -> list[review.Case]:
    """Pixels of only these cases (cached per set of indices)."""
    mtime = _mtime(review.predictions_path(run_dir, split))
    return _cases(str(run_dir), split, mtime, tuple(int(i) for i in indices))


# --------------------------------------------------------------------------- run, split, predictions
def _run_label(path: Path) -> str:
    try:
        from pneumo import jobs

        state = jobs.read_status(path).get("state", "")
    except Exception:  # a damaged status file must not hide the run
        state = ""
    return f"{path.name}  ({state})" if state else path.name


def run_ui() -> Path | None:
    """Pick a run that has a model or cached predictions; remembered across pages."""
    from pneumo_app import common

    runs = review.reviewable_runs(settings.runs_dir())
    if not runs:
        st.info("No trained run yet. Train one on the **Training** page, then come back to review it.")
        return None
    paths = [str(p) for p in runs]
    key = "rv_run"
    if st.session_state.get(key) not in paths:
        remembered = st.session_state.get(common.RUN_KEY)
        st.session_state[key] = remembered if remembered in paths else paths[0]
    chosen = st.selectbox("Run", paths, key=key, format_func=lambda p: _run_label(Path(p)))
    st.session_state[common.RUN_KEY] = chosen
    return Path(chosen)


def split_checkpoint_ui(run_dir: Path) -> tuple[str, str | None]:
    """Pick the split (test by default) and the checkpoint (best by default)."""
    c1, c2 = st.columns(2)
    split = c1.selectbox("Split", review.SPLITS, index=review.SPLITS.index("test"), key="rv_split",
                         help="Review on test; the post-processing defaults were tuned on dev.")
    ckpts = review.run_checkpoints(run_dir)
    checkpoint = c2.selectbox("Checkpoint", ckpts, key=f"rv_ckpt::{run_dir.name}") if ckpts else None
    if not ckpts:
        c2.caption("No checkpoint in this run; reviewing its cached predictions.")
    return split, checkpoint


def _launch(run_dir: Path, split: str, checkpoint: str) -> None:
    try:
        review.start_evaluation(run_dir, split, checkpoint)
    except InputError as e:
        st.session_state["rv_launch_error"] = str(e)


def predictions_ui(run_dir: Path, split: str, checkpoint: str | None) -> bool:
    """Make sure predictions are cached; returns True when the page can review them.

    Missing predictions: one button launches ``python -m pneumo evaluate`` (a subprocess:
    the page never runs the model) and a fragment polls its progress.
    """
    if err := st.session_state.pop("rv_launch_error", None):
        st.error(err)
    path = review.predictions_path(run_dir, split)
    job = review.evaluation_job(run_dir, split)
    if job and job["state"] == "running":
        _job_progress_ui(run_dir, split)
        return False
    if path.is_file():
        stored = _stored_checkpoint(path)
        if checkpoint and stored and stored != checkpoint:
            st.info(f"The cached predictions come from `{stored}.keras`, not `{checkpoint}.keras`.")
            st.button(f"Recompute with {checkpoint}.keras", key="rv_recompute",
                      on_click=_launch, args=(run_dir, split, checkpoint))
        return True
    if job and job["state"] == "failed":
        st.error("Computing the predictions failed:")
        st.code(job.get("log_tail") or "(no output)")
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


def _stored_checkpoint(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("checkpoint")
    except OSError:
        return None
    return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)


@st.fragment(run_every=1.0)
def _job_progress_ui(run_dir: Path, split: str) -> None:
    job = review.evaluation_job(run_dir, split)
    if job is None or job["state"] != "running":
        st.rerun(scope="app")
        return
    frac = job.get("fraction")
    st.progress(frac if frac is not None else 0.0,
                text=f"Computing predictions for {split} with {job.get('checkpoint')}.keras"
                + (f": {frac:.0%}" if frac is not None else " (starting)..."))
    if job.get("log_tail"):
        st.code(job["log_tail"][-400:])
    if st.button("Stop", key="rv_stop_eval"):
        review.stop_evaluation(run_dir, split)


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
        st.plotly_chart(roc_figure(ev), key="rv_roc", config={"displayModeBar": False})


def roc_figure(ev: review.Evaluation) -> dict[str, Any]:
    """The presence ROC curve with the current triplet's operating point, as a plotly figure
    dict (a dict skips plotly's slow validation: this redraws on every click)."""
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


# --------------------------------------------------------------------------- navigation
def filter_ui(ev: review.Evaluation, run_dir: Path, split: str) -> tuple[str, str, np.ndarray]:
    """Category filter (FP first by default) and sort; returns ``(category, sort, order)``."""
    counts = ev.counts
    c1, c2 = st.columns([3, 2])
    category = c1.radio(
        "Show", review.FILTERS, horizontal=True, key=_k("cat", run_dir, split),
        format_func=lambda c: f"{c} ({counts[c]})" if c in counts else f"all ({sum(counts.values())})",
        help="FP: predicted pneumothorax where the label has none. FN: a missed one.",
    )
    sort = c2.selectbox("Sort", review.SORTS, key=_k("sort", run_dir, split))
    return category, sort, review.select(ev.cases, category, sort)


def _pos_key(run_dir: Path, split: str, category: str, sort: str) -> str:
    return f"rv_pos::{run_dir.name}::{split}::{category}::{sort}"


def position_ui(order: np.ndarray, category: str, key: str) -> int:
    """Previous / next (also the Left / Right keys) and "FP 3 of 41"; returns the position."""
    n = int(order.size)
    pos = review.step(int(st.session_state.get(key, 0)), n, 0)
    st.session_state[key] = pos

    def _move(delta: int) -> None:
        st.session_state[key] = review.step(int(st.session_state.get(key, 0)), n, delta)

    c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="center")
    c1.button("Previous", key=f"{key}::prev", on_click=_move, args=(-1,), disabled=pos <= 0,
              shortcut="Left", width="stretch")
    c2.markdown(f"<div style='text-align:center;font-size:1.2em'><b>{review.position_label(category, pos, n)}</b></div>",
                unsafe_allow_html=True)
    c3.button("Next", key=f"{key}::next", on_click=_move, args=(1,), disabled=pos >= n - 1,
              shortcut="Right", width="stretch")
    return pos


# --------------------------------------------------------------------------- display options
def view_ui(size: int) -> dict[str, Any]:
    """Prediction as heat map or mask, overlay fill/outline and opacity, window/level, zoom.

    Returns keyword arguments for :func:`pneumo.viz.triptych_panels` (plus ``magnify``).
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
def case_panels(case: review.Case, triplet: evaluate.Triplet, view: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input, target and prediction panels of a case: the prediction mask is exactly the
    post-processed mask that was scored (:func:`pneumo.evaluate.postprocess`)."""
    pred_mask = evaluate.postprocess(case.probs[None], triplet)[0]
    return viz.triptych_panels(case.image, case.target, case.probs, pred_mask=pred_mask, **view)


def case_ui(data: review.ReviewData, ev: review.Evaluation, index: int, view: dict[str, Any]) -> None:
    """The triptych of one case with its numbers."""
    case = read_cases(data.run_dir, data.split, [index])[0]
    c = ev.cases
    panels = case_panels(case, ev.triplet, view)
    names = (
        "Input",
        f"Target: {int(c['true_area'][index])} px",
        f"Prediction: {int(c['pred_area'][index])} px, Dice {c['dice'][index]:.3f}, score {c['score'][index]:.2f}",
    )
    st.markdown(f"**{case.id}**: {c['category'][index]}")
    cols = st.columns(3)
    for col, panel, name in zip(cols, panels, names):
        # Stretched to the column: the three panels stay the same size whatever the pack's
        # resolution (at their natural width a long caption made one panel wider).
        col.image(png_bytes(panel), caption=name, output_format="PNG", width="stretch")


def verdict_ui(store: review.VerdictStore, run_dir: Path, split: str, image_id: str, category: str,
               advance: tuple[str, int] | None = None) -> None:
    """Verdict buttons for the case's category (saved on click) and a free note (saved on change)."""
    run = run_dir.name
    current = store.get(run, split, image_id)

    def _save(verdict: str) -> None:
        store.set_verdict(run, split, image_id, verdict, category=category)
        if advance is not None and st.session_state.get("rv_auto_next", False):
            key, n = advance
            st.session_state[key] = review.step(int(st.session_state.get(key, 0)), n, 1)

    note_key = f"rv_note::{run}::{split}::{image_id}"
    if note_key not in st.session_state:
        st.session_state[note_key] = current.note if current else ""

    def _save_note() -> None:
        store.set_note(run, split, image_id, st.session_state[note_key], category=category)

    st.markdown(f"**Verdict on this {category}**")
    cols = st.columns(len(review.VERDICTS[category]))
    for col, v in zip(cols, review.VERDICTS[category]):
        chosen = current is not None and current.verdict == v
        col.button(v, key=f"rv_verdict::{image_id}::{v}", type="primary" if chosen else "secondary",
                   on_click=_save, args=(v,), width="stretch")
    st.toggle("Go to the next case after a verdict", key="rv_auto_next")
    st.text_input("Note (saved when you press Enter or leave the field)", key=note_key, on_change=_save_note)
    if current is not None and current.verdict:
        st.caption(f"Saved: **{current.verdict}** ({current.category} at the time, {current.updated})")
    else:
        st.caption("Not reviewed yet.")


# --------------------------------------------------------------------------- grid
def grid_ui(data: review.ReviewData, ev: review.Evaluation, order: np.ndarray, pos_key: str,
            view: dict[str, Any], reviewed: set[str]) -> None:
    """Thumbnails of a page of cases (target green, prediction red); Open shows one in full."""
    per_page = GRID_COLUMNS * GRID_ROWS
    n = int(order.size)
    if n == 0:
        st.info("No case in this category.")
        return
    pages = (n + per_page - 1) // per_page
    pos = int(st.session_state.get(pos_key, 0))
    page_key = pos_key + "::page"
    if not 1 <= int(st.session_state.get(page_key, 0)) <= pages:
        st.session_state[page_key] = min(pos // per_page + 1, pages)
    page = int(st.number_input(f"Page (of {pages})", 1, pages, key=page_key)) - 1
    shown = order[page * per_page : (page + 1) * per_page]
    cases = read_cases(data.run_dir, data.split, [int(i) for i in shown])
    def _open(p: int) -> None:
        st.session_state[pos_key] = p
        st.session_state["rv_mode"] = "Case"

    for r in range(0, len(cases), GRID_COLUMNS):
        cols = st.columns(GRID_COLUMNS)
        for j, (col, case) in enumerate(zip(cols, cases[r : r + GRID_COLUMNS])):
            p = page * per_page + r + j
            i = case.index
            pred_mask = evaluate.postprocess(case.probs[None], ev.triplet)[0]
            gray = viz.window_level(case.image, *view["window"]) if view["window"] else case.image
            img = viz.overlay(gray, case.target, viz.TARGET_COLOR, view["alpha"], view["mode"])
            img = viz.overlay(img, pred_mask, viz.PRED_COLOR, view["alpha"], view["mode"])
            cat = str(ev.cases["category"][i])
            thumb = viz.thumbnail_grid([img], cols=1, size=THUMB_SIZE, gap=0, borders=[viz.CATEGORY_COLORS[cat]])
            mark = " ✓" if case.id in reviewed else ""
            col.image(png_bytes(thumb), caption=f"{p + 1}. {case.id} {cat}{mark} · {ev.cases['score'][i]:.2f}",
                      output_format="PNG")
            col.button("Open", key=f"rv_open::{pos_key}::{p}", on_click=_open, args=(p,), width="stretch")


# --------------------------------------------------------------------------- progress, export
def progress_ui(store: review.VerdictStore, run_dir: Path, split: str, ev: review.Evaluation,
                order: np.ndarray, category: str) -> set[str]:
    """"12 of 41 reviewed" for the shown category and the split; CSV export. Returns reviewed ids."""
    run = run_dir.name
    reviewed = store.reviewed_ids(run, split)
    ids = ev.cases["id"]
    shown_ids = [str(ids[i]) for i in order]
    done = sum(1 for i in shown_ids if i in reviewed)
    total_done = sum(1 for i in ids if str(i) in reviewed)
    what = "cases" if category == "all" else f"{category} cases"
    st.progress(done / len(shown_ids) if shown_ids else 0.0,
                text=f"{done} of {len(shown_ids)} {what} reviewed ({total_done} of {len(ids)} in {split})")
    rows = store.all(run, split)
    c1, c2 = st.columns([1, 3])
    c1.download_button(
        f"Export {len(rows)} reviews (CSV)", store.csv_text(run, split), file_name=f"reviews_{run}_{split}.csv",
        mime="text/csv", key="rv_export", disabled=not rows,
    )
    with c2.expander(f"Reviews so far ({len(rows)})"):
        if rows:
            import pandas as pd

            st.dataframe(pd.DataFrame([r.__dict__ for r in rows], columns=review.EXPORT_COLUMNS),
                         hide_index=True, key="rv_reviews_table")
    return reviewed


# --------------------------------------------------------------------------- the page
def review_page() -> None:
    """The whole review page."""
    from pneumo_app import common

    st.title("Review")
    st.caption("Go through the model's predictions as a radiologist would: false positives first, "
               "then the misses; record a verdict on each.")
    with common.user_errors():
        run_dir = run_ui()
        if run_dir is None:
            return
        split, checkpoint = split_checkpoint_ui(run_dir)
        if not predictions_ui(run_dir, split, checkpoint):
            return
        data = load_data(run_dir, split)
        if data.n == 0:
            st.info(f"The {split} split is empty.")
            return
        with st.sidebar:
            triplet = triplet_ui(data)
            view = view_ui(data.size)
        ev = evaluation(run_dir, split, triplet)
        with st.expander("Summary", expanded=True):
            summary_ui(ev)
        category, sort, _ = filter_ui(ev, run_dir, split)
        t = (float(triplet.pixel_threshold), float(triplet.top_threshold), int(triplet.min_area))
        cases_area(str(run_dir), split, t, category, sort, view)


@st.fragment
def cases_area(run_dir_s: str, split: str, triplet: tuple[float, float, int], category: str, sort: str,
               view: dict[str, Any]) -> None:
    """Progress, export, grid or case with verdicts. A fragment: Next, Previous, a verdict or a
    note rerun only this part, not the summary above (whose inputs have not changed)."""
    from pneumo_app import common

    run_dir = Path(run_dir_s)
    with common.user_errors():
        data = load_data(run_dir, split)
        ev = evaluation(run_dir, split, evaluate.Triplet(*triplet))
        order = review.select(ev.cases, category, sort)
        store = review.VerdictStore.for_run(run_dir)
        pos_key = _pos_key(run_dir, split, category, sort)
        reviewed = progress_ui(store, run_dir, split, ev, order, category)
        st.session_state.setdefault("rv_mode", "Case")
        mode = st.segmented_control("View", MODES, key="rv_mode", required=True)
        if mode == "Grid":
            grid_ui(data, ev, order, pos_key, view, reviewed)
            return
        pos = position_ui(order, category, pos_key)
        if order.size == 0:
            st.info(f"No {category} case with this post-processing." if category != "all" else "No case.")
            return
        index = int(order[pos])
        case_ui(data, ev, index, view)
        image_id = str(ev.cases["id"][index])
        verdict_ui(store, run_dir, split, image_id, str(ev.cases["category"][index]),
                   advance=(pos_key, int(order.size)))
