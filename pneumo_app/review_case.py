"""The reading room: one case as large as the screen allows, its verdicts beside it, keys for both.

On a 1440x900 screen, without scrolling: the case picture on the left (:data:`VIEW_PX` px: the
pack's copy magnified 1-4x about the finding, or the source at full resolution), and on the
right the case's id and category with the full-resolution switch, Previous / Next with the
position, the verdict buttons (keys 1-3), the note, the reader's progress, the viewer's toolbar
(overlay, outline or heat map, Level, magnify or zoom, window preset) and the keys' legend. A
fragment: Next, a verdict, a key or a toolbar change rerun only this part.

The picture of the next case is drawn in the background while the reader looks at this one
(:func:`pneumo_app.review_cache.prefetch_picture`), so Next shows a picture already made, with
full resolution on too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from pneumo import evaluate
from pneumo.review import cases as review
from pneumo.review import picture, view
from pneumo.store import predictions, verdicts
from pneumo_app import review_cache, review_fullres, review_nav, review_verdicts
from pneumo_app.review_cache import evaluation, files_ident, load_data

VIEW_PX = 620  # the picture's longer side on screen: under the header, filter and tabs on a 900 px screen
OVERLAY_KEY, HEAT_KEY, MAGNIFY_KEY, ZOOM_KEY = "rv_overlay", "rv_pred_view", "rv_magnify", "rv_fr_zoom"
WINDOW_KEY, FULLRES_KEY = "rv_window", "rv_fullres"
WINDOW_CHOICES = (*view.WINDOW_PRESETS, "custom")
_PRED_LABELS = {"mask": "Outline", "heatmap": "Heat map"}


def _centre_key(case_id: str, full: bool) -> str:
    return f"rv_centre::{'source' if full else 'pack'}::{case_id}"


def _defaults() -> None:
    ss = st.session_state
    for key, value in ((OVERLAY_KEY, True), (HEAT_KEY, "mask"), (MAGNIFY_KEY, 1), (ZOOM_KEY, "fit"),
                       (WINDOW_KEY, "default"), (FULLRES_KEY, False)):
        if ss.get(key) is None:
            ss[key] = value


def _to_custom() -> None:
    st.session_state[WINDOW_KEY] = "custom"


def toolbar_ui(full: bool, units: str, default: tuple[float, float], lo: float, hi: float, scope: str,
               style: dict[str, Any]) -> picture.ViewSettings:
    """Overlay, prediction as outline or heat map, full resolution; zoom and the window (one
    control, in ``units``: a preset, or centre and width under "Level"); returns the settings."""
    _defaults()
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        st.toggle("Overlay", key=OVERLAY_KEY, help="Target (green) and prediction (red) on or off: O.")
        st.segmented_control("Prediction as", tuple(_PRED_LABELS), key=HEAT_KEY, required=True,
                             format_func=_PRED_LABELS.get, label_visibility="collapsed")
        level = st.container(width="content")
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        if full:
            st.segmented_control("Zoom", picture.SOURCE_ZOOMS, key=ZOOM_KEY, required=True,
                                 label_visibility="collapsed", help="Screen pixels per source pixel; fit: all of it. "
                                 "Click the picture to centre it (at fit: 1:1 there).")
        else:
            st.segmented_control("Magnify", view.MAGNIFY, key=MAGNIFY_KEY, required=True, format_func=lambda m: f"{m}×",
                                 label_visibility="collapsed", help="Magnified about the prediction, else the "
                                 "label; click the picture to centre it (at 1×: 2× there).")
        st.selectbox("Window", WINDOW_CHOICES, key=WINDOW_KEY, label_visibility="collapsed", width=165,
                     format_func=lambda w: f"Window: {view.WINDOW_LABELS.get(w, 'custom')}",
                     help=f"Window/level in {units}; W cycles the presets.")
        preset = st.session_state[WINDOW_KEY]
        c, w = view.preset_window(preset, *default, lo, hi) if preset in view.WINDOW_PRESETS else (None, None)
        ck, wk = f"rv_wl::{scope}::c", f"rv_wl::{scope}::w"
        span = max(hi - lo, 1.0)
        if c is not None:  # the sliders follow the preset until moved
            st.session_state[ck] = float(min(max(c, lo - span), hi + span))
            st.session_state[wk] = float(min(max(w, span / 1000), 2 * span))
        with level.popover("Level", help=f"Window centre and width in {units}"):
            step = 1.0 if span > 50 else span / 255
            st.slider(f"Window centre ({units})", float(lo - span), float(hi + span), key=ck, step=step,
                      on_change=_to_custom)
            st.slider(f"Window width ({units})", float(span / 1000), float(2 * span), key=wk, step=step,
                      on_change=_to_custom)
    custom = (float(st.session_state[ck]), float(st.session_state[wk])) if preset == "custom" else None
    return picture.ViewSettings(overlay=bool(st.session_state[OVERLAY_KEY]),
                                heat=st.session_state[HEAT_KEY] == "heatmap",
                                magnify=int(st.session_state[MAGNIFY_KEY]), zoom=str(st.session_state[ZOOM_KEY]),
                                window=preset, custom=custom, mode=style["mode"], alpha=style["alpha"])


def _apply(action: dict, case_id: str, pic: picture.Picture, full: bool, save) -> None:
    """A key or click the reader made on case ``case_id`` (a callback of the Previous / Next control)."""
    ss = st.session_state
    kind = action.get("kind")
    if kind == "verdict" and action.get("case") == case_id:
        save(action.get("index"))
    elif kind == "overlay":
        ss[OVERLAY_KEY] = not ss.get(OVERLAY_KEY, True)
    elif kind == "fullres":
        ss[FULLRES_KEY] = not ss.get(FULLRES_KEY, False)
    elif kind == "window":
        ss[WINDOW_KEY] = view.next_preset(ss.get(WINDOW_KEY, "default"))
    elif kind == "click" and action.get("case") == case_id:
        try:
            fx, fy = float(action["fx"]), float(action["fy"])
        except (KeyError, TypeError, ValueError):
            return
        ss[_centre_key(case_id, full)] = pic.clicked(fx, fy)
        if full and ss.get(ZOOM_KEY) == "fit":
            ss[ZOOM_KEY] = "1:1"  # a click on the whole image looks closer there
        elif not full and ss.get(MAGNIFY_KEY, 1) == 1:
            ss[MAGNIFY_KEY] = 2


def _case_line(ev: review.Evaluation, index: int, near: review.NearMisses | None) -> str:
    c = ev.cases
    line = (f"Target {int(c['true_area'][index])} px · prediction {int(c['pred_area'][index])} px · "
            f"Dice {c['dice'][index]:.3f} · presence score {c['score'][index]:.2f}")
    if near is not None:
        k = int((near.indices == index).nonzero()[0][0])
        line += f" · near miss: top probability {near.top[k]:.2f}"
        if near.dropped[k]:
            line += f", {int(near.dropped[k])} px above the pixel threshold dropped by the presence gate"
    return line


@st.fragment
def reading_room(run_dir_s: str, split: str, checkpoint: str | None, triplet: tuple[float, float, int],
                 chosen: str, sort: str, style: dict[str, Any]) -> None:
    """The case picture and its side panel, or the grid (a fragment: see the module docstring)."""
    from pneumo_app import common
    from pneumo_app.common import md_escape

    run_dir = Path(run_dir_s)
    with common.user_errors():
        if not predictions.freshness(run_dir, split, checkpoint).fresh:
            st.rerun(scope="app")  # files changed since the page was drawn: the page says why
        ident = files_ident(run_dir, split)
        data = load_data(run_dir, split, ident)
        t = evaluate.Triplet(*triplet)
        ev = evaluation(run_dir, split, t, ident)
        shown = review_nav.shown_cases(ev, data.stats, chosen, sort)
        store = verdicts.VerdictStore.for_run(run_dir)
        pkey = review_nav.pos_key(run_dir, split, shown.key, sort)
        n = int(shown.order.size)
        if st.session_state.get("rv_mode") == "Grid":
            mine = review_verdicts.progress_ui(store, run_dir, split, ev, shown.order, shown.name)
            preset = st.session_state.get(WINDOW_KEY)
            window = (None if preset not in view.WINDOW_PRESETS or preset == "default"  # the pack's values as they are
                      else view.preset_window(preset, *view.pack_window(), 0, 255))
            review_nav.grid_ui(data, ev, shown.order, pkey, {"window": window, **style}, mine, ident)
            return
        left, right = st.columns([VIEW_PX + 16, 430], gap="medium")
        if n == 0:
            with right:
                review_nav.nav_ui(pkey, shown.name, 0)
            left.info(f"No {review.CATEGORY_NAMES.get(shown.key, 'case')} with this post-processing."
                      if shown.key != "all" else "No case.")
            return
        pos = review.step(int(st.session_state.get(pkey, 0)), n, 0)
        index = int(shown.order[pos])
        get_case = review_cache.case_getter(run_dir, split, ident)
        case = get_case(index)
        category = str(ev.cases["category"][index])
        full = bool(st.session_state.get(FULLRES_KEY, False))
        with right:  # the side panel's parts in reading order, filled below in the order needed
            head, verdict_box, tools, info = st.container(), st.container(), st.container(), st.container()
        drawn: dict[str, picture.Picture] = {}
        advance = (pkey, n)

        def _save(k: Any) -> None:
            choices = verdicts.VERDICTS[category]
            if isinstance(k, int) and not isinstance(k, bool) and 0 <= k < len(choices):
                review_verdicts.save_verdict(store, run_dir, split, case.id, choices[k], category, t, data.size, advance)

        with head:
            _defaults()
            with st.container(horizontal=True, vertical_alignment="center", horizontal_alignment="distribute"):
                st.markdown(f"**{md_escape(case.id)}**: {category}")
                st.toggle("Full resolution", key=FULLRES_KEY, help="The original image from its source file at its "
                          "own resolution and window, with the target and the post-processed prediction at that "
                          "size: F.")
            if shown.near is not None:
                st.caption(f"A near miss of {shown.chosen}: {review.CATEGORY_NAMES[shown.chosen]} are empty at "
                           "these thresholds.")
            review_nav.nav_ui(pkey, shown.name, n, case_id=case.id, n_verdicts=len(verdicts.VERDICTS[category]),
                              on_action=lambda a: _apply(a, case.id, drawn["pic"], full, _save))
        with verdict_box:
            review_verdicts.verdict_ui(store, run_dir, split, case.id, category, t, data.size, advance=advance)
            review_verdicts.progress_ui(store, run_dir, split, ev, shown.order, shown.name)
        pic, settings, notes = _picture_ui(left, tools, data, get_case, case, index, t, full, style)
        drawn["pic"] = pic
        with info:
            st.caption(review_verdicts.keys_legend(category))
        left.caption(f"{_case_line(ev, index, shown.near)}. Shown: x {pic.box[1]}..{pic.box[1] + pic.box[3] - 1}, "
                     f"y {pic.box[0]}..{pic.box[0] + pic.box[2] - 1} of {pic.shape[1]}x{pic.shape[0]}; "
                     f"window {pic.window[0]:.6g} / {pic.window[1]:.6g} ({pic.units}).")
        for note in notes:
            left.caption(note)
        if pos + 1 < n:  # the next case's picture, drawn while the reader looks at this one
            _prefetch(data, get_case, int(shown.order[pos + 1]), ev, triplet, full, settings)


def _settings(full: bool, style: dict[str, Any], default, lo, hi, units: str, scope: str,
              case_id: str) -> picture.ViewSettings:
    settings = toolbar_ui(full, units, default, lo, hi, scope, style)
    return picture.with_centre(settings, st.session_state.get(_centre_key(case_id, full)))


def _picture_ui(left, tools, data: review.ReviewData, get_case, case: review.Case, index: int, t: evaluate.Triplet,
                full: bool, style: dict[str, Any]) -> tuple[picture.Picture, picture.ViewSettings, list[str]]:
    """The toolbar (in ``tools``) and the picture (in ``left``, in the keyed container whose image
    clicks centre it); returns the picture, the settings and lines to show under it."""
    triplet = (float(t.pixel_threshold), float(t.top_threshold), int(t.min_area))
    notes: list[str] = []
    if full:
        src = review_fullres.source_of(data, get_case, index, case.id, triplet)
        with tools:
            settings = _settings(True, style, (src.full.center, src.full.width), src.lo, src.hi, src.units,
                                 f"source::{case.id}" if src.native else "pack", case.id)
        key = _source_key(data, index, case.id, triplet, settings)
        job = review_fullres.picture_job(lambda: src, get_case, index, settings, VIEW_PX)
        if not src.native:
            notes.append(f"Full resolution unavailable: {src.reason}; showing the pack's {data.size}x{data.size} copy.")
        notes.append(src.caption(data.size))
    else:
        with tools:
            settings = _settings(False, style, view.pack_window(), 0.0, 255.0, "pack values 0-255", "pack", case.id)
        key = _pack_key(data, index, triplet, settings)
        job = review_cache.pack_picture_job(get_case, index, triplet, settings, VIEW_PX)
    png, pic = review_cache.picture_of(key, job)
    with left.container(key=review_nav.VIEW_KEY):
        st.image(png, output_format="PNG", width=int(pic.rgb.shape[1]))
    return pic, settings, notes


def _pack_key(data: review.ReviewData, index: int, triplet, settings: picture.ViewSettings) -> tuple:
    return ("pack", str(data.predictions_path), data.predictions_stamp.mtime_ns, data.pack_stamp.mtime_ns,
            int(index), triplet, settings, VIEW_PX)


def _source_key(data: review.ReviewData, index: int, case_id: str, triplet, settings: picture.ViewSettings) -> tuple:
    return ("source", *_pack_key(data, index, triplet, settings)[1:], review_fullres.source_stamp(data, case_id))


def _prefetch(data: review.ReviewData, get_case, index: int, ev: review.Evaluation, triplet, full: bool,
              settings: picture.ViewSettings) -> None:
    """Draw case ``index`` in the background with the toolbar as it is (centred on its finding)."""
    if settings.window == "custom":
        return  # a custom window is in the units of one image: nothing to guess for the next
    case_id = str(ev.cases["id"][index])
    settings = picture.with_centre(settings, None)
    if full:
        source = review_fullres.source_job(data, get_case, index, case_id, triplet)
        review_cache.prefetch_picture(_source_key(data, index, case_id, triplet, settings),
                                      review_fullres.picture_job(source, get_case, index, settings, VIEW_PX))
    else:
        review_cache.prefetch_picture(_pack_key(data, index, triplet, settings),
                                      review_cache.pack_picture_job(get_case, index, triplet, settings, VIEW_PX))
