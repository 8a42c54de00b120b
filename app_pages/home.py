"""Home: what is in the workspace (packs, runs, their state) and a one-click demo."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pneumo import config
from pneumo.store.run import checkpoint_file
from pneumo.store.run_list import active_run, list_runs
from pneumo.train import jobs
from pneumo_app import common, quick_demo


st.title("pneumo")
st.write(
    "Find and outline pneumothorax on chest X-rays: pack images and masks, check the "
    "augmentation, train a VGG16-U-Net and review its mistakes like a radiologist, false "
    "positives first. Everything below runs on this machine; images never leave it."
)

active = active_run()
busy = jobs.running_job()  # any job of the workspace: training, evaluation, the quick demo itself
quick_job = jobs.quick_demo_job()
quick_running = quick_job is not None and quick_job["state"] == "running"
runs = list_runs()
packs = common.packs()

with st.container(border=True):
    st.subheader("Quick start on the demo data")
    quick = config.preset(common.QUICK_PRESET)
    st.write(
        "The demo data are synthetic chest phantoms, about a fifth with a pneumothorax-like "
        "lesion, so everything works without downloading anything. The quick demo trains a "
        f"small U-Net from scratch ({quick.variant}, width {quick.width:g}) on a "
        f"{config.QUICK_PACK_OPTIONS['size']} px demo pack of {config.QUICK_PACK_OPTIONS['count']:,} "
        f"phantoms ({quick.epochs} epochs of {quick.steps_per_epoch} batches of {quick.batch_size}, "
        "half of each batch with a lesion) in about 1.5 minutes on an idle 2-core CPU. On the "
        "demo's test split it beats predicting nothing (SIIM about 0.95 against 0.79) and outlines "
        "most lesions (Dice about 0.8 on positive images), so the Review page has real hits, "
        "misses and false positives to go through. Real X-rays need ImageNet weights and a GPU "
        "(the Training page's other presets). When it ends, its test scores appear here with a "
        "way into the Review page."
    )
    c1, c2 = st.columns([1, 3])
    if c1.button("Train a quick demo model", type="primary", icon=":material/play_arrow:",
                 disabled=busy is not None, key="home_quick",
                 help="Runs `python -m pneumo quickstart` in the background: the demo pack, training, "
                      "then the test scores."):
        quick_demo.start()
    if busy is not None and not quick_running:
        c2.info(f"Another job runs now ({common.md_escape(busy)}); one at a time.")
        if active is not None:
            st.page_link("app_pages/training.py", label="Follow it on the Training page", icon=":material/monitoring:")
    quick_demo.status_ui(quick_job)

st.subheader("Packs")
if packs:
    st.dataframe(
        [
            {
                "pack": p.path.name,
                "size (px)": p.size,
                "train": p.counts["train"],
                "dev": p.counts["dev"],
                "test": p.counts["test"],
                "positive (train)": p.positive_fractions["train"],
                "source": p.attrs.get("source", "?"),
                "created": p.attrs.get("created", "?"),
            }
            for p in packs
        ],
        hide_index=True,
        column_config={"positive (train)": st.column_config.NumberColumn(format="percent")},
    )
else:
    st.info("No pack yet.")
common.damaged_packs_note()
st.page_link("app_pages/data.py", label="Make or inspect a pack on the Data page", icon=":material/database:")

st.subheader("Runs")
if runs:
    st.dataframe(
        [
            {
                "run": r.name,
                "state": r.state,
                "model": r.config.get("variant", "?"),
                "pack": Path(str(r.config.get("pack", ""))).name,
                "epochs": f"{r.epochs_done} / {r.epochs if r.epochs is not None else '?'}",
                "best val Dice": r.best_val_dice,
                "checkpoint": checkpoint_file("best") if r.has_best else "",
                "error": r.damaged or r.error or "",  # a damaged run says why
            }
            for r in runs
        ],
        hide_index=True,
        column_config={"best val Dice": st.column_config.NumberColumn(format="%.3f")},
    )
else:
    st.info("No training run yet: start the quick demo above, or choose options on the Training page.")
c1, c2, c3 = st.columns(3)
with c1:
    st.page_link("app_pages/augmentation.py", label="Augmentation preview", icon=":material/auto_awesome_motion:")
with c2:
    st.page_link("app_pages/training.py", label="Training", icon=":material/model_training:")
if (Path(__file__).parent / "review.py").exists():
    with c3:
        st.page_link("app_pages/review.py", label="Review a model's mistakes", icon=":material/fact_check:")
