"""pneumo.store.run: the run folder's one owner; damaged files never break a listing or a reader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_test_pack
from pneumo.plan import check_pack
from pneumo.store.pack import pack_fingerprint
from pneumo.store import run as runs
from pneumo.store import run_list
from pneumo.store.eval_progress import EvalProgress
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

    infos = {i.name: i for i in run_list.list_runs(tmp_path)}  # never raises
    assert set(infos) == {"fine", "bad-utf8", "folder-status", "bad-history", "epochs-ten", "config-list"}
    assert infos["fine"].damaged is None and infos["fine"].best_epoch == 1 and infos["fine"].epochs == 2
    assert infos["bad-utf8"].state == "damaged" and "status.json: not valid UTF-8" in infos["bad-utf8"].damaged
    assert infos["folder-status"].state == "damaged" and "is a folder" in infos["folder-status"].damaged
    assert infos["bad-history"].state == "stopped" and "history.csv: not valid UTF-8" in infos["bad-history"].damaged
    assert infos["bad-history"].epochs_done == 0
    assert infos["epochs-ten"].epochs is None and "'ten'" in infos["epochs-ten"].damaged
    assert infos["config-list"].config == {} and "not a JSON object" in infos["config-list"].damaged
    assert run_list.active_run(tmp_path) is None
    assert runs.read_status(bad_utf8)["state"] == "damaged"
    assert runs.read_history(history) == []
    # a damaged run folder counts as taken
    assert "damaged" in runs.holds_run(bad_utf8)


def _row(epoch, val_loss, loss="0.5"):
    return f"{epoch},train,{loss},0.2,0.1,{val_loss},0.3,0.2,0.001,1.5\n"


def test_damaged_history_lines_are_named_and_never_counted(tmp_path):
    """Issue 18 item 13: garbage lines counted as epochs ("3 / 2 epochs") and a malformed row
    gave the best val loss."""
    run = _run(tmp_path, "r", {"state": "finished", "started": "2026-01-05T00:00:00+00:00", "epochs": 2})
    (run / "history.csv").write_text(
        ",".join(runs.HISTORY_COLUMNS) + "\n" + _row(1, 0.6)
        + "garbage\n"                    # line 3: one value
        + _row(2, "-5", loss="x")         # line 4: a cell that is not a number
        + _row(9, "0.01")                 # line 5: an epoch out of order (another run's row)
        + _row(2, "0.5")                  # line 6: sound
        + _row(2, "0.4"))                 # line 7: epoch 2 again
    rows, problem = runs.load_history(run)
    assert [r["epoch"] for r in rows] == [1, 2] and runs.best_row(rows)["val_loss"] == 0.5
    assert problem == "history.csv: damaged lines 3, 4, 5, 7 left out (line 3: 1 values for 10 columns)"
    info = run_list.list_runs(tmp_path)[0]
    assert info.epochs_done == 2 and info.best_val_loss == 0.5 and info.damaged == problem
    # a sound-looking row past the run's epochs is still not this run's
    (run / "history.csv").write_text(",".join(runs.HISTORY_COLUMNS) + "\n" + _row(1, 0.6) + _row(2, 0.5) + _row(3, 0.1))
    assert run_list.list_runs(tmp_path)[0].damaged == "history.csv: 3 epochs for a run of 2"
    # the writer carries sound rows only into its next write
    (run / "history.csv").write_text(",".join(runs.HISTORY_COLUMNS) + "\n" + _row(1, 0.6) + "garbage\n")
    runs.RunWriter(run, "2026-01-05T00:00:00+00:00", epochs=2, resumed=True).append_history(
        {"epoch": 2, "stage": "train", "val_loss": 0.5})
    assert runs.load_history(run)[1] is None and [r["epoch"] for r in runs.read_history(run)] == [1, 2]


def test_history_header_and_values_checked(tmp_path):
    (tmp_path / "history.csv").write_text("a,b\n1,2\n")
    assert runs.load_history(tmp_path) == ([], "history.csv: damaged (its first line is not the column names "
                                                + ",".join(runs.HISTORY_COLUMNS) + ")")
    (tmp_path / "history.csv").write_text("epoch,stage,loss\n1.5,train,1\n1,warm-up,1\n1,,\n")
    rows, problem = runs.load_history(tmp_path)
    assert rows == [{"epoch": 1, "stage": "", "loss": None}]  # an older file's empty cells stay sound
    assert problem == "history.csv: damaged lines 2, 3 left out (line 2: epoch '1.5' is not a whole number)"


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
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(f'"{c}"' for c in runs.HISTORY_COLUMNS)
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
    assert check_pack(run, pack)["size"] == pack.stat().st_size  # no record yet: passes
    runs.write_pack_record(run, pack_fingerprint(pack))
    check_pack(run, pack)  # unchanged
    os.utime(pack, (1_000_000_000, 1_000_000_000))
    with pytest.raises(InputError, match=r"changed since run run trained on it \(modification time\).*--allow-changed-pack"):
        check_pack(run, pack)
    write_test_pack(pack, counts=(4, 2, 3), size=32, seed=1)
    with pytest.raises(InputError, match="image ids"):
        check_pack(run, pack)
    assert check_pack(run, pack, allow_changed=True)["ids_sha256"] != json.loads(
        (run / "pack.json").read_text())["ids_sha256"]


def test_evaluation_refuses_a_changed_pack(tmp_path):
    """`pneumo evaluate` checks the fingerprint before it loads any model."""
    from pneumo import predict

    pack = write_test_pack(tmp_path / "p.h5", counts=(4, 2, 2), size=32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"pack": str(pack)}))
    (run / "best.keras").write_bytes(b"never loaded")
    runs.write_pack_record(run, {**pack_fingerprint(pack), "size": 1})
    with pytest.raises(InputError, match="size 1 -> "):
        predict.evaluate_run(run, "test")


def test_eval_progress_file(tmp_path):
    calls = []
    report = EvalProgress(tmp_path, "test", lambda d, n: calls.append((d, n)), interval=0.0)
    report(3, 12)
    info = json.loads(runs.RunFolder(tmp_path).evaluation_progress("test").read_text())
    assert info["stage"] == "predict" and info["fraction"] == 0.25 and info["split"] == "test"
    report.stage("done")
    info = json.loads(runs.RunFolder(tmp_path).evaluation_progress("test").read_text())
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
    garbage = _run(tmp_path / "runs", "garbage-history",  # the newest: the Training page opens it
                   {"state": "finished", "started": "2026-01-05T00:00:00+00:00", "epochs": 2})
    (garbage / "history.csv").write_text(",".join(runs.HISTORY_COLUMNS) + "\n" + _row(1, 0.6) + "garbage\n" + _row(2, 0.5))
    at = AppTest.from_file(str(Path(__file__).parents[1] / "streamlit_app.py"), default_timeout=60)
    at.run()
    for page in ("app_pages/home.py", "app_pages/training.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        table = at.dataframe[-1].value
        errors = " ".join(str(v) for v in table["error"])
        assert "status.json: not valid UTF-8" in errors and "'ten'" in errors, (page, errors)
        assert "history.csv: damaged line 3 left out" in errors, (page, errors)
    # the run's own view says its history is damaged above the curves drawn from the sound rows
    assert any("history.csv: damaged line 3 left out" in w.value.replace("\\", "") for w in at.warning), \
        [w.value for w in at.warning]


# --------------------------------------------------------------------------- the single-writer lock
_HOLDER = """
import sys
from pneumo.store.run import writer_lock
lock = writer_lock(sys.argv[1], "holding for a test").acquire()
print("held", flush=True)
sys.stdin.readline()  # until the test says so (or dies with the pipe closed)
lock.release()
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding a run folder's lock; returns ``start(run) -> Popen`` (once it holds)."""
    procs = []

    def start(run: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"  # the handshake: it holds the lock now
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, holder):
    from pneumo._lock import this_host

    run = tmp_path / "run"
    proc = holder(run)
    with pytest.raises(InputError, match=rf"run folder {run} is being written by pid {proc.pid} on host "
                                         rf"{this_host()} since 20\d\d-.* \(holding for a test\)"):
        runs.writer_lock(run).acquire()
    with pytest.raises(InputError, match=f"pid {proc.pid}"):
        runs.writer_lock(run).check()  # the early check (before TensorFlow) says the same
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    assert proc.wait() == 0
    assert not (run / ".lock").exists()  # removed on release
    with runs.writer_lock(run):  # free again
        runs.writer_lock(run).check()  # this thread's own lock is no refusal


def test_the_lock_dies_with_its_holder(tmp_path, holder):
    """SIGKILL leaves the lock file and its record behind, but the kernel dropped the lock."""
    run = tmp_path / "run"
    proc = holder(run)
    proc.kill()
    proc.wait()
    assert (run / ".lock").exists()  # a stale record: no one holds it
    runs.writer_lock(run).check()
    with runs.writer_lock(run, "after the kill"):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


def test_lock_is_reentrant_in_a_thread_exclusive_across_threads_and_tidy(tmp_path):
    import threading

    run = tmp_path / "runs" / "new"
    outer = runs.writer_lock(run).acquire()
    assert run.is_dir()
    with runs.writer_lock(run):  # the trainer inside quickstart takes it again
        pass
    assert (run / ".lock").exists()  # still held by the outer take
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_refusal(run)))
    thread.start()
    thread.join()
    assert errors and f"pid {os.getpid()}" in errors[0]
    outer.release()
    assert not run.exists() and not run.parent.exists()  # it made both and nothing else came
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="exists and is not a folder"):
        runs.writer_lock(tmp_path / "file")


def _refusal(run: Path) -> str:
    try:
        runs.writer_lock(run).acquire()
    except InputError as e:
        return str(e)
    return ""


def test_handover_waits_for_the_launcher_only(tmp_path, monkeypatch):
    run = tmp_path / "run"
    lock = runs.writer_lock(run, "launching").acquire()
    code = ("import sys; from pneumo.store import run; "
            "run.writer_lock(sys.argv[1], handover_from=run.handover_pid()).acquire(); print('taken')")
    cwd = Path(__file__).parents[1]
    env = {**os.environ, runs.HANDOVER_ENV: str(os.getpid() + 1)}  # a launcher that is not the holder
    other = subprocess.run([sys.executable, "-c", code, str(run)], env=env, cwd=cwd, capture_output=True, text=True)
    assert other.returncode == 1 and f"is being written by pid {os.getpid()}" in other.stderr
    env[runs.HANDOVER_ENV] = str(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    lock.release()  # whether the child is already waiting or not: it takes the folder over
    assert child.stdout.read().strip() == "taken" and child.wait() == 0


def test_a_run_of_another_host_reads_as_running_there(tmp_path):
    from datetime import datetime, timedelta, timezone

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = datetime.now(timezone.utc)
    run = _run(tmp_path, "remote", {"state": "running", "pid": dead.pid, "host": "gpu-node-7",
                                    "updated": now.isoformat(timespec="seconds"), "epoch": 3, "epochs": 90})
    status = runs.read_status(run)
    assert status["state"] == "running" and runs.remote_host(status) == "gpu-node-7"  # its pid means nothing here
    assert run_list.active_run(tmp_path) == run
    stale = (now - timedelta(seconds=runs.REMOTE_SILENCE_S + 60)).isoformat(timespec="seconds")
    (run / "status.json").write_text(json.dumps({**json.loads((run / "status.json").read_text()), "updated": stale}))
    status = runs.read_status(run)
    assert status["state"] == "failed" and "no news from host gpu-node-7" in status["error"]
    (run / "progress.json").write_text(json.dumps({"epoch": 4, "updated": now.isoformat(timespec="seconds")}))
    assert runs.read_status(run)["state"] == "running"  # its progress is fresh: still alive there
    # the same status written on this host is judged by its pid, as before
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid, "host": runs.this_host()}))
    assert runs.read_status(run)["state"] == "failed" and runs.remote_host(runs.read_status(run)) is None


def test_statuses_record_the_host(tmp_path):
    w = runs.RunWriter(tmp_path, "2026-01-01T00:00:00+00:00", epochs=1, resumed=False)
    w.set_status(epoch=0)
    assert json.loads((tmp_path / "status.json").read_text())["host"] == runs.this_host()
    runs.write_prepared_status(tmp_path, os.getpid(), 3)
    assert json.loads((tmp_path / "status.json").read_text())["host"] == runs.this_host()
