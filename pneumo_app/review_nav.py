"""Moving through the review's cases: category filter and sort, Previous / Next, the grid.

Previous / Next: every click and ArrowLeft / ArrowRight press moves exactly one case.

A Streamlit button sends "clicked", and the page then computes "current + 1" from its state;
clicks faster than the page reruns are merged into one ("6 fast Next clicks moved 2 cases").
This control (an ``st.components.v2`` component, inline JavaScript, nothing fetched) keeps
its own target position in the browser, moves it by one per click or ArrowLeft / ArrowRight
press, and sends the absolute target. Streamlit keeps only the newest of fast-sent values,
which is then the sum of every press.

When the server moves the position for another reason (a grid's Open, the next case after
a verdict, a threshold change that clamps it), :func:`nav_ui` gives the control a new
``nonce`` with the server's position: the control resets to it, and a target it sent under
the old nonce (a press racing the jump) is ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from pneumo.review import cases as review
from pneumo_app.review_cache import png_bytes, read_cases

GRID_COLUMNS = 4  # four per row leave each caption ("12. <id> FP ✓ · 0.93") one line
GRID_ROWS = 3
THUMB_SIZE = 224

_JS = r"""
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const root = parentElement;
  let s = root.__pneumoNav;
  if (!s) {
    // Built once per mount: this function runs again with new data on every rerun.
    // The serial starts at the clock so a remounted control never repeats an old value.
    s = root.__pneumoNav = { nonce: null, target: 0, n: 0, serial: Date.now() };
    const box = document.createElement("div");
    box.className = "nav";
    box.innerHTML = '<button type="button" class="prev" data-testid="rvNavPrev">Previous</button>' +
      '<span class="label" data-testid="rvNavLabel"></span>' +
      '<button type="button" class="next" data-testid="rvNavNext">Next</button>';
    root.appendChild(box);
    s.prev = box.querySelector(".prev");
    s.next = box.querySelector(".next");
    s.label = box.querySelector(".label");
    s.draw = () => {
      s.prev.disabled = s.target <= 0;
      s.next.disabled = s.target >= s.n - 1;
      s.label.textContent = s.n > 0 ? `${s.name} ${s.target + 1} of ${s.n}`
        : (s.name === "case" ? "no cases" : `no ${s.name} cases`);
    };
    s.move = (delta) => {
      const t = Math.min(Math.max(s.target + delta, 0), Math.max(s.n - 1, 0));
      if (t === s.target) return;
      s.target = t;
      s.serial += 1;
      s.draw();
      // The absolute target travels with the event: merged fast events keep the newest,
      // which already counts every press.
      setStateValue("target", { index: t, nonce: s.nonce, serial: s.serial });
    };
    s.prev.addEventListener("click", () => s.move(-1));
    s.next.addEventListener("click", () => s.move(1));
    s.onKey = (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const el = (e.composedPath && e.composedPath()[0]) || e.target;
      const tag = el && el.tagName ? el.tagName.toLowerCase() : "";
      // the arrows edit text in the note field and move sliders; leave those alone
      if (["input", "textarea", "select"].includes(tag) || (el && el.isContentEditable)) return;
      if (el && el.getAttribute && ["slider", "spinbutton", "radio", "tab"].includes(el.getAttribute("role"))) return;
      e.preventDefault();
      s.move(e.key === "ArrowLeft" ? -1 : 1);
    };
    document.addEventListener("keydown", s.onKey);
    s.cleanup = () => document.removeEventListener("keydown", s.onKey);
  }
  s.n = data.n;
  s.name = data.name;
  if (data.nonce !== s.nonce) {
    // the server moved the position itself: start again from its index
    s.nonce = data.nonce;
    s.target = data.pos;
  }
  s.target = Math.min(Math.max(s.target, 0), Math.max(s.n - 1, 0));
  s.draw();
  return s.cleanup;
}
"""

_CSS = """
.nav { display: flex; align-items: center; gap: 1rem; width: 100%; font-family: var(--st-font, inherit); }
.label { flex: 2; text-align: center; font-size: 1.2em; font-weight: 700; color: var(--st-text-color, inherit); }
button { flex: 1; padding: 0.4rem 0.75rem; border-radius: 0.5rem; cursor: pointer; font: inherit;
  color: var(--st-text-color, inherit); background: var(--st-background-color, transparent);
  border: 1px solid var(--st-border-color, rgba(49, 51, 63, 0.2)); }
button:hover:enabled { border-color: var(--st-primary-color, #ff4b4b); color: var(--st-primary-color, #ff4b4b); }
button:disabled { opacity: 0.4; cursor: not-allowed; }
"""

def _n_cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def filter_ui(ev: review.Evaluation, run_dir: Path, split: str) -> tuple[str, str, np.ndarray]:
    """Category filter (FP first by default) and sort; returns ``(shown category, sort, order)``.

    The radio's options are the category keys with fixed labels; the counts are captions.
    (A label carrying its count changes with every threshold, and the browser could send
    back a label that no longer exists: "unknown category filter 'FP (4)'".) An empty
    category shows the next non-empty one with a one-line note; the choice itself is kept.
    """
    counts = ev.counts
    c1, c2 = st.columns([3, 2])
    chosen = c1.radio(
        "Show", review.FILTERS, horizontal=True, key=category_key(run_dir, split),
        captions=[_n_cases(counts[c] if c in counts else sum(counts.values())) for c in review.FILTERS],
        help="FP: predicted pneumothorax where the label has none. FN: a missed one.",
    )
    sort = c2.selectbox("Sort", review.SORTS, key=sort_key(run_dir, split))
    category, note = review.shown_category(counts, chosen if chosen in review.FILTERS else "FP")
    if note:
        st.caption(note)
    return category, sort, review.select(ev.cases, category, sort)


def category_key(run_dir: Path, split: str) -> str:
    """The session-state key of the category filter (the "Show" radio)."""
    return f"rv_cat::{run_dir.name}::{split}"


def sort_key(run_dir: Path, split: str) -> str:
    """The session-state key of the sort order."""
    return f"rv_sort::{run_dir.name}::{split}"


def open_position(pos_key: str, position: int) -> None:
    """Show the case at ``position`` of ``pos_key``'s order in the case view, from a button
    callback (the grid's Open, the Readers panel's disagreements): the Previous / Next
    control follows with a new nonce (:func:`nav_ui`)."""
    st.session_state[pos_key] = int(position)
    st.session_state["rv_mode"] = "Case"


def pos_key(run_dir: Path, split: str, category: str, sort: str) -> str:
    """The session-state key of the position among one category's cases in one sort order."""
    return f"rv_pos::{run_dir.name}::{split}::{category}::{sort}"


def grid_ui(data: review.ReviewData, ev: review.Evaluation, order: np.ndarray, pos_key: str,
            view: dict[str, Any], reviewed: set[str], ident: tuple | None = None) -> None:
    """Thumbnails of a page of cases (target green, prediction red); Open shows one in full.
    ``ident``: the page run's cache key of the files (:func:`pneumo_app.review_cache.files_ident`)."""
    per_page = GRID_COLUMNS * GRID_ROWS
    n = int(order.size)
    if n == 0:
        st.info("No case in this category.")
        return
    pages = (n + per_page - 1) // per_page
    pos = int(st.session_state.get(pos_key, 0))
    page_key = pos_key + "::page"
    if not 1 <= int(st.session_state.get(page_key, 0)) <= pages:
        st.session_state[page_key] = min(pos // per_page + 1, pages)
    page = int(st.number_input(f"Page (of {pages})", 1, pages, key=page_key)) - 1
    shown = order[page * per_page : (page + 1) * per_page]
    cases = read_cases(data.run_dir, data.split, [int(i) for i in shown], ident)

    for r in range(0, len(cases), GRID_COLUMNS):
        cols = st.columns(GRID_COLUMNS)
        for j, (col, case) in enumerate(zip(cols, cases[r : r + GRID_COLUMNS])):
            p = page * per_page + r + j
            i = case.index
            cat = str(ev.cases["category"][i])
            thumb = review.case_thumbnail(case, cat, ev.triplet, view, THUMB_SIZE)
            mark = " ✓" if case.id in reviewed else ""
            col.image(png_bytes(thumb), caption=f"{p + 1}. {case.id} {cat}{mark} · {ev.cases['score'][i]:.2f}",
                      output_format="PNG")
            col.button("Open", key=f"rv_open::{pos_key}::{p}", on_click=open_position, args=(pos_key, p),
                       width="stretch")


_nav = st.components.v2.component("pneumo_review_nav", html="", css=_CSS, js=_JS)


def _nonce_key(pos_key: str) -> str:
    return pos_key + "::nav"


def apply_target(value: Any, nonce: int, n: int) -> int | None:
    """The position a target sent by the control asks for, or None to ignore it: a value
    that is not ``{"index": int, "nonce": nonce, ...}`` (sent before the server's last jump,
    or malformed) is ignored; the index is clamped to ``0..n-1``."""
    if not isinstance(value, dict) or value.get("nonce") != nonce:
        return None
    index = value.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        return None
    return review.step(index, n, 0)


def nav_ui(pos_key: str, category: str, n: int) -> int:
    """Previous / Next and "FP 3 of 41" for the cases of one category and sort; ``pos_key``
    is the session-state key of the position. Returns the position, in ``0..n-1``."""
    nkey = _nonce_key(pos_key)
    ckey = pos_key + "::control"
    # (nonce, the position the browser was last told or told us)
    nonce, known = st.session_state.get(nkey, (0, None))

    def _on_target() -> None:  # runs before the next rerun, with the n the control was drawn for
        value = (st.session_state.get(ckey) or {}).get("target")
        current = st.session_state.get(nkey, (0, None))[0]
        pos = apply_target(value, current, n)
        if pos is not None:
            st.session_state[pos_key] = pos
            st.session_state[nkey] = (current, pos)

    pos = review.step(int(st.session_state.get(pos_key, 0)), n, 0)
    st.session_state[pos_key] = pos
    if known != pos:  # moved here, not by the control (or clamped): the control follows
        nonce, known = nonce + 1, pos
        st.session_state[nkey] = (nonce, known)
    name = "case" if category == "all" else category
    _nav(key=ckey, data={"pos": pos, "n": n, "nonce": nonce, "name": name},
         default={"target": None}, on_target_change=_on_target)
    return pos
