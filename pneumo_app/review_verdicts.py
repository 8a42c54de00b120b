"""Verdicts on the Review page: the verdict buttons and note of the case shown, progress, and
the export of a split's reviews.

Verdicts and notes are stored at once in the run's review database
(:class:`pneumo.store.verdicts.VerdictStore`), under the session's reader
(:func:`pneumo_app.review_readers.current_reader`): nothing entered is lost on reload and a
second tab sees it. A verdict is stored with the category the case had and the thresholds
it had it under; when thresholds change later, the verdict keeps them and the page says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from pneumo import evaluate
from pneumo.review import cases as review
from pneumo.store import thresholds as run_thresholds
from pneumo.store import verdicts
from pneumo_app import review_readers

AUTO_NEXT_KEY = "rv_auto_next"
VERDICTS_KEY = "rv_verdicts"  # the container of the verdict buttons


def verdict_label(k: int, verdict: str) -> str:
    """``"1 · model wrong"``: a verdict button's label with its key."""
    return f"{k + 1} · {verdict}"


def save_verdict(store: verdicts.VerdictStore, run_dir: Path, split: str, image_id: str, verdict: str,
                 category: str, triplet: evaluate.Triplet, size: int, advance: tuple[str, int] | None = None) -> None:
    """Save ``verdict`` on a case of ``category`` under ``triplet`` (at ``size`` px) for this
    session's reader (a button's or a key's callback); then the next case when asked."""
    store.set_verdict(run_dir.name, split, image_id, verdict, category=category,
                      reader=review_readers.current_reader(), thresholds=triplet.to_dict(size))
    if advance is not None and st.session_state.get(AUTO_NEXT_KEY, False):
        key, n = advance
        st.session_state[key] = review.step(int(st.session_state.get(key, 0)), n, 1)


def _given_under(v: verdicts.Verdict, size: int) -> str:
    t = v.triplet()
    if not t:
        return f"{v.category or 'an unrecorded category'}"
    try:
        return f"{v.category} ({run_thresholds.describe(evaluate.Triplet.from_dict(t, size=size), size)})"
    except Exception:  # noqa: BLE001 - an unreadable record is shown as the category alone
        return f"{v.category}"


def verdict_ui(store: verdicts.VerdictStore, run_dir: Path, split: str, image_id: str, category: str,
               triplet: evaluate.Triplet, size: int, advance: tuple[str, int] | None = None) -> None:
    """Verdict buttons for the case's category, one per row with its key (saved on click; the
    chosen one is highlighted), Clear, and a free note (saved on Enter or leaving the field).

    The note shown follows the store: a note saved in another tab replaces the field's text
    on the next rerun unless this tab has unsaved edits. Saving over a note changed elsewhere
    since it was loaded is refused by the store (:class:`pneumo.store.verdicts.NoteConflict`) and
    the page asks which one to keep.
    """
    from pneumo_app.common import md_escape

    run = run_dir.name
    reader = review_readers.current_reader()
    current = store.get(run, split, image_id, reader=reader)
    stored_note = current.note if current else ""

    def _clear() -> None:
        store.clear_verdict(run, split, image_id, reader=reader)

    note_key = f"rv_note::{run}::{split}::{image_id}"
    base_key = note_key + "::loaded"  # the stored note this tab's field started from
    conflict_key = note_key + "::conflict"
    if note_key not in st.session_state or (
            st.session_state.get(base_key) != stored_note
            and st.session_state[note_key] == st.session_state.get(base_key)):
        st.session_state[note_key] = stored_note  # no unsaved edit here: show the newer note
        st.session_state[base_key] = stored_note

    def _save_note(force: bool = False) -> None:
        text = st.session_state[note_key]
        try:
            store.set_note(run, split, image_id, text, category=category, reader=reader,
                           expected=None if force else st.session_state.get(base_key, ""),
                           thresholds=triplet.to_dict(size))
        except verdicts.NoteConflict as e:
            st.session_state[conflict_key] = e.stored
            return
        st.session_state[base_key] = text
        st.session_state.pop(conflict_key, None)

    def _keep_theirs() -> None:
        theirs = st.session_state.pop(conflict_key, stored_note)
        st.session_state[note_key] = theirs
        st.session_state[base_key] = theirs

    locked = store.save_problem is not None  # a read-only run folder: view, do not offer to save
    if locked:
        st.warning(f"Verdicts cannot be saved in this run folder ({md_escape(store.save_problem)}): "
                   "the reviews shown are the ones saved before.", icon=":material/lock:")
    choices = verdicts.VERDICTS[category]
    with st.container(key=VERDICTS_KEY, gap="small"):
        for k, v in enumerate(choices):
            chosen = current is not None and current.verdict == v and current.category == category
            st.button(verdict_label(k, v), key=f"rv_verdict::{image_id}::{v}", type="primary" if chosen else "secondary",
                      on_click=save_verdict, width="stretch", disabled=locked,
                      args=(store, run_dir, split, image_id, v, category, triplet, size, advance))
    c1, c2 = st.columns([1, 1], vertical_alignment="center")
    c1.button("Clear verdict", key=f"rv_clear::{image_id}", on_click=_clear, width="stretch",
              disabled=locked or current is None or current.verdict is None)
    c2.toggle("Next after a verdict", key=AUTO_NEXT_KEY, help="Go to the next case after each verdict.")
    st.text_input("Note (saved when you press Enter or leave the field)", key=note_key, on_change=_save_note,
                  disabled=locked, label_visibility="collapsed", placeholder="Note (Enter saves it)")
    if conflict_key in st.session_state:
        st.warning("This note was changed in another tab or by another reviewer since you opened it: "
                   f"it now reads \u201c{md_escape(st.session_state[conflict_key])}\u201d. Yours is not saved yet.")
        c1, c2 = st.columns(2)
        c1.button("Overwrite with mine", key=note_key + "::force", on_click=_save_note, args=(True,))
        c2.button("Keep theirs", key=note_key + "::theirs", on_click=_keep_theirs)
    if current is not None and current.verdict:
        line = f"Saved: **{md_escape(current.verdict)}** under {_given_under(current, size)}, {current.updated}"
        if current.category and current.category != category:
            line += (f". The case is **{category}** now: the verdict keeps the category it was given under "
                     "(a new verdict replaces it)")
        st.caption(line)
    elif current is not None:
        st.caption("Note saved; no verdict yet.")
    else:
        st.caption("Not reviewed yet.")


def keys_legend(category: str, fullres_available: bool = True) -> str:
    """The keys, one line: the category's verdicts by number, then moving and viewing."""
    n = len(verdicts.VERDICTS[category])
    return (f"Keys: **1**-**{n}** the verdicts above · **N**/→ next · **P**/← previous · **O** overlay · "
            "**F** full resolution · **W** window · click the picture: centre it")


# --------------------------------------------------------------------------- progress, export
def progress_ui(store: verdicts.VerdictStore, run_dir: Path, split: str, ev: review.Evaluation,
                order: np.ndarray, name: str) -> dict[str, str]:
    """"12 of 41 FP cases reviewed" for the cases shown and the split, by this session's reader
    (:func:`pneumo_app.review_readers.current_reader`). Returns this reader's verdict by id
    ("note" for a case with a note alone).

    A case counts as reviewed when it has a verdict or a note: exactly the rows exported."""
    run = run_dir.name
    reader = review_readers.current_reader()
    mine = {r.image_id: (r.verdict or "note") for r in store.verdicts(run, split, reader=reader)}
    ids = ev.cases["id"]
    shown_ids = [str(ids[i]) for i in order]
    done = sum(1 for i in shown_ids if i in mine)
    total_done = sum(1 for i in ids if str(i) in mine)
    what = "cases" if name == "case" else (f"{name}es" if name.endswith("miss") else f"{name} cases")
    st.progress(done / len(shown_ids) if shown_ids else 0.0,
                text=f"{done} of {len(shown_ids)} {what} reviewed ({total_done} of {len(ids)} in {split}) "
                     f"by you ({reader})")
    return mine


def reviews_ui(store: verdicts.VerdictStore, run_dir: Path, split: str) -> None:
    """The CSV export of every reader's reviews of the split (with the reader column) and the table."""
    run = run_dir.name
    rows = store.all(run, split)
    c1, c2 = st.columns([1, 3])
    c1.download_button(
        # made when clicked (not on every Next), so it also holds what was saved since
        f"Export {len(rows)} reviews (CSV)", lambda: store.csv_text(run, split), file_name=f"reviews_{run}_{split}.csv",
        mime="text/csv", key="rv_export", disabled=not rows,
    )
    with c2.expander(f"Reviews so far ({len(rows)})"):
        if rows:
            import pandas as pd

            from pneumo_app.common import md_escape

            # A static table wraps long verdicts, notes and dates instead of cutting them. It
            # renders Markdown: ids, reader names and notes are escaped to show as typed (a
            # note's link stays text, ":red[...]" is not coloured).
            table = pd.DataFrame([r.__dict__ for r in rows], columns=verdicts.EXPORT_COLUMNS)
            st.table(table.map(lambda v: md_escape(v) if isinstance(v, str) else v).set_index("image_id"))
