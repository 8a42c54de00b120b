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
from pneumo.review import runs as review_runs
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


def _run(runs: Path, name: str, files: list[str], *, state: str | None = None, val_dice: float | None = None,
         stamp: int = 1000) -> Path:
    """A run folder with ``files``, a ``status.json`` state and a one-epoch history."""
    import json
    import os

    d = runs / name
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"x")
    if not files:
        (d / "predictions_test.h5").write_bytes(b"x")
    if state is not None:
        (d / "status.json").write_text(json.dumps({"state": state, "pid": 1, "epoch": 1, "epochs": 2}))
        (d / "config.json").write_text(json.dumps({"epochs": 2}))
    if val_dice is not None:
        (d / "history.csv").write_text("epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds\n"
                                       f"1,train,0.5,0.1,0.05,0.4,{val_dice},0.05,0.0003,1.0\n")
    for f in [d, *d.iterdir()]:
        os.utime(f, (stamp, stamp))
    return d


def test_reviewable_runs_newest_first(tmp_path):
    runs = tmp_path / "runs"
    for k, (name, files) in enumerate([("old", ["best.keras"]), ("stopped", ["last.keras"]), ("preds", [])]):
        _run(runs, name, files, stamp=1000 + k)
    assert [d.name for d in review_runs.reviewable_runs(runs)] == ["preds", "stopped", "old"]


def test_the_best_finished_run_opens_not_the_newest(tmp_path):
    """Issue 19: after a second quick demo stopped at epoch 2 (val Dice 0.108), Review opened it
    because it was the newest. The finished run with the highest dev score (the val Dice of its
    best.keras epoch) opens, and the reason says so."""
    runs = tmp_path / "runs"
    _run(runs, "good", ["best.keras", "last.keras"], state="finished", val_dice=0.84, stamp=1000)
    _run(runs, "weak", ["best.keras"], state="finished", val_dice=0.31, stamp=1001)
    _run(runs, "stopped", ["best.keras", "last.keras"], state="stopped", val_dice=0.108, stamp=1002)
    found = review_runs.reviewable_runs(runs)
    assert found[0].name == "stopped"
    choice = review_runs.best_run(found)
    assert choice.path == runs / "good" and choice.dev_score == pytest.approx(0.84)
    assert choice.why == "the finished run with the highest dev score (val Dice 0.840 at epoch 1) and a best.keras " \
                         "of 2 finished runs"
    # no finished run: the best of the others, saying so; a run without a score ranks last
    none_finished = [d for d in found if d.name == "stopped"]
    assert review_runs.best_run(none_finished).why.startswith("no run has finished; the stopped run with the "
                                                              "highest dev score (val Dice 0.108 at epoch 1)")
    _run(runs, "unscored", ["best.keras"], state="finished", stamp=1003)
    assert review_runs.best_run(review_runs.reviewable_runs(runs)).path == runs / "good"
    # then any checkpoint, then cached predictions, then nothing
    other = tmp_path / "other"
    only_last = _run(other, "last", ["last.keras"], stamp=1000)
    preds = _run(other, "preds", [], stamp=1001)
    assert review_runs.best_run([preds, only_last]).path == only_last
    assert review_runs.best_run([preds]).why == "the newest run with cached predictions (none has a checkpoint)"
    assert review_runs.best_run([]) == review_runs.RunChoice(None, "no run to review")


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
    assert not (tmp_path / "reviews.sqlite").exists()  # made by the first save, not by opening
    store.set_verdict("r1", "test", "a", "model wrong", category="FP")
    assert store.journal_mode() == "wal"
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


# --------------------------------------------------------------------------- near misses (issue 19)
def _stats_of(probs: list[list[int]], masks: list[list[int]]) -> evaluate.ProbStats:
    """ProbStats of tiny 1 x K images given as level lists (masks 0/1)."""
    p = np.asarray(probs, np.uint8)[:, None, :]
    m = (np.asarray(masks, np.uint8) * 255)[:, None, :]
    return evaluate.prob_stats(p, m)


def test_near_misses_by_hand():
    """Four label-negative images and two positives, 4 pixels each, triplet (pixel 0.5 -> level
    127, top 0.5, min area 3): nothing negative is called positive, so FP is empty. Near misses
    are the TN with a region above the pixel threshold or a pixel above the top threshold:
    image 1 (top 200, 2 px dropped), image 2 (top 230, 1 px dropped); not 0 (top 100) nor 3
    (nothing). Highest top probability first: 2, then 1."""
    stats = _stats_of([[100, 100, 0, 0], [200, 150, 0, 0], [230, 0, 0, 0], [0, 0, 0, 0],
                       [220, 210, 200, 0], [90, 0, 0, 0]],
                      [[0] * 4] * 4 + [[1, 1, 1, 0], [1, 1, 0, 0]])
    t = evaluate.Triplet(0.5, 0.5, 3)
    _, cases = evaluate.evaluate_stats(stats, t, [f"i{k}" for k in range(6)])
    assert list(cases["category"]) == ["TN", "TN", "TN", "TN", "TP", "FN"]
    assert review.top_probability(stats).tolist() == pytest.approx([100 / 255, 200 / 255, 230 / 255, 0, 220 / 255,
                                                                     90 / 255])
    near = review.near_misses(stats, cases, t, "FP")
    assert (near.category, near.shown) == ("FP", "TN")
    assert near.indices.tolist() == [2, 1] and near.dropped.tolist() == [1, 2]
    assert near.top.tolist() == pytest.approx([230 / 255, 200 / 255])
    assert near.note.startswith("No false positives at these thresholds. Near misses: 2 true negatives the "
                                "post-processing dropped")
    # TP empty: the positives called negative (FN) with something dropped: none here (90 < 127)
    assert review.near_misses(stats, cases, t, "TP").indices.tolist() == []
    # FN or TN empty: those called positive, lowest presence score first
    assert review.near_misses(stats, cases, t, "FN").indices.tolist() == [4]
    with pytest.raises(InputError, match="unknown category"):
        review.near_misses(stats, cases, t, "all")


# --------------------------------------------------------------------------- thresholds (issue 18 item 6)
def test_thresholds_belong_to_the_run(tmp_path):
    import json

    from pneumo.store import thresholds

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics_dev.json").write_text(json.dumps(
        {"triplet": {"pixel_threshold": 0.4, "top_threshold": 0.6, "min_area": 8, "size": 64}, "checkpoint": "best"}))
    got = thresholds.run_thresholds(run, 64, "best")
    assert (got.triplet, got.source, got.origin) == (evaluate.Triplet(0.4, 0.6, 8), "dev-tuned", "metrics_dev.json")
    assert got.is_dev_tuned and thresholds.read_saved(run) is None
    thresholds.save_thresholds(run, evaluate.Triplet(0.3, 0.7, 10), 64, checkpoint="best", reader="alice")
    saved = json.loads(thresholds.thresholds_path(run).read_text())
    assert saved["triplet"] == {"pixel_threshold": 0.3, "top_threshold": 0.7, "min_area": 10, "size": 64,
                                "min_area_fraction": 10 / 4096}
    got = thresholds.run_thresholds(run, 64, "best")
    assert (got.triplet, got.source, got.dev_tuned) == (evaluate.Triplet(0.3, 0.7, 10), "chosen",
                                                        evaluate.Triplet(0.4, 0.6, 8))
    assert got.saved["reader"] == "alice" and not got.is_dev_tuned
    # at another size the minimum area is rescaled: 10 px of 64^2 -> 40 px of 128^2
    assert thresholds.run_thresholds(run, 128).triplet.min_area == 40
    assert thresholds.clear_thresholds(run) and not thresholds.clear_thresholds(run)
    assert thresholds.run_thresholds(run, 64).source == "dev-tuned"
    # never evaluated: plain 0.5 thresholding, said so
    bare = tmp_path / "bare"
    bare.mkdir()
    assert thresholds.run_thresholds(bare, 64).source == "default"
    with pytest.raises(InputError, match="run folder not found"):
        thresholds.save_thresholds(tmp_path / "missing", evaluate.DEFAULT_TRIPLET, 64)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"triplet": {"pixel_threshold": "high"}}', '{"x": 1}'])
def test_damaged_saved_thresholds_are_named_never_defaults(tmp_path, text):
    from pneumo.store import thresholds

    thresholds.thresholds_path(tmp_path).write_text(text)
    with pytest.raises(InputError, match=r"thresholds\.json: damaged thresholds"):
        thresholds.run_thresholds(tmp_path, 64)


def test_all_empty_triplet_is_recognised_and_described():
    from pneumo.store import thresholds

    grid_empty = evaluate.Triplet(0.1, 0.1, int(round(1.01 * 64 * 64)))  # the tuning grid's all-empty candidate
    assert grid_empty.min_area == 4137 and thresholds.all_empty(grid_empty, 64)
    assert not thresholds.all_empty(evaluate.Triplet(0.1, 0.1, 4096), 64)
    assert thresholds.describe(grid_empty, 64) == ("pixel > 0.10, top > 0.10, min area 4137 px (all-empty: above the "
                                                   "64x64 = 4096 px of an image, nothing is called positive)")


def test_thresholds_that_cannot_be_saved_say_so_and_leave_the_folder_as_it_was(tmp_path):
    """A run folder that cannot take the file (here a folder already sits at its name; a
    read-only workspace fails the same way): an InputError naming it, nothing left behind."""
    from pneumo.store import thresholds

    thresholds.thresholds_path(tmp_path).mkdir()
    with pytest.raises(InputError, match=r"thresholds\.json: cannot save the thresholds .*this session only"):
        thresholds.save_thresholds(tmp_path, evaluate.DEFAULT_TRIPLET, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thresholds.json"]


# --------------------------------------------------------------------------- a verdict keeps its category
def test_a_verdict_keeps_the_category_and_thresholds_it_was_given_under(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    fp = {"pixel_threshold": 0.5, "top_threshold": 0.5, "min_area": 4, "size": 32}
    store.set_verdict("r", "test", "a", "label missed a pneumothorax", category="FP", thresholds=fp)
    # thresholds changed: the case is a TN now; a note saved there does not move the verdict
    store.set_note("r", "test", "a", "apex", category="TN", thresholds={**fp, "top_threshold": 0.99})
    v = store.get("r", "test", "a")
    assert (v.verdict, v.category, v.note, v.triplet()) == ("label missed a pneumothorax", "FP", "apex", fp)
    store.set_verdict("r", "test", "a", None, category="TN")  # no new verdict: nothing moves either
    assert store.get("r", "test", "a").category == "FP"
    # a new verdict is given under the new category and thresholds
    tn = {**fp, "top_threshold": 0.99}
    store.set_verdict("r", "test", "a", "agree", category="TN", thresholds=tn)
    assert (store.get("r", "test", "a").category, store.get("r", "test", "a").triplet()) == ("TN", tn)
    # a note alone follows the case
    store.set_note("r", "test", "b", "look", category="FP", thresholds=fp)
    store.set_note("r", "test", "b", "look again", category="TN", thresholds=tn)
    assert (store.get("r", "test", "b").category, store.get("r", "test", "b").triplet()) == ("TN", tn)
    rows = list(csv.DictReader(io.StringIO(store.csv_text("r", "test"))))
    assert rows[0]["thresholds"] == '{"min_area":4,"pixel_threshold":0.5,"size":32,"top_threshold":0.99}'


def test_a_second_release_review_file_gains_thresholds_and_its_categories(tmp_path):
    """Rows of a file from before thresholds were stored: the column is added (empty), and a
    row saved without a category gets the one its verdict implies where only one category has it."""
    path = tmp_path / "reviews.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE verdicts (run TEXT NOT NULL, split TEXT NOT NULL, image_id TEXT NOT NULL, "
                "reader TEXT NOT NULL DEFAULT 'unnamed', verdict TEXT, note TEXT NOT NULL DEFAULT '', category TEXT, "
                "reviewer TEXT, updated TEXT NOT NULL, PRIMARY KEY (run, split, image_id, reader))")
    con.executemany("INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        ("r", "test", "a", "alice", "model wrong", "", None, None, "2026-01-01"),
        ("r", "test", "b", "alice", "agree", "", None, None, "2026-01-01"),  # TP or TN: left unknown
        ("r", "test", "c", "bob", "label doubtful", "x", "FN", None, "2026-01-01")])
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()
    # read-only: read as it is, through a view with an empty thresholds column, nothing changed
    ro = verdicts.VerdictStore(path, read_only=True)
    assert [(v.image_id, v.category, v.thresholds) for v in ro.verdicts("r", "test")] == [
        ("a", None, None), ("b", None, None), ("c", "FN", None)]
    store = verdicts.VerdictStore(path)
    assert [(v.image_id, v.category, v.thresholds) for v in store.verdicts("r", "test")] == [
        ("a", "FP", None), ("b", None, None), ("c", "FN", None)]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 3
    con.close()
    verdicts.VerdictStore(path)  # again: nothing to do
    assert len(store.verdicts("r", "test")) == 3


# --------------------------------------------------------------------------- the case view (issue 19)
def test_window_presets_are_relative_to_the_images_own_window():
    from pneumo.review import view

    assert view.preset_window("default", 1800, 1600, 0, 4095) == (1800, 1600)
    assert view.preset_window("contrast", 1800, 1600, 0, 4095) == (1800, 800)
    assert view.preset_window("dark", 1800, 1600, 0, 4095) == (1400, 800)
    assert view.preset_window("full", 1800, 1600, 100, 4001) == (2050.5, 3901)
    assert [view.next_preset(p) for p in view.WINDOW_PRESETS] == ["contrast", "dark", "full", "default"]
    assert view.next_preset("custom") == "default"
    with pytest.raises(InputError, match="unknown window preset"):
        view.preset_window("lungs", 1, 1, 0, 1)


def test_magnify_centres_on_the_finding_inside_the_image():
    from pneumo.review import view

    pred = np.zeros((32, 32), np.uint8)
    pred[20:24, 26:30] = 1  # centre (28, 22)
    target = np.zeros((32, 32), np.uint8)
    target[2:4, 2:4] = 1
    assert view.focus((32, 32), pred, target) == (28, 22)
    assert view.focus((32, 32), None, target) == (3, 3)
    assert view.focus((32, 32), np.zeros((32, 32)), None) == (16, 16)
    assert view.magnify_box(32, 32, 1, 28, 22) == (0, 0, 32, 32)
    assert view.magnify_box(32, 32, 2, 28, 22) == (14, 16, 16, 16)  # pushed inside at the right edge
    assert view.magnify_box(32, 32, 4, 28, 22) == (18, 24, 8, 8)
    assert view.click_to_image((14, 16, 16, 16), 0.5, 0.25) == (24, 18)
    assert view.click_to_image((0, 0, 32, 32), 1.0, 1.0) == (31, 31)


def test_the_picture_is_drawn_at_screen_size_with_thin_outlines():
    """A 16 px image shown at 160 px: the 4 px square target is outlined 2 screen pixels wide
    (not a band as wide as an enlarged pixel), the picture's size is the screen's."""
    from pneumo.review import view, viz

    image = np.full((16, 16), 100, np.uint8)
    target = np.zeros((16, 16), np.uint8)
    target[4:8, 4:8] = 255
    rgb = view.render(image, *view.pack_window(), (0, 0, 16, 16), 160, target=target, alpha=1.0, thickness=2)
    assert rgb.shape == (160, 160, 3)
    green = (rgb == viz.TARGET_COLOR).all(axis=-1)
    rows = np.flatnonzero(green[60])  # a row through the square: its two sides only
    assert rows.tolist() == [40, 41, 78, 79]
    assert not green[50:70, 45:75].any()  # inside the square stays the image
    assert (rgb[0, 0] == 100).all()
    # overlay off: nothing drawn; window: a narrow window makes 100 white
    assert not (view.render(image, *view.pack_window(), (0, 0, 16, 16), 160, target=target, overlay=False)
                == viz.TARGET_COLOR).all(axis=-1).any()
    assert (view.render(image, 60.0, 20.0, (0, 0, 16, 16), 160) == 255).all()


def test_shrinking_keeps_a_one_pixel_band_and_the_heat_map_follows_the_probabilities():
    from pneumo.review import view, viz

    image = np.zeros((400, 400), np.uint16)
    band = np.zeros((400, 400), np.uint8)
    band[100:300, 201] = 1  # one pixel wide, 4x too thin for a 100 px picture
    rgb = view.render(image, 100, 200, (0, 0, 400, 400), 100, pred=band, alpha=1.0, thickness=1)
    red = (rgb == viz.PRED_COLOR).all(axis=-1)
    assert red.shape == (100, 100) and red[30:70, 50].all()
    probs = np.zeros((4, 4), np.uint8)
    probs[0, 0] = 255  # the top-left quarter of the image is certain
    hot = view.render(image, 100, 200, (0, 0, 400, 400), 100, probs=probs, heat=True)
    assert hot[5, 5].sum() > 200 and (hot[95, 95] == 0).all()


def test_case_picture_and_a_click_on_it():
    from pneumo.review import picture

    image = np.full((32, 32), 80, np.uint8)
    target = np.zeros((32, 32), np.uint8)
    probs = np.zeros((32, 32), np.uint8)
    probs[20:24, 26:30] = 200
    pic = picture.case_picture(image, target, probs, evaluate.Triplet(0.5, 0.5, 1),
                               picture.ViewSettings(magnify=2), 64)
    assert pic.box == (14, 16, 16, 16) and pic.rgb.shape == (64, 64, 3) and pic.centre == (28, 22)
    assert pic.units == "pack values 0-255" and pic.window == (128.0, 256.0)
    assert pic.clicked(0.0, 0.0) == (16, 14) and pic.without_pixels().clicked(0.0, 0.0) == (16, 14)
    assert pic.png()[:8] == b"\x89PNG\r\n\x1a\n"
    pic = picture.case_picture(image, target, probs, evaluate.Triplet(0.5, 0.5, 1),
                               picture.ViewSettings(window="custom", custom=(80.0, 2.0), centre=(4, 4), magnify=4), 64)
    assert pic.box == (0, 0, 8, 8) and pic.window == (80.0, 2.0)
    with pytest.raises(InputError, match="custom window"):
        picture.ViewSettings(window="custom")
    with pytest.raises(InputError, match="magnification"):
        picture.ViewSettings(magnify=5)


def test_source_picture_at_1_to_1_has_a_navigator_a_click_on_it_jumps_there():
    from pneumo.review import fullres, picture

    pixels = np.tile(np.arange(1000, dtype=np.uint16), (800, 1))  # 1000 x 800, values = x
    full = fullres.FullImage(pixels, 500.0, 1000.0, False, "MONOCHROME2", "file", "x")
    none = np.zeros((800, 1000), np.uint8)
    probs = np.zeros((8, 8), np.uint8)
    fit = picture.source_picture(full, 0, 999, none, none, probs, picture.ViewSettings(), 200, "DICOM units")
    assert fit.box == (0, 0, 800, 1000) and fit.rgb.shape == (160, 200, 3) and fit.inset is None
    one = picture.source_picture(full, 0, 999, none, none, probs,
                                 picture.ViewSettings(zoom="1:1", centre=(900, 100)), 200, "DICOM units")
    assert one.box == (0, 800, 200, 200) and one.rgb.shape == (200, 200, 3)
    x0, y0, x1, y1 = one.inset
    assert (x1 - x0, y1 - y0) == (56, 45) and x1 == 198  # 28 % of the picture, in its top-right corner
    assert one.clicked(0.5, 0.9) == (900, 180)  # below the navigator: the crop's own pixel
    # its middle: 17.86 image pixels per navigator pixel (1000 / 56), 28 -> 500, 22 -> 392
    assert one.clicked((x0 + 28) / 200, (y0 + 22) / 200) == (500, 392)
    two = picture.source_picture(full, 0, 999, none, none, probs,
                                 picture.ViewSettings(zoom="2:1", centre=(500, 400)), 200, "DICOM units")
    assert two.box == (350, 450, 100, 100) and two.rgb.shape == (200, 200, 3)
    assert (two.rgb[150, 0] == two.rgb[150, 1]).all()  # square pixels at 2:1, no smoothing


# --------------------------------------------------------------------------- prefetch
def test_prefetch_loads_once_and_a_get_waits_for_it():
    import threading

    from pneumo.review import fullres
    from pneumo.review.prefetch import Prefetcher

    cache = fullres.ImageCache(1 << 20, sizeof=lambda v: 1)
    pf = Prefetcher(cache)
    started, release, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(1)
        started.set()
        release.wait(30)
        return "picture"

    future = pf.prefetch("k", slow)
    assert future is not None and started.wait(30)
    assert pf.prefetch("k", slow) is None  # under way: not started twice
    got = []
    waiter = threading.Thread(target=lambda: got.append(pf.get("k", lambda: "loaded again")))
    waiter.start()
    release.set()
    waiter.join(30)
    assert got == ["picture"] and calls == [1] and "k" in cache
    assert pf.prefetch("k", slow) is None  # held: nothing to do

    def broken():
        raise InputError("the source file cannot be read")

    pf.prefetch("bad", broken).exception(30)
    with pytest.raises(InputError, match="cannot be read"):  # the caller sees the error itself
        pf.get("bad", broken)


# --------------------------------------------------------------------------- the repack command
def test_repack_command_from_what_the_pack_recorded(tmp_path):
    from siim_fixtures import write_siim_tree

    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest import packer, sources
    from pneumo.review.repack import repack_command

    demo = packer.make_demo_pack(tmp_path / "demo.h5", count=40, size=32, workers=1, seed=7,
                                 split=SplitConfig(proportions=(3.0, 1.0, 1.0), seed=11, stratify=True))
    cmd = repack_command(demo.path, tmp_path / "relabel.csv")
    assert cmd.argv[:4] == ["python", "-m", "pneumo", "pack"]
    assert cmd.text == (f"python -m pneumo pack demo --count 40 --phantom-seed 7 --out {tmp_path / 'demo-clean.h5'} "
                        f"--size 32 --seed 11 --split 3,1,1 --stratify --exclude {tmp_path / 'relabel.csv'}")
    assert cmd.missing == [] and cmd.notes == []
    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", n=6, size=64, seed=4)
    info = packer.pack_manifest(sources.siim_source(dicom_dir, csv_path, workers=1), tmp_path / "siim.h5",
                                PackConfig(size=32, workers=1, dicom_window="full",
                                           split=SplitConfig(batches=(1, 1, 1), batch_size=2, group_by_patient=True)))
    cmd = repack_command(info.path, "list.csv", tmp_path / "out dir" / "clean.h5")
    assert cmd.argv[4:] == ["siim", str(dicom_dir.absolute()), str(csv_path.absolute()), "--dicom-window", "full",
                            "--rle-format", "relative", "--out", str(tmp_path / "out dir" / "clean.h5"), "--size", "32",
                            "--seed", "2", "--split-batches", "1,1,1", "--batch-size", "2", "--group-by-patient",
                            "--exclude", "list.csv"]
    assert f"'{tmp_path / 'out dir' / 'clean.h5'}'" in cmd.text  # quoted for the shell


def test_repack_command_names_what_an_older_pack_does_not_record(tmp_path):
    """A folders pack made before the folders were recorded: the images folder is inferred from
    its source references (and said so), the masks folder is a placeholder to fill in."""
    import json

    import h5py

    from pneumo.review.repack import repack_command

    images, masks = tmp_path / "images", tmp_path / "masks"
    for folder in (images, masks):
        folder.mkdir()
    from PIL import Image

    for k in range(6):
        Image.fromarray(np.full((32, 32), 40 * k, np.uint8)).save(images / f"p{k}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(masks / f"p{k}.png")
    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest import packer, sources

    info = packer.pack_manifest(sources.folder_source(images, masks), tmp_path / "f.h5",
                                PackConfig(size=32, workers=1, split=SplitConfig(proportions=(1.0, 1.0, 1.0))))
    assert repack_command(info.path, "l.csv").missing == []
    with h5py.File(info.path, "a") as f:  # as an older pneumo wrote it
        report = json.loads(f.attrs["report"])
        for key in ("images_dir", "masks_dir"):
            report["info"].pop(key)
        f.attrs["report"] = json.dumps(report)
    cmd = repack_command(info.path, "l.csv")
    assert cmd.argv[4:7] == ["folders", str(images.absolute()), "MASKS_DIR"]
    assert cmd.missing[0].startswith(f"IMAGES_DIR: the pack does not record its images folder; {images.absolute()} is "
                                     "the folder all its images came from")
    assert cmd.missing[1] == ("MASKS_DIR: the pack does not record its masks folder (packed before pneumo recorded "
                              "it): fill it in")
