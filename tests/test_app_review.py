"""The review page under streamlit's AppTest, on small finished runs.

A "noisy" run has predictions written straight to the contract's file (varied enough that
thresholds move cases between categories); a real run (when ``pneumo.predict`` exists) is a
tiny trained model whose predictions the page computes through the evaluate subprocess.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pneumo import evaluate, review

from conftest import write_test_pack
from test_review import noisy_probs, write_predictions

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "review.py")
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


def _counts(at: AppTest) -> dict[str, int]:
    radio = at.radio(key=_k("cat"))
    out = {}
    for label in radio.options:
        name, n = label.split(" (")
        out[name] = int(n.rstrip(")"))
    return out


def _shown_case(at: AppTest) -> tuple[str, str]:
    """(image id, category) of the case in the triptych."""
    for m in at.markdown:
        if m.value.startswith("**") and "**: " in m.value:
            image_id, cat = m.value[2:].split("**: ")
            return image_id, cat
    raise AssertionError("no case shown")


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_page_renders_summary_and_default_triplet(workspace):
    at = _app()
    # default post-processing: the dev-tuned triplet
    assert at.slider(key=_k("pt")).value == pytest.approx(0.4)
    assert at.slider(key=_k("tt")).value == pytest.approx(0.5)
    assert at.number_input(key=_k("area")).value == 2
    ref, _ = evaluate.evaluate_probs(workspace["probs"], workspace["Y"], evaluate.Triplet(0.4, 0.5, 2))
    assert _metric(at, "SIIM score") == f"{ref['siim_score']:.3f}"
    assert _metric(at, "All-empty baseline") == f"{ref['empty_baseline']:.3f}"
    assert _metric(at, "Dice on positives") == f"{ref['dice_positive_mean']:.3f}"
    assert len(at.get("plotly_chart")) == 1
    assert len(at.get("image")) == 3  # the triptych
    assert at.radio(key=_k("cat")).value == "FP"  # FP first by default


def test_threshold_change_recounts_exactly_as_evaluate(workspace):
    at = _app()
    for t in (evaluate.Triplet(0.3, 0.7, 5), evaluate.Triplet(0.2, 0.2, 0), evaluate.Triplet(0.6, 0.9, 30)):
        at.slider(key=_k("pt")).set_value(t.pixel_threshold)
        at.slider(key=_k("tt")).set_value(t.top_threshold)
        at.number_input(key=_k("area")).set_value(t.min_area)
        at.run()
        assert not at.exception
        ref, _ = evaluate.evaluate_probs(workspace["probs"], workspace["Y"], t)
        assert _counts(at) == {"FP": ref["fp"], "FN": ref["fn"], "TP": ref["tp"], "TN": ref["tn"],
                               "all": ref["n_images"]}
        assert _metric(at, "SIIM score") == f"{ref['siim_score']:.3f}"


def test_fp_filter_shows_only_fp_cases_in_confidence_order(workspace):
    at = _app()
    t = evaluate.Triplet(0.4, 0.5, 2)
    _, cases = evaluate.evaluate_probs(workspace["probs"], workspace["Y"], t, workspace["ids"])
    fp = [i for i, c in zip(cases["id"], cases["category"]) if c == "FP"]
    assert len(fp) >= 2, "the fixture should produce several false positives"
    seen = []
    for k in range(len(fp)):
        image_id, cat = _shown_case(at)
        assert cat == "FP"
        assert any(m.value == f"<div style='text-align:center;font-size:1.2em'><b>FP {k + 1} of {len(fp)}</b></div>"
                   for m in at.markdown)
        seen.append(image_id)
        nxt = at.button(key=f"rv_pos::{RUN}::test::FP::most confident first::next")
        assert nxt.proto.disabled == (k == len(fp) - 1)  # no Next past the last one
        if k < len(fp) - 1:
            nxt.click().run()
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
    store = review.VerdictStore(workspace["run_dir"] / "reviews.sqlite")
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
    df = again.dataframe[0].value
    assert list(df["image_id"]) == [image_id] and list(df["verdict"]) == ["label missed a pneumothorax"]
    rows = store.csv_text(RUN, "test").splitlines()
    assert rows[0].split(",") == list(review.EXPORT_COLUMNS) and len(rows) == 2


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
    (run_dir / "predictions_test.h5").rename(run_dir / "source_predictions.h5")
    (run_dir / "best.keras").write_bytes(b"not used by the fake")
    fake = tmp_path / "fake_evaluate.py"
    fake.write_text(_FAKE_EVALUATE)
    monkeypatch.setenv("PNEUMO_EVALUATE_COMMAND", f"{sys.executable} {fake}")
    at = _app()
    assert len(at.get("image")) == 0
    at.button(key="rv_compute").click().run()
    assert not at.exception
    deadline = time.time() + 30
    while time.time() < deadline:
        job = review.evaluation_job(run_dir, "test")
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
    probs, ids = predict.load_predictions(run_dir, "test")
    with h5py.File(pack, "r") as f:
        Y = f["Y_test"][()]
    radio = at.radio(key="rv_cat::demo::test")
    n_all = int(radio.options[-1].split("(")[1].rstrip(")"))
    assert n_all == len(ids) == 12
    t = review.default_triplet(run_dir, "test", 64)
    ref, _ = evaluate.evaluate_probs(probs, Y, t)
    assert next(m.value for m in at.metric if m.label == "SIIM score") == f"{ref['siim_score']:.3f}"
