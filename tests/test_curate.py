"""pneumo.review.curate and ``python -m pneumo curate`` (issue 14): the relabel list of the cases
readers flagged as label problems, and its round trip into ``pack --exclude``."""
from __future__ import annotations

import csv

import h5py
import pytest

from pneumo import evaluate
from pneumo.cli import main
from pneumo.errors import InputError
from pneumo.review.curate import RelabelCase, curate, is_label_problem, relabel_cases, write_relabel_list
from pneumo.store.relabel import RELABEL_COLUMNS, read_list_ids, relabel_path, write_list
from pneumo.store.verdicts import Verdict, VerdictStore

from conftest import write_test_pack
from run_fixtures import REVIEW_TRIPLET, designed_probs, make_review_run

PACK_ARGS = ["pack", "demo", "--count", "40", "--size", "32", "--split", "1,1,2", "--stratify", "--workers", "1",
             "--quiet"]


def _row(reader, image_id, category, verdict, note=""):
    return Verdict("run", "test", image_id, reader, category, verdict, note, None, "2026-01-01T00:00:00+00:00")


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_which_verdicts_are_label_problems():
    assert is_label_problem("FP", "label missed a pneumothorax") and is_label_problem("FN", "label doubtful")
    assert is_label_problem("TN", "disagree") and is_label_problem("TP", "disagree")
    assert not is_label_problem("FP", "model wrong") and not is_label_problem("FN", "unsure")
    assert not is_label_problem("FP", None) and not is_label_problem("FP", "label doubtful")  # not an FP verdict
    assert is_label_problem(None, "label doubtful")  # stored without a category: by the verdict alone


def test_relabel_cases_lists_flagged_cases_with_every_readers_verdict():
    rows = [
        _row("bob", "a", "FP", "model wrong", "rib edge"), _row("alice", "a", "FP", "label missed a pneumothorax"),
        _row("alice", "b", "FP", "label missed a pneumothorax", "apex"), _row("bob", "b", "FP", "label missed a pneumothorax"),
        _row("alice", "c", "FP", "model wrong"), _row("bob", "c", "FP", "unsure"),
        _row("carol", "d", "TN", None, "only a note"),
    ]
    got = relabel_cases(rows, sources={"a": "imgs/a.dcm"})
    assert [c.id for c in got] == ["a", "b"]
    a = got[0]
    assert (a.source, a.category, a.flagged_by) == ("imgs/a.dcm", "FP", ("alice",))
    assert a.verdicts == "alice: label missed a pneumothorax; bob: model wrong"
    assert a.notes == "bob: rib edge" and got[1].notes == "alice: apex" and got[1].source == ""
    assert [c.id for c in relabel_cases(rows, min_readers=2)] == ["b"]
    with pytest.raises(InputError, match="at least 1"):
        relabel_cases(rows, min_readers=0)


def test_relabel_list_is_read_back_by_the_exclusion_reader_and_never_overwritten(tmp_path):
    cases = [RelabelCase("=HYPERLINK(1)", "-x.png", "FP", "alice: label missed a pneumothorax", "", ("alice",)),
             RelabelCase("plain", "p.png", "FN", "bob: label doubtful", "+1 on this", ("bob",))]
    out = write_relabel_list(cases, tmp_path / "list.csv")
    rows = _read(out)
    assert list(rows[0]) == list(RELABEL_COLUMNS)
    assert rows[0]["id"] == "'=HYPERLINK(1)" and rows[0]["source"] == "'-x.png" and rows[1]["notes"] == "'+1 on this"
    assert read_list_ids(out) == ["=HYPERLINK(1)", "plain"]  # the ' prefix undone
    before = out.read_bytes()
    with pytest.raises(InputError, match="already exists; use --force"):
        write_relabel_list(cases[:1], out)
    assert out.read_bytes() == before
    write_relabel_list(cases[:1], out, force=True)
    assert [r["id"] for r in _read(out)] == ["'=HYPERLINK(1)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.csv"]  # no temporary file left
    with pytest.raises(InputError, match="folder not found"):
        write_relabel_list(cases, tmp_path / "missing" / "list.csv")


def test_the_store_owns_the_relabel_list_name_and_columns(tmp_path):
    assert relabel_path(tmp_path, "dev") == tmp_path / "relabel_dev.csv"
    with pytest.raises(InputError, match="unknown split 'validation'"):
        relabel_path(tmp_path, "validation")
    with pytest.raises(InputError, match=r"needs 5 values \(id, source, category, verdicts, notes\), got 2"):
        write_list(tmp_path / "short.csv", [("a", "b")])
    assert not (tmp_path / "short.csv").exists()
    out = write_list(tmp_path / "l.csv", [("@a", "", "FP", "", "")])
    assert out.read_text(encoding="utf-8") == '"id","source","category","verdicts","notes"\n"\'@a","","FP","",""\n'
    assert read_list_ids(out) == ["@a"]


def test_old_pack_without_sources_gives_an_empty_source_column(tmp_path, monkeypatch):
    pack = write_test_pack(tmp_path / "old.h5", counts=(4, 4, 8), size=32)
    run = make_review_run(tmp_path / "r1", pack)
    with h5py.File(pack, "r") as f:
        first = f["ids_test"][0].decode()
    VerdictStore.for_run(run).set_verdict("r1", "test", first, "label doubtful", reader="alice")
    result = curate(run, "test")
    assert result.path == run / "relabel_test.csv" and [c.id for c in result.cases] == [first]
    assert _read(result.path)[0]["source"] == "" and "before source references" in result.sources_note
    monkeypatch.chdir(run)  # "." names the run folder too (reviews are keyed by its name)
    assert [c.id for c in curate(".", "test", "again.csv").cases] == [first]


def test_curate_command_errors(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    assert main(["curate", str(run)]) == 2
    assert "no reviews yet" in capsys.readouterr().err
    assert main(["curate", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert main(["curate", str(run), "--verdicts", str(tmp_path / "nope.sqlite")]) == 2
    assert "nope.sqlite: review file not found" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite").exists()  # not created by looking


def test_two_readers_curate_and_repack_without_the_flagged_cases(tmp_path, capsys):
    """The round trip: demo pack -> review run (fixed predictions) -> two readers' verdicts ->
    curate -> LIST.csv -> pack --exclude LIST.csv has none of those ids and all the others."""
    pack = tmp_path / "demo.h5"
    assert main([*PACK_ARGS, "--out", str(pack)]) == 0
    run = make_review_run(tmp_path / "run1", pack)
    with h5py.File(pack, "r") as f:
        masks = f["Y_test"][()]
        ids = [s.decode() for s in f["ids_test"][()]]
        all_ids = {s.decode() for split in ("train", "dev", "test") for s in f[f"ids_{split}"][()]}
    _, cases = evaluate.evaluate_stats(evaluate.prob_stats(designed_probs(masks), masks),
                                       evaluate.Triplet.from_dict(REVIEW_TRIPLET), ids)
    by_cat: dict[str, list[str]] = {}
    for i, c in zip(cases["id"], cases["category"]):
        by_cat.setdefault(str(c), []).append(str(i))
    fp, fn, tn = by_cat["FP"], by_cat["FN"], by_cat["TN"]
    assert len(fp) >= 3 and fn and tn

    # each reader on their own machine: two review files, merged by --verdicts
    alice = VerdictStore(tmp_path / "alice.sqlite")
    bob = VerdictStore(tmp_path / "bob.sqlite")
    alice.set_verdict("run1", "test", fp[0], "label missed a pneumothorax", category="FP", reader="alice")
    bob.set_verdict("run1", "test", fp[0], "label missed a pneumothorax", category="FP", reader="bob", note="apex")
    alice.set_verdict("run1", "test", fp[1], "label missed a pneumothorax", category="FP", reader="alice")
    bob.set_verdict("run1", "test", fp[1], "model wrong", category="FP", reader="bob")
    alice.set_verdict("run1", "test", fp[2], "model wrong", category="FP", reader="alice")
    bob.set_verdict("run1", "test", fp[2], "model wrong", category="FP", reader="bob")
    alice.set_verdict("run1", "test", fn[0], "label doubtful", category="FN", reader="alice")
    bob.set_verdict("run1", "test", tn[0], "agree", category="TN", reader="bob")

    out = tmp_path / "LIST.csv"
    files = [str(tmp_path / "alice.sqlite"), str(tmp_path / "bob.sqlite")]
    assert main(["curate", str(run), "--split", "test", "--out", str(out), "--verdicts", *files]) == 0
    text = capsys.readouterr().out
    assert "3 cases flagged as label problems in test (readers: alice, bob" in text and f"--exclude {out}" in text
    rows = _read(out)
    flagged = sorted([fp[0], fp[1], fn[0]])
    assert [r["id"] for r in rows] == flagged
    row = {r["id"]: r for r in rows}
    assert row[fp[1]]["verdicts"] == "alice: label missed a pneumothorax; bob: model wrong"
    assert row[fp[0]]["notes"] == "bob: apex" and row[fn[0]]["category"] == "FN"
    assert all(r["source"].startswith("demo:") for r in rows)  # the pack's source references

    # both readers required: only the case both flagged
    both = tmp_path / "BOTH.csv"
    assert main(["curate", str(run), "--out", str(both), "--verdicts", *files, "--min-readers", "2"]) == 0
    assert [r["id"] for r in _read(both)] == [fp[0]]
    before = out.read_bytes()
    assert main(["curate", str(run), "--out", str(out), "--verdicts", *files, "--min-readers", "2"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before

    repacked = tmp_path / "clean.h5"
    assert main([*PACK_ARGS, "--exclude", str(out), "--out", str(repacked)]) == 0
    assert "excluded 3 images listed in" in capsys.readouterr().out
    with h5py.File(repacked, "r") as f:
        kept = [s.decode() for split in ("train", "dev", "test") for s in f[f"ids_{split}"][()]]
        assert sorted(v.decode() for v in f["excluded_ids"][()]) == flagged
    assert len(kept) == len(set(kept)) == 37 and set(kept) == all_ids - set(flagged)
