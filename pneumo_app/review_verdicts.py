"""Verdicts on the Review page: the verdict buttons and note of the case shown, and progress
and export of the reviews of a split.

Verdicts and notes are stored at once in the run's review database
(:class:`pneumo.store.verdicts.VerdictStore`), under the session's reader
(:func:`pneumo_app.review_readers.current_reader`): nothing entered is lost on reload and a
second tab sees it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from pneumo.review import cases as review
from pneumo.store import verdicts
from pneumo_app import review_readers


def verdict_ui(store: verdicts.VerdictStore, run_dir: Path, split: str, image_id: str, category: str,
               advance: tuple[str, int] | None = None) -> None:
    """Verdict buttons for the case's category (saved on click; the chosen one clears it) and
    a free note (saved on Enter or leaving the field).

    The note shown follows the store: a note saved in another tab replaces the field's text
    on the next rerun unless this tab has unsaved edits. Saving over a note changed elsewhere
    since it was loaded is refused by the store (:class:`pneumo.store.verdicts.NoteConflict`) and
    the page asks which one to keep.
    """
    run = run_dir.name
    reader = review_readers.current_reader()
    current = store.get(run, split, image_id, reader=reader)
    stored_note = current.note if current else ""

    def _save(verdict: str) -> None:
        store.set_verdict(run, split, image_id, verdict, category=category, reader=reader)
        if advance is not None and st.session_state.get("rv_auto_next", False):
            key, n = advance
            st.session_state[key] = review.step(int(st.session_state.get(key, 0)), n, 1)

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
                           expected=None if force else st.session_state.get(base_key, ""))
        except verdicts.NoteConflict as e:
            st.session_state[conflict_key] = e.stored
            return
        st.session_state[base_key] = text
        st.session_state.pop(conflict_key, None)

    def _keep_theirs() -> None:
        theirs = st.session_state.pop(conflict_key, stored_note)
        st.session_state[note_key] = theirs
        st.session_state[base_key] = theirs

    st.markdown(f"**Verdict on this {category}**")
    choices = verdicts.VERDICTS[category]
    cols = st.columns(len(choices) + 1)
    for col, v in zip(cols, choices):
        chosen = current is not None and current.verdict == v
        col.button(v, key=f"rv_verdict::{image_id}::{v}", type="primary" if chosen else "secondary",
                   on_click=_save, args=(v,), width="stretch")
    cols[-1].button("Clear verdict", key=f"rv_clear::{image_id}", on_click=_clear, width="stretch",
                    disabled=current is None or current.verdict is None)
    st.toggle("Go to the next case after a verdict", key="rv_auto_next")
    st.text_input("Note (saved when you press Enter or leave the field)", key=note_key, on_change=_save_note)
    if conflict_key in st.session_state:
        from pneumo_app.common import md_escape

        st.warning("This note was changed in another tab or by another reviewer since you opened it: "
                   f"it now reads \u201c{md_escape(st.session_state[conflict_key])}\u201d. Yours is not saved yet.")
        c1, c2 = st.columns(2)
        c1.button("Overwrite with mine", key=note_key + "::force", on_click=_save_note, args=(True,))
        c2.button("Keep theirs", key=note_key + "::theirs", on_click=_keep_theirs)
    if current is not None and current.verdict:
        st.caption(f"Saved: **{current.verdict}** ({current.category} at the time, {current.updated})")
    elif current is not None:
        st.caption("Note saved; no verdict yet.")
    else:
        st.caption("Not reviewed yet.")


# --------------------------------------------------------------------------- progress, export
def progress_ui(store: verdicts.VerdictStore, run_dir: Path, split: str, ev: review.Evaluation,
                order: np.ndarray, category: str) -> set[str]:
    """"12 of 41 reviewed" for the shown category and the split, by this session's reader
    (:func:`pneumo_app.review_readers.current_reader`); CSV export of every reader's rows (with
    the reader column). Returns the ids this reader reviewed.

    A case counts as reviewed when it has a verdict or a note: exactly the rows exported."""
    run = run_dir.name
    reader = review_readers.current_reader()
    reviewed = store.reviewed_ids(run, split, reader=reader)
    ids = ev.cases["id"]
    shown_ids = [str(ids[i]) for i in order]
    done = sum(1 for i in shown_ids if i in reviewed)
    total_done = sum(1 for i in ids if str(i) in reviewed)
    what = "cases" if category == "all" else f"{category} cases"
    st.progress(done / len(shown_ids) if shown_ids else 0.0,
                text=f"{done} of {len(shown_ids)} {what} reviewed ({total_done} of {len(ids)} in {split}) "
                     f"by you ({reader})")
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

            # a static table wraps long verdicts, notes and dates instead of cutting them
            st.table(pd.DataFrame([r.__dict__ for r in rows], columns=verdicts.EXPORT_COLUMNS).set_index("image_id"))
    return reviewed
