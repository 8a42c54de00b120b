"""Training page: options and presets, Start (a separate process), live curves, Stop, past runs.

The page never trains: `pneumo.jobs.start_training` launches `python -m pneumo train` and
everything shown here is read back from the run folder, so a reload, a second tab or an app
restart finds the run and can stop it.
"""
from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pneumo import jobs
from pneumo.config import AugmentConfig, TrainConfig
from pneumo_app import common

common.page_guard()

VARIANTS = {
    "unet": "unet: VGG16-U-Net with skip connections (recommended)",
    "blog": "blog: the blog's VGG16 encoder-decoder, as described",
    "blog-code": "blog-code: the blog's model as its code builds it",
}
LOSSES = {"bce": "binary cross-entropy (the blog's)", "dice": "soft Dice", "bce+dice": "BCE + soft Dice"}
WEIGHTS = {"imagenet": "ImageNet (pretrained VGG16)", "none": "none (random initialisation)", "file": "a local .h5 file"}
FREEZE = {"auto": "auto (frozen when pretrained)", "frozen": "frozen", "trainable": "trainable"}
REFRESH_S = 2


# --------------------------------------------------------------------------- options
def _apply_preset(name: str) -> None:
    p = common.PRESETS[name]
    ss = st.session_state
    ss.tr_variant = p["variant"]
    ss.tr_weights = "none" if p["encoder_weights"] is None else "imagenet"
    ss.tr_freeze = {None: "auto", True: "frozen", False: "trainable"}[p["freeze_encoder"]]
    ss.tr_epochs = int(p["epochs"])
    ss.tr_steps = int(p["steps_per_epoch"] or 0)
    ss.tr_val_steps = int(p["validation_steps"] or 0)
    ss.tr_batch = int(p["batch_size"])
    ss.tr_lr = float(p["lr"])
    ss.tr_loss = p["loss"]
    ss.tr_ft_epochs = int(p["fine_tune_epochs"])
    ss.tr_ft_lr = float(p["fine_tune_lr"])
    ss.tr_mp = bool(p["mixed_precision"])
    ss.tr_xla = bool(p["xla"])
    ss.tr_seed = int(p["seed"])


def _on_preset() -> None:
    st.session_state.tr_preset_kept = st.session_state.tr_preset
    _apply_preset(st.session_state.tr_preset)


def _without_weights() -> None:
    st.session_state.tr_weights = "none"


def options_ui(pack_path: str) -> TrainConfig:
    """Every :class:`TrainConfig` option, initialised from a preset. Returns the config."""
    ss = st.session_state
    if "tr_preset" not in ss:
        ss.tr_preset = ss.get("tr_preset_kept", common.QUICK_PRESET)
    if "tr_variant" not in ss:  # first visit (or back from another page): fill from the preset
        _apply_preset(ss.tr_preset)
    st.selectbox("Preset", list(common.PRESETS), key="tr_preset", on_change=_on_preset,
                 help="Fills every option below; change any of them afterwards.")
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Model", list(VARIANTS), format_func=VARIANTS.get, key="tr_variant")
    c2.selectbox("Encoder weights", list(WEIGHTS), format_func=WEIGHTS.get, key="tr_weights")
    weights_path = c2.text_input("Weights file", key="tr_weights_path") if ss.tr_weights == "file" else ""
    c3.selectbox("Encoder", list(FREEZE), format_func=FREEZE.get, key="tr_freeze")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Epochs", 1, 10_000, key="tr_epochs")
    c2.number_input("Steps per epoch (0 = one pass)", 0, 10**6, key="tr_steps")
    c3.number_input("Validation steps (0 = one pass)", 0, 10**6, key="tr_val_steps")
    c4.number_input("Batch size", 1, 1024, key="tr_batch")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Learning rate (Adam)", 1e-7, 1.0, key="tr_lr", format="%.1e", step=1e-5)
    c2.selectbox("Loss", list(LOSSES), format_func=LOSSES.get, key="tr_loss")
    c3.number_input("Fine-tune epochs (encoder unfrozen)", 0, 10_000, key="tr_ft_epochs")
    c4.number_input("Fine-tune learning rate", 1e-8, 1.0, key="tr_ft_lr", format="%.1e", step=1e-6)
    c1, c2, c3, _ = st.columns(4)
    c1.number_input("Seed", 0, 2**31 - 1, key="tr_seed")
    c2.checkbox("Mixed precision (GPU)", key="tr_mp")
    c3.checkbox("XLA compile", key="tr_xla")
    with st.expander("Augmentation (defaults: the blog's ranges; preview on the Augmentation page)"):
        augment = common.augment_config_ui("tr_aug", AugmentConfig())
    weights = {"imagenet": "imagenet", "none": None, "file": weights_path.strip() or None}[ss.tr_weights]
    return TrainConfig(
        pack=pack_path,
        variant=ss.tr_variant,
        encoder_weights=weights,
        freeze_encoder={"auto": None, "frozen": True, "trainable": False}[ss.tr_freeze],
        epochs=int(ss.tr_epochs),
        steps_per_epoch=int(ss.tr_steps) or None,
        validation_steps=int(ss.tr_val_steps) or None,
        batch_size=int(ss.tr_batch),
        lr=float(ss.tr_lr),
        loss=ss.tr_loss,
        fine_tune_epochs=int(ss.tr_ft_epochs),
        fine_tune_lr=float(ss.tr_ft_lr),
        mixed_precision=bool(ss.tr_mp),
        xla=bool(ss.tr_xla),
        seed=int(ss.tr_seed),
        augment=augment,
    )


# --------------------------------------------------------------------------- charts
def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r.get("epoch"), common.to_float(r.get(key))) for r in history]
    pts = [(e, v) for e, v in pts if e is not None and v is not None]
    return [e for e, _ in pts], [v for _, v in pts]


def curves_figure(history: list[dict]) -> go.Figure:
    """Loss and Dice per epoch, train and validation; a line where fine-tuning starts."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Dice"), horizontal_spacing=0.08)
    styles = {"": dict(color="#3b6e8f"), "val_": dict(color="#c0504d")}
    for col, metric in ((1, "loss"), (2, "dice")):
        for prefix, line in styles.items():
            x, y = _series(history, prefix + metric)
            fig.add_scatter(x=x, y=y, mode="lines+markers", line=line, name="train" if not prefix else "validation",
                            legendgroup=prefix or "train", showlegend=col == 1, row=1, col=col)
    tune = [r.get("epoch") for r in history if r.get("stage") == "fine-tune"]
    if tune:
        for col in (1, 2):
            fig.add_vline(x=min(tune) - 0.5, line_dash="dot", line_color="#888", row=1, col=col)
    epochs = [r.get("epoch") or 0 for r in history]
    fig.update_xaxes(title_text="epoch", tickformat="d", dtick=1 if max(epochs, default=0) <= 12 else None)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=1.2))
    return fig


def batch_loss_figure(points: list[tuple[float, float]]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines",
                               line=dict(color="#3b6e8f")))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title="Running batch loss",
                      xaxis_title="epoch", yaxis_title="loss")
    return fig


def compare_figure(runs: list, metric: str = "val_loss") -> go.Figure:
    fig = go.Figure()
    for run in runs:
        x, y = _series(jobs.read_history(run.path), metric)
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=run.name)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="epoch",
                      yaxis_title=metric.replace("_", " "), legend=dict(orientation="h", y=1.15))
    fig.update_xaxes(tickformat="d")
    fig.update_yaxes(rangemode="tozero")
    return fig


# --------------------------------------------------------------------------- live view
STATE_BADGE = {
    "running": ":blue-badge[running]",
    "finished": ":green-badge[finished]",
    "stopped": ":orange-badge[stopped]",
    "failed": ":red-badge[failed]",
    "new": ":gray-badge[not started]",
}


def _live_body(run_dir: str) -> None:
    status = jobs.read_status(run_dir)
    progress = jobs.read_progress(run_dir)
    history = jobs.read_history(run_dir)
    state = status["state"]
    ss = st.session_state
    if ss.get("tr_following") == run_dir and state != "running":
        ss.tr_following = None
        st.rerun()  # the whole page: Start becomes available again
    if state == "running":
        ss.tr_following = run_dir

    head, stop_col = st.columns([4, 1])
    head.markdown(f"**{Path(run_dir).name}** {STATE_BADGE.get(state, state)}")
    if state == "running":
        if (Path(run_dir) / "STOP").exists():
            stop_col.button("Stopping...", disabled=True, key="tr_stopping")
        elif stop_col.button("Stop", key="tr_stop", icon=":material/stop:",
                             help="Ends after the current batch and saves last.keras."):
            with common.user_errors():
                jobs.request_stop(run_dir)
            st.caption("Stop requested: the run ends after the current batch and saves `last.keras`.")
    if state == "failed":
        st.error(f"The run failed: {status.get('error') or 'no message'}")
        log = Path(run_dir) / "train.log"
        if log.exists():
            with st.expander("Last lines of train.log"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-30:]), language=None)

    if state == "running" and progress:
        epochs = progress.get("epochs") or status.get("epochs") or 1
        steps = progress.get("steps") or 1
        epoch = progress.get("epoch") or 1
        step = progress.get("step") or 0
        done = min(1.0, ((epoch - 1) + step / steps) / epochs)
        st.progress(done, text=f"{progress.get('stage', 'train')}: epoch {epoch} of {epochs}, step {step} of {steps}")
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Batch loss", f"{common.to_float(progress.get('loss')) or 0:.4f}")
        m2.metric("Images/s", f"{common.to_float(progress.get('images_per_s')) or 0:.1f}")
        m3.metric("ETA", common.fmt_seconds(common.to_float(progress.get("eta_s"))))
        _, best_dice = _series(history, "val_dice")
        m4.metric("Best val Dice", f"{max(best_dice):.3f}" if best_dice else "-")
        # The running batch loss is sampled here, each refresh; it lives in this session only.
        buf = ss.setdefault("tr_batch_loss", {}).setdefault(run_dir, [])
        point = ((epoch - 1) + step / steps, common.to_float(progress.get("loss")))
        if point[1] is not None and (not buf or buf[-1][0] != point[0]):
            buf.append(point)
            del buf[:-500]
    elif state == "running":
        st.progress(0.0, text="Starting (loading TensorFlow and the data)...")
    elif state in ("finished", "stopped"):
        st.caption(f"{status.get('epoch', 0)} of {status.get('epochs') or '?'} epochs, "
                   f"started {status.get('started')}, ended {status.get('ended')}")

    if history:
        st.plotly_chart(curves_figure(history), key="tr_curves")
    elif state == "running":
        st.caption("Curves appear after the first epoch.")
    buf = ss.get("tr_batch_loss", {}).get(run_dir, [])
    if state == "running" and len(buf) > 1:
        st.plotly_chart(batch_loss_figure(buf), key="tr_batch_curve")


def live_ui(run_dir: str) -> None:
    """The chosen run, refreshed every few seconds from its folder while it runs."""
    running = jobs.read_status(run_dir)["state"] == "running"
    st.fragment(_live_body, run_every=REFRESH_S if running else None)(run_dir)


# --------------------------------------------------------------------------- past runs
def runs_table(runs: list) -> list[dict]:
    return [
        {
            "run": r.name,
            "state": r.state,
            "model": r.config.get("variant", "?"),
            "pack": Path(str(r.config.get("pack", ""))).name,
            "epochs": f"{r.epochs_done} / {r.epochs if r.epochs is not None else '?'}",
            "best val loss": r.best_val_loss,
            "val Dice there": r.best_val_dice,
            "started": r.started,
            "error": r.error or "",
        }
        for r in runs
    ]


def past_runs_ui(runs: list) -> None:
    st.dataframe(runs_table(runs), hide_index=True,
                 column_config={"best val loss": st.column_config.NumberColumn(format="%.4f"),
                                "val Dice there": st.column_config.NumberColumn(format="%.3f")})
    with_history = [r for r in runs if r.epochs_done]
    if not with_history:
        return
    names = [r.name for r in with_history]
    ss = st.session_state
    known = ss.get("tr_compare_known")
    selected = [n for n in ss.get("tr_compare", []) if n in names]
    if known is None:
        selected = names[:5]
    else:  # runs that finished an epoch since the last look join the comparison
        selected = [n for n in names if n not in known][: max(0, 5 - len(selected))] + selected
    ss.tr_compare_known = names
    ss.tr_compare = selected
    chosen = st.multiselect("Compare", names, key="tr_compare")
    metric = st.radio("Curve", ["val_loss", "val_dice", "loss", "dice"], horizontal=True, key="tr_compare_metric",
                      format_func=lambda m: m.replace("_", " "))
    if chosen:
        st.plotly_chart(compare_figure([r for r in with_history if r.name in chosen], metric), key="tr_compare_chart")


# --------------------------------------------------------------------------- page
st.title("Training")
st.write(
    "Train a model on a pack. The run is a separate process (`python -m pneumo train`) writing "
    "to its own folder: reloading this page, opening a second tab or restarting the app does not "
    "stop it, and any of them can follow or stop it. One run at a time."
)
active = jobs.active_run()

with st.container(border=True):
    st.subheader("New run")
    info = common.pack_picker("Pack", key="tr_pack")
    if info is not None:
        config = options_ui(str(info.path))
        if st.session_state.tr_preset == common.QUICK_PRESET and info.size > 128:
            st.caption(f"This pack is {info.size} px: the quick demo takes about {(info.size // 128) ** 2}x longer "
                       f"than on the 128 px demo pack (Home's quick start makes one).")
        blocked = None
        if config.encoder_weights == "imagenet" and not jobs.encoder_weights_available():
            st.warning(
                "The ImageNet VGG16 weights are not on this machine "
                f"(`{jobs.encoder_weights_cache_path()}`), and training would have to download them. "
                "Without internet access the run would fail at once. Train without them "
                "(random initialisation), or copy the file there and reload."
            )
            st.button("Train without encoder weights", on_click=_without_weights, key="tr_no_weights")
            blocked = "the encoder weights are missing"
        if active is not None:
            blocked = f"run {active.name} is active"
        if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=blocked is not None,
                     key="tr_start", help=f"Disabled: {blocked}." if blocked else None):
            run_dir = common.start_run(config)
            st.session_state.tr_following = str(run_dir)
            st.rerun()
        if active is not None:
            st.caption(f"Start is disabled while **{active.name}** runs; stop it below or wait.")

runs = jobs.list_runs()
if runs:
    st.subheader("Run")
    names = [r.name for r in runs]
    wanted = active.name if active is not None else Path(st.session_state.get(common.RUN_KEY, "")).name
    if st.session_state.get("tr_run") not in names or (active is not None and st.session_state.get("tr_run_active") != active.name):
        st.session_state.tr_run = wanted if wanted in names else names[0]
    st.session_state.tr_run_active = active.name if active is not None else None
    by_name = {r.name: r for r in runs}
    name = st.selectbox("Run", names, key="tr_run", label_visibility="collapsed",
                        format_func=lambda n: f"{n}  ({by_name[n].state})")
    st.session_state[common.RUN_KEY] = str(by_name[name].path)
    live_ui(str(by_name[name].path))
    st.subheader("All runs")
    past_runs_ui(runs)
else:
    st.info("No runs yet in the workspace.")
