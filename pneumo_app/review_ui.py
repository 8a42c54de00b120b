"""The Review page: a reading room for a model's predictions, built for a radiologist's screen.

Layout (1440x900, nothing below the fold): one header row (the page, run, split, checkpoint,
reader), one status line (which run was opened and why, the thresholds in use and the
headline score), then three tabs: the **Reading room** (:mod:`pneumo_app.review_case`: filter
row, the case picture with its toolbar, verdicts beside it), the **Dashboard**
(:mod:`pneumo_app.review_dashboard`) and **Readers** (:mod:`pneumo_app.review_readers`, with the
export). Tabs are lazy: only the open one is computed. The sidebar holds the post-processing
thresholds, which belong to the run (:mod:`pneumo.store.thresholds`: saved on every change,
used by ``pneumo review`` too), and the overlays' style.

Nothing here runs a model: missing predictions are computed by a ``python -m pneumo evaluate``
subprocess that the page polls; predictions that are not fresh for the chosen checkpoint and
the pack (:func:`pneumo.store.predictions.freshness`) are never shown as current.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from pneumo import evaluate, settings
from pneumo.config import SPLITS
from pneumo.errors import InputError
from pneumo.review import runs
from pneumo.store import predictions, thresholds, verdicts
from pneumo.store.run import CHECKPOINTS, RunFolder, checkpoint_file
from pneumo.train import jobs
from pneumo_app import review_case, review_dashboard, review_nav, review_readers, review_verdicts
from pneumo_app.review_cache import evaluation, files_ident, load_data

RUN_PARAM = "run"  # ?run=NAME opens that run (the Home page's link to a finished quick demo)
_CSS = """<style>
/* The reading room fits a 1440x900 screen: less air above and between the rows. */
[data-testid="stMainBlockContainer"] { padding: 1.6rem 2rem 1rem 2rem; max-width: none; }
[data-testid="stMainBlockContainer"] [data-testid="stVerticalBlock"] { gap: 0.55rem; }
[data-testid="stMainBlockContainer"] h3 { padding: 0; }
</style>"""


def _k(name: str, run_dir: Path) -> str:
    """A session-state key scoped to one run."""
    return f"rv_{name}::{run_dir.name}"


# --------------------------------------------------------------------------- run, split, predictions
def run_ui() -> Path | None:
    """Pick a run that has a model or cached predictions. A new session opens the best finished
    run (:func:`pneumo.review.runs.best_run`) and says why; ``?run=NAME`` opens that one."""
    found = runs.reviewable_runs(settings.runs_dir())
    if not found:
        st.info("No trained run yet. Train one on the **Training** page, then come back to review it.")
        return None
    paths = [str(p) for p in found]
    key = "rv_run"
    asked = st.query_params.get(RUN_PARAM)
    if asked:
        st.query_params.pop(RUN_PARAM, None)
        match = [p for p in paths if Path(p).name == asked]
        if match:
            st.session_state[key] = match[0]
            st.session_state["rv_run_why"] = (match[0], "the run the link asked for")
        else:
            st.session_state["rv_run_note"] = f"No reviewable run named {asked!r}."
    if st.session_state.get(key) not in paths:
        choice = runs.best_run(found)
        st.session_state[key] = str(choice.path)
        st.session_state["rv_run_why"] = (str(choice.path), choice.why)
    chosen = st.selectbox("Run", paths, key=key, label_visibility="collapsed",
                          format_func=lambda p: "Run: " + runs.run_label(Path(p)))
    from pneumo_app import common

    st.session_state[common.RUN_KEY] = chosen
    return Path(chosen)


def opened_note(run_dir: Path) -> str:
    """Why this run is open: the page's choice (and its reason) or the reader's."""
    from pneumo_app.common import md_escape

    path, why = st.session_state.get("rv_run_why", (None, ""))
    if path == str(run_dir):
        return f"Opened **{md_escape(run_dir.name)}**: {why}."
    return f"**{md_escape(run_dir.name)}**, chosen by you."


def split_checkpoint_ui(run_dir: Path, c_split, c_ckpt) -> tuple[str, str | None]:
    """The split (test by default) and the checkpoint (best by default), labels collapsed."""
    split = c_split.selectbox("Split", SPLITS, index=SPLITS.index("test"), key="rv_split",
                              format_func=lambda s: f"Split: {s}", label_visibility="collapsed",
                              help="Review on test; the post-processing defaults were tuned on dev.")
    ckpts = RunFolder(run_dir).checkpoints()
    checkpoint = None
    if ckpts:
        checkpoint = c_ckpt.selectbox("Checkpoint", ckpts, key=f"rv_ckpt::{run_dir.name}", label_visibility="collapsed",
                                      format_func=checkpoint_file, help="The model whose predictions are reviewed.")
    else:
        c_ckpt.caption("No checkpoint: cached predictions only.")
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
def _as_tuple(t: evaluate.Triplet) -> tuple[float, float, int]:
    return float(t.pixel_threshold), float(t.top_threshold), int(t.min_area)


def triplet_ui(data, run_dir: Path) -> tuple[evaluate.Triplet, str]:
    """Pixel threshold, top threshold and minimum area: the run's thresholds
    (:func:`pneumo.store.thresholds.run_thresholds`: saved with the run, else dev-tuned), saved
    with the run on every change; Reset goes back to the dev-tuned triplet. A change saved
    by another reader is followed on the next full rerun. Returns the triplet and a line
    saying what it is."""
    from pneumo_app.common import md_escape

    size = data.size
    dev, dev_origin = predictions.run_triplet(run_dir, size, data.checkpoint)  # damaged metrics: named, page stops
    try:
        current = thresholds.run_thresholds(run_dir, size, data.checkpoint)
        damaged = None
    except InputError as e:
        current, damaged = thresholds.RunThresholds(dev, "dev-tuned", dev_origin, dev, dev_origin, {}), str(e)
    kp, kt, ka, kfile = (_k(n, run_dir) for n in ("pt", "tt", "area", "file"))

    def _show(t: evaluate.Triplet) -> None:
        st.session_state[kp], st.session_state[kt], st.session_state[ka] = _as_tuple(t)

    if st.session_state.get(kfile) != _as_tuple(current.triplet) or kp not in st.session_state:
        _show(current.triplet)  # first look, or another reader saved other thresholds
        st.session_state[kfile] = _as_tuple(current.triplet)

    def _save() -> None:
        t = evaluate.Triplet(float(st.session_state[kp]), float(st.session_state[kt]), int(st.session_state[ka]))
        try:
            thresholds.save_thresholds(run_dir, t, size, checkpoint=data.checkpoint,
                                       reader=review_readers.current_reader())
        except InputError as e:
            st.session_state["rv_thresholds_msg"] = str(e)
            return
        st.session_state[kfile] = _as_tuple(t)

    def _reset() -> None:
        try:
            thresholds.clear_thresholds(run_dir)
        except InputError as e:
            st.session_state["rv_thresholds_msg"] = str(e)
        _show(dev)
        st.session_state[kfile] = _as_tuple(dev)

    st.markdown("**Post-processing** (saved with the run)")
    st.slider("Pixel threshold", 0.0, 0.99, step=0.01, key=kp, on_change=_save,
              help="A pixel is in the predicted mask when its probability exceeds this.")
    st.slider("Top threshold", 0.0, 0.99, step=0.01, key=kt, on_change=_save,
              help="An image is called positive only if at least 'minimum area' pixels exceed this.")
    top_area = max(size * size + 1, int(dev.min_area), int(st.session_state[ka]))
    st.number_input(f"Minimum area (px of {size}x{size})", 0, top_area, step=max(1, size * size // 1000), key=ka,
                    on_change=_save, help=f"Above {size * size} nothing is ever called positive (all-empty).")
    chosen = evaluate.Triplet(float(st.session_state[kp]), float(st.session_state[kt]), int(st.session_state[ka]))
    st.button(f"Reset to the dev-tuned triplet ({dev.pixel_threshold:g}, {dev.top_threshold:g}, {dev.min_area})",
              key=_k("reset", run_dir), on_click=_reset,
              disabled=chosen == dev and current.source != "chosen" and not damaged)
    if msg := st.session_state.pop("rv_thresholds_msg", None):
        st.warning(md_escape(msg))
    if damaged:
        st.warning(md_escape(damaged))
    if chosen != dev:
        what = "chosen for this run"
        by = current.saved.get("reader") if current.source == "chosen" and chosen == current.triplet else None
        what += f" (by {md_escape(by)})" if by else ""
    else:
        what = "dev-tuned" if dev_origin != "default" else "plain 0.5 thresholding (never evaluated)"
    st.caption(f"{thresholds.describe(chosen, size)}: {what}. `pneumo review` counts with these too.")
    return chosen, f"{thresholds.describe(chosen, size)}, {what}"


def style_ui() -> dict[str, Any]:
    """How the overlays are drawn: outline or fill, and their opacity."""
    st.markdown("**Overlays**")
    mode = st.radio("Overlay as", ["outline", "fill"], horizontal=True, key="rv_overlay_mode")
    alpha = st.slider("Overlay opacity", 0.1, 1.0, 0.9 if mode == "outline" else 0.35, 0.05, key=f"rv_alpha_{mode}")
    return {"mode": mode, "alpha": float(alpha)}


# --------------------------------------------------------------------------- the page
def review_page() -> None:
    """The whole review page."""
    from pneumo_app import common

    st.html(_CSS)
    with common.user_errors():
        c_title, c_run, c_split, c_ckpt, c_reader = st.columns([1.05, 3.6, 1.25, 1.55, 2.4],
                                                               vertical_alignment="center")
        c_title.subheader("Review", anchor=False)
        with c_reader:
            review_readers.reader_ui()
        with c_run:
            run_dir = run_ui()
        if run_dir is None:
            return
        split, checkpoint = split_checkpoint_ui(run_dir, c_split, c_ckpt)
        if note := st.session_state.pop("rv_run_note", None):
            st.warning(note)
        if not predictions_ui(run_dir, split, checkpoint):
            st.caption(opened_note(run_dir))
            return
        ident = files_ident(run_dir, split)
        data = load_data(run_dir, split, ident)
        if data.n == 0:
            st.info(f"The {split} split is empty.")
            return
        with st.sidebar:
            triplet, triplet_line = triplet_ui(data, run_dir)
            style = style_ui()
        ev = evaluation(run_dir, split, triplet, ident)
        st.caption(f"{opened_note(run_dir)} {review_dashboard.headline(ev, split)}.")
        tabs = st.tabs(review_nav.TABS, key="rv_tab", on_change="rerun")
        with tabs[0]:
            if tabs[0].open:
                shown, sort = review_nav.filter_ui(ev, data.stats, run_dir, split)
                review_case.reading_room(str(run_dir), split, checkpoint, _as_tuple(triplet), shown.chosen, sort, style)
        with tabs[1]:
            if tabs[1].open:
                review_dashboard.summary_ui(ev)
        with tabs[2]:
            if tabs[2].open:
                review_readers.readers_ui(run_dir, split, ev, data.pack_path)
                review_verdicts.reviews_ui(verdicts.VerdictStore.for_run(run_dir), run_dir, split)
