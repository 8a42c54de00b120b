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
