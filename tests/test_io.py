"""Atomic writes: all or nothing, ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from pneumo._io import APP_FORCE, atomic_folder, atomic_path, atomic_write_json, read_json, refuse_existing
from pneumo.errors import InputError


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert read_json(target) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "b.json", [1])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o644


def test_read_json_tolerates_missing_and_partial(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    (tmp_path / "p.json").write_text('{"a": ')
    assert read_json(tmp_path / "p.json") is None


def test_read_json_never_raises_on_damage(tmp_path):
    from pneumo._io import load_json

    (tmp_path / "utf.json").write_bytes(b'{"state": "\xff"}')
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_json(tmp_path / "utf.json") is None and read_json(tmp_path / "dir.json") is None
    assert load_json(tmp_path / "utf.json") == (None, "not valid UTF-8 text")
    assert load_json(tmp_path / "dir.json") == (None, "is a folder, not a file")
    assert load_json(tmp_path / "none.json") == (None, "missing")
    assert load_json(tmp_path / "list.json") == ([1, 2], None)
    assert load_json(tmp_path / "p.json")[1] == "missing"
    (tmp_path / "p.json").write_text('{"a": ')
    assert load_json(tmp_path / "p.json")[1].startswith("not valid JSON")


def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    """Durable, not only atomic: the data and then the rename reach the disk."""
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_json(tmp_path / "c.json", {"x": 2})
    assert synced == [False, True]  # the temporary file before the rename, the folder after it
    assert read_json(tmp_path / "c.json") == {"x": 2}


def test_now_iso_is_utc_to_the_second():
    from datetime import datetime

    from pneumo._io import now_iso

    stamp = now_iso()
    assert stamp.endswith("+00:00") and datetime.fromisoformat(stamp).microsecond == 0


def test_refuse_existing_names_the_file_and_the_control(tmp_path):
    """The one overwrite rule: an existing file, folder or dangling link is refused unless
    forced; the message names the path and the control that replaces it."""
    new = tmp_path / "new.csv"
    assert refuse_existing(new, False) == new
    (tmp_path / "old.csv").write_text("keep")
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("old.csv", "folder", "dangling"):
        with pytest.raises(InputError, match=rf"{name}: already exists; use --force to replace it"):
            refuse_existing(tmp_path / name, False)
        assert refuse_existing(tmp_path / name, True) == tmp_path / name
    with pytest.raises(InputError, match='use the "Replace existing" checkbox'):
        refuse_existing(tmp_path / "old.csv", False, flag=APP_FORCE)
    assert (tmp_path / "old.csv").read_text() == "keep"


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    """A forced folder output (demo-data) holds only the new files, and a failure keeps the old."""
    target = tmp_path / "train"
    target.mkdir()
    (target / "old.png").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "new.png").write_text("half")
            raise RuntimeError("crash")
    assert sorted(os.listdir(tmp_path)) == ["train"] and os.listdir(target) == ["old.png"]
    with atomic_folder(target) as tmp:
        (tmp / "new.png").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["train"] and os.listdir(target) == ["new.png"]


def test_demo_folders_refuse_existing_and_force_leaves_no_stale_phantom(tmp_path):
    """Issue 18 item 2: demo-data wrote into existing folders; a smaller forced rewrite left
    the earlier run's extra PNGs mixed in."""
    from pneumo.ingest.packer import write_demo_folders

    images, masks = write_demo_folders(tmp_path, 4, size=16, workers=1)
    assert len(os.listdir(images)) == 4
    with pytest.raises(InputError, match=r"train: already exists; use --force"):
        write_demo_folders(tmp_path, 2, size=16, workers=1)
    assert len(os.listdir(images)) == 4 and len(os.listdir(masks)) == 4
    write_demo_folders(tmp_path, 2, size=16, workers=1, force=True)
    assert len(os.listdir(images)) == 2 and len(os.listdir(masks)) == 2
    assert sorted(os.listdir(tmp_path)) == ["masks", "train"]


def test_one_csv_writer_quotes_every_cell_and_guards_formulas(tmp_path):
    """Issue 18 item 4: a bare carriage return in an id was not quoted (rows end in LF), so
    `pack --exclude relabel.csv` read "cr", "here0" as two ids. pneumo's one CSV writer quotes
    every cell and keeps the formula guard; what it writes reads back as written."""
    import csv

    from pneumo._io import CsvWriter, csv_text, csv_value

    rows = [["id", "note", "score"], ["cr\rhere0", "a,b\nc", -0.5], ["=1+20", "@x", 3]]
    text = csv_text(rows)
    assert text.splitlines()[0] == '"id","note","score"'
    assert '"cr\rhere0"' in text and "\"'=1+20\"" in text and "\"'@x\"" in text and '"-0.5"' in text
    back = list(csv.reader(text.splitlines(keepends=True)))
    assert [[csv_value(c) for c in r] for r in back] == [[str(c) for c in r] for r in rows]
    with open(tmp_path / "f.csv", "w", newline="", encoding="utf-8") as f:
        CsvWriter(f).writerows(rows)
    with open(tmp_path / "f.csv", encoding="utf-8", newline="") as f:
        assert f.read() == text


def test_every_csv_pneumo_writes_goes_through_the_one_writer():
    """No module writes CSV with the csv module directly (tests/ and bench/ may)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    strays = []
    for path in sorted((root / "pneumo").rglob("*.py")) + sorted((root / "pneumo_app").rglob("*.py")) \
            + sorted((root / "app_pages").rglob("*.py")):
        if path.name == "_io.py" and path.parent.name == "pneumo":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("writer", "DictWriter") \
                    and isinstance(node.value, ast.Name) and node.value.id == "csv":
                strays.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not strays, f"CSV written without pneumo._io.CsvWriter: {strays}"


def test_a_relabel_list_with_a_carriage_return_id_reads_back_one_id(tmp_path):
    """The reproduction's second half: the relabel list `curate` writes, read by `--exclude`."""
    from pneumo.store.relabel import read_list_ids, write_list

    path = write_list(tmp_path / "relabel.csv", [["cr\rhere0", "images/cr\rhere0.png", "FP", "a: missed", "-"]])
    assert read_list_ids(path) == ["cr\rhere0"]
