"""pneumo.predict and the evaluate/predict commands, on a tiny 64 px run (no pretrained weights)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from pneumo import evaluate as ev
from pneumo import predict as pr
from pneumo.store import predictions as store
from pneumo.cli import main
from pneumo.errors import InputError
from pneumo.ingest.rle import siim_decode
from run_fixtures import make_trained_run
from siim_fixtures import write_dicom

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_pack) -> Path:
    """A finished run; tests that change it work on a copy (:func:`run_copy`)."""
    run = make_trained_run(tmp_path_factory.mktemp("runs") / "run1", tiny_pack)
    pr.evaluate_run(run, "test")  # fills the dev and test caches once
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the run with modification times kept (so its caches stay fresh)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", copy_function=shutil.copy2))


def _pack_split(pack, split):
    with h5py.File(pack, "r") as f:
        return f[f"X_{split}"][()], f[f"Y_{split}"][()], [s.decode() for s in f[f"ids_{split}"][()]]


def _cached(run_dir, split):
    """The cached ``(probs, ids)`` of a split, read through the one validator."""
    preds = store.open_predictions(run_dir, split)
    return preds.read(), preds.ids


def _no_model(*_a, **_k):
    raise AssertionError("the model was loaded")


# --------------------------------------------------------------------------- fixture
def test_make_trained_run_layout(trained_run, tiny_pack):
    for name in ("config.json", "status.json", "history.csv", "best.keras", "last.keras"):
        assert (trained_run / name).is_file(), name
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["encoder_weights"] is None and cfg["pack"] == str(tiny_pack)
    assert json.loads((trained_run / "status.json").read_text())["state"] == "finished"


# --------------------------------------------------------------------------- cache
def test_predict_split_cache_contents(trained_run, tiny_pack):
    path = store.predictions_path(trained_run, "test")
    x, _, ids = _pack_split(tiny_pack, "test")
    probs, cached_ids = _cached(trained_run, "test")
    assert probs.shape == (16, 64, 64, 1) and probs.dtype == np.uint8
    assert cached_ids == ids
    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
    assert a["checkpoint"] == "best" and a["split"] == "test"
    assert a["checkpoint_mtime"] == pytest.approx((trained_run / "best.keras").stat().st_mtime)
    assert Path(a["pack"]) == Path(tiny_pack).resolve()
    # the cache is round(p * 255) of the model's output
    from pneumo.model.networks import load_model

    p = load_model(trained_run / "best.keras", compile=False).predict_on_batch(x[:4])
    diff = np.abs(probs[:4].astype(int) - np.round(np.asarray(p) * 255).astype(int))
    assert diff.max() <= 1
    assert probs.min() < 64 and probs.max() > 192  # a fitted model, not a constant


def test_cache_reused_without_model(run_copy, monkeypatch):
    path = store.predictions_path(run_copy, "test")
    before = path.stat().st_mtime_ns
    assert pr.cache_is_fresh(run_copy, "test", "best")
    monkeypatch.setattr(pr, "_load_model", _no_model)
    assert pr.predict_split(run_copy, "test") == path
    assert path.stat().st_mtime_ns == before
    metrics = pr.evaluate_run(run_copy, "test")  # fresh caches: no model either
    assert metrics["n_images"] == 16


def test_cache_invalidated_by_newer_checkpoint_and_other_name(run_copy, monkeypatch):
    ckpt = run_copy / "best.keras"
    assert not pr.cache_is_fresh(run_copy, "test", "last")  # made from best, not last
    t = ckpt.stat().st_mtime + 100
    os.utime(ckpt, (t, t))  # training saved a newer best model
    assert not pr.cache_is_fresh(run_copy, "test", "best")
    monkeypatch.setattr(pr, "_load_model", _no_model)
    with pytest.raises(AssertionError, match="model was loaded"):
        pr.predict_split(run_copy, "test")
    monkeypatch.undo()
    calls = []
    pr.predict_split(run_copy, "test", progress=lambda d, n: calls.append((d, n)), batch_size=5)
    assert calls == [(5, 16), (10, 16), (15, 16), (16, 16)]
    assert pr.cache_is_fresh(run_copy, "test", "best")
    with h5py.File(store.predictions_path(run_copy, "test"), "r") as f:
        assert f.attrs["checkpoint_mtime"] == pytest.approx(t)


def test_force_recomputes(run_copy):
    path = store.predictions_path(run_copy, "dev")
    before = path.stat().st_mtime_ns
    old, _ = _cached(run_copy, "dev")
    pr.predict_split(run_copy, "dev", force=True)
    assert path.stat().st_mtime_ns != before
    new, _ = _cached(run_copy, "dev")
    np.testing.assert_array_equal(old, new)  # inference is deterministic


# --------------------------------------------------------------------------- evaluate_run
def test_evaluate_run_files_match_independent_computation(trained_run, tiny_pack):
    metrics = json.loads(store.metrics_path(trained_run, "test").read_text())
    for key in ["siim_score", "siim_score_raw", "dice_positive_mean", "n_images", "n_positive", "tp",
                "fp", "fn", "tn", "auc", "triplet", "empty_baseline", "split", "checkpoint", "triplet_source"]:
        assert key in metrics, key
    # triplet tuned on dev predictions, not test
    dev_probs, _ = _cached(trained_run, "dev")
    _, dev_masks, _ = _pack_split(tiny_pack, "dev")
    trip, dev_score = ev.tune_triplet(dev_probs, dev_masks)
    assert ev.Triplet.from_dict(metrics["triplet"]) == trip
    assert metrics["triplet_source"] == "dev" and metrics["dev_siim_score"] == pytest.approx(dev_score)
    # scores recomputed straight from masks
    probs, ids = _cached(trained_run, "test")
    _, masks, pack_ids = _pack_split(tiny_pack, "test")
    post = ev.postprocess(probs, trip)
    assert metrics["siim_score"] == pytest.approx(ev.siim_score(masks, post))
    assert metrics["siim_score_raw"] == pytest.approx(ev.siim_score(masks, probs > 127))
    assert metrics["n_images"] == 16 and metrics["n_positive"] == int((masks.reshape(16, -1) > 0).any(1).sum())
    assert metrics["empty_baseline"] == pytest.approx(1 - metrics["n_positive"] / 16)
    assert metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"] == 16
    # the case table agrees
    with open(store.cases_path(trained_run, "test"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(store.CASES_COLUMNS)
    assert [r["id"] for r in rows] == pack_ids
    direct = ev.categorize(masks, post, probs, min_area=trip.min_area)
    assert [r["category"] for r in rows] == list(direct["category"])
    np.testing.assert_allclose([float(r["dice"]) for r in rows], direct["dice"], atol=1e-6)
    np.testing.assert_array_equal([int(r["pred_area"]) for r in rows], direct["pred_area"])
    for cat in ("tp", "fp", "fn", "tn"):
        assert sum(r["category"] == cat.upper() for r in rows) == metrics[cat]
    assert store.read_cases(trained_run, "test")[0]["true_area"] == int(rows[0]["true_area"])


def test_evaluate_cli_table_without_tensorflow(trained_run):
    code = ("import sys; from pneumo.cli import main; rc = main(['evaluate', sys.argv[1]]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code, str(trained_run)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "all-empty baseline" in r.stdout and "TP" in r.stdout and "AUC" in r.stdout
    assert "triplet (tuned on dev" in r.stdout


# --------------------------------------------------------------------------- errors
def test_bad_run_folders(tmp_path, tiny_pack, trained_run):
    with pytest.raises(InputError, match="nowhere.*not found"):
        pr.predict_split(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty.*no config.json"):
        pr.evaluate_run(empty)
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    shutil.copy(trained_run / "config.json", no_model)
    with pytest.raises(InputError, match="no model best.keras"):
        pr.predict_split(no_model)
    with pytest.raises(InputError, match="no model best.keras"):
        pr.predict_files(no_model, [tmp_path], tmp_path / "out")
    no_pack = tmp_path / "no_pack"
    shutil.copytree(trained_run, no_pack, copy_function=os.link)
    cfg = json.loads((no_pack / "config.json").read_text())
    cfg["pack"] = str(tmp_path / "gone.h5")
    (no_pack / "config.json").unlink()
    (no_pack / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="gone.h5 not found"):
        pr.evaluate_run(no_pack)
    with pytest.raises(InputError, match="checkpoint 'worst'"):
        pr.predict_split(trained_run, checkpoint="worst")
    with pytest.raises(InputError, match="split 'val'"):
        pr.predict_split(trained_run, split="val")


def test_cli_error_names_the_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing_run")]) == 2
    assert "missing_run" in capsys.readouterr().err


# --------------------------------------------------------------------------- new images
@pytest.fixture
def inputs(tmp_path, tiny_pack) -> dict[str, Path]:
    """A 100x80 PNG of a positive test image, a 96x96 DICOM of another, a 64x64 JPEG negative."""
    x, y, _ = _pack_split(tiny_pack, "test")
    pos = [i for i in range(len(y)) if y[i].any()]
    neg = [i for i in range(len(y)) if not y[i].any()]
    d = tmp_path / "in"
    d.mkdir()
    png = d / "chest_a.png"
    Image.fromarray(x[pos[0], ..., 0]).resize((80, 100), Image.Resampling.BILINEAR).save(png)
    dcm = write_dicom(d / "sub" / "b.dcm",
                      np.asarray(Image.fromarray(x[pos[1], ..., 0]).resize((96, 96))), sop_uid="1.2.3.99")
    jpg = d / "chest_c.jpg"
    Image.fromarray(x[neg[0], ..., 0]).save(jpg, quality=95)
    return {"dir": d, "png": png, "dcm": dcm, "jpg": jpg}


def _write_triplet(run: Path, triplet: ev.Triplet) -> None:
    (run / "metrics_test.json").write_text(json.dumps({"triplet": triplet.to_dict(size=64)}))


def test_predict_files_outputs_and_submission_round_trip(run_copy, inputs, tmp_path):
    _write_triplet(run_copy, ev.Triplet(0.5, 0.5, 0))  # plain thresholding: positives get masks
    out = tmp_path / "out"
    sub = tmp_path / "sub.csv"
    res = pr.predict_files(run_copy, [inputs["dir"]], out, siim_csv=sub)
    assert [Path(r["input"]).name for r in res] == ["chest_a.png", "chest_c.jpg", "b.dcm"]
    shapes = {"chest_a.png": (100, 80), "chest_c.jpg": (64, 64), "b.dcm": (96, 96)}
    for r in res:
        h, w = shapes[Path(r["input"]).name]
        assert (r["height"], r["width"]) == (h, w)
        mask = np.asarray(Image.open(r["mask"]))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        ov = np.asarray(Image.open(r["overlay"]))
        if r["present"]:
            assert ov.shape == (h, w, 3)
        else:  # a negative's overlay is the gray input itself
            assert ov.shape == (h, w) and Image.open(r["overlay"]).mode == "L"
        assert r["area"] == int((mask > 0).sum()) and r["present"] == (r["area"] > 0)
        assert 0.0 <= r["score"] <= 1.0 and r["triplet_source"] == "metrics_test.json"
    assert Path(res[2]["mask"]).name == "b_mask.png" and res[2]["id"] == "1.2.3.99"
    assert res[0]["id"] == "chest_a"
    assert res[0]["present"]  # a lesion the model was fitted on
    # the overlay is red where the mask is
    ov = np.asarray(Image.open(res[0]["overlay"])).astype(int)
    m = np.asarray(Image.open(res[0]["mask"])) > 0
    assert (ov[m][:, 0] > ov[m][:, 1]).all() and (ov[~m][:, 0] == ov[~m][:, 1]).all()
    # the submission decodes back to the written masks at the inputs' resolution
    with open(sub, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "EncodedPixels"]
    assert [r[0] for r in rows[1:]] == [r["id"] for r in res]
    for (image_id, rle), r in zip(rows[1:], res):
        mask = np.asarray(Image.open(r["mask"]))
        np.testing.assert_array_equal(siim_decode(rle, r["height"], r["width"]), mask)
        assert (rle == "-1") == (not r["present"])


def test_predict_files_min_area_gate_gives_empty_rows(run_copy, inputs, tmp_path):
    _write_triplet(run_copy, ev.Triplet(0.5, 0.5, 64 * 64))  # no image has every pixel above 0.5
    sub = tmp_path / "sub.csv"
    res = pr.predict_files(run_copy, [inputs["png"], inputs["dcm"]], tmp_path / "out", siim_csv=sub)
    assert not any(r["present"] for r in res)
    assert list(csv.reader(open(sub, newline="")))[1:] == [["chest_a", "-1"], ["1.2.3.99", "-1"]]


def test_predict_files_mask_follows_the_probabilities(run_copy, inputs, tmp_path):
    """Mask at the input's size = the model's probabilities upsampled and thresholded."""
    _write_triplet(run_copy, ev.Triplet(0.5, 0.5, 0))
    from pneumo.model.networks import load_model

    img = np.asarray(Image.open(inputs["jpg"]).convert("L"))  # 64 px: no resizing at all
    p = load_model(run_copy / "best.keras", compile=False).predict_on_batch(img[None, ..., None])
    (r,) = pr.predict_files(run_copy, [inputs["jpg"]], tmp_path / "out")
    mask = np.asarray(Image.open(r["mask"])) > 0
    np.testing.assert_array_equal(mask, ev.quantize(np.asarray(p))[0, ..., 0] > 127)


def test_predict_files_uses_default_triplet_without_metrics(run_copy, inputs, tmp_path):
    for f in run_copy.glob("metrics_*.json"):
        f.unlink()
    (r,) = pr.predict_files(run_copy, [inputs["png"]], tmp_path / "out")
    assert r["triplet_source"] == "default"


def test_predict_files_bad_inputs(run_copy, inputs, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="broken.png"):
        pr.predict_files(run_copy, [inputs["png"], bad], tmp_path / "out")
    with pytest.raises(InputError, match="missing.png: input not found"):
        pr.predict_files(run_copy, [tmp_path / "missing.png"], tmp_path / "out")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(InputError, match="nothing: no image files"):
        pr.predict_files(run_copy, [empty], tmp_path / "out")


def test_collect_inputs_skips_outputs_inside_the_input_folder(inputs):
    out = inputs["dir"] / "out"
    out.mkdir()
    (out / "chest_a_mask.png").write_bytes(inputs["png"].read_bytes())
    files = pr.collect_inputs([inputs["dir"]], exclude=out)
    assert sorted(p.name for p in files) == ["b.dcm", "chest_a.png", "chest_c.jpg"]


def test_predict_cli(run_copy, inputs, tmp_path, capsys):
    out = tmp_path / "cli_out"
    rc = main(["predict", str(run_copy), str(inputs["png"]), str(inputs["dcm"]), "--out", str(out),
               "--siim-csv", str(tmp_path / "s.csv")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "chest_a.png" in text and "b.dcm" in text and "present" in text
    assert (out / "chest_a_mask.png").is_file() and (out / "b_overlay.png").is_file()
    assert next(csv.reader(open(tmp_path / "s.csv", newline=""))) == ["ImageId", "EncodedPixels"]
    assert main(["predict", str(run_copy), str(tmp_path / "nope.png")]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_run_triplet_prefers_metrics_of_the_same_checkpoint(tmp_path):
    assert store.run_triplet(tmp_path) == (ev.DEFAULT_TRIPLET, "default")
    (tmp_path / "metrics_test.json").write_text(json.dumps(
        {"checkpoint": "best", "triplet": ev.Triplet(0.4, 0.8, 10).to_dict(size=64)}))
    (tmp_path / "metrics_dev.json").write_text(json.dumps(
        {"checkpoint": "last", "triplet": ev.Triplet(0.6, 0.9, 20).to_dict(size=64)}))
    assert store.run_triplet(tmp_path, 64, "best") == (ev.Triplet(0.4, 0.8, 10), "metrics_test.json")
    assert store.run_triplet(tmp_path, 64, "last") == (ev.Triplet(0.6, 0.9, 20), "metrics_dev.json")
    assert store.run_triplet(tmp_path, 128, "best")[0].min_area == 40  # rescaled by area


def test_cases_csv_neutralises_spreadsheet_formulas(tmp_path):
    import csv as _csv

    ids = np.array(['=HYPERLINK("http://evil","x")', "+1", "@SUM(A1)", "-2", "case-1"])
    n = len(ids)
    path = store.write_cases(tmp_path, "test", {"id": ids, "category": np.array(["fp"] * n), "dice": np.zeros(n),
                                                "true_area": np.zeros(n, int), "pred_area": np.zeros(n, int),
                                                "score": np.full(n, -0.5)})
    assert path == tmp_path / "cases_test.csv"
    rows = list(_csv.DictReader(open(path, newline="")))
    assert [r["id"] for r in rows] == ["'=HYPERLINK(\"http://evil\",\"x\")", "'+1", "'@SUM(A1)", "'-2", "case-1"]
    assert rows[0]["score"] == "-0.500000"  # numbers stay numbers


def test_cases_csv_round_trips_formula_like_ids(tmp_path):
    # write_cases neutralises spreadsheet formulas with a leading "'"; read_cases undoes it.
    ids = ["=1+1", "+a", "-b", "@c", "'quoted", "plain"]
    cases = {"id": np.array(ids, dtype=object), "category": np.array(["TP", "FP", "FN", "TN", "TP", "FP"]),
             "dice": np.linspace(0, 1, 6), "true_area": np.arange(6), "pred_area": np.arange(6) * 2,
             "score": np.linspace(1, 0, 6)}
    path = store.write_cases(tmp_path, "test", cases)
    raw = path.read_text(encoding="utf-8")
    assert "\n\"'=1+1\"," in raw and "\n\"'quoted\"," in raw  # on disk: neutralised, and 'quoted left as is
    rows = store.read_cases(tmp_path, "test")
    assert [r["id"] for r in rows] == ids
    assert [r["category"] for r in rows] == list(cases["category"])
    assert rows[3]["pred_area"] == 6 and rows[0]["dice"] == 0.0


# --------------------------------------------------------------------------- every core, overwrite rule
def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _many_inputs(inputs, tmp_path) -> list[Path]:
    """The fixture's PNG, DICOM and JPEG, copies under other names and another DICOM: 8 files."""
    extra = tmp_path / "extra"
    extra.mkdir()
    files = [inputs["png"], inputs["dcm"], inputs["jpg"]]
    for i, src in enumerate(files * 2):
        if i % 3 == 1:
            continue
        dst = extra / f"copy{i}{src.suffix}"
        dst.write_bytes(src.read_bytes())
        files.append(dst)
    files.append(write_dicom(extra / "other.dcm", np.asarray(Image.open(inputs["jpg"]).convert("L"))[::-1],
                             sop_uid="1.2.3.100"))
    return files


def test_predict_files_same_outputs_with_0_1_and_2_workers(run_copy, inputs, tmp_path):
    _write_triplet(run_copy, ev.Triplet(0.5, 0.5, 0))
    files = _many_inputs(inputs, tmp_path)
    runs = {}
    for workers in (0, 1, 2):
        out = tmp_path / f"out{workers}"
        calls = []
        res = pr.predict_files(run_copy, files, out, siim_csv=out / "sub.csv", batch_size=3, workers=workers,
                               progress=lambda d, n: calls.append((d, n)))
        assert calls == [(i, len(files)) for i in range(1, len(files) + 1)]
        runs[workers] = ([{k: v for k, v in r.items() if k not in ("mask", "overlay")} for r in res], _outputs(out))
    assert runs[1] == runs[0] and runs[2] == runs[0]  # results, mask and overlay PNGs, CSV: byte for byte


def test_predict_files_bad_file_is_named_and_what_was_written_is_whole(run_copy, inputs, tmp_path):
    files = _many_inputs(inputs, tmp_path)
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM but not really")
    files = files[:4] + [bad] + files[4:]
    written = {}
    for workers in (0, 2):
        out = tmp_path / f"bad{workers}"
        with pytest.raises(InputError, match="broken.dcm"):
            pr.predict_files(run_copy, files, out, siim_csv=out / "sub.csv", batch_size=3, workers=workers)
        written[workers] = _outputs(out)
    stems = ["chest_a", "b", "chest_c", "copy0"]  # the 4 files before the bad one, all of them; nothing after
    assert sorted(written[0]) == sorted(f"{s}{x}" for s in stems for x in ("_mask.png", "_overlay.png"))
    assert written[2] == written[0]


def test_predict_files_refuses_existing_outputs_unless_forced(run_copy, inputs, tmp_path, capsys):
    out, sub = tmp_path / "out", tmp_path / "sub.csv"
    pr.predict_files(run_copy, [inputs["png"], inputs["jpg"]], out, siim_csv=sub)
    before = _outputs(out), sub.read_bytes()
    with pytest.raises(InputError, match=r"chest_a_mask.png: already exists; use --force.*3 more outputs"):
        pr.predict_files(run_copy, [inputs["png"], inputs["jpg"]], out)
    sub.write_text("mine\n")
    with pytest.raises(InputError, match=r"sub.csv: already exists; use --force"):
        pr.predict_files(run_copy, [inputs["dcm"]], tmp_path / "elsewhere", siim_csv=sub)
    assert sub.read_text() == "mine\n" and _outputs(out) == before[0]
    assert not (tmp_path / "elsewhere").exists()  # refused before anything was written
    args = ["predict", str(run_copy), str(inputs["png"]), str(inputs["jpg"]), "--out", str(out), "--siim-csv", str(sub)]
    assert main(args) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert main(args + ["--force", "--workers", "0"]) == 0
    assert _outputs(out) == before[0] and sub.read_bytes() == before[1]  # replaced by the same prediction


def test_siim_csv_guards_formula_ids_and_keeps_minus_one(run_copy, inputs, tmp_path):
    _write_triplet(run_copy, ev.Triplet(0.5, 0.5, 64 * 64))  # every image empty: -1
    evil = tmp_path / "=1+20.png"
    evil.write_bytes(inputs["png"].read_bytes())
    sub = tmp_path / "sub.csv"
    res = pr.predict_files(run_copy, [evil], tmp_path / "out", siim_csv=sub)
    assert res[0]["id"] == "=1+20"
    assert list(csv.reader(open(sub, newline=""))) == [["ImageId", "EncodedPixels"], ["'=1+20", "-1"]]


def test_predict_cli_without_overlays(run_copy, inputs, tmp_path, capsys):
    out = tmp_path / "masks_only"
    assert main(["predict", str(run_copy), str(inputs["png"]), "--out", str(out), "--no-overlays"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["chest_a_mask.png"]
    assert "masks in" in capsys.readouterr().out


def test_evaluate_run_same_files_with_workers(run_copy, monkeypatch):
    """Scoring in worker processes (overlapping inference, and chunked from fresh caches) gives
    the serial metrics and case table; the evaluation progress file is still written."""
    from pneumo.store.run import RunFolder

    serial = pr.evaluate_run(run_copy, "test", force=True, workers=0)
    serial_cases = store.cases_path(run_copy, "test").read_bytes()
    calls = []
    parallel = pr.evaluate_run(run_copy, "test", force=True, workers=2, batch_size=5,
                               progress=lambda d, n: calls.append((d, n)))
    assert calls[-1][0] == calls[-1][1] == len(store.open_predictions(run_copy, "dev").ids) + 16
    monkeypatch.setattr(pr, "_STATS_ROWS", 4)  # fresh caches, scored in chunks of 4 on the workers
    cached = pr.evaluate_run(run_copy, "test", workers=2)
    for m in (parallel, cached):
        assert {k: v for k, v in m.items() if k != "created"} == {k: v for k, v in serial.items() if k != "created"}
    assert store.cases_path(run_copy, "test").read_bytes() == serial_cases
    progress = json.loads(RunFolder(run_copy).evaluation_progress("test").read_text())
    assert progress["stage"] == "done" and progress["fraction"] == 1.0


def test_evaluate_cli_workers_option(run_copy, capsys):
    assert main(["evaluate", str(run_copy), "--workers", "0", "--force"]) == 0
    assert "SIIM score" in capsys.readouterr().out


def test_predict_cli_forks_its_workers_before_tensorflow(run_copy, inputs):
    """The command starts its workers while it has neither TensorFlow nor a thread (tqdm's
    monitor included): forked, they start at once instead of importing everything again."""
    code = ("import sys; import pneumo.workers as w; real = w._start_method\n"
            "def spy():\n    m = real(); print('start method', m, 'tensorflow' in sys.modules); return m\n"
            "w._start_method = spy\nfrom pneumo.cli import main\nsys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code, "predict", str(run_copy), str(inputs["png"]), str(inputs["jpg"]),
                        "--out", str(run_copy / "out"), "--workers", "2"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "start method fork False" in r.stdout
