"""pneumo.review.agreement: Cohen's kappa on hand-computed tables, the degenerate cases, and the
per-pair / per-category grouping of review rows."""
from __future__ import annotations

import numpy as np
import pytest

from pneumo.review import agreement as ag
from pneumo.store.verdicts import Verdict


def _labels(table, names):
    """Label lists (A, B) whose confusion table is ``table`` (rows A, columns B)."""
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [names[i]] * count
            b += [names[j]] * count
    return a, b


def test_classic_two_by_two_gives_kappa_0_4():
    # 50 cases: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = (20 + 15) / 50 = 0.70
    # A says yes 25/50 = 0.5, B says yes 30/50 = 0.6
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.30 + 0.20 = 0.50
    # kappa = (0.70 - 0.50) / (1 - 0.50) = 0.40
    table = np.array([[20, 5], [10, 15]])
    observed, expected, kappa = ag.kappa_from_table(table)
    assert observed == pytest.approx(0.70) and expected == pytest.approx(0.50) and kappa == pytest.approx(0.40)
    a, b = _labels(table, ["yes", "no"])
    got, order = ag.confusion(a, b, labels=["yes", "no"])
    assert order == ("yes", "no") and (got == table).all() and got.dtype == np.int64
    res = ag.agreement([f"c{i:02d}" for i in range(50)], a, b)
    assert res.n == 50 and res.kappa == pytest.approx(0.40) and len(res.disagree) == 15
    assert res.disagree == tuple(sorted(f"c{i:02d}" for i in range(50) if a[i] != b[i]))


def test_three_labels_hand_computed():
    # 25 cases, rows A, columns B:    B: x   y   z   | A total
    #                           A: x   10   2   0   | 12
    #                              y    1   5   2   |  8
    #                              z    0   1   4   |  5
    #                      B total     11   8   6   | 25
    # p_o = 19/25; p_e = (12*11 + 8*8 + 5*6) / 25^2 = 226/625
    # kappa = (19/25 - 226/625) / (1 - 226/625) = (475 - 226) / (625 - 226) = 249/399
    table = [[10, 2, 0], [1, 5, 2], [0, 1, 4]]
    observed, expected, kappa = ag.kappa_from_table(table)
    assert observed == pytest.approx(19 / 25) and expected == pytest.approx(226 / 625)
    assert kappa == pytest.approx(249 / 399)
    a, b = _labels(table, ["x", "y", "z"])
    assert ag.agreement([str(i) for i in range(25)], a, b).kappa == pytest.approx(249 / 399)


def test_perfect_opposite_and_degenerate_tables():
    assert ag.kappa_from_table([[3, 0], [0, 2]])[2] == pytest.approx(1.0)
    # A: yes, no; B: no, yes -> p_o = 0, p_e = 0.5*0.5 + 0.5*0.5 = 0.5, kappa = -1
    assert ag.kappa_from_table([[0, 1], [1, 0]]) == pytest.approx((0.0, 0.5, -1.0))
    # both readers gave every case the same single label: p_e = 1, kappa 0/0 -> None
    assert ag.kappa_from_table([[7]]) == (1.0, 1.0, None)
    assert ag.kappa_from_table([[4, 0], [0, 0]]) == (1.0, 1.0, None)
    # one reader always says yes, the other varies: p_e = 1*0.5 < 1, kappa defined (0)
    assert ag.kappa_from_table([[1, 1], [0, 0]]) == pytest.approx((0.5, 0.5, 0.0))
    # nothing judged by both
    assert ag.kappa_from_table(np.zeros((2, 2))) == (None, None, None)
    empty = ag.agreement([], [], [])
    assert (empty.n, empty.observed, empty.kappa, empty.disagree) == (0, None, None, ())
    with pytest.raises(ValueError, match="square"):
        ag.kappa_from_table([[1, 2, 3]])
    with pytest.raises(ValueError, match="not in the table"):
        ag.confusion(["a"], ["b"], labels=["a"])


def _row(reader, image_id, category, verdict, note=""):
    return Verdict("run", "test", image_id, reader, category, verdict, note, None, "2026-01-01T00:00:00+00:00")


def test_reader_pairs_per_category_and_where_they_disagree():
    rows = [
        # FP cases: 2x2 over ("model wrong", "label missed a pneumothorax")
        _row("alice", "f1", "FP", "model wrong"), _row("bob", "f1", "FP", "model wrong"),
        _row("alice", "f2", "FP", "model wrong"), _row("bob", "f2", "FP", "label missed a pneumothorax"),
        _row("alice", "f3", "FP", "label missed a pneumothorax"),
        _row("bob", "f3", "FP", "label missed a pneumothorax"),
        _row("alice", "f4", "FP", "label missed a pneumothorax"),
        _row("bob", "f4", "FP", "label missed a pneumothorax"),
        # FN: both "model missed it" on both cases -> p_e = 1, kappa undefined
        _row("alice", "n1", "FN", "model missed it"), _row("bob", "n1", "FN", "model missed it"),
        _row("alice", "n2", "FN", "model missed it"), _row("bob", "n2", "FN", "model missed it"),
        # TN, judged by alice only: not shared
        _row("alice", "t1", "TN", "agree"),
        # a note alone is not a judgement
        _row("bob", "t1", "TN", None, "check"),
    ]
    (pair,) = ag.reader_agreement(rows)
    assert (pair.a, pair.b) == ("alice", "bob")
    fp = pair.by_category["FP"]
    # FP table (A rows, B columns; order "label missed", "model wrong"): [[2, 0], [1, 1]]
    # p_o = 3/4; A "label missed" 2/4, B "label missed" 3/4; p_e = 2/4*3/4 + 2/4*1/4 = 1/2
    # kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2
    assert (fp.n, fp.observed, fp.expected, fp.kappa, fp.disagree) == (4, 0.75, 0.5, 0.5, ("f2",))
    fn = pair.by_category["FN"]
    assert (fn.n, fn.observed, fn.kappa, fn.disagree) == (2, 1.0, None, ())
    assert pair.by_category["TN"].n == 0 and pair.by_category["TP"].kappa is None
    # overall labels "<category>: <verdict>": 6 cases, 5 agree
    # A: FP/label 2, FP/model 2, FN/model 2; B: FP/label 3, FP/model 1, FN/model 2
    # p_e = (2*3 + 2*1 + 2*2) / 36 = 12/36 = 1/3; kappa = (5/6 - 1/3) / (2/3) = 3/4
    ov = pair.overall
    assert ov.n == 6 and ov.observed == pytest.approx(5 / 6) and ov.kappa == pytest.approx(0.75)
    assert ov.disagree == ("f2",) and "FP: model wrong" in ov.labels

    table = ag.agreement_rows([pair])
    assert [(r["category"], r["n"], r["disagree"]) for r in table] == [("overall", 6, 1), ("FP", 4, 1), ("FN", 2, 0)]
    assert table[1]["disagree_ids"] == ["f2"] and table[2]["kappa"] is None


def test_three_readers_make_three_pairs_and_one_reader_none():
    rows = [_row(r, "a", "TP", "agree") for r in ("carol", "alice", "bob")]
    assert [(p.a, p.b) for p in ag.reader_agreement(rows)] == [("alice", "bob"), ("alice", "carol"), ("bob", "carol")]
    assert ag.reader_agreement(rows[:1]) == [] and ag.agreement_rows([]) == []


def test_case_category_comes_from_matching_stored_categories():
    # the readers judged "x" under different categories (thresholds changed between them)
    rows = [_row("alice", "x", "FP", "unsure"), _row("bob", "x", "TN", "unsure")]
    (pair,) = ag.reader_agreement(rows)
    assert pair.overall.n == 1 and all(pair.by_category[c].n == 0 for c in ag.CATEGORIES)
    assert pair.overall.labels == ("unsure",)  # no category shared: counted overall under the verdict
    (pair,) = ag.reader_agreement([_row("alice", "x", "TN", "unsure"), _row("bob", "x", "TN", "unsure")])
    assert pair.by_category["TN"].n == 1 and pair.overall.labels == ("TN: unsure",)
