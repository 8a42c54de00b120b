"""pneumo.settings: the workspace, and one clear message when it cannot be used (issue 18 item 12).

A read-only folder is simulated by replacing ``settings.write_problem`` (the tests may run as
root, for whom permissions do not hold); what is checked is that every command that writes
asks it before any work and stops with one line, leaving the workspace as it was.
"""
from __future__ import annotations

import errno
import os

import pytest

from conftest import write_test_pack
from pneumo import settings
from pneumo.cli import main
from pneumo.errors import InputError


@pytest.fixture
def ws(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(ws))
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    return ws


def test_a_setting_that_names_a_file_is_named(ws, tmp_path, monkeypatch):
    assert settings.workspace_problem() is None  # missing folders are made when needed
    ws.write_text("x")
    assert settings.workspace_problem() == f"PNEUMO_WORKSPACE={ws}: is a file, not a folder; set PNEUMO_WORKSPACE to a folder"
    ws.unlink()
    ws.mkdir()
    (ws / "runs").write_text("x")
    assert settings.workspace_problem() == (f"PNEUMO_WORKSPACE={ws}: holds {ws / 'runs'}, which is a file, not a folder; "
                                            "set PNEUMO_WORKSPACE to a folder")
    monkeypatch.setenv("PNEUMO_RUNS_DIR", str(tmp_path / "f"))
    (tmp_path / "f").write_text("x")
    assert settings.workspace_problem().startswith(f"PNEUMO_RUNS_DIR={tmp_path / 'f'}: is a file")


def test_write_problem_names_where_it_stops(tmp_path, monkeypatch):
    assert settings.write_problem(tmp_path / "new" / "deeper") is None
    (tmp_path / "f").write_text("x")
    assert settings.write_problem(tmp_path / "f" / "sub") == f"{tmp_path / 'f'} is a file, not a folder"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    assert settings.write_problem(tmp_path) == "no permission to write"
    assert settings.write_problem(tmp_path / "new") == f"no permission to write at {tmp_path}"
    with pytest.raises(InputError, match=rf"^{tmp_path / 'new'}: cannot be written \(no permission to write at "):
        settings.check_writable(tmp_path / "new")


def test_quickstart_in_a_workspace_that_is_a_file_is_one_line(ws, capsys):
    """Issue 18 item 12: `quickstart` with PNEUMO_WORKSPACE naming a file printed a traceback."""
    ws.write_text("x")
    assert main(["quickstart"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: PNEUMO_WORKSPACE={ws}: is a file, not a folder; set PNEUMO_WORKSPACE to a folder\n"
    assert ws.read_text() == "x"


def _read_only(root):
    def problem(folder):
        return "read-only file system" if str(os.path.abspath(folder)).startswith(str(root)) else None
    return problem


def test_commands_that_write_stop_first_in_a_read_only_workspace(ws, tmp_path, monkeypatch, capsys):
    """Issue 18 item 12: `pack` and `evaluate` in a read-only workspace ended in tracebacks.
    Every command that writes there now stops before any work, naming the folder."""
    from pneumo.store.verdicts import VerdictStore

    (ws / "data").mkdir(parents=True)
    pack = write_test_pack(ws / "data" / "p.h5", counts=(4, 2, 2), size=32)
    run = ws / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "best.keras").write_bytes(b"x")
    VerdictStore.for_run(run).set_verdict("r1", "test", "a", "model wrong", category="FP")
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    monkeypatch.setattr(settings, "write_problem", _read_only(ws))
    commands = {
        "pack": ["pack", "demo", "--count", "8", "--size", "32", "--out", str(ws / "data" / "new.h5")],
        "evaluate": ["evaluate", str(run)],
        "train": ["train", str(pack), "--encoder-weights", "none"],
        "train --run-dir": ["train", str(pack), "--run-dir", str(ws / "runs" / "r2"), "--encoder-weights", "none"],
        "quickstart": ["quickstart"],
        "demo-data": ["demo-data", str(ws / "png"), "--count", "2", "--size", "16"],
        "review --export": ["review", str(run), "--export", str(ws / "v.csv")],
        "curate": ["curate", str(run)],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert "cannot be written (read-only file system" in err, (name, err)
    assert sorted(p.relative_to(ws) for p in ws.rglob("*")) == before


def test_a_permission_error_the_checks_missed_is_one_line(monkeypatch, capsys):
    import pneumo.cli.info as info

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/data/x.h5")

    monkeypatch.setattr(info, "run", denied)
    assert main(["info", "whatever.h5"]) == 2
    assert capsys.readouterr().err == "error: /srv/data/x.h5: Permission denied\n"


def test_no_job_starts_in_a_read_only_runs_folder(ws, monkeypatch):
    """The app's Start buttons (training, evaluation, the quick demo) go through the launcher's
    start lock, which names a folder it cannot write instead of a PermissionError traceback."""
    from pneumo.config import TrainConfig
    from pneumo.train import jobs

    monkeypatch.setattr(settings, "write_problem", _read_only(ws))
    with pytest.raises(InputError, match=r"runs: cannot be written \(read-only file system.*; no job can start there"):
        jobs.start_quick_demo()
    with pytest.raises(InputError, match="cannot be written"):
        jobs.start_training(TrainConfig(pack=str(ws / "data" / "p.h5")), ws / "runs" / "r1")
    from pneumo.store.run_list import new_run_dir

    with pytest.raises(InputError, match=r"runs: cannot be written \(read-only file system.*; no run can start there"):
        new_run_dir()  # the Training page's Start makes its run folder first
    assert not ws.exists()
