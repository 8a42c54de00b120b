"""Widgets and cached readers shared by the pages.

Pages call these and ``pneumo``; nothing here trains or evaluates. Heavy readers are cached
with ``st.cache_data`` keyed by the file's path *and* mtime, so a re-packed file is re-read.
No TensorFlow here: the Home, Data and Training pages must start fast.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import streamlit as st

from pneumo import config, settings
from pneumo.config import FILL_MODES, AugmentConfig, TrainConfig
from pneumo.errors import InputError, PneumoError
from pneumo.ingest.split import SPLITS

# Keyword arguments for the demo pack the app makes on first launch; tests shrink it.
DEMO_PACK_OPTIONS: dict[str, Any] = {}

# Session-state keys shared across pages (plain keys, not widget keys: Streamlit drops a
# widget's state when the page that drew it is left).
PACK_KEY = "pneumo_pack"
RUN_KEY = "pneumo_run"

# Address-space cap of each worker process that decodes the user's files for the Data page:
# a 50 Mpx image needs well under 1 GB; the rest is the interpreter, numpy, Pillow and pydicom.
WORKER_MEMORY = 3 * 1024**3

# Markdown (and Streamlit's :directive[...] and $math$) characters, escaped when text that a
# user or a file controls is shown with st.markdown, st.caption, st.error...
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")


def md_escape(text: Any) -> str:
    """``text`` shown literally in Markdown: no links, images, emphasis, HTML or directives."""
    escaped = _MD_SPECIAL.sub(r"\\\1", str(text))
    return escaped.replace("\r", " ").replace("\n", "  \n")



# --------------------------------------------------------------------------- navigation
# The page scripts live in app_pages/, not pages/: Streamlit treats a pages/ folder beside the
# main script as an old-style multipage app and, on a fresh server whose first request is a
# deep link such as /data, would run that page alone (no navigation, no sidebar, no demo
# pack). With no pages/ folder there is no old mode to enter; st.navigation serves every URL,
# each page's URL being its file name (/data, /training, ...).
APP_ROOT = Path(__file__).resolve().parents[1]  # where streamlit_app.py and app_pages/ live
APP_ICON = Path(__file__).resolve().parent / "icon.png"  # the browser tab's icon, served by the app
APP_PAGES = [
    ("app_pages/home.py", "Home", ":material/home:"),
    ("app_pages/data.py", "Data", ":material/database:"),
    ("app_pages/augmentation.py", "Augmentation", ":material/auto_awesome_motion:"),
    ("app_pages/training.py", "Training", ":material/model_training:"),
    ("app_pages/review.py", "Review", ":material/fact_check:"),
]


def run_app() -> None:
    """The app: page config, navigation, workspace sidebar, first-launch demo pack, the page."""
    # A local file: a :material/...: or emoji page icon is fetched from a font CDN by the browser.
    st.set_page_config(page_title="pneumo", page_icon=str(APP_ICON), layout="wide")
    pages = [
        st.Page(path, title=title, icon=icon, default=(title == "Home"))
        for path, title, icon in APP_PAGES
        if (APP_ROOT / path).exists()
    ]
    page = st.navigation(pages)
    start_checks()
    workspace_sidebar()
    ensure_demo_pack()
    page.run()


def start_checks() -> None:
    """Before any page: Streamlit's settings the app relies on (:mod:`pneumo_app.guard`), then
    the workspace (:func:`pneumo.settings.workspace_problem`). Either failing is one message
    instead of the page, and the script stops: no data is shown."""
    from pneumo_app import guard

    lines = guard.start_problem()
    if lines:
        st.error("  \n".join([f"**{md_escape(lines[0])}**", *(f"- {md_escape(x)}" for x in lines[1:-1]),
                              md_escape(lines[-1])]), icon=":material/gpp_bad:")
        st.stop()
    problem = settings.workspace_problem()
    if problem:
        st.error(md_escape(problem), icon=":material/folder_off:")
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
        st.error(md_escape(e))  # messages name files and zip members: shown literally
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
        locked = [f"{what}: {problem}" for what, folder in (("packs", settings.data_dir()), ("runs", settings.runs_dir()))
                  if (problem := settings.write_problem(folder))]
        if locked:  # viewing works; whatever would write there says so when asked
            st.warning("Read-only workspace (" + md_escape("; ".join(locked)) + "): packs and runs can be "
                       "viewed; packing, training, evaluating and saving verdicts there cannot work.",
                       icon=":material/lock:")


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
def _list_packs(folder: str, key: tuple) -> tuple[list, list]:
    from pneumo.store.pack_folder import scan_packs

    return scan_packs(Path(folder))


def packs() -> list:
    """Valid packs in the data folder (``list[PackInfo]``), cached until a file changes.
    Damaged or foreign ``.h5`` files are left out (see :func:`damaged_packs`)."""
    folder = settings.data_dir()
    return _list_packs(str(folder), _folder_key(folder))[0]


def damaged_packs() -> list:
    """``.h5`` files of the data folder that are not readable packs (``list[DamagedPack]``)."""
    folder = settings.data_dir()
    return _list_packs(str(folder), _folder_key(folder))[1]


def damaged_packs_note() -> None:
    """A caption naming the damaged or foreign ``.h5`` files, if any (they are never opened)."""
    damaged = damaged_packs()
    if damaged:
        names = "; ".join(
            f"{md_escape(d.path.name)} ({md_escape(d.reason.removeprefix(f'{d.path}: '))})" for d in damaged[:5]
        )
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        st.caption(f"Not listed, not a readable pack: {names}{more}")


@st.cache_resource(show_spinner=False)
def _sweep_once(data_dir: str) -> int:
    from pneumo.ingest import uploads

    return len(uploads.sweep_temp_files(data_dir)) + len(uploads.sweep_uploads(data_dir))


def sweep_workspace() -> None:
    """Once per server and data folder: delete what a killed pack or upload left behind
    (``.NAME.*.tmp`` files older than an hour, upload folders older than a day)."""
    _sweep_once(str(settings.data_dir()))


@st.cache_data(show_spinner=False, max_entries=64)
def _read_info(path: str, mtime: float):
    from pneumo.store import pack

    return pack.read_info(path)


def pack_info(path: str | Path):
    """``PackInfo`` of ``path``, cached by path and mtime; raises ``PackFormatError``."""
    return _read_info(str(path), mtime(path))


def ensure_demo_pack() -> Any:
    """On first launch (no pack at all), build the demo pack with a progress bar.

    Returns the new ``PackInfo``, or ``None`` when packs already exist. Sweeps the
    workspace's leftovers first (once per server).
    """
    if settings.write_problem(settings.data_dir()):
        return None  # nothing can be made or swept there; the sidebar says the workspace is read-only
    sweep_workspace()
    if packs():
        return None
    from pneumo.ingest.packer import make_demo_pack

    out = settings.demo_pack_path()
    bar = st.progress(0.0, text="First launch: making the demo pack (synthetic chest phantoms)...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"First launch: making the demo pack: {done} of {total} images")

    with user_errors():
        info = make_demo_pack(out, progress=progress, **DEMO_PACK_OPTIONS)
    bar.empty()
    st.cache_data.clear()
    st.session_state.setdefault(PACK_KEY, str(out))
    return info


def pack_picker(label: str = "Pack", key: str = "pack_picker") -> Any:
    """Select a pack of the data folder; remembered across pages. ``PackInfo`` or ``None``."""
    available = packs()
    damaged_packs_note()
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
    from pneumo.store.pack import Pack

    with Pack(path) as pack:
        return pack.positives(split)  # chunk by chunk: bounded memory for large packs


def positives(path: str | Path, split: str) -> np.ndarray:
    """``(N,) bool``: which samples of ``split`` have a non-empty mask (cached)."""
    return _positives(str(path), mtime(path), split)


# One entry is one page of the sample browser (8 images and masks): 16 pages stay under
# ~0.5 GB even for a 2048 px pack, where 256 entries could have held 16 GB.
@st.cache_data(show_spinner=False, max_entries=16)
def _read_samples(path: str, mtime: float, split: str, indices: tuple[int, ...]):
    from pneumo.store.pack import Pack

    with Pack(path) as pack:
        rows = list(indices)
        return pack.images(split, rows)[..., 0], pack.masks(split, rows)[..., 0], pack.ids(split, rows)


def read_samples(path: str | Path, split: str, indices: list[int] | tuple[int, ...]):
    """Read only the shown samples: ``(X (k, S, S) uint8, Y (k, S, S) uint8, ids)``."""
    return _read_samples(str(path), mtime(path), split, tuple(int(i) for i in indices))


def outlined(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """The image with the mask's outline drawn on it (ground truth in green): ``(H, W, 3) uint8``."""
    from pneumo.review import viz

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
        fill_mode = st.selectbox(
            "Fill mode (pixels shifted in)", FILL_MODES, index=FILL_MODES.index(d.fill_mode), key=f"{key}_fill"
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


# --------------------------------------------------------------------------- training presets
# One set of presets for the CLI (``--preset``), ``quickstart`` and the app: pneumo.config's
# TrainConfig values (pack empty) and their menu titles; measured in docs/benchmarks.md.
PRESETS: dict[str, TrainConfig] = config.PRESETS
PRESET_TITLES: dict[str, str] = config.PRESET_TITLES
QUICK_PRESET = config.QUICK_PRESET
QUICK_PACK_NAME = config.QUICK_PACK_NAME
QUICK_PACK_OPTIONS: dict[str, Any] = config.QUICK_PACK_OPTIONS


def preset_config(name: str, pack_path: str | Path) -> TrainConfig:
    """The preset ``name`` for the pack at ``pack_path`` (a ``TrainConfig`` ready to start)."""
    return dataclasses.replace(config.preset(name), pack=str(pack_path))


def start_run(config: Any, prefix: str = "run") -> Path:
    """Start ``config`` in a new run folder (a separate process); remember it as this session's run."""
    from pneumo.store.run_list import active_run, new_run_dir
    from pneumo.train import jobs

    with user_errors():
        if active_run() is not None:
            raise InputError("a training run is active already; stop it or wait until it ends")
        run_dir = new_run_dir(prefix=prefix)
        try:
            jobs.start_training(config, run_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # empty unless the start got far enough to leave a record
            raise
    st.session_state[RUN_KEY] = str(run_dir)
    return run_dir
