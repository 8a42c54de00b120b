"""Data page: make a pack (demo phantoms, two folders, or a SIIM tree + CSV), then inspect it."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pneumo import settings
from pneumo._io import APP_FORCE, refuse_existing
from pneumo.store import pack_folder
from pneumo.config import DICOM_WINDOWS, PackConfig, SplitConfig
from pneumo.errors import InputError
from pneumo_app import common


SOURCES = {
    "demo": "Demo phantoms (synthetic, no download)",
    "folders": "Two folders: images and masks",
    "siim": "SIIM-ACR: DICOM tree + label CSV",
}


# --------------------------------------------------------------------------- make a pack
def source_ui() -> dict:
    """Where the images come from. Returns ``{"kind", ...paths or demo options..., "upload"}``."""
    kind = st.radio("Source", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="data_source")
    out: dict = {"kind": kind, "upload": None}
    if kind == "demo":
        c1, c2 = st.columns(2)
        out["count"] = c1.number_input("Number of phantoms", 10, 100_000, 400, 10, key="data_demo_count")
        out["demo_seed"] = c2.number_input("Phantom seed", 0, 2**31 - 1, 0, key="data_demo_seed")
        return out
    where = st.radio(
        "Files",
        ["server", "upload"],
        format_func={"server": "Paths on this server", "upload": "Upload a zip (small sets)"}.get,
        horizontal=True,
        key="data_where",
    )
    out["where"] = where
    if where == "upload":
        help_ = (
            "A zip with an `images/` and a `masks/` folder (names set below)."
            if kind == "folders"
            else "A zip with the DICOM files (any sub-folders) and one label CSV."
        )
        out["upload"] = st.file_uploader("Zip file", type=["zip"], key="data_zip", help=help_)
        if kind == "folders":
            c1, c2 = st.columns(2)
            out["images"] = c1.text_input("Image folder inside the zip", "images", key="data_zip_images")
            out["masks"] = c2.text_input("Mask folder inside the zip", "masks", key="data_zip_masks")
    elif kind == "folders":
        out["images"] = st.text_input("Image folder", key="data_images", placeholder="/path/to/images")
        out["masks"] = st.text_input(
            "Mask folder (same file stems)", key="data_masks", placeholder="/path/to/masks"
        )
    else:
        out["dicom"] = st.text_input("DICOM folder (searched recursively)", key="data_dicom", placeholder="/path/to/dicom-images-train")
        out["csv"] = st.text_input("Label CSV (ImageId, EncodedPixels)", key="data_csv", placeholder="/path/to/train-rle.csv")
    if kind == "siim":
        out["salt"] = st.text_input(
            "Patient-id salt (optional)",
            key="data_salt",
            help="Patient ids are stored only as salted hashes; empty draws a random salt for this pack.",
        ) or None
    return out


def options_ui(kind: str) -> tuple[PackConfig, str, bool]:
    """Every option of ``pneumo pack``. Returns ``(config, output name, force)``."""
    c1, c2, c3 = st.columns(3)
    size = c1.number_input("Image size (px, multiple of 32)", 32, 2048, 256, 32, key="data_size")
    default_name = {"demo": "phantoms.h5"}.get(kind, f"{kind}.h5")  # demo.h5 is the app's own
    name = c2.text_input("Pack file name", default_name, key=f"data_name_{kind}")
    compression = c3.selectbox(
        "Compression", ["none", "lzf", "gzip"], key="data_compression",
        help="None reads fastest; gzip is smallest.",
    )
    mode = st.radio(
        "Split",
        ["proportions", "batches"],
        format_func={"proportions": "Proportions (all images used)",
                     "batches": "Exact batches (the blog's 250/40/40 x 32)"}.get,
        horizontal=True,
        key="data_split_mode",
    )
    c1, c2, c3, c4 = st.columns(4)
    if mode == "proportions":
        props = (
            c1.number_input("Train", 0.0, 1e6, 250.0, 1.0, key="data_p_train", format="%g"),
            c2.number_input("Dev", 0.0, 1e6, 40.0, 1.0, key="data_p_dev", format="%g"),
            c3.number_input("Test", 0.0, 1e6, 40.0, 1.0, key="data_p_test", format="%g"),
        )
        batches, batch_size = None, 32
    else:
        props = SplitConfig().proportions
        batches = (
            int(c1.number_input("Train batches", 0, 10**6, 250, key="data_b_train")),
            int(c2.number_input("Dev batches", 0, 10**6, 40, key="data_b_dev")),
            int(c3.number_input("Test batches", 0, 10**6, 40, key="data_b_test")),
        )
        batch_size = int(c4.number_input("Batch size", 1, 4096, 32, key="data_b_size"))
    c1, c2, c3, c4 = st.columns(4)
    seed = c1.number_input("Split seed", 0, 2**31 - 1, 2, key="data_seed", help="The blog's random.seed(2).")
    workers = c2.number_input("Workers (0 = all cores)", 0, 256, 0, key="data_workers")
    stratify = c3.checkbox("Stratify", key="data_stratify", help="The same positive fraction in every split.")
    group = c3.checkbox("Group by patient", key="data_group",
                        help="No patient in two splits (SIIM: by the salted patient id).")
    force = c4.checkbox("Replace existing", key="data_force", help="Replace a pack of the same name.")
    skip_bad = c4.checkbox("Skip bad files", key="data_skip_bad",
                           help="Skip unreadable images (listed in the report) instead of stopping.")
    c1, c2, c3 = st.columns([1, 1, 2])
    max_mpx = c1.number_input("Pixel budget (Mpx, 0 = none)", 0, 10_000, 50, key="data_max_mpx",
                              help="Images larger than this are refused from their header, before decoding.")
    window = c2.selectbox("DICOM window", DICOM_WINDOWS, key="data_dicom_window",
                          format_func={"voi": "the file's own (VOI)", "full": "full stored range"}.get,
                          help="VOI: the window/VOI LUT the file carries (full range when it has none).")
    exclude = c3.text_input("Exclude ids listed in (CSV, optional)", key="data_exclude",
                            help="A relabel list from the Review page or `pneumo curate`: its `id` column.")
    config = PackConfig(
        max_pixels=int(max_mpx) * 1_000_000 or None,
        dicom_window=window,
        exclude=exclude.strip() or None,
        size=int(size),
        split=SplitConfig(
            proportions=tuple(float(p) for p in props),
            batches=batches,
            batch_size=batch_size,
            seed=int(seed),
            stratify=stratify,
            group_by_patient=group,
        ),
        compression=None if compression == "none" else compression,
        workers=int(workers) or None,
        skip_bad=skip_bad,
    )
    return config, name.strip(), force


def _spec(src: dict, config: PackConfig) -> dict:
    """The form's source as ``sources.manifest_from_spec`` keywords (paths as typed)."""
    return {
        "images": src.get("images"),
        "masks": src.get("masks"),
        "dicom": src.get("dicom"),
        "labels": src.get("csv"),
        "count": int(src.get("count", 400)),
        "seed": int(src.get("demo_seed", 0)),
        "size": config.size,
        "salt": src.get("salt"),
    }


def build_pack(src: dict, config: PackConfig, out: Path, force: bool):
    """Unpack an upload if any, build the manifest and pack it with a progress bar.

    Files from the user (uploads and server paths alike) are decoded and their headers read
    only in worker processes with a memory cap, never in the server.
    """
    from pneumo.ingest import packer, sources
    from pneumo.ingest import uploads

    folder = root = None
    if src["kind"] != "demo":
        config = dataclasses.replace(config, isolate=True, worker_memory=common.WORKER_MEMORY)
    bar = st.progress(0.0, text="Reading the source...")
    try:
        if src["upload"] is not None:
            bar.progress(0.0, text="Unpacking the zip...")
            folder, top = uploads.extract_upload(src["upload"], settings.data_dir(), isolate=True,
                                                 memory_limit=common.WORKER_MEMORY)  # listed in a capped worker
            root = uploads.data_root(top, [n for n in (src.get("images"), src.get("masks")) if n])
        elif src.get("where") == "upload":
            raise InputError("choose a zip file to upload first")
        try:
            manifest = sources.manifest_from_spec(
                src["kind"], root=root, isolate=config.isolate, memory_limit=config.worker_memory,
                **_spec(src, config),
            )

            def progress(done: int, total: int) -> None:
                bar.progress(done / max(total, 1), text=f"Packing {done} of {total} images")

            info = packer.pack_manifest(manifest, out, config, force=force, progress=progress)
        except InputError as e:
            if folder is None:
                raise
            # Name files inside the zip, not the server's temporary folder.
            raise InputError(uploads.hide_root(uploads.hide_root(str(e), root), folder)) from None
    except BaseException:
        bar.empty()
        raise
    finally:
        if folder is not None:  # the pack holds the images now; no second copy of patient data
            shutil.rmtree(folder, ignore_errors=True)
    bar.empty()
    return info


def make_pack_ui() -> None:
    src = source_ui()
    with st.expander("Options", expanded=False):
        config, name, force = options_ui(src["kind"])
    if st.button("Build the pack", type="primary", key="data_build"):
        with common.user_errors():
            out = refuse_existing(pack_folder.out_path(name), force, flag=APP_FORCE)
            settings.check_writable(out.parent, "packs (and unpacked uploads) are written there")
            info = build_pack(src, config, out, force)
        st.session_state[common.PACK_KEY] = str(info.path)
        st.session_state["data_pack"] = str(info.path)
        skipped = len(info.report.get("skipped", []))
        st.success(
            f"Packed {sum(info.counts.values())} images into {common.md_escape(str(info.path))}"
            + (f"; {skipped} skipped (see the report below)" if skipped else "")
        )


# --------------------------------------------------------------------------- report
def split_chart(info) -> go.Figure:
    """Count (bars) and positive fraction (markers) per split."""
    splits = list(common.SPLITS)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=splits, y=[info.counts[s] for s in splits], name="images", marker_color="#8fb3c9",
                text=[info.counts[s] for s in splits], textposition="outside")
    fig.add_scatter(
        x=splits, y=[info.positive_fractions[s] for s in splits], name="positive fraction",
        mode="markers+text", marker=dict(size=14, color="#c0504d"),
        text=[f"{info.positive_fractions[s]:.1%}" for s in splits], textposition="top center",
        secondary_y=True,
    )
    top = max(info.positive_fractions.values()) if info.positive_fractions else 0
    fig.update_yaxes(title_text="images", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="positive fraction", tickformat=".0%", secondary_y=True,
                     range=[0, max(0.1, min(1.0, top * 1.4))])
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.12),
                      bargap=0.45)
    return fig


def report_ui(info) -> None:
    st.plotly_chart(split_chart(info), key="data_split_chart")
    report = info.report
    attrs = info.attrs
    st.caption(
        f"{info.size} px, source {common.md_escape(str(attrs.get('source', '?')))}, "
        f"split seed {common.md_escape(str(attrs.get('seed', '?')))}, "
        f"compression {common.md_escape(str(attrs.get('compression', 'none')))}, "
        f"created {common.md_escape(str(attrs.get('created', '?')))}"
        + (f", packed in {report['seconds']} s with {report.get('workers', '?')} workers" if "seconds" in report else "")
    )
    with st.expander("Split report (text)"):
        st.code(info.format_report(), language=None)
    skipped = report.get("skipped") or []
    if skipped:
        with st.expander(f"{len(skipped)} file(s) skipped"):
            st.dataframe([{"file or id": s[0], "reason": s[1]} for s in skipped], hide_index=True)
    if report.get("unused"):
        st.caption(f"{report['unused']} pair(s) not used by the exact-batch split.")


def verify_ui(info) -> None:
    """A button that reads every chunk of the pack and names the damaged rows (``info --verify``)."""
    from pneumo.store.pack import Pack

    if not st.button("Check every image", key="data_verify",
                     help="Read every image, mask and id of the pack: a damaged file is named row by row."):
        return
    with common.user_errors(), st.spinner("Reading every chunk..."), Pack(info.path) as pack:
        problems = pack.verify()
    if problems:
        st.error(common.md_escape(f"{info.path}: damaged pack, {len(problems)} unreadable row(s); pack it again "
                                  "from its source. " + "; ".join(problems[:10])))
    else:
        st.success("Every image, mask and id of this pack reads.")


def browser_ui(info, per_page: int = 8) -> None:
    """Thumbnails of one split with the mask outlined, filterable by positive/negative."""
    c1, c2, c3 = st.columns([1, 1, 2])
    split = c1.selectbox("Split", [s for s in common.SPLITS if info.counts[s]] or ["train"], key="data_browse_split")
    which = c2.selectbox("Show", ["all", "positive", "negative"], key="data_browse_which")
    if not info.counts.get(split):
        st.info("This split is empty.")
        return
    pos = common.positives(info.path, split)
    if which == "positive":
        indices = [int(i) for i in pos.nonzero()[0]]
    elif which == "negative":
        indices = [int(i) for i in (~pos).nonzero()[0]]
    else:
        indices = list(range(len(pos)))
    if not indices:
        st.info(f"No {which} samples in {split}.")
        return
    pages = (len(indices) + per_page - 1) // per_page
    page = c3.number_input(f"Page (of {pages})", 1, pages, 1, key="data_browse_page") if pages > 1 else 1
    shown = indices[(page - 1) * per_page : page * per_page]
    X, Y, ids = common.read_samples(info.path, split, shown)
    cols = st.columns(4)
    for k, (x, y, sid, i) in enumerate(zip(X, Y, ids, shown)):
        cols[k % 4].image(
            common.outlined(x, y),
            caption=f"{common.md_escape(sid)} ({'positive' if pos[i] else 'negative'})",
            width="stretch",
        )
    kind = "" if which == "all" else f" {which}"
    st.caption(f"{len(indices)}{kind} sample(s) in {split}; mask outlined in green.")


# --------------------------------------------------------------------------- page
st.title("Data")
st.write(
    "Pack images and masks into one HDF5 file (resized, split into train/dev/test), then check "
    "the split and look at the samples. Packs live in the workspace's data folder."
)
with st.container(border=True):
    st.subheader("Make a pack")
    make_pack_ui()

st.subheader("Inspect a pack")
info = common.pack_picker("Pack", key="data_pack")
if info is not None:
    report_ui(info)
    verify_ui(info)
    st.markdown("**Samples**")
    with common.user_errors():  # a damaged chunk: its message, not a traceback
        browser_ui(info)
