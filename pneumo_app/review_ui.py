"""Widgets of the review page: a radiologist-style pass over a model's predictions.

Every ``*_ui`` function draws one part of the page and returns what the user chose. The model
of the session (categories, sorting, verdicts) is :mod:`pneumo.review.cases`; drawing is
:mod:`pneumo.review.viz`; metrics are :mod:`pneumo.evaluate`; the cached readers shared by the
page's modules are :mod:`pneumo_app.review_cache`. Nothing here runs a model: missing
predictions are computed by a ``python -m pneumo evaluate`` subprocess that the page polls.

Predictions that are not fresh for the chosen checkpoint and the pack
(:func:`pneumo.store.predictions.freshness`) are never shown as current. Position and view
options live in ``st.session_state`` keyed by run and split; verdicts and notes live in the
run's review database (:mod:`pneumo.store.verdicts`), so nothing entered is lost on reload and
a second tab sees them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from pneumo import evaluate, settings
from pneumo.config import SPLITS
from pneumo.errors import InputError
from pneumo.review import cases as review
from pneumo.store import predictions, verdicts
from pneumo.store.run import CHECKPOINTS, RunFolder, checkpoint_file
from pneumo.train import jobs
from pneumo_app import review_fullres, review_nav, review_readers, review_verdicts
from pneumo_app.review_cache import Ident, evaluation, files_ident, load_data, panel_pngs, read_cases

PRED_VIEWS = {"mask": "Thresholded mask", "heatmap": "Probability heat map"}
MODES = ("Case", "Grid")


def _k(name: str, run_dir: Path, split: str) -> str:
    """A session-state key scoped to one run and split."""
    return f"rv_{name}::{run_dir.name}::{split}"


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
        if remembered in paths and RunFolder(remembered).checkpoints():
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
    ckpts = RunFolder(run_dir).checkpoints()
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
    path = predictions.predictions_path(run_dir, split)
    job = jobs.evaluation_job(run_dir, split)
    if job and job["state"] == "running":
        _job_progress_ui(run_dir, split)
        return False
    if path.is_file():
        fresh = predictions.freshness(run_dir, split, checkpoint)
        if fresh.fresh:
            if checkpoint is None:
                st.caption("No checkpoint in this run to check them against; the pack is unchanged.")
            return True
        # never shown as current: say why, offer to recompute
        st.warning(f"The cached predictions for **{split}** are out of date: {fresh.reason}. "
                   "They are not shown, so no verdict lands on the wrong case.")
        if checkpoint is not None:
            st.button(f"Recompute with {checkpoint_file(checkpoint)}", type="primary", key="rv_recompute",
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


def _checkpoint_name(checkpoint: Any) -> str:
    return checkpoint_file(checkpoint) if checkpoint in CHECKPOINTS else f"{checkpoint}"


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
                text=f"Computing predictions for {split} with {_checkpoint_name(job.get('checkpoint'))}{detail}")
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
    ident = ident or files_ident(data.run_dir, data.split)
    case = read_cases(data.run_dir, data.split, [index], ident)[0]
    c = ev.cases
    t = ev.triplet
    panels = panel_pngs(str(data.run_dir), data.split, ident, int(index),
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
        ident = files_ident(run_dir, split)
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
        if not predictions.freshness(run_dir, split, checkpoint).fresh:
            st.rerun(scope="app")  # files changed since the page was drawn: the page says why
        ident = files_ident(run_dir, split)
        data = load_data(run_dir, split, ident)
        ev = evaluation(run_dir, split, evaluate.Triplet(*triplet), ident)
        order = review.select(ev.cases, category, sort)
        store = verdicts.VerdictStore.for_run(run_dir)
        pos_key = review_nav.pos_key(run_dir, split, category, sort)
        reviewed = review_verdicts.progress_ui(store, run_dir, split, ev, order, category)
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
        review_fullres.fullres_ui(data, case, evaluate.Triplet(*triplet))  # a toggle, then the viewer
        review_verdicts.verdict_ui(store, run_dir, split, case.id, str(ev.cases["category"][index]),
                                   advance=(pos_key, int(order.size)))
