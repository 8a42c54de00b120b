"""``python -m pneumo review``: progress per category and the verdict export, without the app."""
from __future__ import annotations

import csv

from pneumo.cli import main
from pneumo.store.verdicts import VerdictStore


def _run_with_cases(tmp_path):
    run = tmp_path / "run1"
    run.mkdir()
    rows = [("a", "FP"), ("b", "FP"), ("c", "FN"), ("d", "TN")]
    with open(run / "cases_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "category", "dice", "true_area", "pred_area", "score"])
        for i, c in rows:
            w.writerow([i, c, 0.0, 0, 5, 0.9])
    return run


def test_progress_and_export(tmp_path, capsys):
    run = _run_with_cases(tmp_path)
    store = VerdictStore.for_run(run)
    store.set_verdict("run1", "test", "a", "model wrong", category="FP")
    store.set_verdict("run1", "test", "c", "label doubtful", category="FN")
    out = tmp_path / "v.csv"
    assert main(["review", str(run), "--export", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 of 4 cases reviewed" in text
    assert "FP: 1 of 2" in text and "FN: 1 of 1" in text and "TN: 0 of 1" in text
    exported = list(csv.DictReader(open(out)))
    assert {(r["image_id"], r["verdict"]) for r in exported} == {("a", "model wrong"), ("c", "label doubtful")}


def test_export_refuses_an_existing_file_unless_forced(tmp_path, capsys):
    """Issue 18 item 2: ``--export existing.csv`` exited 0 and overwrote it."""
    run = _run_with_cases(tmp_path)
    VerdictStore.for_run(run).set_verdict("run1", "test", "a", "model wrong", category="FP")
    out = tmp_path / "mine.csv"
    out.write_text("my own notes\n")
    assert main(["review", str(run), "--export", str(out)]) == 2
    assert f"{out}: already exists; use --force to replace it" in capsys.readouterr().err
    assert out.read_text() == "my own notes\n"
    assert main(["review", str(run), "--export", str(out), "--force"]) == 0
    assert [r["image_id"] for r in csv.DictReader(open(out))] == ["a"]


def test_no_reviews_yet_and_missing_run(tmp_path, capsys):
    run = _run_with_cases(tmp_path)
    assert main(["review", str(run)]) == 0
    assert "no reviews yet" in capsys.readouterr().out
    out = tmp_path / "v.csv"
    assert main(["review", str(run), "--export", str(out)]) == 0
    assert "nothing to export" in capsys.readouterr().out
    assert not out.exists() and not (run / "reviews.sqlite").exists()  # no empty review file made
    assert main(["review", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- readers (issue 14)
def _two_readers(tmp_path):
    run = _run_with_cases(tmp_path)
    store = VerdictStore.for_run(run)
    store.set_verdict("run1", "test", "a", "model wrong", category="FP", reader="alice")
    store.set_verdict("run1", "test", "b", "model wrong", category="FP", reader="alice")
    store.set_verdict("run1", "test", "a", "model wrong", category="FP", reader="bob")
    store.set_verdict("run1", "test", "b", "label missed a pneumothorax", category="FP", reader="bob")
    store.set_verdict("run1", "test", "c", "label doubtful", category="FN", reader="bob")
    return run


def test_progress_and_export_by_reader(tmp_path, capsys):
    run = _two_readers(tmp_path)
    out = tmp_path / "alice.csv"
    assert main(["review", str(run), "--reader", " alice ", "--export", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reader: alice" in text and "2 of 4 cases reviewed" in text and "FN: 0 of 1" in text
    rows = list(csv.DictReader(open(out)))
    assert [(r["image_id"], r["reader"]) for r in rows] == [("a", "alice"), ("b", "alice")]
    everyone = tmp_path / "all.csv"
    assert main(["review", str(run), "--export", str(everyone)]) == 0
    text = capsys.readouterr().out
    assert "readers: alice, bob" in text and "3 of 4 cases reviewed" in text
    assert [(r["image_id"], r["reader"]) for r in csv.DictReader(open(everyone))] == [
        ("a", "alice"), ("a", "bob"), ("b", "alice"), ("b", "bob"), ("c", "bob")]
    assert main(["review", str(run), "--reader", "carol"]) == 0
    assert "reader: carol (no reviews yet)" in capsys.readouterr().out
    assert main(["review", str(run), "--reader", "a\tb"]) == 2
    assert "control character" in capsys.readouterr().err


def test_agreement_table(tmp_path, capsys):
    run = _two_readers(tmp_path)
    assert main(["review", str(run), "--agreement"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # shared: a (both "model wrong"), b (differ); c only bob's. FP table [[1, 0], [1, 0]]
    # (alice rows: always "model wrong"): p_o = 1/2, p_e = 1 * 1/2 = 1/2, kappa = 0
    overall = next(line for line in lines if "alice vs bob" in line)
    assert "overall" in overall and "n=2" in overall and "agreement 0.50" in overall
    assert "kappa  0.00" in overall and "disagree 1: b" in overall
    fp = next(line for line in lines if line.split()[:1] == ["FP"])
    assert "n=2" in fp and "disagree 1: b" in fp
    (tmp_path / "x").mkdir()
    single = _run_with_cases(tmp_path / "x")
    VerdictStore.for_run(single).set_verdict("run1", "test", "a", "unsure", category="FP")
    assert main(["review", str(single), "--agreement"]) == 0
    assert "needs verdicts from at least two readers" in capsys.readouterr().out


def test_damaged_metrics_stop_the_review_naming_the_file(tmp_path, tiny_pack, capsys):
    """Issue 18 item 13: metrics with wrong types must not be counted under default
    thresholds; ``review`` names the damaged file and exits 2."""
    import json

    from run_fixtures import make_review_run

    run = make_review_run(tmp_path / "run1", tiny_pack, splits=("test",))
    assert main(["review", str(run)]) == 0
    assert "triplet: pixel > 0.50, top > 0.50, min area 4 px (metrics_test.json)" in capsys.readouterr().out
    (run / "metrics_test.json").write_text(json.dumps(
        {"triplet": {"pixel_threshold": "high", "top_threshold": 0.5, "min_area": 2}}))
    assert main(["review", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics_test.json'}: damaged metrics" in err and "TN" not in err


def test_review_counts_with_the_thresholds_saved_with_the_run(tmp_path, tiny_pack, capsys):
    """Issue 18 item 6: the page saved its thresholds in its session only and `review` counted
    with the dev-tuned ones ("TN: 6 of 96" for a case judged under FP). Both now use the run's
    thresholds (RUN/thresholds.json), and a verdict given under another category says so."""
    from run_fixtures import make_review_run

    from pneumo import evaluate
    from pneumo.review.cases import ReviewData
    from pneumo.store import thresholds

    run = make_review_run(tmp_path / "run1", tiny_pack, splits=("test",))
    data = ReviewData(run, "test")
    dev = data.evaluate(evaluate.Triplet(0.5, 0.5, 4)).cases
    fp = [str(i) for i, c in zip(dev["id"], dev["category"]) if c == "FP"]
    store = VerdictStore.for_run(run)
    store.set_verdict("run1", "test", fp[0], "label missed a pneumothorax", category="FP",
                      thresholds=evaluate.Triplet(0.5, 0.5, 4).to_dict(data.size))
    assert main(["review", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"FP: 1 of {len(fp)}" in out and "(metrics_test.json), tuned on dev" in out
    assert "verdicts given under FP: label missed a pneumothorax 1" in out
    chosen = evaluate.Triplet(0.5, 0.99, 4)  # nothing reaches it: every negative is a TN
    thresholds.save_thresholds(run, chosen, data.size, reader="alice")
    now = data.evaluate(chosen).cases
    n_tn = int((now["category"] == "TN").sum())
    assert main(["review", str(run)]) == 0
    out = capsys.readouterr().out
    assert "triplet: pixel > 0.50, top > 0.99, min area 4 px (thresholds.json), chosen on the Review page" in out
    assert f"TN: 1 of {n_tn}" in out and "FP: 0 of 0" in out
    assert f"1 verdict given under another category than the case has now: {fp[0]} (FP then, TN now)" in out
    assert "verdicts given under FP: label missed a pneumothorax 1" in out
