"""Training page: options and presets, Start (a separate process), live curves, Stop, past runs.

The page never trains: `pneumo.train.jobs.start_training` launches `python -m pneumo train` and
everything shown here is read back from the run folder, so a reload, a second tab or an app
restart finds the run and can stop it. The run picker, the live view, the "All runs" table and
the comparison are one fragment that refreshes itself every few seconds while a run is active.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pneumo import config as C
from pneumo.train import curves
from pneumo.train.cluster import describe_setup
from pneumo.model import imagenet
from pneumo.config import TrainConfig
from pneumo.store.run import (CONFIG, EXCLUSION_RECORD, RunFolder, load_history, log_tail, read_history, read_progress, read_status, remote_host, request_stop,
                              stop_requested)
from pneumo.store.run_list import active_run, list_runs
from pneumo_app import common, preset_packs

# Model, loss and schedule labels are the library's (pneumo.config, beside the vocabularies).
WEIGHTS = {"imagenet": "ImageNet (pretrained VGG16)", "none": "none (random initialisation)", "file": "a local .h5 file"}
FREEZE = {"auto": "auto (frozen when pretrained)", "frozen": "frozen", "trainable": "trainable"}
REFRESH_S = 2
MEASURING = "measuring..."


def _label(labels: dict[str, str]):
    return lambda value: labels.get(value, value)


# --------------------------------------------------------------------------- options
def _needs_imagenet(name: str) -> bool:
    return C.PRESETS[name].encoder_weights == "imagenet"


def offered_presets(weights_available: bool) -> list[str]:
    """The presets to offer: those that need the ImageNet weights only when they are here."""
    return [name for name in C.PRESETS if weights_available or not _needs_imagenet(name)]


def _apply_preset(name: str) -> None:
    p = C.preset(name)
    ss = st.session_state
    ss.tr_variant = p.variant
    ss.tr_width = float(p.width)
    ss.tr_weights = "none" if p.encoder_weights is None else "imagenet" if p.encoder_weights == "imagenet" else "file"
    ss.tr_weights_path = p.encoder_weights if ss.tr_weights == "file" else ""
    ss.tr_freeze = {None: "auto", True: "frozen", False: "trainable"}[p.freeze_encoder]
    ss.tr_epochs = int(p.epochs)
    ss.tr_steps = int(p.steps_per_epoch or 0)
    ss.tr_val_steps = int(p.validation_steps or 0)
    ss.tr_batch = int(p.batch_size)
    ss.tr_lr = float(p.lr)
    ss.tr_lr_schedule = p.lr_schedule
    ss.tr_loss = p.loss
    ss.tr_positive = float(p.positive_fraction or 0.0)
    ss.tr_ft_epochs = int(p.fine_tune_epochs)
    ss.tr_ft_lr = float(p.fine_tune_lr)
    ss.tr_mp = p.mixed_precision
    ss.tr_xla = bool(p.xla)
    ss.tr_seed = int(p.seed)
    ss.tr_in_memory = p.in_memory


def _on_preset() -> None:
    st.session_state.tr_preset_kept = st.session_state.tr_preset
    _apply_preset(st.session_state.tr_preset)


def _without_weights() -> None:
    st.session_state.tr_weights = "none"


def preset_ui(weights_available: bool) -> str:
    """The preset menu (pretrained presets only with the weights here); returns the chosen name."""
    ss = st.session_state
    offered = offered_presets(weights_available)
    if ss.get("tr_preset") not in offered:
        kept = ss.get("tr_preset_kept")
        ss.tr_preset = kept if kept in offered else C.QUICK_PRESET
        _apply_preset(ss.tr_preset)
    elif "tr_variant" not in ss:  # back from another page: the form's widgets were dropped
        _apply_preset(ss.tr_preset)
    st.selectbox("Preset", offered, key="tr_preset", on_change=_on_preset, format_func=_label(C.PRESET_TITLES),
                 help="Fills every option below; change any of them afterwards. The same presets as "
                      "`python -m pneumo train --preset NAME`.")
    hidden = [C.PRESET_TITLES.get(n, n) for n in C.PRESETS if n not in offered]
    if hidden:
        st.caption(f"Not offered: {common.md_escape(', '.join(hidden))}, which start from the ImageNet VGG16 "
                   f"weights: {common.md_escape(imagenet.imagenet_cache_problem())}. "
                   f"{common.md_escape(imagenet.imagenet_fix())} Then reload this page.")
    return ss.tr_preset


def options_ui(pack_path: str, weights_available: bool) -> TrainConfig:
    """Every :class:`TrainConfig` option, initialised from a preset. Returns the config."""
    ss = st.session_state
    name = ss.tr_preset  # chosen above the pack (preset_ui)
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Model", C.VARIANTS, format_func=lambda v: f"{v}: {C.VARIANT_LABELS[v]}", key="tr_variant")
    c1.number_input("Width (unet-bn's filters x this; 1 for the other models)", 0.0625, 1.0, key="tr_width",
                    step=0.0625, format="%.4g", disabled=ss.tr_variant != "unet-bn")
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
    c2.selectbox("Learning-rate schedule", C.LR_SCHEDULES, format_func=_label(C.LR_SCHEDULE_LABELS),
                 key="tr_lr_schedule")
    c3.selectbox("Loss", C.LOSSES, format_func=_label(C.LOSS_LABELS), key="tr_loss")
    c4.number_input("Positive share per batch (0 = uniform)", 0.0, 1.0, key="tr_positive", step=0.05,
                    help="Each training batch holds this share of images with a lesion.")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Fine-tune epochs (encoder unfrozen)", 0, 10_000, key="tr_ft_epochs")
    c2.number_input("Fine-tune learning rate", 1e-8, 1.0, key="tr_ft_lr", format="%.1e", step=1e-6)
    c3.number_input("Seed", 0, 2**31 - 1, key="tr_seed")
    c3.selectbox("Images in memory", C.IN_MEMORY, format_func=_label(C.IN_MEMORY_LABELS), key="tr_in_memory",
                 help="auto: load each split when its images and masks take at most half of the free memory, "
                      "else stream them from the pack. Same as `python -m pneumo train --in-memory`.")
    c4.selectbox("Precision", C.PRECISIONS, format_func=_label(C.PRECISION_LABELS), key="tr_mp",
                 help="bf16 on A100/H100/H200 (and CPUs with AMX), fp16 on older GPUs with tensor cores. "
                      "Same as `python -m pneumo train --mixed-precision`.")
    c4.checkbox("XLA compile", key="tr_xla")
    preset = C.preset(name)
    with st.expander("Augmentation (the preset's ranges; preview on the Augmentation page)"):
        # Keyed by preset, so choosing another preset shows that preset's ranges.
        augment = common.augment_config_ui(f"tr_aug_{name}", preset.augment)
    with st.expander("Exclude images (e.g. the Review page's relabel list)"):
        exclude = st.text_input(
            "Exclude ids listed in (relabel CSV)", key="tr_exclude", placeholder="/path/to/relabel.csv",
            help="A CSV with an `id` column: paste the path of the relabel list the Review page (or "
                 "`python -m pneumo curate`) wrote. Those images are left out of the train and dev splits, "
                 "never out of test, so test scores stay comparable. The run records the list "
                 f"({CONFIG}, {EXCLUSION_RECORD}). Same as `python -m pneumo train --exclude LIST.csv`.",
        ).strip()
    weights = {"imagenet": "imagenet", "none": None, "file": weights_path.strip() or None}[ss.tr_weights]
    # Fields the form does not show (e.g. init_from) keep the preset's values.
    return dataclasses.replace(
        preset,
        pack=pack_path,
        variant=ss.tr_variant,
        width=float(ss.tr_width) if ss.tr_variant == "unet-bn" else 1.0,
        encoder_weights=weights,
        freeze_encoder={"auto": None, "frozen": True, "trainable": False}[ss.tr_freeze],
        epochs=int(ss.tr_epochs),
        steps_per_epoch=int(ss.tr_steps) or None,
        validation_steps=int(ss.tr_val_steps) or None,
        batch_size=int(ss.tr_batch),
        lr=float(ss.tr_lr),
        lr_schedule=ss.tr_lr_schedule,
        loss=ss.tr_loss,
        positive_fraction=float(ss.tr_positive) or None,
        fine_tune_epochs=int(ss.tr_ft_epochs),
        fine_tune_lr=float(ss.tr_ft_lr),
        mixed_precision=ss.tr_mp,
        xla=bool(ss.tr_xla),
        seed=int(ss.tr_seed),
        augment=augment,
        exclude=exclude or None,
        in_memory=ss.tr_in_memory,
    )


# --------------------------------------------------------------------------- charts
def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r.get("epoch"), common.to_float(r.get(key))) for r in history]
    pts = [(e, v) for e, v in pts if e is not None and v is not None]
    return [e for e, _ in pts], [v for _, v in pts]


def _epoch_axis(fig: go.Figure, max_epoch: float, **where) -> None:
    """Whole-epoch ticks (1, 2, 3 ... or every 2, 5, 10 ...), never "1 1 2 2"."""
    fig.update_xaxes(title_text="epoch", tickmode="linear", tick0=0,
                     dtick=curves.epoch_tick_step(max(max_epoch, 1)), tickformat="d", **where)


def curves_figure(history: list[dict], all_empty: float | None = None) -> go.Figure:
    """Loss and Dice per epoch, train and validation; the all-empty Dice level; where fine-tuning starts."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Dice"), horizontal_spacing=0.08)
    styles = {"": dict(color="#3b6e8f"), "val_": dict(color="#c0504d")}
    for col, metric in ((1, "loss"), (2, "dice")):
        for prefix, line in styles.items():
            x, y = _series(history, prefix + metric)
            fig.add_scatter(x=x, y=y, mode="lines+markers", line=line, name="train" if not prefix else "validation",
                            legendgroup=prefix or "train", showlegend=col == 1, row=1, col=col)
    epochs = [r.get("epoch") or 0 for r in history]
    last = max(epochs, default=1)
    if all_empty is not None:
        # The Dice of predicting nothing (empty rule): a val Dice here means no lesion is found yet.
        fig.add_scatter(x=[0.5, last + 0.5], y=[all_empty, all_empty], mode="lines", name="all-empty prediction",
                        line=dict(color="#888", dash="dash"), hoverinfo="name+y", row=1, col=2)
    tune = [r.get("epoch") for r in history if r.get("stage") == "fine-tune"]
    if tune:
        for col in (1, 2):
            fig.add_vline(x=min(tune) - 0.5, line_dash="dot", line_color="#888", row=1, col=col)
    _epoch_axis(fig, last)
    fig.update_xaxes(range=[0.5, last + 0.5])
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=1.2))
    return fig


def batch_loss_figure(sampler: curves.BatchLossSampler) -> go.Figure:
    """The mean loss of the batches between successive looks at the run (gaps left open)."""
    x, y = sampler.series()
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", line=dict(color="#3b6e8f"), connectgaps=False))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), title="Running batch loss",
                      xaxis_title="epoch", yaxis_title="loss")
    return fig


def compare_figure(runs: list, metric: str = "val_loss") -> go.Figure:
    fig = go.Figure()
    last = 1
    for run in runs:
        x, y = _series(read_history(run.path), metric)
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=run.name)
        last = max([last, *x])
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis_title=metric.replace("_", " "), legend=dict(orientation="h", y=1.15))
    _epoch_axis(fig, last)
    fig.update_yaxes(rangemode="tozero")
    return fig


@st.cache_data(show_spinner=False, max_entries=64)
def _all_empty(pack: str, mtime: float, validation_steps, batch_size) -> float | None:
    return curves.all_empty_val_dice({"pack": pack, "validation_steps": validation_steps, "batch_size": batch_size})


def all_empty_level(run_config: dict) -> float | None:
    """The all-empty val Dice of a run (cached by pack path and modification time)."""
    pack = str(run_config.get("pack") or "")
    return _all_empty(pack, common.mtime(pack), run_config.get("validation_steps"), run_config.get("batch_size"))


# --------------------------------------------------------------------------- live view
STATE_BADGE = {
    "running": ":blue-badge[running]",
    "finished": ":green-badge[finished]",
    "stopped": ":orange-badge[stopped]",
    "failed": ":red-badge[failed]",
    "damaged": ":red-badge[damaged]",
    "new": ":gray-badge[not started]",
}


def rate_text(progress: dict) -> tuple[str, str]:
    """``(images/s, ETA)`` as shown: "measuring..." until the trainer has timed a batch."""
    rate = common.to_float(progress.get("images_per_s"))
    if not rate or rate <= 0:  # the first step of an epoch carries no rate yet
        return MEASURING, MEASURING
    return f"{rate:.1f}", common.fmt_seconds(common.to_float(progress.get("eta_s")))


def _progress_ui(run_dir: str, status: dict, progress: dict, history: list[dict]) -> None:
    epochs = progress.get("epochs") or status.get("epochs") or 1
    steps = progress.get("steps") or 1
    epoch = progress.get("epoch") or 1
    step = progress.get("step") or 0
    done = min(1.0, max(0.0, ((epoch - 1) + step / steps) / epochs))
    st.progress(done, text=f"{progress.get('stage', 'train')}: epoch {epoch} of {epochs}, step {step} of {steps}")
    m1, m2, m3, m4 = st.columns(4)
    loss = common.to_float(progress.get("loss"))
    m1.metric("Loss (this epoch)", f"{loss:.4f}" if loss is not None else "-")
    rate, eta = rate_text(progress)
    m2.metric("Images/s", rate)
    m3.metric("ETA", eta)
    _, best_dice = _series(history, "val_dice")
    m4.metric("Best val Dice", f"{max(best_dice):.3f}" if best_dice else "-")


def _live_body(run_dir: str, run_config: dict) -> None:
    status = read_status(run_dir)
    progress = read_progress(run_dir)
    history, damage = load_history(run_dir)
    state = status["state"]
    ss = st.session_state

    head, stop_col = st.columns([4, 1])
    head.markdown(f"**{common.md_escape(Path(run_dir).name)}** {STATE_BADGE.get(state, state)}")
    host = remote_host(status)
    if host:  # written by another machine sharing the runs folder: its process is not visible here
        head.caption(f"running on {common.md_escape(host)}")
    setup = describe_setup(status.get("setup"))  # strategy, workers, replicas, batches, precision
    if setup:
        head.caption(common.md_escape(setup))
    if state == "running":
        if stop_requested(Path(run_dir)):
            stop_col.button("Stopping...", disabled=True, key="tr_stopping")
        elif stop_col.button("Stop", key="tr_stop", icon=":material/stop:",
                             help="Ends after the current batch and saves last.keras."):
            with common.user_errors():
                request_stop(run_dir)
            st.caption("Stop requested: the run ends after the current batch and saves `last.keras`.")
    if damage:  # the curves and counts below leave the damaged lines out
        st.warning(common.md_escape(damage), icon=":material/warning:")
    if state in ("failed", "damaged"):
        what = "The run failed" if state == "failed" else "The run folder is damaged"
        st.error(f"{what}: {common.md_escape(status.get('error') or 'no message')}")
        log = RunFolder(run_dir).log
        if log.exists():
            with st.expander(f"Last lines of {log.name}"):
                st.code(log_tail(log, lines=30), language=None)  # reads the end only

    # Sampled on every refresh of every session looking at the run; see curves.BatchLossSampler.
    sampler = ss.setdefault("tr_batch_loss", {}).setdefault(run_dir, curves.BatchLossSampler())
    if state == "running" and progress:
        sampler.add(progress)
        _progress_ui(run_dir, status, progress, history)
    elif state == "running":
        st.progress(0.0, text="Starting (loading TensorFlow and the data)...")
    elif state in ("finished", "stopped"):
        st.caption(f"{status.get('epoch', 0)} of {status.get('epochs') or '?'} epochs, "
                   f"started {status.get('started')}, ended {status.get('ended')}")

    level = all_empty_level(run_config)
    if history:
        _, val_dice = _series(history, "val_dice")
        if val_dice and curves.predicts_nothing(val_dice[-1], level):
            when = "yet" if state == "running" else "(at its last epoch)"
            st.info(f"The model predicts nothing {when}: its val Dice {val_dice[-1]:.3f} is the all-empty "
                    f"level, the share of dev images without a lesion ({level:.3f}), the score of an empty "
                    "mask for every image.", icon=":material/hourglass_empty:")
        st.plotly_chart(curves_figure(history, level), key="tr_curves")
    elif state == "running":
        st.caption("Curves appear after the first epoch.")
    if state == "running" and sampler.plotted() > 1:
        st.plotly_chart(batch_loss_figure(sampler), key="tr_batch_curve")


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
            "error": r.damaged or r.error or "",  # a damaged run says why
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


def _runs_body(page_active: str | None) -> None:
    """Run picker, live view, all runs and the comparison, read afresh on every refresh."""
    infos = list_runs()  # once per tick: every run's status is read here, the active one included
    # what active_run() returns (the first running one, same order), without reading them twice
    active = next((r.name for r in infos if r.state == "running"), None)
    if active != page_active:
        st.rerun()  # a run started or ended: the whole page (Start, refresh rate) follows
    if not infos:
        st.info("No runs yet in the workspace.")
        return
    ss = st.session_state
    st.subheader("Run")
    names = [r.name for r in infos]
    wanted = active if active is not None else Path(ss.get(common.RUN_KEY, "")).name
    if ss.get("tr_run") not in names or ss.get("tr_run_active") != active:
        ss.tr_run = wanted if wanted in names else names[0]
    ss.tr_run_active = active
    by_name = {r.name: r for r in infos}
    name = st.selectbox("Run", names, key="tr_run", label_visibility="collapsed",
                        format_func=lambda n: f"{n}  ({by_name[n].state})" if n in by_name else n)
    ss[common.RUN_KEY] = str(by_name[name].path)
    _live_body(str(by_name[name].path), by_name[name].config)
    st.subheader("All runs")
    past_runs_ui(infos)


def runs_ui(active: str | None) -> None:
    """The runs part of the page, refreshed every few seconds while a run is active."""
    st.fragment(_runs_body, run_every=REFRESH_S if active is not None else None)(active)


# --------------------------------------------------------------------------- page
def new_run_ui(active: str | None) -> None:
    """Preset, pack (the preset's own by default), options, the weights check and Start."""
    weights_available = imagenet.imagenet_weights_available()
    info = preset_packs.pack_ui(preset_ui(weights_available))
    if info is None:
        return
    config = options_ui(str(info.path), weights_available)
    quick_size = int(C.QUICK_PACK_OPTIONS.get("size", 128))
    if st.session_state.tr_preset == C.QUICK_PRESET and info.size > quick_size:
        st.caption(f"This pack is {info.size} px: the quick demo takes about {(info.size // quick_size) ** 2}x "
                   f"longer than on its own {quick_size} px pack.")
    blocked = None
    if config.encoder_weights == "imagenet" and not weights_available:
        st.warning(
            "The ImageNet VGG16 weights are not on this machine "
            f"({common.md_escape(imagenet.imagenet_cache_problem())}), and training would have to download "
            "them: without internet access the run would fail at once. "
            f"{common.md_escape(imagenet.imagenet_fix())}"
        )
        st.button("Train without encoder weights", on_click=_without_weights, key="tr_no_weights")
        blocked = "the encoder weights are missing"
    if active is not None:
        blocked = f"run {active} is active"
    if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=blocked is not None,
                 key="tr_start", help=f"Disabled: {blocked}." if blocked else None):
        common.start_run(config)
        st.rerun()
    if active is not None:
        st.caption(f"Start is disabled while **{common.md_escape(active)}** runs; stop it below or wait.")


def main() -> None:
    st.title("Training")
    st.write(
        "Train a model on a pack. The run is a separate process (`python -m pneumo train`) writing "
        "to its own folder: reloading this page, opening a second tab or restarting the app does not "
        "stop it, and any of them can follow or stop it. One run at a time."
    )
    active_path = active_run()
    active = active_path.name if active_path is not None else None
    with st.container(border=True):
        st.subheader("New run")
        new_run_ui(active)
    runs_ui(active)


main()
