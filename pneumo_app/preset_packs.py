"""The pack each training preset was tuned on, and the Training form's pack picker that opens on it.

The quick-demo preset is tuned on its own 128 px demo pack (``config.QUICK_PACK_NAME``); on the
256 px first-launch pack each step takes about four times longer. So the form opens on the
chosen preset's own pack, says which and why, and offers to make it when it is missing (the
same pack ``python -m pneumo quickstart`` and Home's quick demo make).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from pneumo import config, settings
from pneumo_app import common

# The pack a preset was tuned on, by preset: its file name in the data folder and the
# ``make_demo_pack`` options that make it. Presets not listed keep the pack chosen before
# (or the one their config names).
PRESET_PACKS: dict[str, tuple[str, dict[str, Any]]] = {
    config.QUICK_PRESET: (config.QUICK_PACK_NAME, config.QUICK_PACK_OPTIONS),
}
MAKE_KEY = "tr_make_pack"


def preset_pack(name: str) -> Path | None:
    """The path of preset ``name``'s own pack (it may not exist yet), or None when it has none."""
    if name in PRESET_PACKS:
        return settings.data_dir() / PRESET_PACKS[name][0]
    named = config.preset(name).pack
    if not named:
        return None
    return Path(named) if Path(named).is_absolute() else settings.data_dir() / named


def preset_pack_why(name: str) -> str:
    """One clause saying why preset ``name`` trains on its own pack."""
    if name not in PRESET_PACKS:
        return "the pack the preset names"
    options = PRESET_PACKS[name][1]
    size, count = int(options.get("size", 256)), int(options.get("count", 0))
    return (f"{count:,} synthetic phantoms at {size} px, what the preset was tuned on; on a 256 px pack "
            f"each step takes about {max(1, (256 // size) ** 2)}x longer")


def make_preset_pack(name: str) -> Any:
    """Make preset ``name``'s own pack (:data:`PRESET_PACKS`) with a progress bar and select it;
    its ``PackInfo``.

    In this script (a few seconds: 1,000 phantoms at 128 px): leaving the page stops it, and the
    pack is written to a temporary file renamed at the end, so nothing half-made is left.
    """
    from pneumo.ingest.packer import make_demo_pack

    file_name, options = PRESET_PACKS[name]
    out = settings.data_dir() / file_name
    bar = st.progress(0.0, text=f"Making {file_name}...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Making {file_name}: {done:,} of {total:,} images")

    with common.user_errors():
        info = make_demo_pack(out, progress=progress, **{**options, **common.DEMO_PACK_OPTIONS})
    bar.empty()
    st.session_state[common.PACK_KEY] = str(out)
    return info


def pack_ui(name: str) -> Any:
    """The pack picker, opened on preset ``name``'s own pack and saying which and why; offers
    to make that pack when it is missing. The chosen ``PackInfo``, or None without packs."""
    ss = st.session_state
    own = preset_pack(name)
    # Applied when the form opens, another preset is chosen or the own pack appears; a pack
    # chosen by hand afterwards is kept.
    applied = f"{name}:{own is not None and own.is_file()}"
    if ss.get("tr_pack_for") != applied:
        ss.tr_pack_for = applied
        if own is not None and own.is_file():
            ss[common.PACK_KEY] = str(own)
            ss.pop("tr_pack", None)
    info = common.pack_picker("Pack", key="tr_pack")
    if own is None:
        return info
    title = common.md_escape(config.PRESET_TITLES.get(name, name))
    why = common.md_escape(preset_pack_why(name))
    shown = common.md_escape(own.name)
    if info is not None and Path(info.path).resolve() == own.resolve():
        st.caption(f"**{shown}** is the preset's own pack: {why}.")
    elif own.is_file():
        st.caption(f"The preset *{title}* has its own pack, **{shown}** ({why}); choose it above to train "
                   "as tuned.")
    else:
        st.info(f"The preset *{title}* has its own pack, **{shown}** ({why}); it is not made yet.",
                icon=":material/info:")
        if st.button(f"Make {shown}", key=MAKE_KEY, icon=":material/add:",
                     help="A few seconds; leaving the page meanwhile cancels it (nothing half-written is left)."):
            make_preset_pack(name)
            st.rerun()
    return info
