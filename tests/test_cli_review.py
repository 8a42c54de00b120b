"""``python -m pneumo review``: progress per category and the verdict export, without the app."""
from __future__ import annotations

import csv

from pneumo.cli import main
from pneumo.review import VerdictStore


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


def test_no_reviews_yet_and_missing_run(tmp_path, capsys):
    run = _run_with_cases(tmp_path)
    assert main(["review", str(run)]) == 0
    assert "no reviews yet" in capsys.readouterr().out
    assert main(["review", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
