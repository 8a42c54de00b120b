"""The review page under streamlit's AppTest, on small finished runs.

A "noisy" run has predictions written straight to the contract's file (varied enough that
thresholds move cases between categories); a "designed" run has fixed predictions with every
category present (tests/run_fixtures.py); a real run (when ``pneumo.predict`` exists) is a tiny
trained model whose predictions the page computes through the evaluate subprocess. Keys and
clicks are sent the way the Previous / Next control's JavaScript sends them (AppTest runs no
JavaScript; tests/test_browser.py presses the real keys).
"""
from __future__ import annotations

import json
import re
import sys
import time
from itertools import count
from pathlib import Path

import h5py
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pneumo import evaluate
from pneumo.review import cases as review
from pneumo.store import predictions, thresholds, verdicts
from pneumo.train import jobs

from conftest import write_test_pack
from test_review import noisy_probs, write_predictions

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "app_pages" / "review.py")
RUN = "noisy-run"


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    """A workspace with one pack and one run whose test predictions are cached."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    pack = write_test_pack(data / "tiny.h5", counts=(4, 6, 40), size=32, seed=3)
    with h5py.File(pack, "r") as f:
        Y = f["Y_test"][()]
        ids = [s.decode() for s in f["ids_test"][()]]
    probs = noisy_probs(Y, 7)
    run_dir = runs / RUN
    write_predictions(run_dir, "test", probs, ids, pack)
    (run_dir / "config.json").write_text(json.dumps({"pack": str(pack)}))
    (run_dir / "metrics_dev.json").write_text(json.dumps(
        {"triplet": {"pixel_threshold": 0.4, "top_threshold": 0.5, "min_area": 2, "size": 32}}))
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    return {"run_dir": run_dir, "pack": pack, "probs": probs, "Y": Y, "ids": ids}


def _app(tab: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if tab:
        at.session_state["rv_tab"] = tab
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _k(name: str, run: str = RUN) -> str:
    """A threshold widget's key: the thresholds belong to the run (every split)."""
    return f"rv_{name}::{run}"


def _cat(run: str = RUN) -> str:
    return f"rv_cat::{run}::test"


def _counts(at: AppTest, run: str = RUN) -> dict[str, int]:
    """The counts the category filter shows ("FP · 4")."""
    ctl = at.segmented_control(key=_cat(run))
    return {label.split(" · ")[0]: int(label.split(" · ")[1]) for label in ctl.options}


def _shown_case(at: AppTest) -> tuple[str, str]:
    """(image id, category) of the case in the reading room."""
    for m in at.markdown:
        if m.value.startswith("**") and "**: " in m.value:
            image_id, cat = m.value[2:].split("**: ")
            return re.sub(r"\\(.)", r"\1", image_id), cat  # ids are markdown-escaped on the page
    raise AssertionError("no case shown")


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def _shown_box(at: AppTest) -> tuple[int, int, int, int, int, int]:
    """``(x0, x1, y0, y1, W, H)`` of the region the picture shows, from its caption."""
    for c in _captions(at):
        m = re.search(r"Shown: x (\d+)\.\.(\d+), y (\d+)\.\.(\d+) of (\d+)x(\d+)", c)
        if m:
            return tuple(int(v) for v in m.groups())
    raise AssertionError(f"no picture caption in {_captions(at)}")


def _nav_data(at: AppTest) -> dict:
    """What the page gave the Previous / Next control: ``{"pos", "n", "nonce", "name", "case", ...}``."""
    (nav,) = at.get("bidi_component")
    assert nav.proto.component_name == "pneumo_review_nav"
    return json.loads(nav.proto.json)


_serial = count(1)


def _nav_send(at: AppTest, index: int | None = None, nonce: int | None = None, actions=()) -> AppTest:
    """What the control's JavaScript sends after clicks or keys: the absolute target under the
    nonce it was last given, and its recent actions (each with a new serial, the id of the case
    on screen and the nonce)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetStates

    (nav,) = at.get("bidi_component")
    data = json.loads(nav.proto.json)
    nonce = data["nonce"] if nonce is None else nonce
    sent = [{"case": data["case"], "nonce": nonce, **a, "serial": next(_serial)} for a in actions]
    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    w = states.widgets.add()
    w.id = nav.proto.id
    w.json_value = json.dumps({"nav": {"target": {"index": data["pos"] if index is None else index, "nonce": nonce},
                                       "actions": sent}})
    at._run(states)
    assert not at.exception, at.exception
    return at


@pytest.fixture(autouse=True)
def _media(monkeypatch):
    """Keep AppTest's in-memory media files, so a test can look at the pictures the page sent."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _STORES.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)
    yield
    _STORES.clear()


_STORES: list = []


def _picture(at: AppTest) -> np.ndarray:
    """The case picture the page sent, ``(h, w, 3) uint8``."""
    import io

    from PIL import Image

    (img,) = at.get("image")
    file_id = img.proto.imgs[0].url.split("/")[-1].split(".")[0]
    for store in reversed(_STORES):
        try:
            content = store.get_file(file_id).content
        except Exception:  # noqa: BLE001 - another run's store
            continue
        return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
    raise AssertionError(f"picture {file_id} not found")


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _ref(workspace, t: evaluate.Triplet):
    return evaluate.evaluate_stats(evaluate.prob_stats(workspace["probs"], workspace["Y"]), t, workspace["ids"])


def test_page_renders_one_large_picture_and_the_dev_tuned_triplet(workspace):
    at = _app()
    assert at.slider(key=_k("pt")).value == pytest.approx(0.4)  # the run's dev-tuned triplet
    assert at.slider(key=_k("tt")).value == pytest.approx(0.5)
    assert at.number_input(key=_k("area")).value == 2
    assert len(at.get("image")) == 1  # one case picture, not a triptych of small panels
    assert _picture(at).shape == (620, 620, 3)
    assert at.segmented_control(key=_cat()).value == "FP"  # FP first by default
    ref, _ = _ref(workspace, evaluate.Triplet(0.4, 0.5, 2))
    assert any(f"SIIM score {ref['siim_score']:.3f} (all-empty {ref['empty_baseline']:.3f}) on test" in c
               for c in _captions(at))
    assert not at.metric and not at.get("plotly_chart")  # the dashboard is one click away, not computed
    dash = _app("Dashboard")
    assert _metric(dash, "SIIM score") == f"{ref['siim_score']:.3f}"
    assert _metric(dash, "All-empty baseline") == f"{ref['empty_baseline']:.3f}"
    assert _metric(dash, "Dice on positives") == f"{ref['dice_positive_mean']:.3f}"
    assert len(dash.get("plotly_chart")) == 1 and not dash.get("image")


def test_damaged_metrics_are_named_not_replaced_by_default_thresholds(workspace):
    """Issue 18: a metrics file with wrong types used to give 0.5/0.5/0 under a "Reset to the
    dev-tuned triplet" button; the page now names the damaged file instead."""
    (workspace["run_dir"] / "metrics_dev.json").write_text(json.dumps(
        {"triplet": {"pixel_threshold": "high", "top_threshold": 0.5, "min_area": 2}}))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    shown = [e.value.replace("\\", "") for e in at.error]  # md_escape'd: the file name shown literally
    assert any("metrics_dev.json: damaged metrics" in e for e in shown), shown
    assert not [b for b in at.button if b.label.startswith("Reset to the dev-tuned triplet")]
    assert not at.slider  # no thresholds shown as if they were the run's


def test_threshold_change_recounts_exactly_as_evaluate(workspace):
    at = _app("Dashboard")
    for t in (evaluate.Triplet(0.3, 0.7, 5), evaluate.Triplet(0.2, 0.2, 0), evaluate.Triplet(0.6, 0.9, 30)):
        at.slider(key=_k("pt")).set_value(t.pixel_threshold)
        at.slider(key=_k("tt")).set_value(t.top_threshold)
        at.number_input(key=_k("area")).set_value(t.min_area)
        at.run()
        assert not at.exception
        ref, _ = _ref(workspace, t)
        assert _metric(at, "SIIM score") == f"{ref['siim_score']:.3f}"
    at.session_state["rv_tab"] = "Reading room"
    at.run()
    assert _counts(at) == {"FP": ref["fp"], "FN": ref["fn"], "TP": ref["tp"], "TN": ref["tn"], "all": ref["n_images"]}


def test_fp_filter_shows_only_fp_cases_in_confidence_order_and_the_grid_their_verdicts(workspace):
    at = _app()
    _, cases = _ref(workspace, evaluate.Triplet(0.4, 0.5, 2))
    fp = [i for i, c in zip(cases["id"], cases["category"]) if c == "FP"]
    assert len(fp) >= 3, "the fixture should produce several false positives"
    seen = []
    for k in range(len(fp)):
        image_id, cat = _shown_case(at)
        assert cat == "FP"
        assert _nav_data(at)["pos"] == k and _nav_data(at)["n"] == len(fp) and _nav_data(at)["case"] == image_id
        seen.append(image_id)
        if k < len(fp) - 1:
            _nav_send(at, k + 1)
    _nav_send(at, len(fp) + 3)  # past the end: clamped to the last case
    assert _shown_case(at)[0] == seen[-1]
    assert sorted(seen) == sorted(fp)
    scores = [cases["score"][list(cases["id"]).index(i)] for i in seen]
    assert scores == sorted(scores, reverse=True)
    store = verdicts.VerdictStore.for_run(workspace["run_dir"])
    store.set_verdict(RUN, "test", seen[0], "label missed a pneumothorax", category="FP")
    store.set_note(RUN, "test", seen[1], "look again", category="FP")
    # the grid shows the same cases, all FP, each with this reader's verdict
    at.segmented_control(key="rv_mode").set_value("Grid").run()
    assert not at.exception
    captions = [i.caption for img in at.get("image") for i in img.proto.imgs]
    assert len(captions) == len(fp)
    by_id = {c.split(". ")[1].split(" ")[0]: c for c in captions}
    assert sorted(by_id) == sorted(fp) and all(" FP · " in c for c in captions)
    assert " · label missed a pneumothorax · " in by_id[seen[0]]
    assert " · note · " in by_id[seen[1]]
    assert all(" · - · " in by_id[i] for i in seen[2:])


def test_verdict_is_saved_with_its_thresholds_survives_a_new_session_and_exports(workspace):
    at = _app()
    image_id, cat = _shown_case(at)
    assert cat == "FP"
    at.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").click().run()
    assert not at.exception
    store = verdicts.VerdictStore(workspace["run_dir"] / "reviews.sqlite")
    v = store.get(RUN, "test", image_id)
    assert (v.verdict, v.category) == ("label missed a pneumothorax", "FP")
    assert v.triplet() == {"pixel_threshold": 0.4, "top_threshold": 0.5, "min_area": 2, "size": 32,
                           "min_area_fraction": 2 / 1024}
    assert store.journal_mode() == "wal"
    note_key = f"rv_note::{RUN}::test::{image_id}"
    at.text_input(key=note_key).input("air at the apex").run()
    assert store.get(RUN, "test", image_id).note == "air at the apex"
    assert store.get(RUN, "test", image_id).verdict == "label missed a pneumothorax"
    assert any("1 of" in p.proto.text and "FP cases reviewed" in p.proto.text for p in at.get("progress"))

    # a new session (a reload, another tab) shows what was entered
    again = _app()
    assert _shown_case(again)[0] == image_id
    assert again.text_input(key=note_key).value == "air at the apex"
    assert any(c.startswith("Saved: **label missed a pneumothorax** under FP (pixel > 0.40, top > 0.50, min area 2 px)")
               for c in _captions(again))
    assert again.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").proto.type == "primary"

    # export (the Readers tab): the download button and the table list the rows
    readers = _app("Readers")
    dl = readers.get("download_button")[0]
    assert "Export 1 reviews" in dl.proto.label
    df = readers.table[-1].value
    assert [re.sub(r"\\(.)", r"\1", i) for i in df.index] == [image_id]  # shown as typed (escaped Markdown)
    assert list(df["verdict"]) == ["label missed a pneumothorax"]


_FAKE_EVALUATE = """
import shutil, sys, time
from pathlib import Path
# argv: evaluate RUN --split S --checkpoint C
run, split = Path(sys.argv[2]), sys.argv[4]
for k in range(1, 4):
    print(f"predicting {k}/3", flush=True)
    time.sleep(0.2)
shutil.copy(run / "source_predictions.h5", run / f"predictions_{split}.h5")
"""


def test_missing_predictions_are_computed_by_a_subprocess(workspace, monkeypatch, tmp_path):
    run_dir = workspace["run_dir"]
    (run_dir / "best.keras").write_bytes(b"not used by the fake")
    # what the fake "computes": predictions fresh for this best.keras
    write_predictions(run_dir, "test", workspace["probs"], workspace["ids"], workspace["pack"], "best")
    (run_dir / "predictions_test.h5").rename(run_dir / "source_predictions.h5")
    fake = tmp_path / "fake_evaluate.py"
    fake.write_text(_FAKE_EVALUATE)
    monkeypatch.setenv("PNEUMO_EVALUATE_COMMAND", f"{sys.executable} {fake}")
    monkeypatch.setenv("PNEUMO_TESTING", "1")  # the hook is ignored without it
    at = _app()
    assert len(at.get("image")) == 0
    at.button(key="rv_compute").click().run()
    assert not at.exception
    deadline = time.time() + 30
    while time.time() < deadline:
        job = jobs.evaluation_job(run_dir, "test")
        if job and job["state"] != "running":
            break
        time.sleep(0.2)
    assert job["state"] == "finished", job
    assert "predicting 3/3" in (run_dir / "evaluate_test.log").read_text()
    at.run()
    assert not at.exception
    assert len(at.get("image")) == 1 and _shown_case(at)[1] == "FP"


@pytest.mark.skipif(not (ROOT / "pneumo" / "predict.py").exists(), reason="pneumo.predict not written yet")
def test_real_trained_run_renders(tmp_path, monkeypatch):
    from run_fixtures import make_trained_run

    from pneumo import predict

    (tmp_path / "data").mkdir()
    pack = write_test_pack(tmp_path / "data" / "demo.h5", counts=(48, 8, 12), size=64)
    run_dir = make_trained_run(tmp_path / "runs" / "demo", pack, size=64, fit_steps=3)
    predict.evaluate_run(run_dir, split="test", checkpoint="best")
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    at = _app("Dashboard")
    cached = predictions.open_predictions(run_dir, "test")
    probs, ids = cached.read(), cached.ids
    with h5py.File(pack, "r") as f:
        Y = f["Y_test"][()]
    t = predictions.run_triplet(run_dir, 64, "best")[0]
    ref, _ = evaluate.evaluate_stats(evaluate.prob_stats(probs, Y), t)
    assert ref["n_images"] == len(ids) == 12
    assert _metric(at, "SIIM score") == f"{ref['siim_score']:.3f}"


# --------------------------------------------------------------------------- designed predictions
DRUN = "designed"


@pytest.fixture()
def designed(tmp_path, monkeypatch):
    """A run whose predictions are fixed (tests/run_fixtures.designed_probs): every category
    is present at the run's triplet, whatever a model would have learnt."""
    from run_fixtures import make_review_run

    (tmp_path / "data").mkdir()
    pack = write_test_pack(tmp_path / "data" / "tiny.h5", counts=(4, 6, 24), size=32, seed=5)
    run_dir = make_review_run(tmp_path / "runs" / DRUN, pack)
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    return {"run_dir": run_dir, "pack": pack}


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [str(x.value) for x in at.exception]


def _designed_cases(run_dir: Path, t: evaluate.Triplet | None = None):
    data = review.ReviewData(run_dir, "test")
    ev = data.evaluate(t or data.default_triplet())
    return data, ev


def test_threshold_sweep_keeps_the_category_filter(designed):
    at = _app()
    for chosen in ("FP", "FN"):
        at.segmented_control(key=_cat(DRUN)).set_value(chosen).run()
        for top in (0.80, 0.79, 0.78, 0.55):
            at.slider(key=_k("tt", DRUN)).set_value(top).run()
            assert _errors(at) == []
            assert at.segmented_control(key=_cat(DRUN)).value == chosen  # the key, not "FP · 4"
            counts = _counts(at, DRUN)
            if counts[chosen]:
                assert _shown_case(at)[1] == chosen and _nav_data(at)["name"] == chosen


def test_an_empty_category_offers_its_near_misses_by_score(designed):
    """Issue 19: "False positives first" on a run without false positives showed nothing to
    review. At a top threshold nothing reaches, the FP filter offers the true negatives whose
    regions the presence gate dropped, labelled as near misses, highest top probability first."""
    at = _app()
    at.slider(key=_k("tt", DRUN)).set_value(0.99).run()  # nothing reaches it: no FP, no TP
    assert _counts(at, DRUN)["FP"] == 0
    assert at.segmented_control(key=_cat(DRUN)).value == "FP"  # the choice is kept...
    notes = [c for c in _captions(at) if c.startswith("No false positives at these thresholds. Near misses:")]
    assert len(notes) == 1 and "highest top probability first" in notes[0]
    data, ev = _designed_cases(designed["run_dir"], evaluate.Triplet(0.5, 0.99, 4))
    top = review.top_probability(data.stats)
    dropped = [i for i in np.flatnonzero(ev.cases["category"] == "TN") if data.stats.above[i, 127] > 0]
    want = sorted(dropped, key=lambda i: (-top[i], i))
    assert len(want) >= 2
    shown = []
    for k in range(len(want)):
        image_id, cat = _shown_case(at)
        assert cat == "TN" and _nav_data(at)["name"] == "near miss" and _nav_data(at)["n"] == len(want)
        assert any(c.startswith("A near miss of FP") for c in _captions(at))
        assert any("near miss: top probability" in c and "px above the pixel threshold dropped" in c
                   for c in _captions(at))
        shown.append(image_id)
        if k < len(want) - 1:
            _nav_send(at, k + 1)
    assert shown == [str(ev.cases["id"][i]) for i in want]
    # a verdict on a near miss is a verdict on a TN, stored as one
    at.button(key=f"rv_verdict::{shown[-1]}::disagree").click().run()
    v = verdicts.VerdictStore.for_run(designed["run_dir"]).get(DRUN, "test", shown[-1])
    assert (v.verdict, v.category) == ("disagree", "TN")
    at.slider(key=_k("tt", DRUN)).set_value(0.5).run()
    assert _shown_case(at)[1] == "FP"  # back to FP when there are some again


def test_navigation_moves_to_the_target_sent_and_ignores_stale_ones(designed):
    at = _app()
    pos_key = f"rv_pos::{DRUN}::test::FP::most confident first"
    n = _nav_data(at)["n"]
    assert n >= 3 and _nav_data(at)["pos"] == 0
    first = _shown_case(at)[0]
    # six fast clicks reach the server as one merged value: the newest target, 6 clamped
    _nav_send(at, 2)
    assert at.session_state[pos_key] == 2 and _nav_data(at)["pos"] == 2
    nonce = _nav_data(at)["nonce"]
    _nav_send(at, 1)
    assert at.session_state[pos_key] == 1 and _nav_data(at)["nonce"] == nonce  # the control led: no reset
    # the server moves the position itself (the grid's Open): a new nonce, so the control
    # resets, and a target sent under the old nonce (a click racing the jump) is ignored
    at.segmented_control(key="rv_mode").set_value("Grid").run()
    at.button(key=f"rv_open::{pos_key}::0").click().run()
    assert at.session_state[pos_key] == 0 and _shown_case(at)[0] == first
    assert _nav_data(at)["nonce"] != nonce and _nav_data(at)["pos"] == 0
    _nav_send(at, 2, nonce=nonce)
    assert at.session_state[pos_key] == 0
    from pneumo_app.review_nav import apply_target, new_actions

    assert apply_target({"index": 7, "nonce": 3}, 3, 5) == 4
    assert apply_target({"index": 1, "nonce": 2}, 3, 5) is None
    assert apply_target({"index": "1", "nonce": 3}, 3, 5) is None
    assert apply_target(None, 3, 5) is None
    assert [a["serial"] for a in new_actions([{"kind": "o", "serial": 3}, {"kind": "o", "serial": 1},
                                              {"kind": "o", "serial": True}, "x", {"serial": 9}], 1)] == [3]


def test_verdict_keys_record_the_buttons_verdicts_on_the_case_on_screen_only(designed):
    """Keys 1-3 give the shown category's verdicts in the buttons' order; a key sent for a case
    that is no longer on screen (the page moved on meanwhile) records nothing."""
    at = _app()
    store = verdicts.VerdictStore.for_run(designed["run_dir"])
    first, cat = _shown_case(at)
    assert cat == "FP" and _nav_data(at)["verdicts"] == 3
    labels = [b.label for b in at.button if b.key and b.key.startswith(f"rv_verdict::{first}::")]
    assert labels == ["1 · model wrong", "2 · label missed a pneumothorax", "3 · unsure"]
    _nav_send(at, actions=[{"kind": "verdict", "index": 1}])
    assert store.get(DRUN, "test", first).verdict == "label missed a pneumothorax"
    _nav_send(at, actions=[{"kind": "verdict", "index": 0}])  # another key replaces it
    assert store.get(DRUN, "test", first).verdict == "model wrong"
    assert at.button(key=f"rv_verdict::{first}::model wrong").proto.type == "primary"
    _nav_send(at, 1)
    second = _shown_case(at)[0]
    _nav_send(at, actions=[{"kind": "verdict", "index": 2, "case": first}])  # sent while `first` was on screen
    assert store.get(DRUN, "test", second) is None and store.get(DRUN, "test", first).verdict == "model wrong"
    _nav_send(at, actions=[{"kind": "verdict", "index": 7}, {"kind": "verdict", "index": "1"}])  # no such verdict
    assert store.get(DRUN, "test", second) is None
    # with "Next after a verdict", a key judges and moves on
    at.toggle(key="rv_auto_next").set_value(True).run()
    _nav_send(at, actions=[{"kind": "verdict", "index": 2}])
    assert store.get(DRUN, "test", second).verdict == "unsure" and _nav_data(at)["pos"] == 2
    # several actions between two reruns are all applied, in order, once
    third = _shown_case(at)[0]
    at.toggle(key="rv_auto_next").set_value(False).run()
    _nav_send(at, actions=[{"kind": "verdict", "index": 0}, {"kind": "verdict", "index": 1}])
    assert store.get(DRUN, "test", third).verdict == "label missed a pneumothorax"
    assert _nav_data(at)["seen"] > 0


def test_o_f_w_keys_and_a_click_drive_the_view(designed):
    """O overlay, F full resolution, W window presets; a click on the whole picture magnifies
    2x about the point clicked."""
    at = _app()
    assert at.toggle(key="rv_overlay").value is True
    _nav_send(at, actions=[{"kind": "overlay"}])
    assert at.toggle(key="rv_overlay").value is False
    _nav_send(at, actions=[{"kind": "overlay"}])
    assert at.toggle(key="rv_overlay").value is True
    assert at.selectbox(key="rv_window").value == "default"
    for want in ("contrast", "dark", "full", "default"):
        _nav_send(at, actions=[{"kind": "window"}])
        assert at.selectbox(key="rv_window").value == want
    _nav_send(at, actions=[{"kind": "window"}])
    assert any("window 128 / 128 (pack values 0-255)" in c for c in _captions(at))  # high contrast: half the width
    assert _shown_box(at) == (0, 31, 0, 31, 32, 32)
    _nav_send(at, actions=[{"kind": "click", "fx": 0.25, "fy": 0.75}])  # the point (8, 24) of 32x32
    assert at.segmented_control(key="rv_magnify").value == 2
    assert _shown_box(at) == (0, 15, 16, 31, 32, 32)  # a 16 px square about (8, 24), kept inside
    _nav_send(at, actions=[{"kind": "fullres"}])
    assert at.toggle(key="rv_fullres").value is True
    assert any(c.startswith("Full resolution unavailable: this pack has no source references") for c in _captions(at))
    _nav_send(at, actions=[{"kind": "fullres"}])
    assert at.toggle(key="rv_fullres").value is False


def test_magnify_magnifies_about_the_prediction(designed):
    """Issue 19: "Magnify 2" made the picture smaller, and the zoom centred on the mediastinum.
    At 2x the picture shows half of each side about the prediction's bounding-box centre, at
    the same screen size."""
    from run_fixtures import designed_probs

    at = _app()
    image_id, _ = _shown_case(at)
    with h5py.File(designed["pack"], "r") as f:
        ids = [s.decode() for s in f["ids_test"][()]]
        masks = f["Y_test"][()]
    probs = designed_probs(masks)[ids.index(image_id), ..., 0]
    rows, cols = np.nonzero(probs > 127)
    cx, cy = (cols.min() + cols.max() + 1) // 2, (rows.min() + rows.max() + 1) // 2
    for m in (2, 4):
        at.segmented_control(key="rv_magnify").set_value(m).run()
        x0, x1, y0, y1, _, _ = _shown_box(at)
        side = 32 // m
        assert (x1 - x0 + 1, y1 - y0 + 1) == (side, side)
        assert (x0, y0) == (min(max(round(cx - side / 2), 0), 32 - side), min(max(round(cy - side / 2), 0), 32 - side))
        assert _picture(at).shape == (620, 620, 3)  # magnified, never smaller


def test_one_window_level_control_in_the_units_shown(designed):
    """One window control (a preset, or the Level sliders), in pack values for the pack's copy."""
    at = _app()
    sliders = [s.label for s in at.slider if "Window" in s.label or "window" in s.label]
    assert sliders == ["Window centre (pack values 0-255)", "Window width (pack values 0-255)"]
    assert not [s for s in at.sidebar.slider if "Level" in s.label or "Window" in s.label]  # none in the sidebar
    at.slider(key="rv_wl::pack::c").set_value(60.0).run()
    assert at.selectbox(key="rv_window").value == "custom"
    assert any("window 60 / 256 (pack values 0-255)" in c for c in _captions(at))


def test_thresholds_are_saved_with_the_run_and_a_new_session_opens_at_them(designed):
    """Issue 18 item 6: a reload reset the post-processing. The thresholds chosen belong to the
    run (RUN/thresholds.json), used by every session; Reset goes back to the dev-tuned triplet."""
    run_dir = designed["run_dir"]
    at = _app()
    assert not thresholds.thresholds_path(run_dir).exists()
    at.slider(key=_k("tt", DRUN)).set_value(0.8).run()
    saved, fields = thresholds.read_saved(run_dir, 32)
    assert saved == evaluate.Triplet(0.5, 0.8, 4) and fields["reader"] == "unnamed"
    again = _app()  # a reload, another reader
    assert again.slider(key=_k("tt", DRUN)).value == pytest.approx(0.8)
    assert any("chosen for this run" in c for c in [c.value for c in again.sidebar.caption])
    # another reader changes them: this session follows on its next full rerun
    thresholds.save_thresholds(run_dir, evaluate.Triplet(0.5, 0.7, 4), 32, reader="bob")
    at.run()
    assert at.slider(key=_k("tt", DRUN)).value == pytest.approx(0.7)
    next(b for b in at.button if b.label.startswith("Reset to the dev-tuned triplet")).click().run()
    assert not thresholds.thresholds_path(run_dir).exists()
    assert at.slider(key=_k("tt", DRUN)).value == pytest.approx(0.5)


def test_a_verdict_keeps_its_category_across_a_threshold_change(designed):
    """Issue 18 item 6: a case judged under FP later shown as TN keeps its FP verdict (and a
    note saved under TN does not move it), and says so."""
    at = _app()
    image_id, _ = _shown_case(at)
    at.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").click().run()
    at.slider(key=_k("tt", DRUN)).set_value(0.99).run()  # now nothing is called positive
    at.segmented_control(key=_cat(DRUN)).set_value("all").run()
    data, ev = _designed_cases(designed["run_dir"], evaluate.Triplet(0.5, 0.99, 4))
    order = [str(ev.cases["id"][i]) for i in review.select(ev.cases, "all")]
    _nav_send(at, order.index(image_id))
    assert _shown_case(at) == (image_id, "TN")
    assert any("under FP (pixel > 0.50, top > 0.50, min area 4 px)" in c and "The case is **TN** now" in c
               for c in _captions(at))
    at.text_input(key=f"rv_note::{DRUN}::test::{image_id}").input("apex").run()
    v = verdicts.VerdictStore.for_run(designed["run_dir"]).get(DRUN, "test", image_id)
    assert (v.verdict, v.category, v.note) == ("label missed a pneumothorax", "FP", "apex")
    assert v.triplet()["top_threshold"] == 0.5


def test_the_all_empty_dev_tuned_triplet_opens_as_it_is(designed):
    """Issue 18 item 6: a weak model's dev-tuned triplet can be the all-empty candidate (a
    minimum area above the image's pixels); the page opened at minimum area 0 instead (19 FP
    where the tuned triplet gives none). It opens at that triplet and shows the all-empty score."""
    run_dir = designed["run_dir"]
    all_empty = {"pixel_threshold": 0.1, "top_threshold": 0.1, "min_area": 1034, "size": 32}  # 1.01 x 32 x 32
    for split in ("dev", "test"):
        m = json.loads((run_dir / f"metrics_{split}.json").read_text())
        m["triplet"] = all_empty
        (run_dir / f"metrics_{split}.json").write_text(json.dumps(m))
    at = _app()
    assert at.number_input(key=_k("area", DRUN)).value == 1034
    assert at.slider(key=_k("pt", DRUN)).value == pytest.approx(0.1)
    _, ev = _designed_cases(run_dir, evaluate.Triplet(0.1, 0.1, 1034))
    s = ev.summary
    assert s["fp"] == s["tp"] == 0 and s["siim_score"] == s["empty_baseline"]
    assert any(f"SIIM score {s['empty_baseline']:.3f} (all-empty {s['empty_baseline']:.3f})" in c for c in _captions(at))
    assert any("(all-empty: above the 32x32 = 1024 px of an image" in c.value for c in at.sidebar.caption)
    assert _counts(at, DRUN)["FP"] == 0


def test_the_page_opens_the_best_finished_run_and_says_why(designed, tmp_path):
    """Issue 19: a second quick demo stopped at epoch 2 (val Dice 0.108) was opened because it was
    the newest. The page opens the finished run with the highest dev score; ?run= opens another."""
    from run_fixtures import make_review_run

    stopped = make_review_run(tmp_path / "runs" / "stopped-later", designed["pack"], state="stopped")
    (stopped / "history.csv").write_text("epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds\n"
                                         "1,train,0.5,0.1,0.05,0.4,0.9,0.05,0.0003,1.0\n")
    at = _app()
    assert at.selectbox(key="rv_run").value == str(designed["run_dir"])
    assert any(c.startswith(f"Opened **{DRUN}**: the finished run with the highest dev score (val Dice 0.100 at "
                            "epoch 1) and a best.keras") for c in _captions(at))
    linked = AppTest.from_file(PAGE, default_timeout=60)
    linked.query_params["run"] = "stopped-later"
    linked.run()
    assert linked.selectbox(key="rv_run").value == str(stopped)
    assert any(c.startswith("Opened **stopped\\-later**: the run the link asked for") for c in _captions(linked))


def test_damaged_saved_thresholds_are_named_and_reset_replaces_them(designed):
    run_dir = designed["run_dir"]
    thresholds.thresholds_path(run_dir).write_text("{not json")
    at = _app()
    assert _errors(at) == []
    assert any("thresholds.json: damaged thresholds" in w.value.replace("\\", "") for w in at.sidebar.warning)
    assert at.slider(key=_k("tt", DRUN)).value == pytest.approx(0.5)  # the dev-tuned triplet meanwhile
    next(b for b in at.button if b.label.startswith("Reset to the dev-tuned triplet")).click().run()
    assert not thresholds.thresholds_path(run_dir).exists()


def test_passing_cases_without_a_verdict_writes_no_row(designed):
    at = _app()
    store = verdicts.VerdictStore.for_run(designed["run_dir"])
    n = _nav_data(at)["n"]
    for k in range(1, n):
        _nav_send(at, k)
    for k in range(n - 2, -1, -1):
        _nav_send(at, k)
    assert store.all(DRUN, "test") == []
    assert not (designed["run_dir"] / "reviews.sqlite").exists()
    assert any(p.proto.text.startswith(f"0 of {n} FP cases reviewed (0 of ") for p in at.get("progress"))
    # an empty note saves nothing either; a note alone is a review, and counts and export agree
    image_id = _shown_case(at)[0]
    note_key = f"rv_note::{DRUN}::test::{image_id}"
    at.text_input(key=note_key).input("").run()
    assert store.all(DRUN, "test") == []
    at.text_input(key=note_key).input("look again").run()
    assert [r.image_id for r in store.all(DRUN, "test")] == [image_id]
    assert any(p.proto.text.startswith(f"1 of {n} FP cases reviewed") for p in at.get("progress"))
    assert "Export 1 reviews" in _app("Readers").get("download_button")[0].proto.label


def test_repack_under_a_cached_page_is_never_shown_as_current(designed):
    at = _app()
    before = _shown_case(at)[0]
    assert len(at.get("image")) == 1
    # "Replace existing": another pack at the same path (other ids, other pixels), put in place
    # by a rename as pneumo's packer does (the page's prefetch thread may still be reading the old one)
    fresh = designed["pack"].with_name("fresh.h5")
    write_test_pack(fresh, counts=(4, 6, 24), size=32, seed=9)
    with h5py.File(fresh, "a") as f:
        ids = [f"other-{i:03d}" for i in range(24)]
        del f["ids_test"]
        f["ids_test"] = np.array(ids, dtype="S")
    fresh.replace(designed["pack"])
    at.run()
    assert not at.exception
    assert any("out of date" in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(at.get("image")) == 0 and not at.get("bidi_component")  # no case, no navigation
    assert before not in " ".join(m.value for m in at.markdown)
    assert at.button(key="rv_recompute").proto.label == "Recompute with best.keras"


def test_a_second_session_sees_a_newer_note_and_asks_before_overwriting(designed):
    a, b = _app(), _app()
    image_id = _shown_case(a)[0]
    note_key = f"rv_note::{DRUN}::test::{image_id}"
    a.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").click().run()
    a.text_input(key=note_key).input("first look").run()
    b.run()  # another tab, opened before: it follows the stored note on its next rerun
    assert b.text_input(key=note_key).value == "first look"
    assert any(c.startswith("Saved: **label missed a pneumothorax**") for c in _captions(b))
    b.text_input(key=note_key).input("second look").run()
    a.text_input(key=note_key).input("my edit").run()  # a still started from "first look"
    store = verdicts.VerdictStore.for_run(designed["run_dir"])
    assert store.get(DRUN, "test", image_id).note == "second look"  # not overwritten silently
    assert any("changed in another tab" in w.value for w in a.warning)
    a.button(key=note_key + "::force").click().run()
    assert store.get(DRUN, "test", image_id).note == "my edit"
    # a reload (a new session) shows the verdict and the note
    c = _app()
    assert c.text_input(key=note_key).value == "my edit"
    assert c.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").proto.type == "primary"


# --------------------------------------------------------------------------- full resolution
@pytest.fixture()
def siim_review(tmp_path, monkeypatch):
    """A tiny SIIM tree (64 px DICOMs) packed at 32 px with its source references, and a run
    with fixed predictions on its test split."""
    from run_fixtures import make_review_run
    from siim_fixtures import write_siim_tree

    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest import packer, sources

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", n=6, size=64, seed=4, positive_rate=0.7)
    info = packer.pack_manifest(sources.siim_source(dicom_dir, csv_path, workers=1), tmp_path / "data" / "siim.h5",
                                PackConfig(size=32, workers=1, split=SplitConfig(proportions=(0.0, 0.0, 1.0))))
    run_dir = make_review_run(tmp_path / "runs" / DRUN, info.path, splits=("test",))
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    return {"run_dir": run_dir, "pack": info.path, "dicom_dir": dicom_dir, "csv": csv_path}


def test_full_resolution_view_reads_the_source_and_falls_back_when_it_is_gone(siim_review):
    from pneumo.store import pack

    at = _app()
    assert at.toggle(key="rv_fullres").value is False
    at.toggle(key="rv_fullres").set_value(True).run()
    assert _errors(at) == []
    image_id, _ = _shown_case(at)
    assert _shown_box(at) == (0, 63, 0, 63, 64, 64)  # fit: the whole 64 px source
    notes = _captions(at)
    assert any(c.startswith("64x64 (source); window from the file: 128 / 256 (full-range)")
               and "the RLE of stage_2_train.csv decoded at 64x64" in c and "resized bilinearly to 64x64" in c
               for c in notes), notes
    assert not any("unavailable" in c for c in notes)
    # one window control, now in the source's units
    assert [s.label for s in at.slider if s.label.startswith("Window ")] == [
        "Window centre (DICOM units)", "Window width (DICOM units)"]
    at.segmented_control(key="rv_fr_zoom").set_value("2:1").run()
    x0, x1, y0, y1, _, _ = _shown_box(at)
    assert (x1 - x0 + 1, y1 - y0 + 1) == (64, 64)  # 620 // 2 = 310 px a side: the whole 64 px image fits
    # a click at fit centres and looks at 1:1
    at.segmented_control(key="rv_fr_zoom").set_value("fit").run()
    _nav_send(at, actions=[{"kind": "click", "fx": 0.5, "fy": 0.5}])
    assert at.segmented_control(key="rv_fr_zoom").value == "1:1"
    assert at.session_state[f"rv_centre::source::{image_id}"] == (32, 32)
    # the heat map at full resolution: the cached probabilities sampled at each screen pixel
    # (a true positive: its predicted region is certain)
    at.segmented_control(key=_cat(DRUN)).set_value("TP").run()
    at.segmented_control(key="rv_fr_zoom").set_value("fit").run()
    orange = lambda rgb: int(((rgb[..., 0].astype(int) - rgb[..., 2] > 60) & (rgb[..., 1] > 80)).sum())  # noqa: E731
    outlines = orange(_picture(at))
    at.segmented_control(key="rv_pred_view").set_value("heatmap").run()
    assert _errors(at) == [] and orange(_picture(at)) > outlines + 1000
    at.segmented_control(key="rv_pred_view").set_value("mask").run()

    # without the label CSV, the target is the pack's mask resized nearest
    siim_review["csv"].unlink()
    at = _app(rv_fullres=True)
    assert any("the pack's 32 px mask resized nearest to 64x64" in c for c in _captions(at))

    # the source file disappears: one line says so and the pack's copy is shown
    with pack.Pack(siim_review["pack"]) as packed:
        refs = dict(zip(packed.ids("test"), packed.sources("test")))
    Path(refs[image_id].path).unlink()
    at2 = _app(rv_fullres=True)
    assert _errors(at2) == []
    assert _shown_case(at2)[0] == image_id
    gone = [c for c in _captions(at2) if c.startswith("Full resolution unavailable")]
    assert gone == [f"Full resolution unavailable: the source file is gone: {refs[image_id].path}; "
                    "showing the pack's 32x32 copy."]
    assert _shown_box(at2)[4:] == (32, 32)


def test_full_resolution_view_of_a_pack_without_sources_says_so(designed):
    at = _app(rv_fullres=True)
    assert _errors(at) == []
    assert [c for c in _captions(at) if "unavailable" in c] == [
        "Full resolution unavailable: this pack has no source references (packed before they were recorded); "
        "showing the pack's 32x32 copy."]
    assert _shown_box(at)[4:] == (32, 32)


def _toolbar_script(path: str) -> None:
    from pneumo_app import review_cache, review_case

    full, lo, hi = review_cache.load_full(path)
    review_case.toolbar_ui(True, "DICOM units", (full.center, full.width), lo, hi, "uniform",
                           {"mode": "outline", "alpha": 0.9})


@pytest.mark.parametrize("shape,window", [((16, 16), (100, 40)), ((16, 1), (100, 1)), ((1, 1), (100, 1))])
def test_window_control_of_a_uniform_image_at_its_window_centre(tmp_path, shape, window):
    """All pixels equal the file's WindowCenter (and one side may be 1 px): the window sliders
    still have a range, so the page shows the image instead of a streamlit exception."""
    from siim_fixtures import write_dicom

    path = write_dicom(tmp_path / "uniform.dcm", np.full(shape, 100, np.uint16), window=window)
    at = AppTest.from_function(_toolbar_script, args=(str(path),), default_timeout=30).run()
    assert [e.value for e in at.exception] == [] and _errors(at) == []
    centre = at.slider(key="rv_wl::uniform::c")
    assert centre.value == 100.0 and centre.min < 100.0 < centre.max


# --------------------------------------------------------------------------- readers (issue 14)
def _reader_app(name: str | None = None, tab: str = "Readers") -> AppTest:
    """A new browser session on the Review page, opened as ``?reader=NAME`` when given."""
    at = AppTest.from_file(PAGE, default_timeout=60)
    if name is not None:
        at.query_params["reader"] = name
    at.session_state["rv_tab"] = tab
    at.run()
    assert not at.exception, at.exception
    return at


def _fp_order(run_dir: Path) -> list[str]:
    data, ev = _designed_cases(run_dir)
    return [str(ev.cases["id"][i]) for i in review.select(ev.cases, "FP")]


def _reading_as(at: AppTest) -> str | None:
    found = [m.value for m in at.markdown if m.value.startswith("Reading as **")]
    return re.sub(r"\\(.)", r"\1", found[0].split("**")[1]) if found else None


def test_reader_is_asked_once_and_kept_in_the_address(designed):
    at = _reader_app()
    assert _reading_as(at) is None
    assert any("saved under the reader **unnamed**" in c for c in _captions(at))
    at.text_input(key="rv_reader_input").input("  ali\u0301ce ")  # trimmed, NFC-normalised
    next(b for b in at.button if b.label == "Start reading").click().run()
    assert not at.exception, at.exception
    assert _reading_as(at) == "alíce"
    assert at.query_params["reader"] == "alíce"  # a reload keeps it
    at.run()
    assert _reading_as(at) == "alíce" and at.query_params["reader"] == "alíce"
    # a reload is a new session with the address's ?reader=: no question asked
    again = _reader_app("alíce")
    assert _reading_as(again) == "alíce" and not [t for t in again.text_input if t.key == "rv_reader_input"]
    # Change: the form comes back and the address forgets the name
    again.button(key="rv_reader_change").click().run()
    assert _reading_as(again) is None and "reader" not in again.query_params
    # an empty or control-character name is refused with the reason, nothing changes
    again.text_input(key="rv_reader_input").input("   ")
    next(b for b in again.button if b.label == "Start reading").click().run()
    assert _reading_as(again) is None and any("reader name is empty" in e.value for e in again.error)
    bad = _reader_app("bob\u202e")
    assert _reading_as(bad) is None and "reader" not in bad.query_params
    assert any("control character" in w.value for w in bad.warning)


def test_verdicts_and_progress_belong_to_the_reader(designed):
    run_dir = designed["run_dir"]
    store = verdicts.VerdictStore.for_run(run_dir)
    alice, bob = _reader_app("alice", TABS0), _reader_app("bob", TABS0)
    image_id, cat = _shown_case(alice)
    assert cat == "FP"
    n = _nav_data(alice)["n"]
    alice.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").click().run()
    note_key = f"rv_note::{DRUN}::test::{image_id}"
    alice.text_input(key=note_key).input("apex").run()
    assert store.get(DRUN, "test", image_id, reader="alice").verdict == "label missed a pneumothorax"
    assert store.get(DRUN, "test", image_id, reader="alice").note == "apex"
    assert store.get(DRUN, "test", image_id) is None  # nothing under "unnamed"
    assert any(p.proto.text.startswith(f"1 of {n} FP cases reviewed") and p.proto.text.endswith("by you (alice)")
               for p in alice.get("progress"))
    bob.run()
    # bob sees his own (empty) verdict, progress and note, not alice's
    assert bob.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").proto.type == "secondary"
    assert bob.text_input(key=note_key).value == ""
    assert any(p.proto.text.startswith(f"0 of {n} FP cases reviewed") for p in bob.get("progress"))
    bob.button(key=f"rv_verdict::{image_id}::model wrong").click().run()
    assert [(r.reader, r.verdict) for r in store.verdicts(DRUN, "test")] == [
        ("alice", "label missed a pneumothorax"), ("bob", "model wrong")]
    assert "Export 2 reviews" in _reader_app("bob").get("download_button")[0].proto.label  # every reader
    assert store.get(DRUN, "test", image_id, reader="alice").verdict == "label missed a pneumothorax"


TABS0 = "Reading room"


def _two_readers(run_dir: Path) -> list[str]:
    """alice and bob on the first three FP cases: they agree on the first two, not the third
    (kappa by hand: p_o = 2/3, p_e = 4/9, kappa = 0.4). Returns the FP order."""
    fp = _fp_order(run_dir)
    assert len(fp) >= 3
    store = verdicts.VerdictStore.for_run(run_dir)
    for reader, vs in (("alice", ("model wrong", "label missed a pneumothorax", "model wrong")),
                       ("bob", ("model wrong", "label missed a pneumothorax", "label missed a pneumothorax"))):
        for image_id, v in zip(fp, vs):
            store.set_verdict(DRUN, "test", image_id, v, category="FP", reader=reader)
    return fp


def _agreement_table(at: AppTest):
    (table,) = [t.value for t in at.table if t.value.index.name == "category"]
    return table


def test_two_readers_verdicts_produce_the_agreement_table(designed):
    fp = _two_readers(designed["run_dir"])
    at = _reader_app("alice")
    table = _agreement_table(at)
    assert list(table.index) == ["overall", "FP"]
    for row in ("overall", "FP"):
        assert table.loc[row, "cases both judged"] == 3
        assert table.loc[row, "observed agreement"] == "0.67"
        assert table.loc[row, "Cohen's kappa"] == "0.40"
        assert table.loc[row, "disagreements"] == 1
    assert [b.key for b in at.button if b.key and b.key.startswith("rv_readers_open::")] == [
        f"rv_readers_open::alice::bob::{fp[2]}"]
    # in the reading room, the Readers tab computes nothing
    closed = _reader_app("alice", TABS0)
    assert not [t for t in closed.table if t.value.index.name == "category"]


def test_a_disagreement_opens_its_case(designed):
    fp = _two_readers(designed["run_dir"])
    at = _reader_app("bob", TABS0)
    at.segmented_control(key=_cat(DRUN)).set_value("FN").run()  # somewhere else, in the grid
    at.segmented_control(key="rv_mode").set_value("Grid").run()
    at.session_state["rv_tab"] = "Readers"
    at.run()
    assert not at.get("bidi_component")
    at.button(key=f"rv_readers_open::alice::bob::{fp[2]}").click().run()
    assert _errors(at) == []
    assert at.session_state["rv_tab"] == "Reading room"
    assert at.segmented_control(key=_cat(DRUN)).value == "FP"
    assert at.segmented_control(key="rv_mode").value == "Case"
    assert _shown_case(at) == (fp[2], "FP")
    assert _nav_data(at)["pos"] == 2  # the Previous / Next control follows
    # bob's own verdict on it is the one highlighted
    assert at.button(key=f"rv_verdict::{fp[2]}::label missed a pneumothorax").proto.type == "primary"


def test_the_relabel_button_writes_the_list_and_prints_the_packs_own_command(designed):
    import csv

    run_dir = designed["run_dir"]
    fp = _two_readers(run_dir)  # both flag fp[1]; only bob flags fp[2]
    at = _reader_app("alice")
    out = run_dir / "relabel_test.csv"
    assert at.number_input(key=f"rv_curate_min::{DRUN}::test").value == 2  # two readers: a consensus
    at.button(key=f"rv_curate::{DRUN}::test").click().run()
    assert _errors(at) == []
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [fp[1]]
    assert rows[0]["verdicts"] == "alice: label missed a pneumothorax; bob: label missed a pneumothorax"
    assert any(f"Wrote **1 case** to `{out}`" in s.value for s in at.success)
    # the test pack records source "test", which `pneumo pack` does not know: the command says
    # what to fill in instead of printing a placeholder as if it were runnable
    (code,) = [c.value for c in at.code if "--exclude" in c.value]
    assert code.startswith("python -m pneumo pack SOURCE --out") and code.endswith(f"--exclude {out}")
    assert "--size 32 --seed 5" in code
    assert any("SOURCE: the pack's source kind 'test'" in w.value.replace("\\", "") for w in at.warning)
    # an existing list is replaced only when asked
    at.number_input(key=f"rv_curate_min::{DRUN}::test").set_value(1).run()
    assert at.button(key=f"rv_curate::{DRUN}::test").proto.disabled
    at.checkbox(key=f"rv_curate_replace::{DRUN}::test").check().run()
    at.button(key=f"rv_curate::{DRUN}::test").click().run()
    with open(out, newline="", encoding="utf-8") as f:
        assert [r["id"] for r in csv.DictReader(f)] == sorted([fp[1], fp[2]])
    assert any("Wrote **2 cases**" in s.value for s in at.success)


def test_streamlit_skips_the_forced_garbage_collection_after_each_rerun():
    """A full gc.collect after every script run was a third of the server's CPU per Next with
    four readers at once (docs/benchmarks.md, "Readers at once"): the app's config turns it off."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
