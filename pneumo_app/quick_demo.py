"""Home's quick demo: start it, follow it, and show how it ended (its test scores, a way into Review).

The demo is ``python -m pneumo quickstart`` in the background (:func:`pneumo.train.jobs.start_quick_demo`):
pack, training and test scores in one process whose stages are recorded in the runs folder.
Nothing here runs the work, so closing the tab never cancels it; a reload or another tab reads
the record again (:func:`pneumo.train.jobs.quick_demo_job`). The scores are what the run's
evaluation wrote (:func:`pneumo.store.predictions.read_metrics`, test split): the figures
``python -m pneumo quickstart`` prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from pneumo.errors import InputError
from pneumo.store.predictions import read_metrics
from pneumo.store.run import RunFolder, log_tail, read_progress
from pneumo.train import jobs
from pneumo_app import common

REFRESH_S = 2
REVIEW_PAGE = "app_pages/review.py"
TRAINING_PAGE = "app_pages/training.py"
# One line per stage, in order: what the progress bar says the job is doing.
STEP_TEXT = {"pack": "Step 1 of 3: making the demo pack", "train": "Step 2 of 3: training",
             "evaluate": "Step 3 of 3: scoring the test split"}


def start() -> None:
    """Launch the quick demo (refused with a message while another job runs) and redraw the page."""
    with common.user_errors():
        jobs.start_quick_demo()
    st.rerun()


def open_in_review(run_dir: Path) -> None:
    """Make ``run_dir`` the run the Review page opens, and go there."""
    st.session_state[common.RUN_KEY] = str(run_dir)
    st.session_state.pop("rv_run", None)  # the Review page's own choice, from an earlier visit
    # ?run=NAME: the Review page opens that run and says it was asked for (review_ui.RUN_PARAM)
    st.switch_page(REVIEW_PAGE, query_params={"run": Path(run_dir).name})


def _fraction(done: Any, total: Any) -> float:
    try:
        return min(1.0, max(0.0, float(done) / float(total)))
    except (TypeError, ValueError, ZeroDivisionError):
        return 0.0


def _running_ui(job: dict) -> None:
    stage, run = job["stage"], job["run"]
    text, fraction = STEP_TEXT[stage], 0.0
    if stage == "pack":
        fraction = _fraction(job.get("done"), job.get("total"))
        if job.get("total"):
            text += f": {job.get('done') or 0:,} of {job['total']:,} images"
    elif stage == "train" and run is not None:
        p = read_progress(run) or {}
        fraction = _fraction(((p.get("epoch") or 1) - 1) * (p.get("steps") or 1) + (p.get("step") or 0),
                             (p.get("epochs") or 1) * (p.get("steps") or 1)) if p else 0.0
        text += f" {common.md_escape(run.name)}" + (
            f": epoch {p.get('epoch')} of {p.get('epochs')}, step {p.get('step')} of {p.get('steps')}" if p
            else " (loading TensorFlow and the data)")
    elif stage == "evaluate" and run is not None:
        ev = jobs.evaluation_job(run, "test") or {}
        fraction = ev.get("fraction") or 0.0
        text += f" with {common.md_escape(run.name)}'s best checkpoint"
    st.progress(fraction, text=text)
    c1, c2 = st.columns([3, 1])
    c1.caption("It runs in the background (`python -m pneumo quickstart`): closing this tab or the browser "
               "does not stop it; come back to Home to follow it.")
    if stage == "train":
        with c1:
            st.page_link(TRAINING_PAGE, label="Watch the curves on the Training page", icon=":material/monitoring:")
    if c2.button("Stop the quick demo", key="home_quick_stop", icon=":material/stop:",
                 help="While it trains it ends after the current batch, keeping last.keras; "
                      "a demo pack being made is not kept."):
        jobs.stop_quick_demo()
        st.caption("Stop requested.")


def _scores_ui(run: Path) -> None:
    try:
        m = read_metrics(run, "test")
    except InputError as e:
        st.error(common.md_escape(e))
        return
    if m is None:
        st.warning(f"The test scores of **{common.md_escape(run.name)}** are gone "
                   "(the run folder was removed or its evaluation deleted).")
        return
    siim, base = m.get("siim_score"), m.get("empty_baseline")
    gain = siim - base if siim is not None and base is not None else None

    def f(x: Any, spec: str = ".3f") -> str:
        return "n/a" if x is None else format(x, spec)

    st.success(f"**The quick demo finished**: run **{common.md_escape(run.name)}**, scored on its test split "
               f"({m.get('n_images')} images, {m.get('n_positive')} with a lesion; post-processing tuned on dev).",
               icon=":material/check_circle:")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("SIIM score", f(siim), delta=None if gain is None else f"{gain:+.3f} vs all-empty",
              help="Mean per-image Dice, an empty image counting 1 when predicted empty (the Kaggle score).")
    c2.metric("All-empty prediction", f(base), help="The SIIM score of predicting no lesion anywhere.")
    c3.metric("Dice on positive images", f(m.get("dice_positive_mean")))
    c4.metric("Presence AUC", f(m.get("auc")), help="How well the top probability separates images with a lesion.")
    if gain is not None and gain <= 0:
        st.caption("No better than predicting nothing: train longer on the Training page.")
    if st.button("Open this run in Review", type="primary", icon=":material/fact_check:", key="home_quick_review",
                 disabled=not RunFolder(run).checkpoints()):
        open_in_review(run)


def _ended_ui(job: dict) -> None:
    state, run = job["state"], job["run"]
    if state == "finished" and run is not None:
        _scores_ui(run)
        return
    what = "was stopped" if state == "stopped" else "failed"
    message = f"The last quick demo {what}" + (f": {common.md_escape(job['error'])}" if job.get("error") else ".")
    (st.warning if state == "stopped" else st.error)(message)
    log = job.get("log")
    if state == "failed" and log is not None and log.is_file():
        with st.expander(f"Last lines of {log.name}"):
            st.code(log_tail(log, lines=30), language=None)


def _follow() -> None:
    job = jobs.quick_demo_job()
    if job is None or job["state"] != "running":
        st.rerun()  # it ended: the whole page (button, outcome, packs, runs) follows
    _running_ui(job)


def status_ui(job: dict | None) -> None:
    """The quick demo ``job`` (:func:`pneumo.train.jobs.quick_demo_job`): its progress, refreshed
    every few seconds while it runs, or how it ended (outside the fragment, so Review can open)."""
    if job is None:
        return
    if job["state"] == "running":
        st.fragment(_follow, run_every=REFRESH_S)()
    else:
        _ended_ui(job)
