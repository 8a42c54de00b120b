"""pneumo.train.loop and ``python -m pneumo train``: validation, run folder, stop, resume, stages, workers.

Runs use the 64 px ``tiny_pack``, ``encoder_weights=None`` and a few steps; the cheaper
"blog" variant (no BatchNorm, 4x4 bottleneck) unless a test needs the U-Net.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_test_pack
from pneumo.train import jobs
from pneumo.store.run import read_history, read_status, request_stop
from pneumo.store.run_list import active_run, list_runs, new_run_dir
from pneumo.config import TrainConfig, to_dict
from pneumo.plan import RunPlan, plan_run
from pneumo.store.config_file import load_config
from pneumo.errors import InputError

keras = pytest.importorskip("keras")
from pneumo.model.networks import encoder_layers, load_model  # noqa: E402
from pneumo.store.run import HISTORY_COLUMNS  # noqa: E402
from pneumo.train.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = "epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds"


def _cfg(pack_path, **kw) -> TrainConfig:
    base = dict(pack=str(pack_path), variant="blog", encoder_weights=None, epochs=2, steps_per_epoch=2,
                batch_size=8, lr=1e-3, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _history(run) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model gets built: bad input must be caught before."""
    import pneumo.model.networks

    def boom(*a, **k):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr(pneumo.model.networks, "build_model", boom)


@pytest.mark.parametrize("change, message", [
    (dict(variant="vgg19"), "variant 'vgg19' is unknown"),
    (dict(loss="focal"), "loss 'focal' is unknown"),
    (dict(epochs=0), "epochs = 0"),
    (dict(batch_size=-1), "batch_size = -1"),
    (dict(lr=float("nan")), "lr = nan"),
    (dict(steps_per_epoch=0), "steps_per_epoch = 0"),
    (dict(pack="/nonexistent/pack.h5"), "/nonexistent/pack.h5"),
    (dict(encoder_weights="/nonexistent/w.h5"), "encoder weights file /nonexistent/w.h5: not found"),
])
def test_bad_config_fails_before_anything(tiny_pack, tmp_path, no_model, change, message):
    run = tmp_path / "run"
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        train(_cfg(tiny_pack, **change), run)
    assert not run.exists()


@pytest.mark.parametrize("counts, size, message", [
    ((16, 0, 4), 64, "dev split is empty"),
    ((0, 8, 4), 64, "train split is empty"),
    ((8, 8, 4), 48, "not a multiple of 32"),
])
def test_bad_pack_fails_before_anything(tmp_path, no_model, counts, size, message):
    pack = write_test_pack(tmp_path / "p.h5", counts=counts, size=size)
    with pytest.raises(InputError, match=message):
        train(_cfg(pack), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_not_a_pack_and_bad_weights_suffix(tmp_path, tiny_pack, no_model):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="junk.h5"):
        train(_cfg(junk), tmp_path / "run")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    with pytest.raises(InputError, match="ending in .h5"):
        train(_cfg(tiny_pack, encoder_weights=str(weights)), tmp_path / "run")


def test_run_folder_rules(tiny_pack, tmp_path, no_model):
    held = tmp_path / "held"
    held.mkdir()
    (held / "history.csv").write_text(COLUMNS + "\n")
    with pytest.raises(InputError, match="already holds a run.*--resume"):
        train(_cfg(tiny_pack), held)
    assert (held / "history.csv").read_text() == COLUMNS + "\n"  # untouched
    with pytest.raises(InputError, match="nothing to resume"):
        train(_cfg(tiny_pack), tmp_path / "empty", resume=True)
    cfg = _cfg(tiny_pack)
    from pneumo.store.config_file import save_config

    save_config(cfg, held / "config.json")
    with pytest.raises(InputError, match="lr differ"):
        train(_cfg(tiny_pack, lr=0.5), held, resume=True)


def test_weights_file_that_does_not_fit_fails_before_writing(tiny_pack, tmp_path):
    import h5py

    bad = tmp_path / "bad.weights.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("nothing", data=np.zeros(3))
    run = tmp_path / "run"
    with pytest.raises(InputError, match="bad.weights.h5"):
        train(_cfg(tiny_pack, encoder_weights=str(bad)), run)
    assert not run.exists()


def test_bad_input_marks_a_jobs_prepared_status_failed(tiny_pack, tmp_path, no_model):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    with pytest.raises(InputError):
        train(_cfg(tiny_pack, variant="nope"), run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "variant 'nope'" in status["error"]


def test_check_config_fills_in_the_blog_defaults(tiny_pack):
    info = plan_run(TrainConfig(pack=str(tiny_pack), batch_size=32))
    # one pass over train (48 -> 2 batches) and dev (16 -> 1 batch, partial batch kept)
    assert info == RunPlan(size=64, train=48, dev=16, steps=2, validation_steps=1, dev_batches=1)
    info = plan_run(TrainConfig(pack=str(tiny_pack), batch_size=5, steps_per_epoch=50, validation_steps=99))
    assert info.steps == 50 and info.validation_steps == 4 == info.dev_batches  # ceil(16/5), clamped


# --------------------------------------------------------------------------- a run
def test_run_folder_contents(tiny_pack, tmp_path, caplog):
    caplog.set_level("INFO", logger="pneumo.train.loop")
    run = tmp_path / "run"
    seen = []
    cfg = _cfg(tiny_pack, validation_steps=99)
    summary = train(cfg, run, verbose=0, progress=seen.append)

    assert "validation_steps 99 is more than the dev split holds" in caplog.text
    assert "devices:" in caplog.text
    assert summary["state"] == "finished" and summary["epochs_done"] == 2 and summary["epochs"] == 2
    assert load_config(TrainConfig, run / "config.json") == cfg  # pack path already absolute
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["pid"] == os.getpid() and status["epoch"] == 2
    assert status["error"] is None and status["ended"] and status["epochs"] == 2
    assert status["setup"] == {"strategy": "default", "cluster": "single", "workers": 1, "replicas": 1,
                               "global_batch": 8, "per_replica_batch": 8, "precision": "none",
                               "policy": "float32", "devices": ["CPU:0"], "addresses": []}

    text = (run / "history.csv").read_text()
    assert text.splitlines()[0].replace('"', "") == COLUMNS == ",".join(HISTORY_COLUMNS)  # every cell quoted
    rows = _history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and {r["stage"] for r in rows} == {"train"}
    for r in rows:
        for k in HISTORY_COLUMNS[2:]:
            assert np.isfinite(float(r[k])), (k, r)
        assert float(r["lr"]) == pytest.approx(1e-3)
        assert 0 <= float(r["val_dice"]) <= 1
    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    assert summary["best_epoch"] == int(best_row["epoch"])
    assert summary["best_val_loss"] == pytest.approx(float(best_row["val_loss"]))

    progress = json.loads((run / "progress.json").read_text())
    assert set(progress) == {"stage", "epoch", "epochs", "step", "steps", "loss", "images_per_s", "eta_s", "updated"}
    assert progress["epoch"] == 2 and progress["step"] == progress["steps"] == 2
    assert seen and seen[-1] == progress and all(p["steps"] == 2 for p in seen)

    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 2
    assert list((run / "logs").rglob("events.out.tfevents.*")) or not _has_tensorboard()
    model = load_model(run / "last.keras")
    assert model.output_shape == (None, 64, 64, 1)
    assert load_model(run / "best.keras", compile=False).count_params() == model.count_params()
    assert not list(run.glob(".*tmp*"))  # no temporary files left behind
    # the jobs view of the same folder
    (info,) = list_runs(tmp_path)
    assert info.state == "finished" and info.epochs_done == 2 and info.best_epoch == summary["best_epoch"]


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def test_cli_config_round_trip(tiny_pack, tmp_path):
    from pneumo.cli import build_parser
    from pneumo.cli.train import config_from_args

    cfg = _cfg(tiny_pack, loss="bce+dice", fine_tune_epochs=3, fine_tune_lr=3e-6, freeze_encoder=True)
    from pneumo.store.config_file import save_config

    save_config(cfg, tmp_path / "config.json")
    parse = build_parser().parse_args
    args = parse(["train", "--config", str(tmp_path / "config.json"), "--run-dir", str(tmp_path / "r")])
    assert config_from_args(args) == cfg
    args = parse(["train", "other.h5", "--config", str(tmp_path / "config.json"), "--epochs", "7",
                  "--encoder-weights", "none", "--no-freeze-encoder", "--rotation", "0", "--xla"])
    got = config_from_args(args)
    assert got.pack == "other.h5" and got.epochs == 7 and got.freeze_encoder is False and got.xla
    assert got.augment.rotation == 0.0 and got.augment.zoom == cfg.augment.zoom
    assert got.lr == cfg.lr and got.loss == "bce+dice"
    args = parse(["train", "p.h5", "--no-augment", "--mixed-precision", "--batch-size", "4"])
    got = config_from_args(args)
    assert got.augment.rotation == 0 and not got.augment.horizontal_flip and got.mixed_precision == "fp16"
    assert got.epochs == 90 and got.lr == 2e-5 and got.encoder_weights == "imagenet"  # the blog's
    with pytest.raises(InputError, match="no pack"):
        config_from_args(parse(["train"]))
    with pytest.raises(InputError, match="unknown key"):
        (tmp_path / "bad.json").write_text(json.dumps({**to_dict(cfg), "epoch": 3}))
        config_from_args(parse(["train", "--config", str(tmp_path / "bad.json")]))


# --------------------------------------------------------------------------- stopping and resuming
def test_stop_file_then_resume_continues(tiny_pack, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(tiny_pack, epochs=3, steps_per_epoch=3)

    def stop_in_epoch_2(p):
        if p["epoch"] == 2 and p["step"] >= 1:
            (run / "STOP").write_text("")

    summary = train(cfg, run, verbose=0, progress=stop_in_epoch_2)
    assert summary["state"] == "stopped" and summary["epochs_done"] == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and status["epoch"] == 1 and status["ended"]
    assert (run / "last.keras").is_file() and not (run / "STOP").exists()
    assert [r["epoch"] for r in _history(run)] == ["1"]
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 1
    assert read_status(run)["state"] == "stopped"

    summary = train(None, run, resume=True, verbose=0)
    assert summary["state"] == "finished" and summary["epochs_done"] == 3
    assert [r["epoch"] for r in _history(run)] == ["1", "2", "3"]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 3 and "resumed" in status


def test_sigterm_stops_cleanly(tiny_pack, tmp_path):
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)

    def terminate(p):
        if p["step"] >= 1:
            os.kill(os.getpid(), signal.SIGTERM)

    summary = train(_cfg(tiny_pack, epochs=2, steps_per_epoch=4), run, verbose=0, progress=terminate)
    assert summary["state"] == "stopped" and summary["epochs_done"] == 0
    assert (run / "last.keras").is_file() and read_status(run)["state"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) is before


def test_failure_is_recorded_then_raised(tiny_pack, tmp_path, monkeypatch):
    import pneumo.train.data

    def broken(*a, **k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(pneumo.train.data, "make_dataset", broken)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(_cfg(tiny_pack), run, verbose=0)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == "RuntimeError: disk on fire"


def test_fine_tune_stage_unfreezes_the_encoder_and_resumes_in_it(tiny_pack, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(tiny_pack, epochs=1, fine_tune_epochs=2, freeze_encoder=True, fine_tune_lr=1e-4)
    stage1 = tmp_path / "stage1.keras"

    def watch(p):
        if p["stage"] == "fine-tune" and not stage1.exists():
            stage1.write_bytes((run / "last.keras").read_bytes())  # the model after epoch 1
        if p["epoch"] == 3 and p["step"] >= 1:
            (run / "STOP").write_text("")

    assert train(cfg, run, verbose=0, progress=watch)["state"] == "stopped"
    state = json.loads((run / "backup" / "state.json").read_text())
    assert state["epoch"] == 2 and state["stage"] == "fine-tune"
    summary = train(cfg, run, resume=True, verbose=0)
    assert summary["state"] == "finished"

    rows = _history(run)
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "train"), ("2", "fine-tune"), ("3", "fine-tune")]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-4, 1e-4])
    first, final = load_model(stage1, compile=False), load_model(run / "last.keras", compile=False)
    assert not any(layer.trainable for layer in encoder_layers(first))
    assert all(layer.trainable for layer in encoder_layers(final))
    kernel = lambda m: m.get_layer("block1_conv1").get_weights()[0]  # noqa: E731
    assert not np.allclose(kernel(first), kernel(final))  # the fine-tune stage moved the encoder


@pytest.mark.slow
def test_resume_after_kill_loses_at_most_one_epoch(tiny_pack, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pneumo", "train", str(tiny_pack), "--run-dir", str(run), "--variant", "blog",
           "--encoder-weights", "none", "--epochs", "3", "--steps-per-epoch", "2", "--batch-size", "8",
           "--lr", "1e-3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            state_file = run / "backup" / "state.json"
            if state_file.is_file() and json.loads(state_file.read_text())["epoch"] >= 1:
                break  # epoch 1 finished and backed up
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert read_status(run)["state"] == "failed"  # killed: its pid is gone
    kept = len(_history(run))

    out = subprocess.run([sys.executable, "-m", "pneumo", "train", "--resume", "--run-dir", str(run)],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished: 3/3 epochs" in out.stdout
    assert [r["epoch"] for r in _history(run)] == ["1", "2", "3"]  # continued, no duplicates
    assert kept >= 1
    assert "resuming after epoch 1" in out.stdout or "resuming after epoch 2" in out.stdout
    assert read_status(run)["state"] == "finished"


def test_a_folder_another_writer_holds_is_refused_before_anything(tiny_pack, tmp_path, no_model):
    """The trainer's own lock: refused at once, naming the holder, nothing written, no model built."""
    run = tmp_path / "run"
    code = ("import sys; from pneumo.store.run import writer_lock; lock = writer_lock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"run folder {run} is being written by pid {holder.pid} on host "):
            train(_cfg(tiny_pack), run)
        assert [p.name for p in run.iterdir()] == [".lock"]  # the holder's, nothing of ours
    finally:
        holder.kill()
        holder.wait()
    from pneumo.store.run import writer_lock

    with writer_lock(run):  # free once its holder is gone
        pass


@pytest.mark.slow
def test_two_cli_trainers_of_one_folder_the_second_is_refused(tiny_pack, tmp_path):
    """Issue 18 item 1: ``train --run-dir R --seed 1 & train --run-dir R --seed 2 &`` interleaved
    two runs in one folder. The second now stops at once naming the first, which is unaffected."""
    from pneumo._lock import read_holder
    from pneumo.store.run import RunFolder

    run = tmp_path / "twin"
    base = [sys.executable, "-m", "pneumo", "train", str(tiny_pack), "--run-dir", str(run), "--variant", "blog",
            "--encoder-weights", "none", "--epochs", "1000", "--steps-per-epoch", "1", "--batch-size", "8"]
    first = subprocess.Popen(base + ["--seed", "1"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while (read_holder(RunFolder(run).lock) or {}).get("pid") != first.pid:  # the handshake
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.05)
        second = subprocess.run(base + ["--seed", "2"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.strip().startswith(f"error: run folder {run} is being written by pid {first.pid} "
                                                f"on host {socket.gethostname()} since ")
        assert "Traceback" not in second.stderr and second.stderr.strip().count("\n") == 0
        while len(read_history(run)) < 2:  # the first trains on, alone
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.05)
        request_stop(run)
        assert first.wait(300) == 0, first.stdout.read()
    finally:
        if first.poll() is None:
            first.kill()
        first.stdout.close()
    status = read_status(run)
    assert status["state"] == "stopped" and status["pid"] == first.pid
    assert load_config(TrainConfig, run / "config.json").seed == 1
    epochs = [r["epoch"] for r in read_history(run)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2  # one run's rows, in order


@pytest.mark.slow
def test_cli_bad_input_prints_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pneumo", "train", str(tmp_path / "missing.h5"),
                          "--run-dir", str(tmp_path / "r"), "--encoder-weights", "none"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "missing.h5" in out.stderr
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_best_and_last_checkpoints_are_the_models_the_history_scored(tiny_pack, tmp_path):
    """What the history says about an epoch is true of the checkpoint kept for it: best.keras
    scores the best row's val_loss on the dev split and last.keras the last row's. (Whether a
    model learns is a quality claim, measured in bench/quality.py, not here.)"""
    from pneumo.store.pack import Pack

    run = tmp_path / "run"
    cfg = _cfg(tiny_pack, variant="unet", epochs=3, steps_per_epoch=2, loss="bce")
    summary = train(cfg, run, verbose=0)
    rows = _history(run)
    with Pack(tiny_pack) as pack:
        x, y = pack.images("dev"), (pack.masks("dev") >= 128).astype(np.float32)

    def dev_bce(path) -> float:
        p = np.clip(load_model(path, compile=False).predict(x, verbose=0).astype(np.float64), 1e-7, 1 - 1e-7)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))

    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    assert summary["best_epoch"] == int(best_row["epoch"])
    assert dev_bce(run / "best.keras") == pytest.approx(float(best_row["val_loss"]), rel=1e-3)
    assert dev_bce(run / "last.keras") == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-3)
    # The weights moved: three epochs of different val_loss are three different models.
    assert len({r["val_loss"] for r in rows}) == 3


# --------------------------------------------------------------------------- several workers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_workers(cmds: list[list[str]], envs: list[dict]) -> list[subprocess.Popen]:
    return [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for cmd, env in zip(cmds, envs)]


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outputs


def _reference_scores(run: Path, pack: Path, loss: str) -> dict:
    """val_loss/val_dice/val_iou of RUN/last.keras over the whole dev split in one batch, one device."""
    import h5py

    from pneumo.train.validate import image_terms, scores

    model = load_model(run / "last.keras")
    with h5py.File(pack, "r") as f:
        x, y = f["X_dev"][()], (f["Y_dev"][()] >= 128).astype(np.float32)
    p = model.predict(x, verbose=0)
    return scores(np.asarray(image_terms(y, p, np.ones(len(x), np.float32))), loss)


def _mw_cmd(pack: Path, run: Path, *extra: str) -> list[str]:
    """A quick-demo-shaped multi-worker run: BatchNorm, balanced batches, batch Dice, default validation."""
    return [sys.executable, "-m", "pneumo", "train", str(pack), "--run-dir", str(run), "--variant", "unet-bn",
            "--width", "0.125", "--encoder-weights", "none", "--batch-size", "16", "--lr", "1e-3",
            "--loss", "bce+batch-dice", "--positive-fraction", "0.5", *extra]


@pytest.mark.slow
def test_two_cpu_workers_train_one_run(tmp_path):
    """Issue 17: two TF_CONFIG workers, the DEFAULT validation over a 49-image dev split (batch 16:
    25 and 24 images a worker, 8 per replica), BatchNorm. Before: InvalidArgumentError at the end of
    epoch 1, status failed, a worker temp folder left. Now both finish, the scores are exact over
    the 49 images, BatchNorm statistics agree, no temp folder is left."""
    pack = write_test_pack(tmp_path / "pack49.h5", counts=(64, 49, 8))
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"
    envs = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env["TMPDIR"] = str((tmp_path / f"tmp{index}").resolve())
        (tmp_path / f"tmp{index}").mkdir()
        envs.append(env)
    cmd = _mw_cmd(pack, run, "--epochs", "2", "--steps-per-epoch", "2")
    procs = _start_workers([cmd, cmd], envs)
    outputs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(outputs)
    assert "MultiWorkerMirroredStrategy with 2 replica(s) over 2 workers" in outputs[0]
    rows = _history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (run / "last.keras").is_file() and (run / "best.keras").is_file()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["pid"] == procs[0].pid  # only the chief writes here
    assert status["setup"] == {
        "strategy": "MultiWorkerMirroredStrategy", "cluster": "TF_CONFIG", "workers": 2, "replicas": 2,
        "global_batch": 16, "per_replica_batch": 8, "precision": "none", "policy": "float32",
        "devices": ["CPU:0"], "addresses": cluster["worker"]}
    # exact: what one device computes from the saved model over all 49 images
    expected = _reference_scores(run, pack, "bce+batch-dice")
    for key in ("val_loss", "val_dice", "val_iou"):
        assert float(rows[-1][key]) == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
    assert not [p for i in range(2) for p in (tmp_path / f"tmp{i}").glob("pneumo-worker-*")]


@pytest.mark.slow
def test_two_replicas_each_get_balanced_batches_and_exact_validation(tmp_path):
    """MirroredStrategy on 2 logical CPU devices (a fresh process: tests/replica_probe.py records the
    batch each replica computes its loss on). Global batch 8, half positive: every replica gets
    2 positives of 4 at every step. (Keras splitting the global batch, as before, gave replica 0 the
    4 positives and replica 1 none.) Validation over 13 dev images (2 steps of 2 x 4, 3 padded)."""
    from pneumo.store.config_file import save_config

    pack = write_test_pack(tmp_path / "pack.h5", counts=(48, 13, 8))
    cfg = _cfg(pack, variant="unet-bn", width=0.125, loss="bce+batch-dice", positive_fraction=0.5,
               batch_size=8, epochs=2, steps_per_epoch=3)
    save_config(cfg, tmp_path / "config.json")
    run, out = tmp_path / "run", tmp_path / "probe.json"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "replica_probe.py"), str(tmp_path / "config.json"),
                           str(run), str(out)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = json.loads(out.read_text())
    assert sorted(probe["batches"]) == [[0, 4, 2]] * 6 + [[1, 4, 2]] * 6  # 2 epochs x 3 steps, each replica
    status = json.loads((run / "status.json").read_text())
    assert status["setup"]["strategy"] == "MirroredStrategy" and status["setup"]["replicas"] == 2
    assert status["setup"]["per_replica_batch"] == 4 and status["setup"]["devices"] == ["CPU:0", "CPU:1"]
    expected = _reference_scores(run, pack, "bce+batch-dice")
    last = _history(run)[-1]
    for key in ("val_loss", "val_dice", "val_iou"):
        assert float(last[key]) == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_slurm_tasks_form_a_cluster_and_refuse_a_worker_with_another_pack(tiny_pack, tmp_path):
    """Two tasks of a Slurm step on 127.0.0.1 (SLURM_* variables, no srun): the cluster comes from
    SlurmClusterResolver; task 1 reads another pack, so both refuse to start, naming it."""
    other = write_test_pack(tmp_path / "other.h5", counts=(40, 16, 16))
    base = _free_port_pair()
    run = tmp_path / "run"
    envs = []
    for task in range(2):
        env = {k: v for k, v in _env().items() if k != "TF_CONFIG"}
        env.update(SLURM_PROCID=str(task), SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NODELIST="127.0.0.1",
                   SLURM_STEP_TASKS_PER_NODE="2", PNEUMO_SLURM_PORT=str(base))
        envs.append(env)
    cmd = [sys.executable, "-m", "pneumo", "train", "--run-dir", str(run), "--variant", "blog",
           "--encoder-weights", "none", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "8"]
    procs = _start_workers([cmd[:4] + [str(tiny_pack)] + cmd[4:], cmd[:4] + [str(other)] + cmd[4:]], envs)
    outputs = _finish(procs, timeout=300)
    assert [p.returncode for p in procs] == [2, 2], "\n=====\n".join(outputs)
    assert f"over 2 workers (Slurm), this is worker 1 (127.0.0.1:{base + 1})" in outputs[1]
    for text in outputs:
        assert (f"error: worker 1 (127.0.0.1:{base + 1}) reads another pack than worker 0 (127.0.0.1:{base})"
                in text), text
    assert not (run / "history.csv").exists()


def _free_port_pair() -> int:
    """A port p with p + 1 free too (Slurm tasks on one node take consecutive ports)."""
    for _ in range(50):
        p = _free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_run_with_its_name(tiny_pack, tmp_path):
    """Worker 1 is killed once the chief finished an epoch (polled, no sleep as a handshake):
    the chief fails (TensorFlow notices the silent peer) and status.json names worker 1."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pneumo", "train", str(tiny_pack), "--run-dir", str(run), "--variant", "blog",
           "--encoder-weights", "none", "--epochs", "100000", "--steps-per-epoch", "2", "--batch-size", "8"]
    envs = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        envs.append(env)
    procs = _start_workers([cmd, cmd], envs)
    try:
        deadline = time.monotonic() + 600
        while not read_history(run) and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
        assert read_history(run), "the chief finished no epoch"
        procs[1].kill()
        outputs = _finish(procs[:1], timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1, outputs[0]
    status = read_status(run)
    assert status["state"] == "failed", status
    assert status["error"].startswith(f"worker 1 (127.0.0.1:{ports[1]}) failed or stopped answering"), status
    assert f"worker 1 (127.0.0.1:{ports[1]}) failed or stopped answering" in outputs[0]


# --------------------------------------------------------------------------- through pneumo.train.jobs
@pytest.mark.slow
def test_jobs_launch_stop_and_resume_the_real_trainer(tiny_pack, tmp_path, monkeypatch):
    """The app's path: start_training -> running -> request_stop -> stopped -> resume -> finished."""
    monkeypatch.delenv("PNEUMO_TRAIN_COMMAND", raising=False)
    monkeypatch.setenv("PNEUMO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.chdir(tmp_path)  # the child must find pneumo through PYTHONPATH, not the cwd
    run = new_run_dir()
    cfg = _cfg(tiny_pack, epochs=3, steps_per_epoch=2)

    def wait(predicate, what, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not reached; train.log:\n{(run / 'train.log').read_text()}")

    pid = jobs.start_training(cfg, run)
    try:
        assert read_status(run)["state"] == "running" and active_run() == run
        wait(lambda: len(read_history(run)) >= 1, "epoch 1")
        request_stop(run)
        wait(lambda: read_status(run)["state"] != "running", "stop")
        status = read_status(run)
        assert status["state"] == "stopped" and status["pid"] == pid, status
        assert (run / "last.keras").is_file() and not (run / "STOP").exists()
        done = len(read_history(run))
        assert done < 3

        jobs.start_training(cfg, run, resume=True)
        wait(lambda: read_status(run)["state"] != "running", "the resumed run's end")
        assert read_status(run)["state"] == "finished", (run / "train.log").read_text()
    finally:
        st = read_status(run)
        if st["state"] == "running":
            os.kill(st["pid"], signal.SIGKILL)
    assert [r["epoch"] for r in read_history(run)] == [1, 2, 3]
    assert load_config(TrainConfig, run / "config.json") == cfg
    # the summary line follows the final status.json by a moment
    wait(lambda: "finished: 3/3 epochs" in (run / "train.log").read_text(), "the summary line", 60)
    log = (run / "train.log").read_text()
    assert "stopped after" in log and "Traceback" not in log


# --------------------------------------------------------------------------- issue 10: new options, warm start
@pytest.mark.parametrize("change, message", [
    (dict(variant="unet", width=0.5), "applies to variant 'unet-bn' only"),
    (dict(variant="unet-bn", width=0.25, encoder_weights="imagenet"), "fit VGG16 at width 1 only"),
    (dict(positive_fraction=1.5), "positive_fraction = 1.5"),
    (dict(lr_schedule="step"), "lr_schedule 'step' is unknown"),
    (dict(init_from="/nonexistent/run"), "init_from /nonexistent/run: no best.keras"),
])
def test_new_options_are_checked_before_anything(tiny_pack, tmp_path, no_model, change, message):
    run = tmp_path / "run"
    with pytest.raises(InputError, match=message):
        train(_cfg(tiny_pack, **change), run, verbose=0)
    assert not run.exists() or not any(run.iterdir())


def test_old_config_json_without_the_new_keys_loads(tmp_path):
    old = {k: v for k, v in to_dict(TrainConfig(pack="p.h5")).items()
           if k not in ("width", "positive_fraction", "lr_schedule", "init_from")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = load_config(TrainConfig, tmp_path / "config.json")
    assert (cfg.width, cfg.positive_fraction, cfg.lr_schedule, cfg.init_from) == (1.0, None, "constant", None)


# --------------------------------------------------------------------------- issue 17: precision
def test_precision_is_a_vocabulary_and_older_true_false_configs_load(tmp_path):
    from pneumo.cli import build_parser
    from pneumo.cli.train import config_from_args

    for old, now in ((True, "fp16"), (False, "none")):
        (tmp_path / "config.json").write_text(json.dumps({**to_dict(TrainConfig(pack="p.h5")), "mixed_precision": old}))
        assert load_config(TrainConfig, tmp_path / "config.json").mixed_precision == now
    assert TrainConfig().mixed_precision == "none"
    parse = build_parser().parse_args
    for flags, now in ((["--mixed-precision", "bf16"], "bf16"), (["--mixed-precision"], "fp16"),
                       (["--mixed-precision", "none"], "none"), (["--no-mixed-precision"], "none"), ([], "none")):
        assert config_from_args(parse(["train", "p.h5", *flags])).mixed_precision == now, flags
    with pytest.raises(SystemExit):
        parse(["train", "p.h5", "--mixed-precision", "fp8"])
    for bad in ("fp8", True, 1):
        with pytest.raises(InputError, match="mixed_precision .* is unknown .*none, bf16, fp16"):
            plan_run(TrainConfig(pack="p.h5", mixed_precision=bad))


@pytest.mark.parametrize("precision, policy, scaled", [
    ("none", "float32", False), ("bf16", "mixed_bfloat16", False), ("fp16", "mixed_float16", True)])
def test_bf16_compiles_without_loss_scaling_and_fp16_with_it(precision, policy, scaled):
    from pneumo.model.networks import build_model
    from pneumo.train.build import compile_model, set_precision

    before = keras.mixed_precision.global_policy()
    try:
        assert set_precision(precision) == policy
        model = build_model("unet-bn", input_size=64, encoder_weights=None, width=0.125)
        compile_model(model, 1e-3, TrainConfig(pack="p.h5", mixed_precision=precision, loss="bce+dice"))
        assert model.dtype_policy.name == policy
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(before)


def _native_bf16() -> bool:
    from pneumo.train.build import _cpu_has_bf16

    return _cpu_has_bf16()


@pytest.mark.skipif(not _native_bf16(), reason="bfloat16 convolutions need AMX/AVX512-BF16 on a CPU")
def test_a_bf16_run_records_its_precision(tiny_pack, tmp_path):
    run = tmp_path / "run"
    summary = train(_cfg(tiny_pack, variant="unet-bn", width=0.125, epochs=1, steps_per_epoch=1,
                         mixed_precision="bf16"), run, verbose=0)
    assert summary["state"] == "finished" and np.isfinite(summary["last"]["val_loss"])
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == "bf16"
    setup = read_status(run)["setup"]
    assert (setup["precision"], setup["policy"]) == ("bf16", "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run


def _bn_cfg(pack, **kw) -> TrainConfig:
    return _cfg(pack, **{"variant": "unet-bn", "width": 0.125, "loss": "bce+batch-dice",
                         "positive_fraction": 0.5, "epochs": 2, "steps_per_epoch": 2, "validation_steps": 1,
                         **kw})


def test_cosine_schedule_and_warm_start(tiny_pack, tmp_path):
    first = tmp_path / "first"
    summary = train(_bn_cfg(tiny_pack, lr_schedule="cosine"), first, verbose=0)
    assert summary["state"] == "finished"
    lrs = [float(r["lr"]) for r in _history(first)]
    assert lrs[0] < 1e-3 and lrs[1] < lrs[0] and lrs[1] == pytest.approx(0.0, abs=1e-9)  # to 0 at the end
    source = load_model(first / "best.keras", compile=False)

    # the warm start copies every weight before the first step
    from pneumo.model.networks import build_model, warm_start

    m = build_model("unet-bn", 64, None, width=0.125)
    warm_start(m, first / "best.keras", 64)
    for a, b in zip(m.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    second = tmp_path / "second"
    summary = train(_bn_cfg(tiny_pack, init_from=os.path.relpath(first), epochs=1), second, verbose=0)
    assert summary["state"] == "finished"
    assert load_config(TrainConfig, second / "config.json").init_from == os.path.abspath(first)  # recorded

    with pytest.raises(InputError, match=r"its model has width 0\.125, this run 0\.25"):
        train(_bn_cfg(tiny_pack, init_from=str(first), width=0.25), tmp_path / "w", verbose=0)
    with pytest.raises(InputError, match="its model has variant 'unet-bn', this run 'blog'"):
        train(_cfg(tiny_pack, init_from=str(first)), tmp_path / "v", verbose=0)
    small = write_test_pack(tmp_path / "p32.h5", counts=(8, 4, 4), size=32)
    with pytest.raises(InputError, match="trained on 64 px images, this pack is 32 px"):
        train(_bn_cfg(small, init_from=str(first), batch_size=4), tmp_path / "s", verbose=0)


# --------------------------------------------------------------------------- divergence, changed pack
def test_nan_mid_epoch_then_stop_keeps_the_last_good_checkpoint(tiny_pack, tmp_path, monkeypatch):
    """NaN at epoch 2, step 2 with a STOP already waiting: the run fails "diverged at epoch 2,
    step 2" and last.keras stays the (finite) one from epoch 1; nothing is saved from NaN weights."""
    import tensorflow as tf

    import pneumo.model.losses

    scale = tf.Variable(1.0, trainable=False)  # NaN from epoch 2, step 2: NaN loss and gradients
    real = pneumo.model.losses.get_loss

    def poisoned(name):
        base = real(name)

        def scaled_loss(y_true, y_pred):
            return base(y_true, y_pred) * scale
        return scaled_loss

    monkeypatch.setattr(pneumo.model.losses, "get_loss", poisoned)
    run = tmp_path / "run"
    saved = {}

    def watch(p):
        if p["epoch"] == 2 and p["step"] == 1 and not saved:
            saved["last"] = (run / "last.keras").read_bytes()
            scale.assign(float("nan"))
            (run / "STOP").write_text("")  # a stop would save the (NaN) weights

    with pytest.raises(Exception, match="diverged at epoch 2, step 2"):
        train(_cfg(tiny_pack, epochs=3, steps_per_epoch=3), run, verbose=0, progress=watch)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "diverged at epoch 2, step 2" in status["error"]
    assert (run / "last.keras").read_bytes() == saved["last"]
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 1
    weights = load_model(run / "last.keras", compile=False).get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert [r["epoch"] for r in _history(run)] == ["1"]


def test_divergence_in_the_first_epoch_says_no_checkpoint_was_kept(tmp_path):
    """Issue 18 item 14: "diverged at epoch 1" said last.keras keeps the last good epoch when
    no epoch had finished and there was none."""
    import threading

    from pneumo.store import run as runs
    from pneumo.train.monitor import Diverged, RunMonitor

    folder = runs.RunWriter(tmp_path, "2026-01-01T00:00:00+00:00", epochs=2, resumed=False)
    monitor = RunMonitor(folder, tmp_path, {"steps": 3, "batch_size": 2, "epochs": 2, "validation_steps": 1},
                         threading.Event(), None, float("inf"))
    monitor.on_epoch_begin(0)
    with pytest.raises(Diverged, match=r"at epoch 1, step 1: .*; no last\.keras was saved \(no epoch had finished\)$"):
        monitor.on_train_batch_end(0, {"loss": float("nan")})
    (tmp_path / "last.keras").write_bytes(b"an earlier epoch's")  # e.g. a resumed run
    with pytest.raises(Diverged, match=r"at epoch 1, step 3: .*; last\.keras keeps the last good epoch$"):
        monitor.on_epoch_end(0, {"loss": float("inf")})


def test_resume_refuses_a_changed_pack(tiny_pack, tmp_path):
    import shutil

    pack = tmp_path / "pack.h5"
    shutil.copy(tiny_pack, pack)
    run = tmp_path / "run"
    cfg = _cfg(pack, epochs=1, steps_per_epoch=1, validation_steps=1)
    train(cfg, run, verbose=0)
    recorded = json.loads((run / "pack.json").read_text())
    assert recorded["size"] == pack.stat().st_size and len(recorded["ids_sha256"]) == 64
    os.utime(pack, (1_000_000_000, 1_000_000_000))  # rewritten (or replaced) since
    with pytest.raises(InputError, match="changed since run run trained on it.*--allow-changed-pack"):
        train(None, run, resume=True, verbose=0)
    assert json.loads((run / "status.json").read_text())["state"] == "finished"  # untouched
    assert train(None, run, resume=True, verbose=0, allow_changed_pack=True)["state"] == "finished"
    assert json.loads((run / "pack.json").read_text())["mtime"] == 1_000_000_000


# --------------------------------------------------------------------------- exclusion list (train --exclude)
def _relabel(path, ids):
    path.write_text("id,category\n" + "".join(f"{i},label doubtful\n" for i in ids), encoding="utf-8")
    return path


def test_resume_refuses_a_changed_exclusion_list_before_building(tiny_pack, tmp_path, no_model):
    from pneumo.store.config_file import save_config
    from pneumo.exclude import pack_exclusion
    from pneumo.store.run import write_exclusion_record

    lst = _relabel(tmp_path / "relabel.csv", ["train-0002", "dev-0001"])
    cfg = _cfg(tiny_pack, exclude=str(lst))
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.json")
    write_exclusion_record(run, pack_exclusion(tiny_pack, lst).record())
    record = (run / "excluded.json").read_text()
    _relabel(lst, ["train-0002"])
    with pytest.raises(InputError, match=r"exclusion list .*relabel\.csv changed since run run started with it "
                                         r"\(2 ids then, 1 now"):
        train(None, run, resume=True)
    assert (run / "excluded.json").read_text() == record  # untouched
    with pytest.raises(InputError, match="exclude differ from its config.json"):
        train(_cfg(tiny_pack, exclude=str(tmp_path / "other.csv")), run, resume=True)
    (run / "excluded.json").write_text("{")
    with pytest.raises(InputError, match="excluded.json: damaged"):
        train(None, run, resume=True)
    lst.unlink()
    with pytest.raises(InputError, match="relabel.csv: exclusion list not found"):
        train(None, run, resume=True)
