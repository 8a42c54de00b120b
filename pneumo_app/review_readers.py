"""Readers on the Review page: who is reading, how far readers agree, and the relabel list.

- :func:`reader_ui`: the reader's name, asked once per browser session and kept in the URL
  (``?reader=NAME``), so a reload or a bookmark keeps it; :func:`current_reader` is what the
  verdict buttons and the progress count use. Until a name is given the page reads as
  :data:`pneumo.store.verdicts.UNNAMED_READER` (a single reviewer need not type a name).
- :func:`readers_ui`: per pair of readers, the cases both judged, observed agreement and
  Cohen's kappa per category (:mod:`pneumo.review.agreement`), and their disagreements, each with
  an Open button that shows the case in the case viewer (the grid's mechanism,
  :func:`pneumo_app.review_nav.open_position`); the "Write relabel list" button
  (:func:`pneumo.review.curate.curate`) and the command repacking the pack without the list,
  from the pack's recorded source and options (:func:`pneumo.review.repack.repack_command`).

The Readers tab is computed only while it is open (a lazy tab); its buttons rerun the whole
page (an Open changes the category filter and returns to the reading room).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from pneumo.errors import InputError
from pneumo.review import agreement, curate
from pneumo.review import cases as review
from pneumo.store import relabel, verdicts
from pneumo_app import review_nav

READER_PARAM = "reader"  # the URL query parameter that keeps the name across reloads
_STATE = "rv_reader"  # the session's reader (validated); absent: not named yet
_INPUT = "rv_reader_input"
_ERROR = "rv_reader_error"
MAX_DISAGREEMENTS_SHOWN = 50  # one Open button each; more than a screenful is a list to export


def current_reader() -> str:
    """The reader this browser session saves verdicts as (``"unnamed"`` until a name is given)."""
    return st.session_state.get(_STATE) or verdicts.UNNAMED_READER


def _set_reader() -> None:
    try:
        name = verdicts.check_reader(st.session_state.get(_INPUT, ""))
    except InputError as e:
        st.session_state[_ERROR] = str(e)
        return
    st.session_state[_STATE] = name
    st.session_state.pop(_ERROR, None)
    st.query_params[READER_PARAM] = name


def _change_reader() -> None:
    st.session_state[_INPUT] = st.session_state.pop(_STATE, "")
    st.query_params.pop(READER_PARAM, None)


def reader_ui() -> str:
    """"Reading as NAME" with a Change button, or a one-field form asking for the name.

    The name comes from the session, else from ``?reader=`` (checked with
    :func:`pneumo.store.verdicts.check_reader`; a bad one is reported and ignored). Switching pages
    drops the query parameter; it is put back from the session. Returns :func:`current_reader`.
    """
    from pneumo_app.common import md_escape

    name = st.session_state.get(_STATE)
    given = st.query_params.get(READER_PARAM)
    if name is None and given:
        try:
            name = st.session_state[_STATE] = verdicts.check_reader(given)
        except InputError as e:
            st.warning(f"Reader name in the address ignored: {md_escape(e)}")
            st.query_params.pop(READER_PARAM, None)
    if name is not None and given != name:
        st.query_params[READER_PARAM] = name
    if name is not None:
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            st.markdown(f"Reading as **{md_escape(name)}**",
                        help="Your verdicts and notes are saved under this name (kept in the address: ?reader=).")
            st.button("Change", key="rv_reader_change", on_click=_change_reader, type="tertiary")
        return name
    with st.popover(f"Reader: {verdicts.UNNAMED_READER}", width="stretch",
                    help="Give your name: your verdicts are then kept apart from other readers'."):
        with st.form("rv_reader_form", border=False):
            st.text_input("Your name as reader", key=_INPUT, max_chars=verdicts.MAX_READER_LENGTH,
                          placeholder="e.g. alice",
                          help="Each reader's verdicts are kept apart, so two readers can judge the same "
                               "cases and the Readers tab compares them. Kept in the address (?reader=).")
            st.form_submit_button("Start reading", on_click=_set_reader, width="stretch")
        st.caption(f"Until you give a name, verdicts are saved under the reader **{verdicts.UNNAMED_READER}**.")
    if err := st.session_state.pop(_ERROR, None):
        st.error(md_escape(err))
    return verdicts.UNNAMED_READER


# --------------------------------------------------------------------------- the tab
def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def agreement_table(pair: agreement.PairAgreement) -> Any:
    """The pair's table for display: one row overall, then one per category both judged."""
    import pandas as pd

    rows = [{"category": r["category"], "cases both judged": r["n"], "observed agreement": _fmt(r["observed"]),
             "Cohen's kappa": _fmt(r["kappa"]), "disagreements": r["disagree"]}
            for r in agreement.agreement_rows([pair])]
    return pd.DataFrame(rows).set_index("category")


def open_case(ev: review.Evaluation, run_dir: Path, split: str, image_id: str) -> None:
    """Show ``image_id`` in the case viewer (a button callback): its category under the current
    post-processing becomes the filter, and the position is set the way the grid's Open does."""
    ids = np.asarray(ev.cases["id"]).astype(str)
    found = np.flatnonzero(ids == image_id)
    if found.size == 0:
        st.session_state["rv_readers_msg"] = f"{image_id} is not in the {split} split any more."
        return
    index = int(found[0])
    category = str(ev.cases["category"][index])
    sort = st.session_state.get(review_nav.sort_key(run_dir, split), review.SORTS[0])
    if sort not in review.SORTS:
        sort = review.SORTS[0]
    st.session_state[review_nav.category_key(run_dir, split)] = category
    order = review.select(ev.cases, category, sort)
    review_nav.open_position(review_nav.pos_key(run_dir, split, category, sort),
                             int(np.flatnonzero(order == index)[0]))


def readers_ui(run_dir: Path, split: str, ev: review.Evaluation, pack_path: Path | None = None) -> None:
    """The Readers tab: per pair agreement and disagreements, and the relabel list (with the
    command repacking ``pack_path`` without it)."""
    from pneumo_app.common import md_escape

    run = run_dir.name
    rows = verdicts.VerdictStore.for_run(run_dir).verdicts(run, split)
    judged: dict[str, int] = {}
    for r in rows:
        if r.verdict:
            judged[r.reader] = judged.get(r.reader, 0) + 1
    names = sorted({r.reader for r in rows})
    if msg := st.session_state.pop("rv_readers_msg", None):
        st.warning(md_escape(msg))
    if not names:
        st.caption("No reviews yet.")
    else:
        st.caption("Verdicts on " + split + ": " + ", ".join(
            f"**{md_escape(n)}** {judged.get(n, 0)}" for n in names)
            + ". Updated when the page reruns (opening this tab, any change above, or Refresh).")
    st.button("Refresh", key="rv_readers_refresh")
    pairs = agreement.reader_agreement(rows)
    if not pairs:
        st.info("Agreement needs verdicts from two readers: open the page as a second reader "
                "(Change, or another browser with ?reader=NAME).")
    else:
        _pair_ui(pairs, rows, run_dir, split, ev)
    st.divider()
    _relabel_ui(run_dir, split, len(names), pack_path)


def _pair_ui(pairs: list[agreement.PairAgreement], rows: list[verdicts.Verdict], run_dir: Path, split: str,
             ev: review.Evaluation) -> None:
    from pneumo_app.common import md_escape

    labels = [f"{p.a} and {p.b}" for p in pairs]
    k = 0
    if len(pairs) > 1:
        k = st.selectbox("Pair of readers", range(len(pairs)), format_func=labels.__getitem__,
                         key=f"rv_readers_pair::{run_dir.name}::{split}")
    pair = pairs[int(k)]
    st.markdown(f"Readers **{md_escape(pair.a)}** and **{md_escape(pair.b)}**, {pair.overall.n} cases both judged")
    st.table(agreement_table(pair))
    st.caption("Kappa: agreement beyond chance (1 perfect, 0 chance, below 0 worse); "
               "'-' when undefined (both gave every shared case one and the same verdict).")
    ids = pair.overall.disagree
    if not ids:
        st.caption("No disagreement.")
        return
    st.markdown(f"**{len(ids)} disagreement{'s' if len(ids) != 1 else ''}**")
    by = {(r.image_id, r.reader): r for r in rows}
    cats = dict(zip(np.asarray(ev.cases["id"]).astype(str), np.asarray(ev.cases["category"]).astype(str)))
    for image_id in ids[:MAX_DISAGREEMENTS_SHOWN]:
        a, b = by.get((image_id, pair.a)), by.get((image_id, pair.b))
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        now = cats.get(image_id, "not in the split")
        c1.markdown(f"**{md_escape(image_id)}** ({md_escape(now)} now): {md_escape(pair.a)}: *{md_escape(a.verdict if a else '-')}*"
                    f" \u00b7 {md_escape(pair.b)}: *{md_escape(b.verdict if b else '-')}*")
        c2.button("Open", key=f"rv_readers_open::{pair.a}::{pair.b}::{image_id}", width="stretch",
                  on_click=open_case, args=(ev, run_dir, split, image_id), disabled=image_id not in cats)
    if len(ids) > MAX_DISAGREEMENTS_SHOWN:
        st.caption(f"{len(ids) - MAX_DISAGREEMENTS_SHOWN} more: `python -m pneumo review {run_dir} "
                   f"--split {split} --agreement` lists them all.")


def _relabel_ui(run_dir: Path, split: str, n_readers: int, pack_path: Path | None) -> None:
    """"Write relabel list": :func:`pneumo.review.curate.curate` into the run's default list
    (:func:`pneumo.store.relabel.relabel_path`)."""
    from pneumo_app.common import md_escape

    st.markdown("**Relabel list** (the cases readers flagged as label problems, for `pack --exclude`)")
    out = relabel.relabel_path(run_dir, split)
    c1, c2 = st.columns(2)
    min_readers = c1.number_input("Flagged by at least (readers)", 1, max(1, n_readers), min(2, max(1, n_readers)),
                                  key=f"rv_curate_min::{run_dir.name}::{split}",
                                  help="2 with two readers: only cases both flagged (a consensus).")
    replace = True
    if out.exists():
        replace = c2.checkbox(f"Replace the existing {out.name}", key=f"rv_curate_replace::{run_dir.name}::{split}")
    result_key = f"rv_curate_result::{run_dir.name}::{split}"
    if st.button("Write relabel list", key=f"rv_curate::{run_dir.name}::{split}", disabled=not replace or n_readers == 0,
                 type="primary"):
        try:
            result = curate.curate(run_dir, split, min_readers=int(min_readers), force=out.exists())
        except InputError as e:
            st.error(md_escape(e))
        else:
            st.session_state[result_key] = (result, int(min_readers))
    if result_key in st.session_state:
        result, at_least = st.session_state[result_key]
        ids = ", ".join(c.id for c in result.cases[:10]) + (" ..." if len(result.cases) > 10 else "")
        n = len(result.cases)
        st.success(f"Wrote **{n} case{'s' if n != 1 else ''}** to `{result.path}` "
                   f"(readers: {md_escape(', '.join(result.readers)) or 'none'}; flagged by at least "
                   f"{at_least}){': ' + md_escape(ids) if ids else ''}.")
        if result.sources_note:
            st.caption(md_escape(result.sources_note))
        _repack_ui(pack_path, result.path)


def _repack_ui(pack_path: Path | None, list_path: Path) -> None:
    """The command repacking the pack without the listed cases, from what the pack recorded
    (:func:`pneumo.review.repack.repack_command`), and what to fill in where it recorded nothing."""
    from pneumo.errors import PneumoError
    from pneumo.review.repack import repack_command
    from pneumo_app.common import md_escape

    if pack_path is None:
        st.caption(f"Repack with `python -m pneumo pack ... --exclude {list_path}` (the run's pack is not known).")
        return
    try:
        command = repack_command(pack_path, list_path)
    except PneumoError as e:
        st.caption(f"The repack command cannot be made: {md_escape(e)}")
        return
    st.markdown(f"Repack **{md_escape(Path(pack_path).name)}** without them (its recorded source and options, "
                "plus `--exclude`):")
    st.code(command.text, language="bash", wrap_lines=True)
    for line in command.missing:
        st.warning(md_escape(line))
    for line in command.notes:
        st.caption(md_escape(line))
