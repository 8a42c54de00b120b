"""Atomic writes: all or nothing, ordinary permissions."""
from __future__ import annotations

import os
import stat

import pytest

from pneumo._io import atomic_path, atomic_write_json, read_json


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
