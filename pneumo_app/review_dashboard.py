"""The Review page's Dashboard tab: the run's scores on the split under its thresholds.

SIIM score beside the all-empty baseline, Dice on positive images, presence AUC, the presence
confusion matrix and the ROC curve with the thresholds' operating point. Computed only while
the tab is open (a lazy tab), from :func:`pneumo_app.review_cache.evaluation` (O(N) per
threshold change).
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from pneumo.review import cases as review


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
    c[3].metric("Presence AUC", _fmt(s["auc"]), help="How well the presence score (the min-area-th highest "
                "probability of an image) separates images with and without a pneumothorax.")
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


def headline(ev: review.Evaluation, split: str) -> str:
    """``"SIIM score 0.955 (all-empty 0.793) on test, 121 images"`` under the thresholds in use."""
    s = ev.summary
    return (f"SIIM score {_fmt(s['siim_score'])} (all-empty {_fmt(s['empty_baseline'])}) on {split}, "
            f"{s['n_images']} images")
