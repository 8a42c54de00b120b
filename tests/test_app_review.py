"""The review page under streamlit's AppTest, on small finished runs.

A "noisy" run has predictions written straight to the contract's file (varied enough that
thresholds move cases between categories); a real run (when ``pneumo.predict`` exists) is a
tiny trained model whose predictions the page computes through the evaluate subprocess.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pneumo import evaluate
from pneumo.store import predictions
from pneumo.train import jobs
from pneumo.review import cases as review
from pneumo.store import verdicts

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


def _app() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _k(name: str) -> str:
    return f"rv_{name}::{RUN}::test"


def _counts(at: AppTest, run: str = RUN) -> dict[str, int]:
    radio = at.radio(key=f"rv_cat::{run}::test")
    return {name: int(c.split()[0]) for name, c in zip(radio.options, radio.proto.captions)}


def _shown_case(at: AppTest) -> tuple[str, str]:
    """(image id, category) of the case in the triptych."""
    for m in at.markdown:
        if m.value.startswith("**") and "**: " in m.value:
            image_id, cat = m.value[2:].split("**: ")
            return re.sub(r"\\(.)", r"\1", image_id), cat  # ids are markdown-escaped on the page
    raise AssertionError("no case shown")


POS = f"rv_pos::{RUN}::test::FP::most confident first"


def _nav_data(at: AppTest) -> dict:
    """What the page gave the Previous / Next control: ``{"pos", "n", "nonce", "name"}``."""
    (nav,) = at.get("bidi_component")
    assert nav.proto.component_name == "pneumo_review_nav"
    return json.loads(nav.proto.json)


_serial = iter(range(1, 10**6))


def _nav_send(at: AppTest, index: int, nonce: int | None = None) -> AppTest:
    """What the control's JavaScript sends after clicks or arrow keys: the absolute target
    under the nonce it was last given (AppTest cannot run the JavaScript; the browser tests do)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetStates

    (nav,) = at.get("bidi_component")
    data = json.loads(nav.proto.json)
    states = WidgetStates()
    states.CopyFrom(at._tree.get_widget_states())
    w = states.widgets.add()
    w.id = nav.proto.id
    w.json_value = json.dumps({"target": {"index": index, "nonce": data["nonce"] if nonce is None else nonce,
                                          "serial": next(_serial)}})
    at._run(states)
    assert not at.exception, at.exception
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_page_renders_summary_and_default_triplet(workspace):
    at = _app()
    # default post-processing: the dev-tuned triplet
    assert at.slider(key=_k("pt")).value == pytest.approx(0.4)
    assert at.slider(key=_k("tt")).value == pytest.approx(0.5)
    assert at.number_input(key=_k("area")).value == 2
    ref, _ = evaluate.evaluate_stats(evaluate.prob_stats(workspace["probs"], workspace["Y"]), evaluate.Triplet(0.4, 0.5, 2))
    assert _metric(at, "SIIM score") == f"{ref['siim_score']:.3f}"
    assert _metric(at, "All-empty baseline") == f"{ref['empty_baseline']:.3f}"
    assert _metric(at, "Dice on positives") == f"{ref['dice_positive_mean']:.3f}"
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("image")) == 3  # the triptych
    assert at.radio(key=_k("cat")).value == "FP"  # FP first by default


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
    at = _app()
    for t in (evaluate.Triplet(0.3, 0.7, 5), evaluate.Triplet(0.2, 0.2, 0), evaluate.Triplet(0.6, 0.9, 30)):
        at.slider(key=_k("pt")).set_value(t.pixel_threshold)
        at.slider(key=_k("tt")).set_value(t.top_threshold)
        at.number_input(key=_k("area")).set_value(t.min_area)
        at.run()
        assert not at.exception
        ref, _ = evaluate.evaluate_stats(evaluate.prob_stats(workspace["probs"], workspace["Y"]), t)
        assert _counts(at) == {"FP": ref["fp"], "FN": ref["fn"], "TP": ref["tp"], "TN": ref["tn"],
                               "all": ref["n_images"]}
        assert _metric(at, "SIIM score") == f"{ref['siim_score']:.3f}"


def test_fp_filter_shows_only_fp_cases_in_confidence_order(workspace):
    at = _app()
    t = evaluate.Triplet(0.4, 0.5, 2)
    _, cases = evaluate.evaluate_stats(evaluate.prob_stats(workspace["probs"], workspace["Y"]), t, workspace["ids"])
    fp = [i for i, c in zip(cases["id"], cases["category"]) if c == "FP"]
    assert len(fp) >= 2, "the fixture should produce several false positives"
    seen = []
    for k in range(len(fp)):
        image_id, cat = _shown_case(at)
        assert cat == "FP"
        assert _nav_data(at)["pos"] == k and _nav_data(at)["n"] == len(fp)
        seen.append(image_id)
        if k < len(fp) - 1:
            _nav_send(at, k + 1)
    _nav_send(at, len(fp) + 3)  # past the end: clamped to the last case
    assert _shown_case(at)[0] == seen[-1]
    assert sorted(seen) == sorted(fp)
    scores = [cases["score"][list(cases["id"]).index(i)] for i in seen]
    assert scores == sorted(scores, reverse=True)
    # the grid shows the same cases, all FP
    at.segmented_control(key="rv_mode").set_value("Grid").run()
    assert not at.exception
    captions = [i.caption for img in at.get("image") for i in img.proto.imgs]
    assert len(captions) == len(fp)
    assert all(" FP" in c for c in captions)
    assert sorted(c.split(". ")[1].split(" ")[0] for c in captions) == sorted(fp)


def test_verdict_is_saved_survives_a_new_session_and_exports(workspace):
    at = _app()
    image_id, cat = _shown_case(at)
    assert cat == "FP"
    at.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax").click().run()
    assert not at.exception
    store = verdicts.VerdictStore(workspace["run_dir"] / "reviews.sqlite")
    v = store.get(RUN, "test", image_id)
    assert (v.verdict, v.category) == ("label missed a pneumothorax", "FP")
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
    assert any("Saved: **label missed a pneumothorax**" in c.value for c in again.caption)
    chosen = again.button(key=f"rv_verdict::{image_id}::label missed a pneumothorax")
    assert chosen.proto.type == "primary"

    # export: the download button and the table list the rows
    dl = again.get("download_button")[0]
    assert "Export 1 reviews" in dl.proto.label
    df = again.table[0].value
    assert list(df.index) == [image_id] and list(df["verdict"]) == ["label missed a pneumothorax"]
    rows = store.csv_text(RUN, "test").splitlines()
    assert rows[0].split(",") == list(verdicts.EXPORT_COLUMNS) and len(rows) == 2


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
    assert len(at.get("image")) == 3 and _shown_case(at)[1] == "FP"


@pytest.mark.skipif(not (ROOT / "pneumo" / "predict.py").exists(), reason="pneumo.predict not written yet")
def test_real_trained_run_renders(tmp_path, monkeypatch):
    from run_fixtures import make_trained_run

    from pneumo import predict

    (tmp_path / "data").mkdir()
    pack = write_test_pack(tmp_path / "data" / "demo.h5", counts=(48, 8, 12), size=64)
    run_dir = make_trained_run(tmp_path / "runs" / "demo", pack, size=64, fit_steps=3)
    predict.evaluate_run(run_dir, split="test", checkpoint="best")
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    cached = predictions.open_predictions(run_dir, "test")
    probs, ids = cached.read(), cached.ids
    with h5py.File(pack, "r") as f:
        Y = f["Y_test"][()]
    radio = at.radio(key="rv_cat::demo::test")
    n_all = int(radio.proto.captions[-1].split()[0])
    assert n_all == len(ids) == 12
    t = predictions.run_triplet(run_dir, 64, "best")[0]
    ref, _ = evaluate.evaluate_stats(evaluate.prob_stats(probs, Y), t)
    assert next(m.value for m in at.metric if m.label == "SIIM score") == f"{ref['siim_score']:.3f}"


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


def _dk(name: str) -> str:
    return f"rv_{name}::{DRUN}::test"


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [str(x.value) for x in at.exception]


def test_threshold_sweep_keeps_the_category_filter(designed):
    at = _app()
    for chosen in ("FP", "FN"):
        at.radio(key=_dk("cat")).set_value(chosen).run()
        for top in (0.80, 0.79, 0.78, 0.55):
            at.slider(key=_dk("tt")).set_value(top).run()
            assert _errors(at) == []
            assert at.radio(key=_dk("cat")).value == chosen  # the key, not "FP (4)"
            counts = _counts(at, DRUN)
            if counts[chosen]:
                assert _shown_case(at)[1] == chosen and _nav_data(at)["name"] == chosen
            else:  # an empty category falls back, with a one-line note
                assert any(c.value.startswith(f"No {review.CATEGORY_NAMES[chosen]} at these thresholds")
                           for c in at.caption)


def test_empty_category_falls_back_with_a_note(designed):
    at = _app()
    at.slider(key=_dk("tt")).set_value(0.99).run()  # nothing reaches it: no FP, no TP
    assert _counts(at, DRUN)["FP"] == 0 and _counts(at, DRUN)["FN"] > 0
    assert at.radio(key=_dk("cat")).value == "FP"  # the choice is kept...
    assert any(c.value == "No false positives at these thresholds: showing misses." for c in at.caption)
    assert _shown_case(at)[1] == "FN"  # ...and misses are shown meanwhile
    assert len(at.get("image")) == 3
    at.slider(key=_dk("tt")).set_value(0.5).run()
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
    assert review_nav_apply({"index": 7, "nonce": 3}, 3, 5) == 4
    assert review_nav_apply({"index": 1, "nonce": 2}, 3, 5) is None
    assert review_nav_apply({"index": "1", "nonce": 3}, 3, 5) is None
    assert review_nav_apply(None, 3, 5) is None


def review_nav_apply(value, nonce, n):
    from pneumo_app.review_nav import apply_target

    return apply_target(value, nonce, n)


def test_passing_cases_without_a_verdict_writes_no_row(designed):
    at = _app()
    store = verdicts.VerdictStore.for_run(designed["run_dir"])
    n = _nav_data(at)["n"]
    for k in range(1, n):
        _nav_send(at, k)
    for k in range(n - 2, -1, -1):
        _nav_send(at, k)
    assert store.all(DRUN, "test") == []
    assert "Export 0 reviews" in at.get("download_button")[0].proto.label
    assert any(p.proto.text.startswith(f"0 of {n} FP cases reviewed (0 of ") for p in at.get("progress"))
    # an empty note saves nothing either; a note alone is a review, and counts and export agree
    image_id = _shown_case(at)[0]
    note_key = f"rv_note::{DRUN}::test::{image_id}"
    at.text_input(key=note_key).input("").run()
    assert store.all(DRUN, "test") == []
    at.text_input(key=note_key).input("look again").run()
    assert [r.image_id for r in store.all(DRUN, "test")] == [image_id]
    assert "Export 1 reviews" in at.get("download_button")[0].proto.label
    assert any(p.proto.text.startswith(f"1 of {n} FP cases reviewed") for p in at.get("progress"))


def test_repack_under_a_cached_page_is_never_shown_as_current(designed):
    at = _app()
    before = _shown_case(at)[0]
    assert len(at.get("image")) == 3
    # "Replace existing": another pack at the same path (other ids, other pixels)
    write_test_pack(designed["pack"], counts=(4, 6, 24), size=32, seed=9)
    with h5py.File(designed["pack"], "a") as f:
        ids = [f"other-{i:03d}" for i in range(24)]
        del f["ids_test"]
        f["ids_test"] = np.array(ids, dtype="S")
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
    assert any("Saved: **label missed a pneumothorax**" in c.value for c in b.caption)
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
def _image_captions(at: AppTest) -> list[str]:
    return [i.caption for el in at.image for i in el.proto.imgs]


@pytest.fixture()
def siim_review(tmp_path, monkeypatch):
    """A tiny SIIM tree (64 px DICOMs) packed at 32 px with its source references, and a run
    with fixed predictions on its test split."""
    from run_fixtures import make_review_run
    from siim_fixtures import write_siim_tree

    from pneumo.ingest import packer, sources
    from pneumo.config import PackConfig, SplitConfig

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", n=6, size=64, seed=4, positive_rate=0.7)
    info = packer.pack_manifest(sources.siim_source(dicom_dir, csv_path, workers=1), tmp_path / "data" / "siim.h5",
                                PackConfig(size=32, workers=1, split=SplitConfig(proportions=(0.0, 0.0, 1.0))))
    run_dir = make_review_run(tmp_path / "runs" / DRUN, info.path, splits=("test",))
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    return {"run_dir": run_dir, "pack": info.path}


def test_full_resolution_view_reads_the_source_and_falls_back_when_it_is_gone(siim_review):
    from pneumo.store import pack

    at = _app()
    assert at.toggle(key="rv_fullres").value is False
    at.toggle(key="rv_fullres").set_value(True).run()
    assert _errors(at) == []
    image_id, _ = _shown_case(at)
    caps = _image_captions(at)
    assert any(c.startswith("64x64 (source), x 0..63, y 0..63, crop 64x64 at 1:1") for c in caps), caps
    notes = [c.value for c in at.caption]
    assert any("the RLE of stage_2_train.csv decoded at 64x64" in c and "resized bilinearly to 64x64" in c
               for c in notes), notes
    assert not any("unavailable" in c for c in notes)
    # the window starts from the file's own (8-bit, no window tags: its full range)
    k = f"rv_fr::{image_id}::64x64"
    assert at.slider(key=k + "::c").value == 128.0 and at.slider(key=k + "::w").value == 256.0
    at.select_slider(key=k + "::z").set_value("fit").run()
    assert any(c.startswith("64x64 (source), whole image") for c in _image_captions(at))

    # without the label CSV, the target is the pack's mask resized nearest
    (siim_review["pack"].parent.parent / "siim" / "stage_2_train.csv").unlink()
    at = _app()
    at.toggle(key="rv_fullres").set_value(True).run()
    assert any("the pack's 32 px mask resized nearest to 64x64" in c.value for c in at.caption)

    # the source file disappears: one line says so and the pack's copy is shown
    with pack.Pack(siim_review["pack"]) as packed:
        refs = dict(zip(packed.ids("test"), packed.sources("test")))
    Path(refs[image_id].path).unlink()
    at2 = _app()
    at2.toggle(key="rv_fullres").set_value(True).run()
    assert _errors(at2) == []
    assert _shown_case(at2)[0] == image_id
    gone = [c.value for c in at2.caption if c.value.startswith("Full resolution unavailable")]
    assert gone == [f"Full resolution unavailable: the source file is gone: {refs[image_id].path}; "
                    "showing the pack's 32x32 copy."]
    assert any(c.startswith("32x32 (pack copy)") for c in _image_captions(at2))


def test_full_resolution_view_of_a_pack_without_sources_says_so(designed):
    at = _app()
    at.toggle(key="rv_fullres").set_value(True).run()
    assert _errors(at) == []
    assert [c.value for c in at.caption if "unavailable" in c.value] == [
        "Full resolution unavailable: this pack has no source references (packed before they were recorded); "
        "showing the pack's 32x32 copy."]
    assert any(c.startswith("32x32 (pack copy)") for c in _image_captions(at))


def _fullres_viewer_script(path: str) -> None:
    import numpy as np

    from pneumo_app import review_cache, review_fullres

    full, lo, hi = review_cache.load_full(path)
    blank = np.zeros(full.pixels.shape[:2], np.uint8)
    review_fullres._viewer("uniform", full, lo, hi, blank, blank, native=True, pack_size=32, target_how="none")


@pytest.mark.parametrize("shape,window", [((16, 16), (100, 40)), ((16, 1), (100, 1)), ((1, 1), (100, 1))])
def test_full_resolution_viewer_of_a_uniform_image_at_its_window_centre(tmp_path, shape, window):
    """All pixels equal the file's WindowCenter (and one side may be 1 px): every slider still
    has a range, so the page shows the image instead of a streamlit exception."""
    from siim_fixtures import write_dicom

    path = write_dicom(tmp_path / "uniform.dcm", np.full(shape, 100, np.uint16), window=window)
    at = AppTest.from_function(_fullres_viewer_script, args=(str(path),), default_timeout=30).run()
    assert [e.value for e in at.exception] == [] and _errors(at) == []
    k = f"rv_fr::uniform::{shape[0]}x{shape[1]}"
    centre = at.slider(key=k + "::c")
    assert centre.value == 100.0 and centre.min <= 100.0 < centre.max
    caps = _image_captions(at)
    assert any(c.startswith(f"{shape[1]}x{shape[0]} (source), x 0..{shape[1] - 1}, y 0..{shape[0] - 1}")
               for c in caps), caps


# --------------------------------------------------------------------------- readers (issue 14)
def _reader_app(name: str | None = None) -> AppTest:
    """A new browser session on the Review page, opened as ``?reader=NAME`` when given."""
    at = AppTest.from_file(PAGE, default_timeout=60)
    if name is not None:
        at.query_params["reader"] = name
    at.session_state["rv_readers_panel"] = True  # the Readers panel open (computed only then)
    at.run()
    assert not at.exception, at.exception
    return at


def _fp_order(run_dir: Path) -> list[str]:
    data = review.ReviewData(run_dir, "test")
    ev = data.evaluate(data.default_triplet())
    return [str(ev.cases["id"][i]) for i in review.select(ev.cases, "FP")]


def _reading_as(at: AppTest) -> str | None:
    found = [m.value for m in at.markdown if m.value.startswith("Reading as **")]
    return re.sub(r"\\(.)", r"\1", found[0].split("**")[1]) if found else None


def test_reader_is_asked_once_and_kept_in_the_address(designed):
    at = _reader_app()
    assert _reading_as(at) is None
    assert any("saved under the reader **unnamed**" in c.value for c in at.caption)
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
    # Change reader: the form comes back and the address forgets the name
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
    alice, bob = _reader_app("alice"), _reader_app("bob")
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
    assert "Export 2 reviews" in bob.get("download_button")[0].proto.label  # every reader
    assert store.get(DRUN, "test", image_id, reader="alice").verdict == "label missed a pneumothorax"


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
    # closed, the panel names the readers and computes nothing else
    closed = AppTest.from_file(PAGE, default_timeout=60)
    closed.run()
    assert [e.label for e in closed.expander if e.label.startswith("Readers")] == ["Readers (2)"]
    assert not [t for t in closed.table if t.value.index.name == "category"]


def test_a_disagreement_opens_its_case(designed):
    fp = _two_readers(designed["run_dir"])
    at = _reader_app("bob")
    at.radio(key=_dk("cat")).set_value("FN").run()  # somewhere else, in the grid
    at.segmented_control(key="rv_mode").set_value("Grid").run()
    assert not at.get("bidi_component")
    at.button(key=f"rv_readers_open::alice::bob::{fp[2]}").click().run()
    assert _errors(at) == []
    assert at.radio(key=_dk("cat")).value == "FP"
    assert at.segmented_control(key="rv_mode").value == "Case"
    assert _shown_case(at) == (fp[2], "FP")
    assert _nav_data(at)["pos"] == 2  # the Previous / Next control follows
    # bob's own verdict on it is the one highlighted
    assert at.button(key=f"rv_verdict::{fp[2]}::label missed a pneumothorax").proto.type == "primary"


def test_the_relabel_button_writes_the_list(designed):
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
    assert any(f"--exclude {out}" in c.value for c in at.code)
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
