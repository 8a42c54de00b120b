"""pneumo.store.run: the run folder's one owner; damaged files never break a listing or a reader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_test_pack
from pneumo import fingerprint
from pneumo.store import run as runs
from pneumo.errors import InputError

GOOD_HISTORY = ",".join(runs.HISTORY_COLUMNS) + "\n1,train,0.5,0.2,0.1,0.6,0.3,0.2,0.001,1.5\n"


def _run(root: Path, name: str, status: dict | None = None, config: dict | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config if config is not None else {"epochs": 2, "fine_tune_epochs": 0}))
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    return run


def test_damaged_runs_are_listed_as_damaged_with_the_reason(tmp_path):
    fine = _run(tmp_path, "fine", {"state": "finished", "started": "2026-01-05T00:00:00+00:00", "epochs": 2})
    (fine / "history.csv").write_text(GOOD_HISTORY)
    bad_utf8 = _run(tmp_path, "bad-utf8")
    (bad_utf8 / "status.json").write_bytes(b'{"state": "fin\xff\xfeished"}')
    folder = _run(tmp_path, "folder-status")
    (folder / "status.json").mkdir()
    history = _run(tmp_path, "bad-history", {"state": "stopped"})
    (history / "history.csv").write_bytes(b"epoch,stage\n1,\xff\xfe\n")
    epochs = _run(tmp_path, "epochs-ten", {"state": "failed", "error": "x"}, config={"epochs": "ten"})
    not_object = _run(tmp_path, "config-list", {"state": "stopped"}, config=[1, 2])

    infos = {i.name: i for i in runs.list_runs(tmp_path)}  # never raises
    assert set(infos) == {"fine", "bad-utf8", "folder-status", "bad-history", "epochs-ten", "config-list"}
    assert infos["fine"].damaged is None and infos["fine"].best_epoch == 1 and infos["fine"].epochs == 2
    assert infos["bad-utf8"].state == "damaged" and "status.json: not valid UTF-8" in infos["bad-utf8"].damaged
    assert infos["folder-status"].state == "damaged" and "is a folder" in infos["folder-status"].damaged
    assert infos["bad-history"].state == "stopped" and "history.csv: not valid UTF-8" in infos["bad-history"].damaged
    assert infos["bad-history"].epochs_done == 0
    assert infos["epochs-ten"].epochs is None and "'ten'" in infos["epochs-ten"].damaged
    assert infos["config-list"].config == {} and "not a JSON object" in infos["config-list"].damaged
    assert runs.active_run(tmp_path) is None
    assert runs.read_status(bad_utf8)["state"] == "damaged"
    assert runs.read_history(history) == []
    # a damaged run folder counts as taken
    assert "damaged" in runs.holds_run(bad_utf8)


def test_holds_run_is_the_one_rule(tmp_path):
    run = tmp_path / "r"
    assert runs.holds_run(run) is None  # absent
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert runs.holds_run(run) is None  # prepared only
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": 4242}))
    assert runs.holds_run(run, own_pid=4242) is None  # the launcher's status for this very trainer
    assert runs.holds_run(run, own_pid=1) == "its status.json says 'running'"
    (run / "last.keras").write_bytes(b"x")
    assert runs.holds_run(run, own_pid=4242) == "it has last.keras"


def test_writer_history_round_trip_and_truncation(tmp_path):
    w = runs.RunWriter(tmp_path, "2026-01-01T00:00:00+00:00", epochs=3, resumed=False)
    for e in (1, 2, 3):
        w.append_history({"epoch": e, "stage": "train", "loss": 1.0 / e, "val_loss": 2.0 / e, "val_dice": 0.1 * e})
    w.truncate_history(2)
    rows = runs.read_history(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["loss"] == 0.5 and rows[0]["dice"] is None
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(runs.HISTORY_COLUMNS)
    assert runs.best_row(rows)["epoch"] == 2
    s = runs.summary("finished", tmp_path, 3, 1.234)
    assert s["best_epoch"] == 2 and s["best_val_dice"] == pytest.approx(0.2) and s["epochs_done"] == 2
    w.set_status(state="finished")
    status = runs.read_status(tmp_path)
    assert status["state"] == "finished" and status["pid"] == os.getpid()


def test_backup_state_checks(tmp_path):
    assert runs.read_backup(tmp_path, 3) is None
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_bytes(b"\xff")
    with pytest.raises(InputError, match="resume state is damaged"):
        runs.read_backup(tmp_path, 3)
    (tmp_path / "last.keras").write_bytes(b"x")
    (tmp_path / "backup" / "state.json").write_text(json.dumps({"epoch": 5, "stage": "train", "weights": "last.keras"}))
    with pytest.raises(InputError, match="beyond the config's 3 epochs"):
        runs.read_backup(tmp_path, 3)
    assert runs.read_backup(tmp_path, 5)["epoch"] == 5


def test_stop_file_and_log_tail(tmp_path):
    runs.request_stop(tmp_path)
    assert runs.stop_requested(tmp_path)
    runs.clear_stop(tmp_path)
    assert not runs.stop_requested(tmp_path)
    with pytest.raises(InputError, match="not found"):
        runs.request_stop(tmp_path / "missing")
    (tmp_path / "train.log").write_bytes(b"".join(b"line %d\n" % i for i in range(100)) + b"\xff bad\rlast\n")
    assert runs.log_tail(tmp_path / "train.log", lines=2).splitlines() == ["\ufffd bad", "last"]
    assert runs.log_tail(tmp_path / "nothing.log") == ""


def test_pack_fingerprint_refuses_a_changed_pack(tmp_path):
    pack = write_test_pack(tmp_path / "p.h5", counts=(4, 2, 2), size=32)
    run = tmp_path / "run"
    run.mkdir()
    assert fingerprint.check_pack(run, pack)["size"] == pack.stat().st_size  # no record yet: passes
    fingerprint.record_pack(run, fingerprint.pack_fingerprint(pack))
    fingerprint.check_pack(run, pack)  # unchanged
    os.utime(pack, (1_000_000_000, 1_000_000_000))
    with pytest.raises(InputError, match=r"changed since run run trained on it \(modification time\).*--allow-changed-pack"):
        fingerprint.check_pack(run, pack)
    write_test_pack(pack, counts=(4, 2, 3), size=32, seed=1)
    with pytest.raises(InputError, match="image ids"):
        fingerprint.check_pack(run, pack)
    assert fingerprint.check_pack(run, pack, allow_changed=True)["ids_sha256"] != json.loads(
        (run / "pack.json").read_text())["ids_sha256"]


def test_evaluation_refuses_a_changed_pack(tmp_path):
    """`pneumo evaluate` checks the fingerprint before it loads any model."""
    from pneumo import predict

    pack = write_test_pack(tmp_path / "p.h5", counts=(4, 2, 2), size=32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"pack": str(pack)}))
    (run / "best.keras").write_bytes(b"never loaded")
    fingerprint.record_pack(run, {**fingerprint.pack_fingerprint(pack), "size": 1})
    with pytest.raises(InputError, match="size 1 -> "):
        predict.evaluate_run(run, "test")


def test_eval_progress_file(tmp_path):
    calls = []
    report = runs.EvalProgress(tmp_path, "test", lambda d, n: calls.append((d, n)), interval=0.0)
    report(3, 12)
    info = json.loads(runs.eval_progress_path(tmp_path, "test").read_text())
    assert info["stage"] == "predict" and info["fraction"] == 0.25 and info["split"] == "test"
    report.stage("done")
    info = json.loads(runs.eval_progress_path(tmp_path, "test").read_text())
    assert info["stage"] == "done" and info["fraction"] == 1.0 and calls == [(3, 12)]


def test_runs_imports_without_tensorflow():
    code = "import sys, pneumo.store.run, pneumo.train.jobs; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


def test_pages_list_damaged_runs_instead_of_breaking(tmp_path, monkeypatch):
    """Home and Training render with damaged run folders in the workspace, naming the damage."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    for name in ("PNEUMO_DATA_DIR", "PNEUMO_RUNS_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "data").mkdir()
    write_test_pack(tmp_path / "data" / "small.h5", counts=(4, 2, 2), size=32)  # no first-launch pack
    bad = _run(tmp_path / "runs", "bad-utf8")
    (bad / "status.json").write_bytes(b"\xff\xfe")
    _run(tmp_path / "runs", "epochs-ten", {"state": "stopped"}, config={"epochs": "ten"})
    at = AppTest.from_file(str(Path(__file__).parents[1] / "streamlit_app.py"), default_timeout=60)
    at.run()
    for page in ("app_pages/home.py", "app_pages/training.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        table = at.dataframe[-1].value
        errors = " ".join(str(v) for v in table["error"])
        assert "status.json: not valid UTF-8" in errors and "'ten'" in errors, (page, errors)
