"""pneumo.train.jobs: launching, following and stopping trainers through run folders (fake trainer)."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pneumo._lock import read_holder
from pneumo._procs import CHILDREN
from pneumo.train import jobs
from pneumo.store.run import RunFolder, read_history, read_progress, read_status, request_stop
from pneumo.store.run_list import active_run, list_runs, new_run_dir
from pneumo.config import TrainConfig
from pneumo.store.config_file import load_config
from pneumo.errors import InputError

FAKE = Path(__file__).with_name("fake_trainer.py")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Fake trainer as the train command; runs in tmp_path/runs (also the settings default)."""
    monkeypatch.setenv("PNEUMO_TRAIN_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))}")
    monkeypatch.setenv("PNEUMO_TESTING", "1")
    monkeypatch.setenv("PNEUMO_FAKE_SECONDS_PER_EPOCH", "0.3")
    monkeypatch.delenv("PNEUMO_FAKE_FAIL", raising=False)
    monkeypatch.delenv("PNEUMO_FAKE_EPOCHS", raising=False)
    runs = tmp_path / "runs"
    monkeypatch.setenv("PNEUMO_RUNS_DIR", str(runs))
    yield runs
    for info in list_runs(runs):  # never leave a trainer behind
        pid = read_status(info.path).get("pid")
        if info.state == "running" and pid:
            os.kill(pid, signal.SIGKILL)


def _wait(run, states, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = read_status(run)
        if st["state"] in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f"{run}: state {read_status(run)} never reached {states}; log:\n"
                         + (run / "train.log").read_text())


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


CFG = TrainConfig(pack="demo.h5", encoder_weights=None, epochs=2, batch_size=4, lr=1e-3)


def test_start_runs_to_finished_with_history(fake, gate):
    run = new_run_dir(fake)
    pid = jobs.start_training(CFG, run)
    assert isinstance(pid, int) and pid > 0
    st = read_status(run)
    assert st["state"] == "running" and st["pid"] == pid
    assert load_config(TrainConfig, run / "config.json") == replace(CFG, pack=str(Path("demo.h5").absolute()))
    assert active_run(fake) == run
    gate.touch()
    _wait_for(lambda: read_progress(run) is not None)
    prog = read_progress(run)
    assert {"stage", "epoch", "epochs", "step", "steps", "loss", "images_per_s", "eta_s"} <= set(prog)
    st = _wait(run, {"finished", "failed", "stopped"})
    assert st["state"] == "finished", st
    hist = read_history(run)
    assert [r["epoch"] for r in hist] == [1, 2]
    assert isinstance(hist[0]["loss"], float) and hist[0]["stage"] == "train"
    assert hist[1]["loss"] < hist[0]["loss"]
    assert active_run(fake) is None
    (info,) = list_runs(fake)
    assert info.path == run and info.state == "finished" and info.epochs_done == 2
    assert info.best_epoch == 2 and info.best_val_loss == pytest.approx(hist[1]["val_loss"])
    assert info.config["lr"] == 1e-3 and info.has_best
    assert "started" in (run / "train.log").read_text()


def test_one_run_at_a_time_and_no_reuse_of_a_run_folder(fake, gate):
    first = new_run_dir(fake)
    jobs.start_training(CFG, first)
    second = new_run_dir(fake)
    with pytest.raises(InputError, match=r"another job is running \(training run"):
        jobs.start_training(CFG, second)
    assert not (second / "config.json").exists()
    request_stop(first)
    assert _wait(first, {"stopped", "finished", "failed"})["state"] == "stopped"
    with pytest.raises(InputError, match="already holds a run"):
        jobs.start_training(CFG, first)
    jobs.start_training(CFG, second)  # allowed once the first one ended
    request_stop(second)
    _wait(second, {"stopped"})


def _taken_over(run: Path, pid: int) -> None:
    """Wait until the trainer ``pid`` holds the run folder (its signal handler is set by then)."""
    _wait_for(lambda: (read_holder(RunFolder(run).lock) or {}).get("pid") == pid)


def test_stop_file_and_sigterm_stop_cleanly(fake, gate):
    run = new_run_dir(fake)
    pid = jobs.start_training(CFG, run)
    _taken_over(run, pid)  # held at the gate, running, until it is stopped
    request_stop(run)
    st = _wait(run, {"stopped", "finished", "failed"})
    assert st["state"] == "stopped" and st["ended"]
    assert (run / "last.keras").exists() and not (run / "STOP").exists()

    run2 = new_run_dir(fake, prefix="term")
    pid = jobs.start_training(CFG, run2)
    _taken_over(run2, pid)
    os.kill(pid, signal.SIGTERM)
    assert _wait(run2, {"stopped", "finished", "failed"})["state"] == "stopped"


def test_failed_trainer_reports_its_error(fake, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_FAIL", "1")
    run = new_run_dir(fake)
    jobs.start_training(CFG, run)
    st = _wait(run, {"failed", "finished", "stopped"})
    assert st["state"] == "failed" and st["error"] == "fake failure"
    assert "fake failure" in (run / "train.log").read_text()


def test_dead_pid_reads_as_failed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run-20260101-000000"
    run.mkdir()
    (run / "train.log").write_text("Killed\n")
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid, "epoch": 1}))
    st = read_status(run)
    assert st["state"] == "failed"
    assert "ended unexpectedly" in st["error"] and "train.log" in st["error"]
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # reading never writes
    assert active_run(tmp_path) is None
    # A live process that is not this run's trainer (pid recycled) is not taken for it.
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    assert read_status(run)["state"] == "failed"


def test_killed_trainer_reads_as_failed_and_frees_its_folder(fake, gate):
    run = new_run_dir(fake)
    pid = jobs.start_training(CFG, run)
    _taken_over(run, pid)
    os.kill(pid, signal.SIGKILL)
    st = _wait(run, {"failed"})  # the zombie child must not look alive
    assert "ended unexpectedly" in st["error"]
    gate.touch()
    jobs.start_training(CFG, run, resume=True)  # the kernel dropped the dead trainer's lock
    assert _wait(run, {"finished", "failed", "stopped"})["state"] == "finished"


def test_the_launcher_never_overwrites_its_trainers_status(fake, monkeypatch):
    """A trainer that ends before the launcher has written its prepared status must keep its own.

    The launcher is made slow on purpose: it writes only once the trainer has either ended or is
    seen waiting for the folder (its lock file open). Before the hand-over, a fast trainer's
    "finished" was overwritten by the launcher's "running", which then read as failed.
    """
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "0")  # finishes as soon as it may write
    real = jobs.write_prepared_status

    def late(run_dir, pid, *args, **kw):
        child = CHILDREN[pid]
        _wait_for(lambda: child.poll() is not None or _has_open(pid, RunFolder(run_dir).lock))
        real(run_dir, pid, *args, **kw)

    monkeypatch.setattr(jobs, "write_prepared_status", late)
    run = new_run_dir(fake)
    pid = jobs.start_training(CFG, run)
    assert _wait(run, {"finished", "failed", "stopped"})["state"] == "finished"
    assert CHILDREN[pid].wait() == 0 and read_status(run)["pid"] == pid


def _has_open(pid: int, path: Path) -> bool:
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return False


def test_start_refuses_a_folder_another_process_writes(fake, tmp_path):
    """A trainer outside the app (no status yet, or in another folder) holds the run folder."""
    run = fake / "cli-run"
    code = ("import sys; from pneumo.store.run import writer_lock; lock = writer_lock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"run folder {run} is being written by pid {holder.pid} on host"):
            jobs.start_training(CFG, run)
        assert not RunFolder(run).config.exists() and not RunFolder(run).status.exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_own_training_makes_this_process_the_workspaces_job(fake, gate):
    run = new_run_dir(fake, prefix="quickstart")
    with jobs.own_training(CFG, run, what="quickstart"):
        assert jobs.running_job(fake) == f"training run {run.name}"
        assert read_status(run)["state"] == "running" and read_status(run)["pid"] == os.getpid()
        with pytest.raises(InputError, match=r"another job is running \(training run quickstart-"):
            jobs.start_training(CFG, new_run_dir(fake))
        with pytest.raises(InputError, match="another job is running"):
            with jobs.own_training(CFG, new_run_dir(fake, prefix="second")):
                pass
        RunFolder(run).status.write_text(json.dumps({"state": "finished"}))  # what the trainer would do
    assert not RunFolder(run).lock.exists()
    with jobs.own_evaluation(run, "test"):
        assert jobs.running_job(fake) == f"evaluation of {run.name} (test)"
        assert jobs.evaluation_job(run, "test")["state"] == "running"
    first = new_run_dir(fake)
    jobs.start_training(CFG, first)
    with pytest.raises(InputError, match=r"another job is running \(training run run-"):
        with jobs.own_training(CFG, new_run_dir(fake, prefix="quickstart")):
            pass
    request_stop(first)
    _wait(first, {"stopped"})


def test_resume_through_jobs_continues(fake, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "3")
    monkeypatch.setenv("PNEUMO_FAKE_FAIL", "1")
    run = new_run_dir(fake)
    jobs.start_training(CFG, run)
    _wait(run, {"failed"})
    monkeypatch.delenv("PNEUMO_FAKE_FAIL")
    with pytest.raises(InputError, match="differs"):
        jobs.start_training(TrainConfig(pack="other.h5"), run, resume=True)
    jobs.start_training(CFG, run, resume=True)
    assert _wait(run, {"finished", "failed", "stopped"})["state"] == "finished"
    assert [r["epoch"] for r in read_history(run)] == [1, 2, 3]
    with pytest.raises(InputError, match="nothing to resume"):
        jobs.start_training(CFG, fake / "never", resume=True)


def test_read_history_parses_numbers_and_blanks(tmp_path):
    (tmp_path / "history.csv").write_text(
        "epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds\n"
        "1,train,0.5,0.25,0.125,,nan,0.1,2e-05,3.5\n"
        "2,fine-tune,0.4,0.3,0.2,0.45,0.3,0.2,1e-05,3.0\n")
    rows = read_history(tmp_path)
    assert rows[0]["epoch"] == 1 and rows[0]["stage"] == "train"
    assert rows[0]["loss"] == 0.5 and rows[0]["lr"] == 2e-5 and rows[0]["val_loss"] is None
    assert rows[0]["val_dice"] != rows[0]["val_dice"]  # nan stays nan
    assert rows[1]["stage"] == "fine-tune" and rows[1]["seconds"] == 3.0
    assert read_history(tmp_path / "missing") == []
    assert read_progress(tmp_path) is None


def test_list_runs_newest_first_and_new_folders_unique(tmp_path):
    a = new_run_dir(tmp_path, prefix="x")
    b = new_run_dir(tmp_path, prefix="x")
    assert a != b and a.is_dir() and b.is_dir()
    assert list_runs(tmp_path) == []  # empty folders are not runs
    for path, started in ((a, "2026-01-01T00:00:00+00:00"), (b, "2026-02-01T00:00:00+00:00")):
        (path / "status.json").write_text(json.dumps({"state": "finished", "started": started}))
    (tmp_path / "not-a-run").mkdir()
    assert [r.path for r in list_runs(tmp_path)] == [b, a]
    assert list_runs(tmp_path / "missing") == []
    assert read_status(tmp_path / "missing")["state"] == "new"
    with pytest.raises(InputError, match="prefix"):
        new_run_dir(tmp_path, prefix="../evil")


def test_jobs_imports_without_tensorflow():
    code = "import sys, pneumo.train.jobs; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


# --------------------------------------------------------------------------- evaluation jobs
_FAKE_EVALUATE = """
import sys, time
from pathlib import Path
from pneumo.store.eval_progress import EvalProgress
# argv: evaluate RUN --split S --checkpoint C
run, split = Path(sys.argv[2]), sys.argv[4]
mode = (run / "mode").read_text() if (run / "mode").exists() else "ok"
print("2026-01-01 00:00:00.000000: E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:152] "
      "failed call to cuInit: UNKNOWN ERROR (303)", flush=True)
report = EvalProgress(run, split, interval=0.0)
for k in range(1, 5):
    report(k, 4)
    while (run / "hold").exists():  # a test holds the job running while it looks at it
        time.sleep(0.05)
    time.sleep(0.05)
if mode == "fail":
    print("error: pack demo.h5 changed since run x trained on it", file=sys.stderr, flush=True)
    sys.exit(2)
if mode == "crash":
    raise RuntimeError("disk on fire")
report.stage("score")
(run / f"predictions_{split}.h5").write_bytes(b"fake")
report.stage("done")
"""


@pytest.fixture
def evaluator(monkeypatch, tmp_path, fake):
    """A fake ``pneumo evaluate`` (progress file, TF-like noise on stdout) and a run with best.keras."""
    script = tmp_path / "fake_evaluate.py"
    script.write_text(_FAKE_EVALUATE)
    monkeypatch.setenv("PNEUMO_EVALUATE_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))
    run = fake / "run-20260101-000000"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"pack": "demo.h5"}))
    (run / "best.keras").write_bytes(b"fake")
    yield run
    for split in ("train", "dev", "test"):
        job = jobs.evaluation_job(run, split)
        if job and job["state"] == "running":
            jobs.stop_evaluation(run, split)


def _wait_job(run, split, states=("finished", "failed"), timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.evaluation_job(run, split)
        if job and job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"evaluation never reached {states}: {jobs.evaluation_job(run, split)}")


def test_evaluation_reports_progress_and_finishes(evaluator):
    run = evaluator
    (run / "hold").touch()
    pid = jobs.start_evaluation(run, "test")
    assert jobs.start_evaluation(run, "test") == pid  # the same job is reused
    job = _wait_job(run, "test", states=("running",))
    _wait_for(lambda: (jobs.evaluation_job(run, "test") or {}).get("fraction"))
    job = jobs.evaluation_job(run, "test")
    assert job["state"] == "running" and 0 < job["fraction"] <= 1 and job["progress"]["stage"] == "predict"
    (run / "hold").unlink()
    job = _wait_job(run, "test")
    assert job["state"] == "finished" and job["fraction"] == 1.0 and job["error"] is None
    assert job["progress"]["stage"] == "done" and job["progress"]["total"] == 4


@pytest.mark.parametrize("mode, message", [
    ("fail", "pack demo.h5 changed since run x trained on it"),
    ("crash", "RuntimeError: disk on fire"),
])
def test_evaluation_failure_is_the_commands_message_not_tensorflow_noise(evaluator, mode, message):
    run = evaluator
    (run / "mode").write_text(mode)
    jobs.start_evaluation(run, "dev")
    job = _wait_job(run, "dev")
    assert job["state"] == "failed"
    assert job["error"].startswith(message) and "evaluate_dev.log" in job["error"]
    assert "cuInit" not in job["error"] and "cuInit" in (run / "evaluate_dev.log").read_text()


def test_one_job_at_a_time_across_training_and_evaluation(evaluator, fake, gate):
    run = evaluator
    (run / "hold").touch()
    jobs.start_evaluation(run, "test")
    with pytest.raises(InputError, match=r"another job is running \(evaluation of run-20260101-000000 \(test\)\)"):
        jobs.start_training(CFG, new_run_dir(fake))
    with pytest.raises(InputError, match="another job is running"):
        jobs.start_evaluation(run, "dev")
    assert jobs.stop_evaluation(run, "test")
    assert _wait_job(run, "test")["state"] == "failed"

    train_run = new_run_dir(fake, prefix="t")
    jobs.start_training(CFG, train_run)
    with pytest.raises(InputError, match=r"another job is running \(training run t-"):
        jobs.start_evaluation(run, "test")
    request_stop(train_run)
    _wait(train_run, {"stopped"})


@pytest.mark.parametrize("with_start_time", [False, True])
def test_stop_never_signals_a_foreign_process_with_the_recorded_pid(tmp_path, with_start_time):
    """The recorded pid now belongs to another program (pid reuse): Stop must leave it alone."""
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        run = tmp_path / "run-20260101-000000"
        run.mkdir()
        job = {"pid": foreign.pid, "split": "test", "checkpoint": "best", "started": "2026-01-01T00:00:00+00:00"}
        if with_start_time:
            from pneumo._procs import process_start

            job["pid_start"] = process_start(foreign.pid) - 1  # the evaluation started at another time
        (run / "evaluate_test.json").write_text(json.dumps(job))
        assert jobs.evaluation_job(run, "test")["state"] == "failed"
        assert jobs.stop_evaluation(run, "test") is False
        # a training status naming that pid is not taken for a live trainer either
        (run / "status.json").write_text(json.dumps({"state": "running", **{k: job[k] for k in job if "pid" in k}}))
        assert read_status(run)["state"] == "failed"
    finally:
        foreign.kill()
        foreign.wait()
    # A SIGTERM sent by stop_evaluation would have ended it at once (the kernel marks a default-fatal
    # signal's exit code when it is sent), so only our SIGKILL may be its end: no sleep, no race.
    assert foreign.returncode == -signal.SIGKILL


def test_test_hooks_need_the_testing_switch(evaluator, monkeypatch):
    run = evaluator
    monkeypatch.delenv("PNEUMO_TESTING")
    assert jobs.evaluation_command(run, "test", "best")[:3] == [sys.executable, "-m", "pneumo"]
    assert jobs._train_command() == [sys.executable, "-m", "pneumo", "train"]
    # the app's quick demo is the command line's, with no option: the library's preset on its pack
    assert jobs._quickstart_command() == [sys.executable, "-m", "pneumo", "quickstart"]
    monkeypatch.setenv("PNEUMO_TESTING", "1")
    assert jobs.evaluation_command(run, "test", "best")[0] == sys.executable
    assert jobs.evaluation_command(run, "test", "best")[1].endswith("fake_evaluate.py")
    # the hook never skips the checkpoint check
    (run / "best.keras").unlink()
    with pytest.raises(InputError, match="no best.keras checkpoint"):
        jobs.start_evaluation(run, "test")
    assert not (run / "evaluate_test.json").exists()


# --------------------------------------------------------------------------- the quick demo
FAKE_QUICKSTART = Path(__file__).with_name("fake_quickstart.py")


@pytest.fixture
def quick(fake, monkeypatch, tmp_path):
    """The quick demo as ``tests/fake_quickstart.py`` (pneumo's quickstart without TensorFlow)
    in a workspace at tmp_path; yields the runs folder. Never leaves it running."""
    monkeypatch.setenv("PNEUMO_QUICKSTART_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_QUICKSTART))}")
    monkeypatch.setenv("PNEUMO_FAKE_PACK_OPTIONS", json.dumps({"count": 100, "size": 64, "workers": 1}))
    monkeypatch.setenv("PNEUMO_DATA_DIR", str(tmp_path / "data"))
    yield fake
    job = jobs.quick_demo_job()
    if job is not None and job["state"] == "running":
        os.kill(job["pid"], signal.SIGKILL)


def _quick_job(predicate, timeout=60.0) -> dict:
    _wait_for(lambda: (j := jobs.quick_demo_job()) is not None and predicate(j), timeout)
    return jobs.quick_demo_job()


def test_quick_demo_is_the_workspaces_one_job_from_its_pack_on(quick, gate, tmp_path):
    pid = jobs.start_quick_demo()
    job = jobs.quick_demo_job()  # the launcher's record, before the child wrote anything
    assert job["state"] == "running" and job["pid"] == pid and job["log"] == quick / ".quickstart.log"
    job = _quick_job(lambda j: (j["done"] or 0) >= 1)
    assert job["stage"] == "pack" and job["total"] == 100 and job["run"] is None
    assert jobs.running_job() == "the quick demo (making its pack)"
    with pytest.raises(InputError, match=r"another job is running \(the quick demo \(making its pack\)\)"):
        jobs.start_training(CFG, new_run_dir(quick))
    with pytest.raises(InputError, match="another job is running"):
        jobs.start_quick_demo()
    from pneumo.cli import main

    assert main(["quickstart"]) == 2  # the command line waits its turn too
    assert list_runs(quick) == []
    gate.touch()
    job = _quick_job(lambda j: j["state"] != "running")
    assert job["state"] == "finished" and job["run"].parent == quick
    assert (job["run"] / "metrics_test.json").is_file() and jobs.running_job() is None


def test_quick_demo_killed_reads_failed_and_frees_the_workspace(quick, gate):
    jobs.start_quick_demo()
    job = _quick_job(lambda j: (j["done"] or 0) >= 1)
    os.kill(job["pid"], signal.SIGKILL)
    _wait_for(lambda: not jobs.quick_demo_job()["state"] == "running")
    job = jobs.quick_demo_job()
    assert job["state"] == "failed" and "ended unexpectedly" in job["error"] and ".quickstart.log" in job["error"]
    assert jobs.running_job() is None
    assert not (Path(job["pack"])).exists()  # the pack is written whole or not at all


def test_quick_demo_stop_while_training_is_a_clean_stop(quick, gate, tmp_path):
    from pneumo.ingest.packer import make_demo_pack

    make_demo_pack(tmp_path / "data" / "quick-demo-128.h5", count=100, size=64, workers=1)  # no pack stage
    jobs.start_quick_demo()
    job = _quick_job(lambda j: j["stage"] == "train" and read_status(j["run"])["state"] == "running")
    assert jobs.stop_quick_demo() is True
    assert (job["run"] / "STOP").exists()  # asked through the run folder, not by a signal
    job = _quick_job(lambda j: j["state"] != "running")
    assert job["state"] == "stopped" and job["error"] == "training stopped after 0 epochs"
    assert read_status(job["run"])["state"] == "stopped"
    assert jobs.stop_quick_demo() is False  # nothing runs


def test_quick_demo_record_round_trip_and_damage(tmp_path):
    from pneumo.store import quickstart_job as qj

    assert qj.read_job(tmp_path) is None
    record = qj.QuickstartRecord(tmp_path, os.getpid()).claim()
    assert qj.read_job(tmp_path)["state"] == "running"
    record.update(stage="train", run=tmp_path / "run-1")
    job = qj.read_job(tmp_path)
    assert job["stage"] == "train" and job["run"] == tmp_path / "run-1"
    record.end("finished")
    assert qj.read_job(tmp_path)["state"] == "finished"
    with pytest.raises(ValueError):
        record.end("done")
    for damaged in (b"\xff\xfe", b"[1, 2]", b'{"stage": "dancing"}', b"{"):
        (tmp_path / ".quickstart.json").write_bytes(damaged)
        assert qj.read_job(tmp_path) is None
