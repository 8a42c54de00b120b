"""Widgets and cached readers shared by the pages.

Pages call these and ``pneumo``; nothing here trains or evaluates. Heavy readers are cached
with ``st.cache_data`` keyed by the file's path *and* mtime, so a re-packed file is re-read.
No TensorFlow here: the Home, Data and Training pages must start fast.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterator

import numpy as np
import streamlit as st

from pneumo import settings
from pneumo.config import AugmentConfig
from pneumo.errors import InputError, PneumoError
from pneumo.split import SPLITS

# Keyword arguments for the demo pack the app makes on first launch; tests shrink it.
DEMO_PACK_OPTIONS: dict[str, Any] = {}

# Session-state keys shared across pages (plain keys, not widget keys: Streamlit drops a
# widget's state when the page that drew it is left).
PACK_KEY = "pneumo_pack"
RUN_KEY = "pneumo_run"



# --------------------------------------------------------------------------- navigation
APP_ROOT = Path(__file__).resolve().parents[1]  # where streamlit_app.py and pages/ live
APP_PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/data.py", "Data", ":material/database:"),
    ("pages/augmentation.py", "Augmentation", ":material/auto_awesome_motion:"),
    ("pages/training.py", "Training", ":material/model_training:"),
    ("pages/review.py", "Review", ":material/fact_check:"),
]


def run_app() -> None:
    """The app: page config, navigation, workspace sidebar, first-launch demo pack, the page."""
    st.set_page_config(page_title="pneumo", page_icon=":material/pulmonology:", layout="wide")
    pages = [
        st.Page(path, title=title, icon=icon, default=(title == "Home"))
        for path, title, icon in APP_PAGES
        if (APP_ROOT / path).exists()
    ]
    page = st.navigation(pages)
    workspace_sidebar()
    ensure_demo_pack()
    page.run()


def page_guard() -> None:
    """Call first in every page: if Streamlit ran this page file alone, run the app instead.

    Streamlit treats a folder named ``pages/`` beside the main script as an old-style
    multipage app until a script calls ``st.navigation``; on a fresh server whose first
    request is a bookmarked ``/data`` (and on every ``AppTest`` re-run) it executes
    ``pages/data.py`` by itself: no navigation, no sidebar, no first-launch demo pack. Here
    the app's navigation takes over in the same run (so a click in that run is not lost) and
    draws the same page; the outer, lone execution then stops.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old mode
        return
    if PagesManager.uses_pages_directory:
        run_app()  # st.navigation switches the old mode off, so the nested page renders normally
        st.stop()


# --------------------------------------------------------------------------- errors
@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a :class:`PneumoError` as ``st.error`` and stop the script (no traceback).

    Anything else is a bug and keeps Streamlit's traceback.
    """
    try:
        yield
    except PneumoError as e:
        st.error(str(e))
        st.stop()


# --------------------------------------------------------------------------- sidebar
def workspace_sidebar() -> None:
    """Show where packs and runs live (one setting: ``PNEUMO_WORKSPACE``)."""
    with st.sidebar:
        st.caption(
            f"**Workspace** `{settings.workspace().resolve()}`  \n"
            f"packs: `{settings.data_dir()}`  \nruns: `{settings.runs_dir()}`  \n"
            "Set `PNEUMO_WORKSPACE` to move it."
        )


# --------------------------------------------------------------------------- packs
def mtime(path: str | Path) -> float:
    """Modification time of ``path`` (0 when missing): the cache key beside the path."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _folder_key(folder: Path) -> tuple[tuple[str, float, int], ...]:
    """Names, mtimes and sizes of the ``*.h5`` files: changes whenever a pack is written."""
    if not folder.is_dir():
        return ()
    out = []
    for p in sorted(folder.glob("*.h5")):
        with contextlib.suppress(OSError):
            s = p.stat()
            out.append((p.name, s.st_mtime, s.st_size))
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=32)
def _list_packs(folder: str, key: tuple) -> list:
    from pneumo import pack

    return pack.list_packs(Path(folder))


def packs() -> list:
    """Valid packs in the data folder (``list[PackInfo]``), cached until a file changes."""
    folder = settings.data_dir()
    return _list_packs(str(folder), _folder_key(folder))


@st.cache_data(show_spinner=False, max_entries=64)
def _read_info(path: str, mtime: float):
    from pneumo import pack

    return pack.read_info(path)


def pack_info(path: str | Path):
    """``PackInfo`` of ``path``, cached by path and mtime; raises ``PackFormatError``."""
    return _read_info(str(path), mtime(path))


def ensure_demo_pack() -> Any:
    """On first launch (no pack at all), build the demo pack with a progress bar.

    Returns the new ``PackInfo``, or ``None`` when packs already exist.
    """
    if packs():
        return None
    from pneumo import pack

    out = settings.demo_pack_path()
    bar = st.progress(0.0, text="First launch: making the demo pack (synthetic chest phantoms)...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"First launch: making the demo pack: {done} of {total} images")

    with user_errors():
        info = pack.make_demo_pack(out, progress=progress, **DEMO_PACK_OPTIONS)
    bar.empty()
    st.cache_data.clear()
    st.session_state.setdefault(PACK_KEY, str(out))
    return info


def pack_picker(label: str = "Pack", key: str = "pack_picker") -> Any:
    """Select a pack of the data folder; remembered across pages. ``PackInfo`` or ``None``."""
    available = packs()
    if not available:
        st.info("No pack yet. Make one on the **Data** page.")
        return None
    paths = [str(p.path) for p in available]
    current = st.session_state.get(PACK_KEY)
    if current not in paths:
        demo = str(settings.demo_pack_path())
        current = demo if demo in paths else paths[0]
    by_path = {str(p.path): p for p in available}

    def _remember() -> None:
        st.session_state[PACK_KEY] = st.session_state[key]

    if st.session_state.get(key) not in paths:
        st.session_state[key] = current
    path = st.selectbox(
        label,
        paths,
        key=key,
        format_func=lambda p: f"{Path(p).name}  ({by_path[p].size} px, "
        + " / ".join(str(by_path[p].counts.get(s, 0)) for s in SPLITS)
        + " train/dev/test)",
        on_change=_remember,
    )
    st.session_state[PACK_KEY] = path
    return by_path[path]


@st.cache_data(show_spinner=False, max_entries=16)
def _positives(path: str, mtime: float, split: str) -> np.ndarray:
    from pneumo import pack

    with pack.open_pack(path) as f:
        Y = f[f"Y_{split}"]
        n = Y.shape[0]
        out = np.zeros(n, bool)
        step = 256  # bounded memory for large packs
        for i in range(0, n, step):
            out[i : i + step] = Y[i : i + step].reshape(min(step, n - i), -1).max(axis=1) > 0
    return out


def positives(path: str | Path, split: str) -> np.ndarray:
    """``(N,) bool``: which samples of ``split`` have a non-empty mask (cached)."""
    return _positives(str(path), mtime(path), split)


@st.cache_data(show_spinner=False, max_entries=256)
def _read_samples(path: str, mtime: float, split: str, indices: tuple[int, ...]):
    from pneumo import pack

    with pack.open_pack(path) as f:
        idx = sorted(set(indices))
        X = f[f"X_{split}"][idx][..., 0] if idx else np.zeros((0, 1, 1), np.uint8)
        Y = f[f"Y_{split}"][idx][..., 0] if idx else np.zeros((0, 1, 1), np.uint8)
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f[f"ids_{split}"][idx]] if idx else []
    order = [idx.index(i) for i in indices]
    return X[order], Y[order], [ids[i] for i in order]


def read_samples(path: str | Path, split: str, indices: list[int] | tuple[int, ...]):
    """Read only the shown samples: ``(X (k, S, S) uint8, Y (k, S, S) uint8, ids)``."""
    return _read_samples(str(path), mtime(path), split, tuple(int(i) for i in indices))


def outlined(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """The image with the mask's outline drawn on it (ground truth in green): ``(H, W, 3) uint8``."""
    from pneumo import viz

    # 1 px at 128 px, 2 px at 256 px...: still visible once the browser scales the image down
    thickness = max(1, min(image.shape[:2]) // 128)
    return viz.overlay(image, mask, color=color or viz.TARGET_COLOR, mode="outline", thickness=thickness)


# --------------------------------------------------------------------------- augmentation
def augment_config_ui(key: str, default: AugmentConfig | None = None) -> AugmentConfig:
    """Sliders for every range of :class:`AugmentConfig`; returns the chosen config."""
    d = default or AugmentConfig()
    c1, c2 = st.columns(2)
    with c1:
        rotation = st.slider("Rotation (degrees, +/-)", 0.0, 45.0, float(d.rotation), 0.5, key=f"{key}_rotation")
        width_shift = st.slider(
            "Width shift (fraction, +/-)", 0.0, 0.3, float(d.width_shift), 0.005, key=f"{key}_wshift", format="%.3f"
        )
        height_shift = st.slider(
            "Height shift (fraction, +/-)", 0.0, 0.3, float(d.height_shift), 0.005, key=f"{key}_hshift", format="%.3f"
        )
        zoom = st.slider("Zoom (fraction, +/-)", 0.0, 0.5, float(d.zoom), 0.005, key=f"{key}_zoom", format="%.3f")
    with c2:
        fill_modes = ["nearest", "constant", "reflect", "wrap"]
        fill_mode = st.selectbox(
            "Fill mode (pixels shifted in)", fill_modes, index=fill_modes.index(d.fill_mode), key=f"{key}_fill"
        )
        horizontal_flip = st.checkbox("Horizontal flip (p = 1/2)", d.horizontal_flip, key=f"{key}_hflip")
        per_batch = st.checkbox(
            "One transform per batch (the blog's generator)",
            d.per_batch,
            key=f"{key}_perbatch",
            help="Off: each image gets its own random transform. On: the whole batch shares one.",
        )
    return AugmentConfig(
        rotation=rotation,
        width_shift=width_shift,
        height_shift=height_shift,
        zoom=zoom,
        horizontal_flip=horizontal_flip,
        fill_mode=fill_mode,
        per_batch=per_batch,
    )


# --------------------------------------------------------------------------- runs
def fmt_seconds(s: float | None) -> str:
    """``3725 -> '1 h 02 min'``; ``None`` -> an en dash."""
    if s is None or not np.isfinite(s):
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def to_float(v: Any) -> float | None:
    """A history cell as a float (``None`` for blanks and NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


# --------------------------------------------------------------------------- zip upload
MAX_ZIP_MEMBERS = 50_000
MAX_ZIP_BYTES = 4 * 1024**3  # uncompressed; bigger sets belong on the server, not in an upload
MAX_ZIP_RATIO = 200  # a member expanding more than this is a zip bomb, not an image


def upload_dir() -> Path:
    """A fresh folder under the data folder for one unpacked upload."""
    d = settings.data_dir() / "uploads" / uuid.uuid4().hex[:12]
    d.mkdir(parents=True, exist_ok=False)
    return d


def safe_extract_zip(
    file: str | Path | BinaryIO,
    dest: str | Path,
    *,
    max_members: int = MAX_ZIP_MEMBERS,
    max_bytes: int = MAX_ZIP_BYTES,
    max_ratio: float = MAX_ZIP_RATIO,
) -> Path:
    """Unpack a zip into ``dest`` refusing anything that could escape it or fill the disk.

    Rejected (``InputError`` naming the member): absolute paths, drive letters, ``..``
    components, symbolic links, more than ``max_members`` files, more than ``max_bytes``
    uncompressed in total (counted while writing, not trusted from the header), and members
    whose compression ratio exceeds ``max_ratio``. Nothing is written unless the listing
    passes; a failure while writing removes what was written.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"upload: not a readable zip file ({e})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > max_members:
            raise InputError(f"upload: {len(infos)} files in the zip; the limit is {max_members}")
        targets = []
        declared = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts or not parts:
                raise InputError(f"upload: unsafe path in the zip: {info.filename!r}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InputError(f"upload: symbolic link in the zip: {info.filename!r}")
            if info.compress_size and info.file_size / info.compress_size > max_ratio and info.file_size > 1 << 20:
                raise InputError(f"upload: {info.filename!r} expands {info.file_size / info.compress_size:.0f}x (zip bomb?)")
            declared += info.file_size
            targets.append((info, dest.joinpath(*parts)))
        if declared > max_bytes:
            raise InputError(f"upload: {declared / 1e9:.1f} GB uncompressed; the limit is {max_bytes / 1e9:.1f} GB")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        try:
            for info, target in targets:
                if root not in target.resolve().parents:
                    raise InputError(f"upload: unsafe path in the zip: {info.filename!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise InputError(
                                f"upload: more than {max_bytes / 1e9:.1f} GB uncompressed; the limit is reached"
                            )
                        out.write(chunk)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


# --------------------------------------------------------------------------- training presets
# The quick demo must finish in a few minutes on 2 CPU cores. Measured on this project's
# 2-core machine: the VGG16-U-Net with a trainable encoder trains at about 5 images/s at
# 128 px when the machine is idle (docs/benchmarks.md; 1-2 under load) and a quarter of that
# at 256 px, so the quick demo uses a 128 px demo pack and
# 6 x 20 steps of 8 images (about 1,000 images, 4-6 minutes). No ImageNet weights (no
# download needed), so a higher learning rate than the blog's 2e-5, and BCE + Dice so the
# small lesions are not ignored. A real run of exactly this (CLI, 4 min 43 s) reached a
# presence AUC of 0.80 on the demo test split with a Dice of 0.13 on positives: it finds
# lesions before it can outline them, which gives the Review page real FPs and FNs.
QUICK_PACK_NAME = "demo-128.h5"
QUICK_PACK_OPTIONS: dict[str, Any] = {"size": 128}

PRESETS: dict[str, dict[str, Any]] = {
    "Quick demo on CPU (a few minutes)": dict(
        variant="unet", encoder_weights=None, freeze_encoder=None, epochs=6, steps_per_epoch=20,
        validation_steps=None, batch_size=8, lr=1e-3, loss="bce+dice", fine_tune_epochs=0,
        fine_tune_lr=1e-5, mixed_precision=False, xla=False, seed=0,
    ),
    "Blog (2019) settings": dict(
        variant="blog", encoder_weights="imagenet", freeze_encoder=None, epochs=90, steps_per_epoch=None,
        validation_steps=None, batch_size=32, lr=2e-5, loss="bce", fine_tune_epochs=0,
        fine_tune_lr=1e-5, mixed_precision=False, xla=False, seed=0,
    ),
}
QUICK_PRESET = next(iter(PRESETS))


def quick_pack() -> Any:
    """The 128 px demo pack the quick demo trains on, made (with a progress bar) if missing."""
    from pneumo import pack

    out = settings.data_dir() / QUICK_PACK_NAME
    if out.is_file():
        return pack_info(out)
    bar = st.progress(0.0, text="Making a 128 px demo pack for the quick demo...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Making a 128 px demo pack: {done} of {total} images")

    with user_errors():
        info = pack.make_demo_pack(out, progress=progress, **{**QUICK_PACK_OPTIONS, **DEMO_PACK_OPTIONS})
    bar.empty()
    return info


def start_run(config: Any, prefix: str = "run") -> Path:
    """Start ``config`` in a new run folder (a separate process); remember it as this session's run."""
    from pneumo import jobs

    with user_errors():
        if jobs.active_run() is not None:
            raise InputError("a training run is active already; stop it or wait until it ends")
        run_dir = jobs.new_run_dir(prefix=prefix)
        try:
            jobs.start_training(config, run_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # empty unless the start got far enough to leave a record
            raise
    st.session_state[RUN_KEY] = str(run_dir)
    return run_dir
