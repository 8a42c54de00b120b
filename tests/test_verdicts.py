"""pneumo.store.verdicts with readers (issue 14): rows keyed by reader, reader names checked, the
export's reader column, and the in-place migration of first-release review files."""
from __future__ import annotations

import csv
import io
import multiprocessing as mp
import sqlite3

import pytest

from pneumo.store import verdicts
from pneumo.errors import InputError

_FIRST_RELEASE = ("CREATE TABLE verdicts (run TEXT NOT NULL, split TEXT NOT NULL, image_id TEXT NOT NULL, "
                  "verdict TEXT, note TEXT NOT NULL DEFAULT '', category TEXT, reviewer TEXT, "
                  "updated TEXT NOT NULL, PRIMARY KEY (run, split, image_id))")
_OLD_ROWS = [
    ("r", "test", "a", "model wrong", "rib edge", "FP", "dr x", "2025-01-01T00:00:00+00:00"),
    ("r", "test", "b", None, "look again", "FN", None, "2025-01-02T00:00:00+00:00"),  # a note alone
    ("r", "test", "c", None, "", None, None, "2025-01-03T00:00:00+00:00"),  # a phantom row of an old version
    ("r", "dev", "a", "agree", "", "TP", None, "2025-01-04T00:00:00+00:00"),
]


def _first_release_file(path):
    with sqlite3.connect(path) as con:
        con.execute(_FIRST_RELEASE)
        con.executemany("INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _OLD_ROWS)
    con.close()
    return path


def _raw_rows(path):
    con = sqlite3.connect(path)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(verdicts)")]
        rows = con.execute("SELECT * FROM verdicts ORDER BY rowid").fetchall()
        version = con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()
    return cols, rows, version


def test_first_release_file_migrates_to_reader_unnamed_without_loss(tmp_path):
    path = _first_release_file(tmp_path / "reviews.sqlite")
    store = verdicts.VerdictStore(path)
    cols, rows, version = _raw_rows(path)
    assert "reader" in cols and "thresholds" in cols and version == 3  # readers (2), then thresholds (3)
    # every row kept, the phantom one included (reads skip it), all under "unnamed"
    assert len(rows) == len(_OLD_ROWS)
    by_id = {(r[cols.index("split")], r[cols.index("image_id")]): r for r in rows}
    for old in _OLD_ROWS:
        new = by_id[(old[1], old[2])]
        assert new[cols.index("reader")] == "unnamed"
        assert tuple(new[cols.index(c)] for c in ("run", "split", "image_id", "verdict", "note", "category",
                                                  "reviewer", "updated")) == old
    a = store.get("r", "test", "a")  # the default reader of single-row calls is "unnamed"
    assert (a.reader, a.verdict, a.note, a.reviewer) == ("unnamed", "model wrong", "rib edge", "dr x")
    assert [v.image_id for v in store.verdicts("r", "test")] == ["a", "b"]
    assert store.readers("r", "test") == ["unnamed"]
    # a second reader can now judge the same case beside the migrated verdict
    store.set_verdict("r", "test", "a", "label missed a pneumothorax", category="FP", reader="alice")
    assert {v.reader: v.verdict for v in store.verdicts("r", "test") if v.image_id == "a"} == {
        "alice": "label missed a pneumothorax", "unnamed": "model wrong"}


def test_migration_is_idempotent(tmp_path):
    path = _first_release_file(tmp_path / "reviews.sqlite")
    verdicts.VerdictStore(path).set_verdict("r", "test", "z", "unsure", category="FP", reader="bob")
    first = _raw_rows(path)
    verdicts.VerdictStore(path)
    verdicts.VerdictStore(path)
    assert _raw_rows(path) == first and len(first[1]) == len(_OLD_ROWS) + 1


def _open(path):
    verdicts.VerdictStore(path)


def test_two_processes_opening_an_old_file_at_once_migrate_it_once(tmp_path):
    path = _first_release_file(tmp_path / "reviews.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_open, args=(str(path),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cols, rows, _ = _raw_rows(path)
    assert "reader" in cols and len(rows) == len(_OLD_ROWS)


def test_a_file_that_cannot_be_migrated_is_left_as_it_was(tmp_path):
    path = tmp_path / "reviews.sqlite"
    with sqlite3.connect(path) as con:  # hand-made: no image_id column
        con.execute("CREATE TABLE verdicts (run TEXT, split TEXT, verdict TEXT, updated TEXT)")
        con.execute("INSERT INTO verdicts VALUES ('r', 'test', 'agree', 'x')")
    con.close()
    with pytest.raises(InputError, match=r"reviews\.sqlite: not a usable review database .*no image_id column"):
        verdicts.VerdictStore(path)
    cols, rows, version = _raw_rows(path)
    assert cols == ["run", "split", "verdict", "updated"] and rows == [("r", "test", "agree", "x")]
    assert version == 0


def test_read_only_store_reads_a_first_release_file_without_changing_it(tmp_path):
    path = _first_release_file(tmp_path / "alice.sqlite")
    before = path.read_bytes()
    store = verdicts.VerdictStore(path, read_only=True)
    assert [(v.image_id, v.reader, v.verdict, v.note) for v in store.verdicts("r", "test")] == [
        ("a", "unnamed", "model wrong", "rib edge"), ("b", "unnamed", None, "look again")]
    assert store.readers("r", "test") == ["unnamed"] and store.get("r", "dev", "a").verdict == "agree"
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["alice.sqlite"]
    with pytest.raises(InputError, match=r"alice\.sqlite: verdicts cannot be saved \(opened read-only\)"):
        store.set_verdict("r", "test", "z", "unsure", category="FP")
    assert path.read_bytes() == before
    with pytest.raises(InputError, match=r"missing\.sqlite: review file not found"):
        verdicts.VerdictStore(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_a_locked_database_is_reported_busy_not_unusable(tmp_path):
    path = tmp_path / "reviews.sqlite"
    with sqlite3.connect(path) as con:  # a valid file in rollback-journal mode, as another tool may leave it
        con.execute(_FIRST_RELEASE)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(InputError, match=r"reviews\.sqlite: the review database is busy") as e:
            verdicts.VerdictStore(path, busy_timeout_s=0.05)
        assert "not a usable" not in str(e.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "reader" in _raw_rows(verdicts.VerdictStore(path).path)[0]  # usable once released


def test_readers_judge_the_same_case_independently(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    store.set_verdict("r", "test", "a", "model wrong", category="FP", reader="alice")
    store.set_verdict("r", "test", "a", "label missed a pneumothorax", category="FP", reader="bob", note="apex")
    store.set_verdict("r", "test", "b", "model missed it", category="FN", reader="bob")
    store.set_note("r", "test", "c", "later", reader="carol")
    store.set_verdict("r", "dev", "a", "agree", category="TP", reader="dave")
    assert store.get("r", "test", "a", reader="alice").verdict == "model wrong"
    assert store.get("r", "test", "a", reader="bob").note == "apex"
    assert store.get("r", "test", "a") is None  # "unnamed" has not judged it
    assert store.readers("r", "test") == ["alice", "bob", "carol"]
    assert [(v.image_id, v.reader) for v in store.verdicts("r", "test")] == [
        ("a", "alice"), ("a", "bob"), ("b", "bob"), ("c", "carol")]
    assert [v.image_id for v in store.verdicts("r", "test", reader="bob")] == ["a", "b"]
    assert store.all("r", "test", "bob") == store.verdicts("r", "test", "bob")
    assert store.reviewed_ids("r", "test") == {"a", "b", "c"}
    assert store.reviewed_ids("r", "test", reader="alice") == {"a"}
    # clearing is per reader
    assert store.clear_verdict("r", "test", "a", reader="alice") is None
    assert store.get("r", "test", "a", reader="bob").verdict == "label missed a pneumothorax"
    store.clear("r", "test", "a", reader="bob")
    assert store.reviewed_ids("r", "test") == {"b", "c"}


def test_notes_of_different_readers_never_conflict_but_one_readers_tabs_do(tmp_path):
    tab1, tab2 = verdicts.VerdictStore(tmp_path / "r.sqlite"), verdicts.VerdictStore(tmp_path / "r.sqlite")
    tab1.set_note("r", "test", "a", "alice's", reader="alice", expected="")
    tab2.set_note("r", "test", "a", "bob's", reader="bob", expected="")  # bob's row was empty: no conflict
    tab2.set_note("r", "test", "a", "alice again", reader="alice", expected="alice's")
    with pytest.raises(verdicts.NoteConflict) as e:
        tab1.set_note("r", "test", "a", "mine", reader="alice", expected="alice's")
    assert e.value.stored == "alice again"
    assert {v.reader: v.note for v in tab1.verdicts("r", "test")} == {"alice": "alice again", "bob": "bob's"}


@pytest.mark.parametrize("bad, message", [
    ("", "empty"), ("   \t", "empty"), ("x" * 65, "65 characters"), ("al\x07ice", "control character"),
    ("a\nb", "control character"), ("a\u202eb", "control character"), ("a\u2028b", "control character"),
    (None, "must be text"),
])
def test_reader_names_are_checked(tmp_path, bad, message):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    with pytest.raises(InputError, match=message):
        store.set_verdict("r", "test", "a", "agree", category="TN", reader=bad)
    if bad is not None:  # None lists every reader
        with pytest.raises(InputError, match=message):
            store.verdicts("r", "test", reader=bad)
    assert store.verdicts("r", "test") == []


def test_reader_names_are_trimmed_and_normalised(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    store.set_verdict("r", "test", "a", "agree", category="TN", reader="  Zoe\u0308 ")  # e + combining diaeresis
    assert store.readers("r", "test") == ["Zo\u00eb"]
    assert store.get("r", "test", "a", reader="Zo\u00eb").reader == "Zo\u00eb"
    assert verdicts.check_reader("x" * 64) == "x" * 64
    assert verdicts.check_reader("Dr. O'Neil (radiology)") == "Dr. O'Neil (radiology)"


def test_export_carries_the_reader_and_filters_by_reader(tmp_path):
    store = verdicts.VerdictStore(tmp_path / "reviews.sqlite")
    store.set_verdict("r", "test", "a", "model wrong", category="FP", reader="bob")
    store.set_verdict("r", "test", "a", "label missed a pneumothorax", category="FP", reader="alice", note="apex")
    store.set_verdict("r", "test", "b", "agree", category="TN", reader="=cmd")  # a name that looks like a formula
    assert verdicts.EXPORT_COLUMNS == ("run", "split", "image_id", "reader", "category", "verdict", "note",
                                       "reviewer", "updated", "thresholds")
    n = store.export_csv(tmp_path / "all.csv", "r", "test")
    rows = list(csv.DictReader(open(tmp_path / "all.csv", newline="", encoding="utf-8")))
    assert n == 3 and list(rows[0]) == list(verdicts.EXPORT_COLUMNS)
    assert [(r["image_id"], r["reader"], r["verdict"]) for r in rows] == [
        ("a", "alice", "label missed a pneumothorax"), ("a", "bob", "model wrong"), ("b", "'=cmd", "agree")]
    only = list(csv.DictReader(io.StringIO(store.csv_text("r", "test", reader="alice"))))
    assert [(r["image_id"], r["reader"], r["note"]) for r in only] == [("a", "alice", "apex")]
    assert store.export_csv(tmp_path / "none.csv", "r", "test", reader="nobody") == 0
    assert (tmp_path / "none.csv").read_text().strip() == ",".join(f'"{c}"' for c in verdicts.EXPORT_COLUMNS)


def test_label_problem_verdicts_belong_to_their_categories():
    for category, problems in verdicts.LABEL_PROBLEM_VERDICTS.items():
        assert set(problems) <= set(verdicts.VERDICTS[category]) and "unsure" not in problems
    assert "label missed a pneumothorax" in verdicts.LABEL_PROBLEM_VERDICTS["FP"]
    assert "label doubtful" in verdicts.LABEL_PROBLEM_VERDICTS["FN"]


def test_opening_creates_nothing_until_the_first_save(tmp_path):
    """Issue 18 item 12: the Review page created reviews.sqlite (and its run folder) just by
    opening the store; reads of a store with nothing saved are empty."""
    path = tmp_path / "run" / "reviews.sqlite"
    store = verdicts.VerdictStore(path)
    assert store.save_problem is None
    assert store.verdicts("r", "test") == [] and store.get("r", "test", "a") is None
    assert store.readers("r", "test") == [] and store.reviewed_ids("r", "test") == set()
    assert store.csv_text("r", "test").count("\n") == 1  # the header only
    assert not (tmp_path / "run").exists()
    store.set_verdict("r", "test", "a", "model wrong", category="FP")
    assert path.is_file() and verdicts.VerdictStore(path).get("r", "test", "a").verdict == "model wrong"


def test_a_read_only_folder_is_read_and_never_written(tmp_path, monkeypatch):
    """Issue 18 item 12: a run folder nobody can write opens read-only by itself (what exists
    is read; saving raises InputError saying why); SQLite's own read-only mode would need
    to write the -shm file there, so such a file is read as immutable."""
    path = tmp_path / "reviews.sqlite"
    verdicts.VerdictStore(path).set_verdict("r", "test", "a", "model wrong", category="FP")
    before = path.read_bytes()
    monkeypatch.setattr(verdicts, "write_problem", lambda folder: "read-only file system")
    store = verdicts.VerdictStore(path)
    assert store.save_problem == "read-only file system" and store.read_only
    assert store._read_mode == "immutable=1"
    assert [v.image_id for v in store.verdicts("r", "test")] == ["a"]
    with pytest.raises(InputError, match=r"reviews\.sqlite: verdicts cannot be saved \(read-only file system\)"):
        store.set_verdict("r", "test", "b", "unsure", category="FP")
    assert path.read_bytes() == before
    missing = verdicts.VerdictStore(tmp_path / "other" / "reviews.sqlite")  # no file, no folder: empty
    assert missing.verdicts("r", "test") == [] and not (tmp_path / "other").exists()
    with pytest.raises(InputError, match="verdicts cannot be saved"):
        missing.set_note("r", "test", "a", "x")
    assert not (tmp_path / "other").exists()
