"""Presets (config.PRESETS), ``train --preset`` override order, and ``python -m pneumo quickstart``."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pneumo import config as C
from pneumo.store.config_file import load_config, save_config
from pneumo.cli import build_parser, main
from pneumo.errors import InputError


def _config(argv):
    from pneumo.cli.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_presets_are_configs_without_a_pack():
    assert {"quick-demo", "blog"} <= set(C.PRESETS)
    for name, cfg in C.PRESETS.items():
        assert isinstance(cfg, C.TrainConfig) and cfg.pack == ""
        assert C.from_dict(C.TrainConfig, C.to_dict(cfg)) == cfg  # JSON-safe
        assert name in C.PRESET_TITLES
    q = C.preset("quick-demo")
    assert q.variant == "unet-bn" and q.encoder_weights is None and q.positive_fraction is not None
    assert C.preset("blog").variant == "blog" and C.preset("blog").lr == 2e-5
    with pytest.raises(InputError, match=r"unknown preset 'fast' \(known: quick-demo, blog"):
        C.preset("fast")


def test_command_line_options_override_the_preset():
    q = C.PRESETS["quick-demo"]
    got = _config(["p.h5", "--preset", "quick-demo"])
    assert got == dataclasses.replace(q, pack="p.h5")
    got = _config(["p.h5", "--preset", "quick-demo", "--epochs", "3", "--width", "0.5",
                   "--positive-fraction", "none", "--lr-schedule", "constant", "--rotation", "5"])
    assert (got.epochs, got.width, got.positive_fraction, got.lr_schedule) == (3, 0.5, None, "constant")
    assert got.augment.rotation == 5.0 and got.augment.horizontal_flip == q.augment.horizontal_flip
    assert (got.lr, got.batch_size, got.variant, got.loss) == (q.lr, q.batch_size, q.variant, q.loss)  # kept
    got = _config(["p.h5", "--preset", "blog", "--positive-fraction", "0.25", "--init-from", "runs/a"])
    assert got.variant == "blog" and got.positive_fraction == 0.25 and got.init_from == "runs/a"
    # without --preset: the defaults, as before
    assert _config(["p.h5"]) == C.TrainConfig(pack="p.h5")


def test_preset_errors(tmp_path):
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        _config(["p.h5", "--preset", "nope"])
    save_config(C.TrainConfig(pack="p.h5"), tmp_path / "c.json")
    with pytest.raises(InputError, match="--preset and --config are alternatives"):
        _config(["--preset", "blog", "--config", str(tmp_path / "c.json")])
    with pytest.raises(InputError, match="--positive-fraction 'half'"):
        _config(["p.h5", "--positive-fraction", "half"])


def test_cli_unknown_preset_is_one_line(capsys):
    assert main(["train", "p.h5", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown preset 'nope'") and err.count("\n") == 1


def test_quickstart_makes_the_pack_trains_evaluates_and_prints(tmp_path, monkeypatch, capsys):
    """The whole path at toy scale: 64 px demo pack, 1 epoch of 2 steps (mechanics, not quality)."""
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.setattr(C, "QUICK_PACK_OPTIONS", {"size": 64, "count": 60})
    small = {**C.to_dict(C.PRESETS["quick-demo"]), "width": 0.125, "batch_size": 4, "validation_steps": 1}
    monkeypatch.setitem(C.PRESETS, "quick-demo", C.from_dict(C.TrainConfig, small))
    assert main(["quickstart", "--epochs", "1", "--steps-per-epoch", "2"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "data" / C.QUICK_PACK_NAME).is_file()
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]  # .start.lock: jobs' own
    assert len(runs) == 1 and (runs[0] / "best.keras").is_file()
    metrics = json.loads((runs[0] / "metrics_test.json").read_text())
    assert f"SIIM score          {metrics['siim_score']:.3f}" in out
    assert f"all-empty prediction: {metrics['empty_baseline']:.3f}" in out
    assert "Dice on positives" in out and "presence AUC" in out
    assert "streamlit run streamlit_app.py" in out and f"python -m pneumo review {runs[0]}" in out
    cfg = load_config(C.TrainConfig, runs[0] / "config.json")
    assert cfg.epochs == 1 and cfg.steps_per_epoch == 2 and cfg.width == 0.125


def test_quickstart_bad_pack_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    (tmp_path / "bad.h5").write_text("not a pack")
    assert main(["quickstart", "--pack", str(tmp_path / "bad.h5")]) == 2
    assert "bad.h5" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------------------------------------- --exclude
def _write_list(path, ids, note=""):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "source", "category", "notes"])
        w.writerows([i, "", "label doubtful", note] for i in ids)
    return path


def test_exclude_option_sets_the_config(tmp_path):
    assert _config(["p.h5", "--exclude", "relabel.csv"]).exclude == "relabel.csv"
    assert _config(["p.h5"]).exclude is None
    save_config(C.TrainConfig(pack="p.h5", exclude="/lists/a.csv"), tmp_path / "c.json")
    assert _config(["--config", str(tmp_path / "c.json")]).exclude == "/lists/a.csv"  # kept from the config
    assert _config(["--config", str(tmp_path / "c.json"), "--exclude", "none"]).exclude is None  # dropped


def test_train_exclude_end_to_end(tmp_path, monkeypatch, capsys):
    """``train --exclude``: the listed train/dev images are never read into a batch (every batch
    is read through the spied reader), test is untouched, and the run records the list; a resume
    with other ids in the list is refused, one with only its notes edited is not."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("keras")
    from conftest import write_test_pack

    import pneumo.train.data as D

    pack = write_test_pack(tmp_path / "p.h5", counts=(16, 8, 4), size=32)
    lst = _write_list(tmp_path / "relabel.csv", ["train-0001", "train-0004", "dev-0002", "test-0000", "nope"])
    reads: list[tuple[str, list[int]]] = []
    real = D._H5Reader.__call__

    def spy(self, idx):
        reads.append((self.split, np.asarray(idx).tolist()))
        return real(self, idx)

    monkeypatch.setattr(D._H5Reader, "__call__", spy)
    monkeypatch.setattr(D, "fits_in_memory", lambda nbytes: False)  # stream, so every read is seen
    run = tmp_path / "run"
    argv = ["train", str(pack), "--run-dir", str(run), "--exclude", str(lst), "--variant", "blog",
            "--encoder-weights", "none", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8",
            "--no-augment"]
    assert main(argv) == 0, capsys.readouterr().err
    train_read = {i for split, idx in reads if split == "train" for i in idx}
    dev_read = [i for split, idx in reads if split == "dev" for i in idx]
    assert train_read == set(range(16)) - {1, 4}  # 2 batches of 8 cover the 14 kept ones, never 1 or 4
    # one in-order pass without dev-0002, the last batch padded to 8 with a copy of the first (weight 0)
    assert dev_read == [0, 1, 3, 4, 5, 6, 7, 0]
    assert not any(split == "test" for split, _ in reads)

    saved = json.loads((run / "config.json").read_text())
    assert saved["exclude"] == str(lst.absolute())
    record = json.loads((run / "excluded.json").read_text())
    assert record["list"] == str(lst.absolute()) and record["count"] == 3 and record["listed"] == 5
    assert record["splits"]["train"] == {"count": 2, "ids": ["train-0001", "train-0004"]}
    assert record["splits"]["dev"] == {"count": 1, "ids": ["dev-0002"]}
    assert record["test_kept"] == {"count": 1, "ids": ["test-0000"]}  # test is never filtered
    assert record["unknown"] == {"count": 1, "ids": ["nope"]}
    capsys.readouterr()

    # notes edited, same ids: the same training data, so resuming is fine
    _write_list(lst, ["nope", "test-0000", "dev-0002", "train-0004", "train-0001"], note="seen twice")
    assert main(["train", "--resume", "--run-dir", str(run)]) == 0, capsys.readouterr().err
    # another id: refused before anything is written, the record unchanged
    before = (run / "excluded.json").read_text()
    _write_list(lst, ["train-0001", "train-0004", "dev-0002", "train-0007"])
    assert main(["train", "--resume", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "exclusion list" in err and "changed since run run started" in err and "4 now" in err
    assert (run / "excluded.json").read_text() == before


def test_quickstart_waits_its_turn_like_the_app(tmp_path, monkeypatch, capsys, gate):
    """One job at a time in the workspace: quickstart refuses while the app's training runs,
    before it makes a pack or a run folder."""
    import shlex
    import sys
    import time
    from pathlib import Path

    from pneumo.store.run import read_status, request_stop
    from pneumo.store.run_list import list_runs, new_run_dir
    from pneumo.train import jobs

    monkeypatch.setenv("PNEUMO_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    fake = Path(__file__).with_name("fake_trainer.py")
    monkeypatch.setenv("PNEUMO_TRAIN_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}")
    monkeypatch.setenv("PNEUMO_TESTING", "1")
    run = new_run_dir(prefix="app")
    jobs.start_training(C.TrainConfig(pack="demo.h5", encoder_weights=None, epochs=1), run)  # held at the gate
    try:
        assert main(["quickstart", "--epochs", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: another job is running (training run {run.name})") and err.count("\n") == 1
        assert [r.path for r in list_runs()] == [run] and not (tmp_path / "data").exists()
    finally:
        request_stop(run)  # the fake trainer ends at the STOP it finds at the gate
        deadline = time.monotonic() + 30
        while read_status(run)["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
