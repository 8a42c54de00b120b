"""Moving through the review's cases: category filter and sort, Previous / Next and the keys, the grid.

Previous / Next: every click and key press moves exactly one case. A Streamlit button sends
"clicked", and the page then computes "current + 1" from its state; clicks faster than the
page reruns are merged into one ("6 fast Next clicks moved 2 cases"). This control (an
``st.components.v2`` component, inline JavaScript, nothing fetched) keeps its own target
position in the browser, moves it by one per click or key press, and sends the absolute
target. Streamlit keeps only the newest of fast-sent values, which is then the sum of every press.

Keys (no modifier; none in a text field; the arrows not on a slider, radio or tab): N or Right next,
P or Left previous,
1-9 the shown category's verdicts in the buttons' order, O overlay on/off, F full resolution,
W the next window preset; a click on the case picture centres the view there. Everything but
moving is sent as an *action* in a list of the last few (each with a serial), so actions sent
between two reruns are all applied, in order, once. A verdict key is ignored while a move is
on its way (the reader has not seen the next case yet) and carries the id of the case shown,
which the server checks: a verdict never lands on a case other than the one on screen.

When the server moves the position for another reason (a grid's Open, the next case after
a verdict, a threshold change that clamps it), :func:`nav_ui` gives the control a new
``nonce`` with the server's position: the control resets to it, and a target it sent under
the old nonce (a press racing the jump) is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st

from pneumo.review import cases as review
from pneumo_app.review_cache import png_bytes, read_cases

GRID_COLUMNS = 6
GRID_ROWS = 2
THUMB_SIZE = 150
MAX_ACTIONS = 16  # actions the control re-sends until the server has seen them
VIEW_KEY = "rv_view"  # the container of the case picture: clicks on its image centre the view

_JS = r"""
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const root = parentElement;
  let s = root.__pneumoNav;
  if (!s) {
    // Built once per mount: this function runs again with new data on every rerun.
    // The serial starts at the clock so a remounted control never repeats an old value.
    s = root.__pneumoNav = { nonce: null, target: 0, n: 0, serial: Date.now(), actions: [], data: {} };
    const box = document.createElement("div");
    box.className = "nav";
    box.innerHTML = '<button type="button" class="prev" data-testid="rvNavPrev" title="Previous (P or Left)">Previous</button>' +
      '<span class="label" data-testid="rvNavLabel"></span>' +
      '<button type="button" class="next" data-testid="rvNavNext" title="Next (N or Right)">Next</button>';
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
    s.send = () => setStateValue("nav", { target: { index: s.target, nonce: s.nonce }, actions: s.actions.slice() });
    s.move = (delta) => {
      const t = Math.min(Math.max(s.target + delta, 0), Math.max(s.n - 1, 0));
      if (t === s.target) return;
      s.target = t;
      s.serial += 1;
      s.draw();
      // The absolute target travels with the event: merged fast events keep the newest,
      // which already counts every press.
      s.send();
    };
    s.act = (action) => {
      s.serial += 1;
      s.actions.push({ ...action, serial: s.serial, case: s.data.case, nonce: s.nonce });
      s.actions = s.actions.slice(-""" + str(MAX_ACTIONS) + r""");
      s.send();
    };
    s.prev.addEventListener("click", () => s.move(-1));
    s.next.addEventListener("click", () => s.move(1));
    // Text fields take every key; sliders, radios (the filter's options) and tabs take the arrows.
    const typing = (el) => {
      const tag = el && el.tagName ? el.tagName.toLowerCase() : "";
      if (["input", "textarea", "select"].includes(tag) || (el && el.isContentEditable)) return true;
      return !!(el && el.getAttribute && ["spinbutton", "combobox", "listbox", "option", "textbox"].includes(
        el.getAttribute("role")));
    };
    const arrows = (el) => !!(el && el.getAttribute && ["slider", "radio", "tab"].includes(el.getAttribute("role")));
    s.onKey = (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey || e.repeat && !["ArrowLeft", "ArrowRight"].includes(e.key)) return;
      const el = (e.composedPath && e.composedPath()[0]) || e.target;
      if (typing(el)) return;  // the keys edit text in the note field: leave those alone
      if ((e.key === "ArrowLeft" || e.key === "ArrowRight") && arrows(el)) return;  // they move sliders and radios
      const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
      if (key === "ArrowLeft" || key === "p") { e.preventDefault(); s.move(-1); return; }
      if (key === "ArrowRight" || key === "n") { e.preventDefault(); s.move(1); return; }
      if (/^[1-9]$/.test(key)) {
        const k = Number(key) - 1;
        // only on the case on screen: not while a move is on its way
        if (k < (s.data.verdicts || 0) && s.target === s.data.pos && s.data.case) {
          e.preventDefault();
          s.act({ kind: "verdict", index: k });
        }
        return;
      }
      const kinds = { o: "overlay", f: "fullres", w: "window" };
      if (kinds[key]) { e.preventDefault(); s.act({ kind: kinds[key] }); }
    };
    s.onClick = (e) => {
      const img = e.target && e.target.closest ? e.target.closest(".st-key-""" + VIEW_KEY + r""" img") : null;
      if (!img || s.target !== s.data.pos) return;
      const r = img.getBoundingClientRect();
      if (!r.width || !r.height) return;
      s.act({ kind: "click", fx: (e.clientX - r.left) / r.width, fy: (e.clientY - r.top) / r.height });
    };
    document.addEventListener("keydown", s.onKey);
    document.addEventListener("click", s.onClick);
    if (!document.getElementById("pneumo-review-style")) {
      const style = document.createElement("style");
      style.id = "pneumo-review-style";
      style.textContent = ".st-key-""" + VIEW_KEY + r""" img { cursor: crosshair; }";
      document.head.appendChild(style);
    }
    s.cleanup = () => { document.removeEventListener("keydown", s.onKey); document.removeEventListener("click", s.onClick); };
  }
  s.data = data;
  s.n = data.n;
  s.name = data.name;
  if (data.nonce !== s.nonce) {
    // the server moved the position itself: start again from its index
    s.nonce = data.nonce;
    s.target = data.pos;
  }
  // actions the server has applied need not be sent again
  s.actions = s.actions.filter((a) => a.serial > (data.seen || 0));
  s.target = Math.min(Math.max(s.target, 0), Math.max(s.n - 1, 0));
  s.draw();
  return s.cleanup;
}
"""

_CSS = """
.nav { display: flex; align-items: center; gap: 0.5rem; width: 100%; font-family: var(--st-font, inherit); }
.label { flex: 2; text-align: center; font-size: 1.1em; font-weight: 700; color: var(--st-text-color, inherit); }
button { flex: 1; padding: 0.35rem 0.5rem; border-radius: 0.5rem; cursor: pointer; font: inherit;
  color: var(--st-text-color, inherit); background: var(--st-background-color, transparent);
  border: 1px solid var(--st-border-color, rgba(49, 51, 63, 0.2)); }
button:hover:enabled { border-color: var(--st-primary-color, #ff4b4b); color: var(--st-primary-color, #ff4b4b); }
button:disabled { opacity: 0.4; cursor: not-allowed; }
"""


@dataclass(frozen=True)
class Shown:
    """The cases the reading room steps through: ``order`` (indices into the predictions),
    kept under position key ``key`` (the category, ``"FP~near"`` for FP's near misses), named
    ``name`` in the position label; ``note`` says why it is not the chosen filter;
    ``near`` holds the near misses' details when they are shown."""

    chosen: str
    key: str
    name: str
    order: np.ndarray
    note: str | None = None
    near: review.NearMisses | None = None


def category_label(category: str, counts: dict[str, int]) -> str:
    """``"FP · 4"``: a filter and its count (the option itself stays the category key)."""
    n = counts[category] if category in counts else sum(counts.values())
    return f"{category} · {n}"


def shown_cases(ev: review.Evaluation, stats, chosen: str, sort: str) -> Shown:
    """What the filter ``chosen`` shows: its cases in ``sort`` order; an empty category its near
    misses (:func:`pneumo.review.cases.near_misses`) when there are some, else the next
    non-empty category (:func:`pneumo.review.cases.shown_category`), each with a note."""
    counts = ev.counts
    if chosen == "all" or counts.get(chosen, 0) > 0:
        return Shown(chosen, chosen, "case" if chosen == "all" else chosen, review.select(ev.cases, chosen, sort))
    near = review.near_misses(stats, ev.cases, ev.triplet, chosen)
    if near.indices.size:
        return Shown(chosen, f"{chosen}~near", "near miss", near.indices, near.note, near)
    category, note = review.shown_category(counts, chosen)
    return Shown(chosen, category, "case" if category == "all" else category,
                 review.select(ev.cases, category, sort), note)


def filter_ui(ev: review.Evaluation, stats, run_dir: Path, split: str) -> tuple[Shown, str]:
    """Category filter (FP first by default), sort and Case / Grid in one row; returns what is
    shown and the sort. The options are the category keys (their labels carry the counts), so
    a threshold change never invalidates the choice."""
    counts = ev.counts
    c1, c2, c3 = st.columns([5, 2.2, 1.6], vertical_alignment="center")
    key = category_key(run_dir, split)
    if st.session_state.get(key) not in review.FILTERS:
        st.session_state[key] = "FP"
    chosen = c1.segmented_control(
        "Show", review.FILTERS, key=key, required=True, label_visibility="collapsed",
        format_func=lambda c: category_label(c, counts),
        help="FP: predicted pneumothorax where the label has none. FN: a missed one. TP, TN: agreement.",
    )
    sort = c2.selectbox("Sort", review.SORTS, key=sort_key(run_dir, split), label_visibility="collapsed")
    st.session_state.setdefault("rv_mode", "Case")
    c3.segmented_control("View", ("Case", "Grid"), key="rv_mode", required=True, label_visibility="collapsed")
    shown = shown_cases(ev, stats, chosen if chosen in review.FILTERS else "FP", sort)
    if shown.note:
        st.caption(shown.note)
    return shown, sort


def category_key(run_dir: Path, split: str) -> str:
    """The session-state key of the category filter."""
    return f"rv_cat::{run_dir.name}::{split}"


def sort_key(run_dir: Path, split: str) -> str:
    """The session-state key of the sort order."""
    return f"rv_sort::{run_dir.name}::{split}"


def open_position(pos_key: str, position: int) -> None:
    """Show the case at ``position`` of ``pos_key``'s order in the case view, from a button
    callback (the grid's Open, the Readers tab's disagreements): the Previous / Next control
    follows with a new nonce (:func:`nav_ui`)."""
    st.session_state[pos_key] = int(position)
    st.session_state["rv_mode"] = "Case"
    st.session_state["rv_tab"] = TABS[0]


TABS = ("Reading room", "Dashboard", "Readers")


def pos_key(run_dir: Path, split: str, category: str, sort: str) -> str:
    """The session-state key of the position among one category's cases in one sort order
    (``category`` is :attr:`Shown.key`)."""
    return f"rv_pos::{run_dir.name}::{split}::{category}::{sort}"


def grid_ui(data: review.ReviewData, ev: review.Evaluation, order: np.ndarray, pos_key: str,
            view: dict[str, Any], verdict_of: dict[str, str], ident: tuple | None = None) -> None:
    """Thumbnails of a page of cases (target green, prediction red, framed in the category's
    colour), each captioned with its position, id, category, this reader's verdict (or "-")
    and presence score; Open shows one in the case view."""
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
    c1, c2 = st.columns([1, 4], vertical_alignment="center")
    page = int(c1.number_input(f"Page (of {pages})", 1, pages, key=page_key)) - 1
    c2.caption("Each case: position, id, category (the frame's colour), your verdict ('-': none yet), "
               "presence score.")
    shown = order[page * per_page : (page + 1) * per_page]
    cases = read_cases(data.run_dir, data.split, [int(i) for i in shown], ident)
    for r in range(0, len(cases), GRID_COLUMNS):
        cols = st.columns(GRID_COLUMNS)
        for j, (col, case) in enumerate(zip(cols, cases[r : r + GRID_COLUMNS])):
            p = page * per_page + r + j
            i = case.index
            cat = str(ev.cases["category"][i])
            thumb = review.case_thumbnail(case, cat, ev.triplet, view, THUMB_SIZE)
            verdict = verdict_of.get(case.id, "-")
            col.image(png_bytes(thumb), caption=f"{p + 1}. {case.id} {cat} · {verdict} · {ev.cases['score'][i]:.2f}",
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


def new_actions(actions: Any, seen: int) -> list[dict]:
    """The actions of a control's list not applied yet (serial above ``seen``), in order;
    malformed entries are dropped."""
    if not isinstance(actions, list):
        return []
    ok = [a for a in actions if isinstance(a, dict) and isinstance(a.get("serial"), int)
          and not isinstance(a.get("serial"), bool) and a["serial"] > seen and isinstance(a.get("kind"), str)]
    return sorted(ok, key=lambda a: a["serial"])


def nav_ui(pos_key: str, name: str, n: int, *, case_id: str | None = None, n_verdicts: int = 0,
           on_action: Callable[[dict], None] | None = None) -> int:
    """Previous / Next and "FP 3 of 41" for the cases of one category and sort; ``pos_key``
    is the session-state key of the position. ``case_id`` is the case on screen and
    ``n_verdicts`` how many verdict keys it takes; ``on_action(action)`` applies the control's
    actions (``kind``: verdict, overlay, fullres, window, click; ``case``: the id on screen when
    it was sent) before the next rerun. Returns the position, in ``0..n-1``."""
    nkey = _nonce_key(pos_key)
    ckey = pos_key + "::control"
    seen_key = ckey + "::seen"
    # (nonce, the position the browser was last told or told us)
    nonce, known = st.session_state.get(nkey, (0, None))

    def _on_change() -> None:  # runs before the next rerun, with what the control was drawn for
        value = st.session_state.get(ckey) or {}
        nav = value.get("nav") if isinstance(value, dict) else None
        if not isinstance(nav, dict):
            return
        current = st.session_state.get(nkey, (0, None))[0]
        for action in new_actions(nav.get("actions"), int(st.session_state.get(seen_key, 0))):
            st.session_state[seen_key] = action["serial"]
            # a click points into the picture it was made on: not after the server moved on
            if on_action is not None and (action["kind"] != "click" or action.get("nonce") == current):
                on_action(action)
        pos = apply_target(nav.get("target"), current, n)
        if pos is not None and pos != st.session_state.get(nkey, (0, None))[1]:
            st.session_state[pos_key] = pos
            st.session_state[nkey] = (current, pos)

    pos = review.step(int(st.session_state.get(pos_key, 0)), n, 0)
    st.session_state[pos_key] = pos
    if known != pos:  # moved here, not by the control (or clamped): the control follows
        nonce, known = nonce + 1, pos
        st.session_state[nkey] = (nonce, known)
    _nav(key=ckey, data={"pos": pos, "n": n, "nonce": nonce, "name": name, "case": case_id,
                         "verdicts": int(n_verdicts), "seen": int(st.session_state.get(seen_key, 0))},
         default={"nav": None}, on_nav_change=_on_change)
    return pos
