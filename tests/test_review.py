"""pneumo.review.cases: loading cached predictions, categories as pneumo.evaluate computes them,
filter/sort/position; pneumo.store.verdicts: the SQLite verdict store (upsert, persistence, WAL, two
connections, no phantom rows, note conflicts); pneumo.store.predictions: freshness and the triplet rule."""
from __future__ import annotations

import csv
import io
import multiprocessing as mp
import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from pneumo import evaluate
from pneumo.errors import InputError
from pneumo.review import cases as review
from pneumo.store import predictions
from pneumo.store import stamps, verdicts

from conftest import write_test_pack


def write_predictions(run_dir: Path, split: str, probs: np.ndarray, ids: list[str], pack: Path,
                      checkpoint: str = "best") -> Path:
    """A predictions file exactly as the contract describes (docs/architecture.md), fresh for
    the pack as it is now; for a missing pack, the attributes an older pneumo wrote."""
    if Path(pack).is_file():
        with predictions.create_predictions(run_dir, split, ids, probs.shape[1], pack, checkpoint) as writer:
            writer.write(0, probs)
        return writer.path
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"predictions_{split}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("probs", data=probs, chunks=(1, *probs.shape[1:]))
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        f.attrs.update(checkpoint="best", checkpoint_mtime=0.0, pack=str(pack), split=split, created="2026-01-01")
    return path


def noisy_probs(masks: np.ndarray, seed: int) -> np.ndarray:
    """Plausible predictions: the mask blurred by noise, some false alarms, some misses."""
    rng = np.random.default_rng(seed)
    n = masks.shape[0]
    p = (masks.astype(np.float32) / 255.0) * rng.uniform(0.2, 1.0, (n, 1, 1, 1))
    p += rng.uniform(0, 0.35, masks.shape) * rng.uniform(0, 1.8, (n, 1, 1, 1))
    return np.clip(np.round(p * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rev")
    pack = write_test_pack(root / "p.h5", counts=(4, 6, 30), size=32)
    with h5py.File(pack, "r") as f:
        Y = f["Y_test"][()]
        ids = [s.decode() for s in f["ids_test"][()]]
    probs = noisy_probs(Y, 1)
    run_dir = root / "run"
    write_predictions(run_dir, "test", probs, ids, pack)
    return run_dir, pack, probs, Y, ids


def test_categories_and_summary_equal_pneumo_evaluate(run):
    run_dir, pack, probs, Y, ids = run
    data = review.ReviewData(run_dir, "test")
    assert data.pack_path == pack and data.n == 30 and data.size == 32
    for triplet in (evaluate.Triplet(0.5, 0.5, 0), evaluate.Triplet(0.3, 0.7, 5), evaluate.Triplet(0.2, 0.9, 40)):
        ev = data.evaluate(triplet)
        ref_summary, ref_cases = evaluate.evaluate_stats(evaluate.prob_stats(probs, Y), triplet, ids)
        assert ev.summary == ref_summary
        for k in ref_cases:
            assert (np.asarray(ev.cases[k]) == np.asarray(ref_cases[k])).all(), k
        # and against masks post-processed pixel by pixel
        cat = evaluate.categorize(Y, evaluate.postprocess(probs, triplet))["category"]
        assert (ev.cases["category"] == cat).all()
        assert sum(ev.counts.values()) == 30
    # different thresholds really move cases between categories in this data
    a = data.evaluate(evaluate.Triplet(0.5, 0.5, 0)).counts
    b = data.evaluate(evaluate.Triplet(0.2, 0.9, 40)).counts
    assert a != b


def test_cases_read_only_requested_in_order(run):
    run_dir, pack, probs, Y, ids = run
    data = review.ReviewData(run_dir, "test")
    got = data.cases([7, 2, 7])
    assert [c.index for c in got] == [7, 2, 7]
    assert (got[0].probs == probs[7, ..., 0]).all() and (got[1].target == Y[2, ..., 0]).all()
    with h5py.File(pack, "r") as f:
        assert (got[1].image == f["X_test"][2, ..., 0]).all()
    assert got[0].image.shape == (32, 32) and got[0].image.dtype == np.uint8
    with pytest.raises(InputError, match="out of range"):
        data.cases([30])


def test_predictions_in_another_order_are_matched_by_id(tmp_path, run):
    _, pack, probs, Y, ids = run
    perm = np.random.default_rng(0).permutation(len(ids))
    run_dir = tmp_path / "shuffled"
    write_predictions(run_dir, "test", probs[perm], [ids[i] for i in perm], pack)
    data = review.ReviewData(run_dir, "test")
    c = data.case(3)
    assert c.id == ids[perm[3]] and (c.target == Y[perm[3], ..., 0]).all()
    t = evaluate.Triplet(0.4, 0.6, 3)
    ref, _ = evaluate.evaluate_stats(evaluate.prob_stats(probs, Y), t)
    assert data.evaluate(t).summary == ref  # order-independent metrics agree


def test_bad_files_give_clear_errors(tmp_path, run):
    _, pack, probs, Y, ids = run
    with pytest.raises(InputError, match="no cached predictions"):
        review.ReviewData(tmp_path, "test")
    with pytest.raises(InputError, match="split .validation. is unknown"):
        review.ReviewData(tmp_path, "validation")
    write_predictions(tmp_path / "r", "test", probs, ["x"] + ids[1:], pack)
    with pytest.raises(InputError, match="not in"):
        review.ReviewData(tmp_path / "r", "test")
    write_predictions(tmp_path / "r2", "test", probs, ids, tmp_path / "gone.h5")
    with pytest.raises(InputError, match="pack .*gone.h5 not found"):
        review.ReviewData(tmp_path / "r2", "test")


def _cases(cat, score, dice, area):
    return {"category": np.array(cat, dtype=object), "score": np.array(score, float),
            "dice": np.array(dice, float), "pred_area": np.array(area)}


def test_select_filter_sort_position_by_hand():
    c = _cases(
        ["FP", "TN", "FP", "TP", "FN", "FP", "FN"],
        [0.6, 0.1, 0.9, 0.8, 0.3, 0.7, 0.05],
        [0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0],
        [10, 0, 5, 40, 0, 30, 0],
    )
    assert review.select(c).tolist() == [2, 5, 0]  # FP, most confident first (default)
    assert review.select(c, "FP", "largest predicted area").tolist() == [5, 0, 2]
    # misses: the most confident "no" (lowest score) first
    assert review.select(c, "FN").tolist() == [6, 4]
    assert review.select(c, "all", "worst Dice").tolist()[:5] == [6, 2, 4, 5, 0]  # Dice 0, then confidence (4 and 5 tie at 0.7: file order)
    assert review.select(c, "all", "worst Dice").tolist()[5:] == [3, 1]
    assert review.select(c, "TP").tolist() == [3]
    assert review.select(_cases([], [], [], []), "FP").tolist() == []
    with pytest.raises(InputError, match="category"):
        review.select(c, "XX")
    assert [review.step(0, 3, -1), review.step(1, 3, 1), review.step(2, 3, 1), review.step(0, 0, 1)] == [0, 2, 2, 0]


def test_empty_category_falls_back_to_the_next_non_empty_one():
    counts = {"FP": 0, "FN": 3, "TP": 2, "TN": 5}
    assert review.shown_category(counts, "FP") == ("FN", "No false positives at these thresholds: showing misses.")
    assert review.shown_category(counts, "FN") == ("FN", None)
    assert review.shown_category({"FP": 0, "FN": 0, "TP": 0, "TN": 1}, "FN")[0] == "TN"
    assert review.shown_category({"FP": 4, "FN": 0, "TP": 0, "TN": 0}, "TN")[0] == "FP"  # wraps around
    assert review.shown_category(counts, "all") == ("all", None)
    with pytest.raises(InputError, match="category"):
        review.shown_category(counts, "FP (4)")


def test_default_run_prefers_the_newest_with_a_best_checkpoint(tmp_path):
    import os

    runs = tmp_path / "runs"
    for k, (name, files) in enumerate([("old", ["best.keras"]), ("stopped", ["last.keras"]), ("preds", [])]):
        d = runs / name
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_bytes(b"x")
        if not files:
            (d / "predictions_test.h5").write_bytes(b"x")
        os.utime(d, (1000 + k, 1000 + k))
        for f in d.iterdir():
            os.utime(f, (1000 + k, 1000 + k))
    found = review.reviewable_runs(runs)
    assert [d.name for d in found] == ["preds", "stopped", "old"]
    assert review.default_run(found) == (runs / "old", "the newest run with a best.keras checkpoint")
    assert review.default_run(found[:2])[0].name == "stopped"
    assert review.default_run([]) == (None, "no run to review")


def test_cases_carry_the_id_read_with_their_pixels_and_a_repack_is_caught(tmp_path, monkeypatch):
    pack = write_test_pack(tmp_path / "p.h5", counts=(2, 2, 8), size=32, seed=5)
    with h5py.File(pack, "r") as f:
        Y, ids = f["Y_test"][()], [s.decode() for s in f["ids_test"][()]]
    run_dir = tmp_path / "run"
    write_predictions(run_dir, "test", noisy_probs(Y, 2), ids, pack)
    data = review.ReviewData(run_dir, "test")
    before = review.identity(run_dir, "test")
    assert predictions.freshness(run_dir, "test", None).fresh
    hashed = []  # the split's ids are hashed once per version of the pack, not on every call
    real_digest = stamps.ids_digest
    monkeypatch.setattr(stamps, "ids_digest", lambda v: hashed.append(len(v)) or real_digest(v))
    assert review.identity(run_dir, "test") == before and predictions.freshness(run_dir, "test", None).fresh
    assert stamps.pack_identity(pack, "test")["ids_digest"] == before[2] and hashed == []
    # re-pack "with Replace existing": same ids, other order, new file
    perm = [3, 0, 7, 1, 6, 2, 5, 4]
    with h5py.File(pack, "a") as f:
        for name in ("X_test", "Y_test", "ids_test"):
            f[name][...] = f[name][()][perm]
    assert review.identity(run_dir, "test") != before  # a cache keyed by it reads afresh
    assert review.identity(run_dir, "test")[2] == real_digest([ids[i] for i in perm]) and hashed == [len(ids)]
    fresh = predictions.freshness(run_dir, "test", None)
    assert not fresh.fresh and "re-packed" in fresh.reason
    with pytest.raises(InputError, match="pack changed"):
        data.case(0)  # the old handle never shows ids[3]'s pixels under ids[0]
    again = review.ReviewData(run_dir, "test")  # matched by id: pixels follow their id
    with h5py.File(pack, "r") as f:
        X, new_ids = f["X_test"][()], [s.decode() for s in f["ids_test"][()]]
    for c in again.cases(range(8)):
        assert (c.image == X[new_ids.index(c.id), ..., 0]).all() and c.id == ids[c.index]


def test_one_triplet_rule_for_predict_review_and_cli(tmp_path, capsys):
    import json

    from pneumo import predict
    from pneumo.cli import main

    run_dir = tmp_path / "run"
    pack = write_test_pack(tmp_path / "p.h5", counts=(2, 4, 12), size=32, seed=1)
    with h5py.File(pack, "r") as f:
        Y, ids = f["Y_test"][()], [s.decode() for s in f["ids_test"][()]]
    write_predictions(run_dir, "test", noisy_probs(Y, 3), ids, pack)
    (run_dir / "config.json").write_text(json.dumps({"pack": str(pack)}))
    assert predictions.run_triplet(run_dir) == (evaluate.DEFAULT_TRIPLET, "default")
    t_old = {"pixel_threshold": 0.3, "top_threshold": 0.7, "min_area": 10, "size": 64}
    t_new = {"pixel_threshold": 0.4, "top_threshold": 0.6, "min_area": 4, "size": 32}
    # test metrics from an older "last" evaluation; dev metrics newer, made with "best"
    (run_dir / "metrics_test.json").write_text(json.dumps(
        {"triplet": t_old, "checkpoint": "last", "created": "2026-01-01T00:00:00+00:00"}))
    (run_dir / "metrics_dev.json").write_text(json.dumps(
        {"triplet": t_new, "checkpoint": "best", "created": "2026-02-01T00:00:00+00:00"}))
    want = (evaluate.Triplet(0.4, 0.6, 4), "metrics_dev.json")
    assert predictions.run_triplet(run_dir, 32, "best") == want
    assert predict.run_triplet is predictions.run_triplet
    assert review.ReviewData(run_dir, "test").default_triplet() == want[0]  # the file says "best"
    assert predictions.run_triplet(run_dir, 32, "last")[1] == "metrics_test.json"  # made with last
    assert predictions.run_triplet(run_dir, 128, "last")[0] == evaluate.Triplet(0.3, 0.7, 40)  # rescaled
    assert main(["review", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "pixel > 0.40, top > 0.60, min area 4 px (metrics_dev.json)" in out


def test_one_writer_and_one_validator_of_the_predictions_file(tmp_path, run):
    _, pack, probs, Y, ids = run
    run_dir = tmp_path / "r"
    path = write_predictions(run_dir, "test", probs, ids, pack)
    got = predictions.open_predictions(run_dir, "test")
    assert (got.path, got.ids, got.size, got.n, got.checkpoint) == (path, ids, 32, 30, "best")
    assert got.in_pack_order and got.pack_path == pack.resolve()
    np.testing.assert_array_equal(got.read([4, 1, 4]), probs[[4, 1, 4]])
    assert got.attrs["ids_digest"] == stamps.pack_split_digest(pack, "test") and got.attrs["split"] == "test"
    before = path.read_bytes()
    # a writer that stops early leaves the previous file as it was
    with pytest.raises(InputError, match="3 of 30 predictions written; file not saved"):
        with predictions.create_predictions(run_dir, "test", ids, 32, pack) as writer:
            writer.write(0, probs[:3])
    with pytest.raises(InputError, match="cannot write"):
        with predictions.create_predictions(run_dir, "test", ids, 32, pack) as writer:
            writer.write(0, probs.astype(np.float32))
    assert path.read_bytes() == before and sorted(p.name for p in run_dir.iterdir()) == [path.name]

    def damage(**datasets):
        with h5py.File(path, "w") as f:
            for name, value in {"probs": probs, "ids": np.array(ids, dtype=object), **datasets}.items():
                f.create_dataset(name, data=value, dtype=h5py.string_dtype() if name == "ids" else None)
            f.attrs.update(pack=str(pack), split="test")

    for datasets, message in [({"probs": probs.astype(np.float32)}, r"probs must be \(N, S, S, 1\) uint8"),
                              ({"probs": probs[..., 0]}, r"probs must be \(N, S, S, 1\) uint8"),
                              ({"ids": np.array(ids[:-1], dtype=object)}, "29 ids for 30 predictions")]:
        damage(**datasets)
        with pytest.raises(InputError, match=message):
            predictions.open_predictions(run_dir, "test")
        fresh = predictions.freshness(run_dir, "test", None)
        assert not fresh.fresh and fresh.reason == "predictions_test.h5 is not a predictions file"
    damage()
    with h5py.File(path, "a") as f:
        f.attrs["split"] = "dev"
    with pytest.raises(InputError, match="holds predictions of the dev split"):
        predictions.open_predictions(run_dir, "test")
    damage()
    small = write_test_pack(tmp_path / "small.h5", counts=(4, 6, 30), size=16)
    with pytest.raises(InputError, match="predictions are 32 px but the pack .*small.h5 is 16 px"):
        predictions.open_predictions(run_dir, "test", small)
    path.write_bytes(b"not HDF5")
    with pytest.raises(InputError, match="unreadable predictions file"):
        predictions.open_predictions(run_dir, "test")


def test_damaged_metrics_and_cases_are_named_never_read_as_defaults(tmp_path, run):
    import json

    _, pack, probs, Y, ids = run
    run_dir = tmp_path / "r"
    write_predictions(run_dir, "test", probs, ids, pack)
    (run_dir / "config.json").write_text(json.dumps({"pack": str(pack)}))
    good = {"triplet": {"pixel_threshold": 0.4, "top_threshold": 0.6, "min_area": 4, "size": 32}, "checkpoint": "best"}
    predictions.write_metrics(run_dir, "dev", good)
    assert predictions.read_metrics(run_dir, "dev") == good and predictions.read_metrics(run_dir, "test") is None
    assert predictions.run_triplet(run_dir, 32, "best") == (evaluate.Triplet(0.4, 0.6, 4), "metrics_dev.json")
    for text, why in [('{"triplet": {"pixel_threshold": "high", "top_threshold": 0.6, "min_area": 4}}', "pixel_threshold"),
                      ('{"triplet": [0.5, 0.5, 0]}', "no triplet"), ("[1, 2]", "holds a JSON list"),
                      ('{"triplet": {"pixel_threshold": 0.4', "not valid JSON")]:
        predictions.metrics_path(run_dir, "test").write_text(text)
        with pytest.raises(InputError, match=f"metrics_test.json: damaged metrics .*{why}"):
            predictions.run_triplet(run_dir, 32, "best")
        with pytest.raises(InputError, match="metrics_test.json: damaged metrics"):
            review.ReviewData(run_dir, "test").default_triplet()
    assert predictions.read_cases(run_dir, "test") == []
    predictions.cases_path(run_dir, "test").write_text("id,category,dice\na,FP,0.5\n")
    with pytest.raises(InputError, match="cases_test.csv: damaged case table"):
        predictions.read_cases(run_dir, "test")


# --------------------------------------------------------------------------- verdicts
def test_verdict_upsert_persists_and_validates(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    assert store.journal_mode() == "wal"
    store.set_verdict("r1", "test", "a", "model wrong", category="FP")
    store.set_note("r1", "test", "a", "rib edge")
    v = store.set_verdict("r1", "test", "a", "label missed a pneumothorax", category="FP", reviewer="dr x")
    assert (v.verdict, v.note, v.category, v.reviewer) == ("label missed a pneumothorax", "rib edge", "FP", "dr x")
    store.set_verdict("r1", "test", "b", "model missed it", category="FN")
    store.set_verdict("r1", "dev", "a", "agree", category="TP")
    store.set_note("r1", "test", "c", "look again")  # a note alone is a review too
    again = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    assert again.get("r1", "test", "a") == v
    assert [r.image_id for r in again.all("r1", "test")] == ["a", "b", "c"]
    assert again.reviewed_ids("r1", "test") == {"a", "b", "c"}
    assert again.reviewed_ids("r1", "dev") == {"a"}
    with pytest.raises(InputError, match="not one for a FN"):
        again.set_verdict("r1", "test", "b", "agree", category="FN")
    with pytest.raises(InputError, match="unknown category"):
        again.set_verdict("r1", "test", "b", "agree", category="XX")
    assert again.get("r1", "test", "b").verdict == "model missed it"
    again.clear("r1", "test", "c")
    assert again.get("r1", "test", "c") is None


def test_export_csv_rows(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    store.set_verdict("r", "test", "id-2", "unsure", category="FP", note='says "maybe", twice')
    store.set_verdict("r", "test", "id-1", "agree", category="TN")
    store.set_verdict("other", "test", "id-9", "agree", category="TN")
    n = store.export_csv(tmp_path / "out.csv", "r", "test")
    rows = list(csv.DictReader(open(tmp_path / "out.csv", newline="")))
    assert n == 2 and [r["image_id"] for r in rows] == ["id-1", "id-2"]
    assert rows[1]["verdict"] == "unsure" and rows[1]["note"] == 'says "maybe", twice' and rows[1]["category"] == "FP"
    assert list(rows[0]) == list(verdicts.EXPORT_COLUMNS)
    assert list(csv.DictReader(io.StringIO(store.csv_text("r", "test")))) == rows


def test_two_connections_see_each_other_and_a_reader_does_not_block(tmp_path):
    path = tmp_path / "reviews.sqlite"
    a, b = verdicts.VerdictStore(path), verdicts.VerdictStore(path)
    a.set_verdict("r", "test", "x", "model wrong", category="FP")
    assert b.get("r", "test", "x").verdict == "model wrong"
    # a long-lived reader (another tab mid-query) holds a read transaction: WAL lets writes through
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 1
    b.set_verdict("r", "test", "y", "unsure", category="FP")
    a.set_verdict("r", "test", "x", "unsure", category="FP")
    assert reader.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 1  # its snapshot
    reader.rollback()
    reader.close()
    assert {r.image_id: r.verdict for r in a.all("r", "test")} == {"x": "unsure", "y": "unsure"}


def _writer(path: str, prefix: str, n: int) -> None:
    s = verdicts.VerdictStore(path)
    for i in range(n):
        s.set_verdict("r", "test", f"{prefix}{i}", "agree", category="TP")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "reviews.sqlite")
    verdicts.VerdictStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(verdicts.VerdictStore(path).all("r", "test")) == 80


def test_no_phantom_rows_and_clearing_a_verdict(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    assert store.set_note("r", "test", "a", "") is None  # passing through a case saves nothing
    assert store.set_verdict("r", "test", "b", None, category="FP") is None
    assert store.all("r", "test") == [] and store.csv_text("r", "test").count("\n") == 1
    store.set_verdict("r", "test", "c", "model wrong", category="FP")
    store.set_note("r", "test", "c", "rib")
    assert store.clear_verdict("r", "test", "c").note == "rib"  # the note stays
    assert store.get("r", "test", "c").verdict is None
    assert store.set_note("r", "test", "c", "") is None  # nothing left: no row
    store.set_verdict("r", "test", "d", "unsure", category="FP")
    assert store.clear_verdict("r", "test", "d") is None
    # rows an older version saved with neither verdict nor note are not reviews
    with sqlite3.connect(tmp_path / "reviews.sqlite") as con:
        con.execute("INSERT INTO verdicts (run, split, image_id, verdict, note, updated) VALUES "
                    "('r', 'test', 'old', NULL, '', '2025-01-01')")
    store.set_verdict("r", "test", "e", "agree", category="TN")
    assert [v.image_id for v in store.all("r", "test")] == ["e"] == sorted(store.reviewed_ids("r", "test"))
    assert store.export_csv(tmp_path / "x.csv", "r", "test") == 1


def test_note_changed_elsewhere_is_not_overwritten_unseen(tmp_path):
    tab1 = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    tab2 = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    tab1.set_note("r", "test", "a", "first", expected="")
    tab2.set_note("r", "test", "a", "second", expected="first")  # tab2 loaded "first"
    with pytest.raises(verdicts.NoteConflict) as e:
        tab1.set_note("r", "test", "a", "mine", expected="first")  # tab1 still has "first"
    assert e.value.stored == "second" and tab1.get("r", "test", "a").note == "second"
    assert tab1.set_note("r", "test", "a", "mine").note == "mine"  # overwrite when asked


def test_export_neutralises_spreadsheet_formulas(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    store.set_verdict("r", "test", "=HYPERLINK(1)", "agree", category="TP", note="+cmd|' /C calc'!A0")
    rows = list(csv.DictReader(io.StringIO(store.csv_text("r", "test"))))
    assert rows[0]["image_id"] == "'=HYPERLINK(1)" and rows[0]["note"].startswith("'+")


def test_a_review_file_of_the_first_release_stays_readable(tmp_path):
    path = tmp_path / "reviews.sqlite"
    with sqlite3.connect(path) as con:  # the schema as the first release wrote it
        con.execute("CREATE TABLE verdicts (run TEXT NOT NULL, split TEXT NOT NULL, image_id TEXT NOT NULL, "
                    "verdict TEXT, note TEXT NOT NULL DEFAULT '', category TEXT, reviewer TEXT, "
                    "updated TEXT NOT NULL, PRIMARY KEY (run, split, image_id))")
        con.execute("INSERT INTO verdicts VALUES ('r', 'test', 'a', 'agree', 'ok', 'TN', NULL, '2025-01-01')")
    store = verdicts.VerdictStore(path)
    assert store.get("r", "test", "a").verdict == "agree"
    store.set_verdict("r", "test", "a", "disagree", category="TN")
    assert store.get("r", "test", "a").note == "ok"
