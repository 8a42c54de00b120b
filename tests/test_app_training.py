"""The Training page through AppTest: presets and form from pneumo.config, Start/Stop, the live view,
the all-empty Dice level, the ImageNet weights check, past runs and their comparison.

Fixtures and helpers come from ``test_app`` (a workspace with a 64 px demo pack; training by
``tests/fake_trainer.py``). Some runs are written by hand to show fixed values.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from pneumo import config as C  # noqa: E402
from pneumo import settings  # noqa: E402
from pneumo.model import imagenet
from pneumo.store.run import read_history, read_progress, read_status
from pneumo.store.run_list import list_runs
from pneumo.store import pack
from pneumo._procs import process_start  # noqa: E402
from pneumo.config import TrainConfig, from_dict, normalise_train_paths  # noqa: E402
from pneumo.store.config_file import save_config
from pneumo_app.common import md_escape  # noqa: E402
from test_app import _app, _badge, _no_exception, _wait_for, demo_pack_file, workspace  # noqa: E402,F401

PAGE = "app_pages/training.py"


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """A Keras home without the ImageNet file."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models" / C.IMAGENET_NOTOP_FILE


@pytest.fixture
def weights(no_weights, monkeypatch):
    """A stand-in ImageNet file in the Keras home, accepted by its md5 (the real one is 58 MB)."""
    no_weights.parent.mkdir(parents=True)
    no_weights.write_bytes(b"stand-in for the ImageNet weights")
    monkeypatch.setattr(imagenet, "IMAGENET_NOTOP_MD5", hashlib.md5(no_weights.read_bytes()).hexdigest())
    return no_weights


def _plotly(at, key: str) -> dict:
    (chart,) = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key) or key in c.proto.id]
    return json.loads(chart.proto.spec)


def _hand_run(name: str, val_dice: list[float], state: str = "finished", **cfg) -> Path:
    """A run folder written by hand: config, status and history with these val Dice values."""
    run = settings.runs_dir() / name
    run.mkdir(parents=True)
    save_config(TrainConfig(pack=str(settings.demo_pack_path()), encoder_weights=None, epochs=len(val_dice),
                            batch_size=8, **cfg), run / "config.json")
    pid = os.getpid()
    status = {"state": state, "pid": pid, "pid_start": process_start(pid), "started": "2026-01-01T00:00:00+00:00",
              "updated": "2026-01-01T00:00:00+00:00", "ended": None if state == "running" else "2026-01-01T00:01:00+00:00",
              "error": None, "epoch": len(val_dice), "epochs": len(val_dice) + (state == "running")}
    (run / "status.json").write_text(json.dumps(status))
    rows = [f"{e},train,0.5,0.5,0.4,0.6,{d},0.5,0.001,1.0" for e, d in enumerate(val_dice, start=1)]
    (run / "history.csv").write_text("epoch,stage,loss,dice,iou,val_loss,val_dice,val_iou,lr,seconds\n"
                                     + "\n".join(rows) + "\n")
    return run


def _end(run: Path) -> None:
    """A hand-made 'running' run marked finished, so the workspace teardown does not wait for it."""
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "finished"}))


# --------------------------------------------------------------------------- form and presets
def test_form_is_built_from_the_library_vocabularies(workspace, weights):
    at = _app(PAGE)
    # every value shown under a label of its own (not the bare name)
    assert all(label not in C.VARIANTS for label in at.selectbox(key="tr_variant").options)
    for key, values in (("tr_variant", C.VARIANTS), ("tr_loss", C.LOSSES), ("tr_lr_schedule", C.LR_SCHEDULES),
                        ("tr_mp", C.PRECISIONS)):
        assert len(at.selectbox(key=key).options) == len(values)
        for value in values:  # every value of the vocabulary can be chosen
            at.selectbox(key=key).set_value(value).run()
            _no_exception(at)
            assert at.selectbox(key=key).value == value
    fill = [s for s in at.selectbox if s.key and s.key.endswith("_fill")][0]
    assert fill.options == list(C.FILL_MODES)
    assert at.selectbox(key="tr_preset").options == [C.PRESET_TITLES[n] for n in C.PRESETS]


def test_quick_demo_preset_starts_exactly_the_library_preset(workspace, no_weights):
    at = _app(PAGE)
    assert at.selectbox(key="tr_preset").value == C.QUICK_PRESET
    at.button(key="tr_start").click().run()
    _no_exception(at)
    (run,) = list_runs()
    want = normalise_train_paths(dataclasses.replace(C.preset(C.QUICK_PRESET), pack=str(settings.demo_pack_path())))
    assert from_dict(TrainConfig, run.config) == want


def _quick_pack() -> Path:
    """The quick-demo preset's own pack, here a copy of the 64 px test pack."""
    quick = settings.data_dir() / C.QUICK_PACK_NAME
    quick.write_bytes(settings.demo_pack_path().read_bytes())
    return quick


def test_form_opens_on_the_presets_own_pack_and_says_why(workspace, weights):
    quick = _quick_pack()
    at = _app()  # Home first: the session remembers demo.h5, as after a first launch
    at.switch_page(PAGE).run()
    _no_exception(at)
    assert at.selectbox(key="tr_preset").value == C.QUICK_PRESET
    assert at.selectbox(key="tr_pack").value == str(quick)
    note = " ".join(c.value for c in at.caption)
    assert f"**{md_escape(C.QUICK_PACK_NAME)}** is the preset's own pack" in note and "128 px" in note
    # a preset without a pack of its own keeps the pack; one chosen by hand is kept too
    at.selectbox(key="tr_preset").set_value("blog").run()
    assert at.selectbox(key="tr_pack").value == str(quick)
    at.selectbox(key="tr_preset").set_value(C.QUICK_PRESET).run()
    at.selectbox(key="tr_pack").set_value(str(settings.demo_pack_path())).run()
    _no_exception(at)
    assert at.selectbox(key="tr_pack").value == str(settings.demo_pack_path())
    assert f"has its own pack, **{md_escape(C.QUICK_PACK_NAME)}**" in " ".join(c.value for c in at.caption)
    at.number_input(key="tr_epochs").set_value(1).run()
    assert at.selectbox(key="tr_pack").value == str(settings.demo_pack_path())
    # choosing the preset again opens its own pack again; Start trains on it
    at.selectbox(key="tr_preset").set_value("blog").run()
    at.selectbox(key="tr_preset").set_value(C.QUICK_PRESET).run()
    assert at.selectbox(key="tr_pack").value == str(quick)
    at.button(key="tr_start").click().run()
    _no_exception(at)
    (run,) = list_runs()
    assert run.config["pack"] == str(quick)


def test_form_offers_to_make_the_presets_missing_pack(workspace, no_weights):
    quick = settings.data_dir() / C.QUICK_PACK_NAME
    at = _app(PAGE)
    assert at.selectbox(key="tr_pack").value == str(settings.demo_pack_path())  # until it exists
    (offer,) = [i.value for i in at.info if "not made yet" in i.value]
    assert f"**{md_escape(C.QUICK_PACK_NAME)}**" in offer and "128 px" in offer
    at.button(key="tr_make_pack").click().run()
    _no_exception(at)
    assert pack.read_info(quick).size == 64  # the tests' small demo options
    assert at.selectbox(key="tr_pack").value == str(quick)
    assert not [i for i in at.info if "not made yet" in i.value] and "tr_make_pack" not in [b.key for b in at.button]


def test_presets_fill_the_form(workspace, weights):
    at = _app(PAGE)
    at.selectbox(key="tr_preset").set_value("blog").run()
    _no_exception(at)
    blog = C.preset("blog")
    assert at.selectbox(key="tr_variant").value == blog.variant
    assert at.number_input(key="tr_epochs").value == blog.epochs
    assert at.number_input(key="tr_batch").value == blog.batch_size
    assert at.number_input(key="tr_lr").value == pytest.approx(blog.lr)
    assert at.selectbox(key="tr_loss").value == blog.loss
    assert at.selectbox(key="tr_weights").value == "imagenet"
    assert not at.warning  # the weights are here
    at.selectbox(key="tr_preset").set_value(C.QUICK_PRESET).run()
    quick = C.preset(C.QUICK_PRESET)
    assert at.selectbox(key="tr_variant").value == quick.variant
    assert at.number_input(key="tr_width").value == pytest.approx(quick.width)
    assert at.number_input(key="tr_positive").value == pytest.approx(quick.positive_fraction or 0.0)


def test_pretrained_presets_only_with_the_weights_and_where_to_put_them(workspace, no_weights, monkeypatch):
    pretrained = [n for n in C.PRESETS if C.PRESETS[n].encoder_weights == "imagenet"]
    assert pretrained
    at = _app(PAGE)
    offered = at.selectbox(key="tr_preset").options
    assert not {C.PRESET_TITLES[n] for n in pretrained} & set(offered)
    note = " ".join(c.value for c in at.caption)
    assert md_escape(no_weights) in note and md_escape(imagenet.IMAGENET_NOTOP_URL) in note
    # a wrong file there: still not offered, and the note says what is wrong with it
    no_weights.parent.mkdir(parents=True)
    no_weights.write_bytes(b"half a download")
    at = _app(PAGE)
    assert not {C.PRESET_TITLES[n] for n in pretrained} & set(at.selectbox(key="tr_preset").options)
    assert "md5" in " ".join(c.value for c in at.caption)
    # the right file: offered
    monkeypatch.setattr(imagenet, "IMAGENET_NOTOP_MD5", hashlib.md5(b"half a download").hexdigest())
    at = _app(PAGE)
    assert {C.PRESET_TITLES[n] for n in pretrained} <= set(at.selectbox(key="tr_preset").options)


def test_imagenet_chosen_by_hand_without_the_weights_offers_training_without_them(workspace, no_weights):
    at = _app(PAGE)
    at.selectbox(key="tr_weights").set_value("imagenet").run()
    assert at.warning and "ImageNet VGG16 weights are not on this machine" in at.warning[0].value
    assert md_escape(no_weights) in at.warning[0].value
    assert at.button(key="tr_start").disabled
    at.button(key="tr_no_weights").click().run()
    _no_exception(at)
    assert at.selectbox(key="tr_weights").value == "none"
    assert not at.warning
    at.number_input(key="tr_epochs").set_value(1)
    at.button(key="tr_start").click().run()
    assert list_runs()[0].config["encoder_weights"] is None


# --------------------------------------------------------------------------- a run
def test_training_start_runs_then_finishes(workspace, gate):
    at = _app(PAGE)
    at.number_input(key="tr_epochs").set_value(2)
    at.button(key="tr_start").click().run()
    _no_exception(at)
    runs = list_runs()
    assert len(runs) == 1
    cfg = runs[0].config
    assert cfg["epochs"] == 2 and cfg["pack"] == str(settings.demo_pack_path())
    assert cfg["variant"] == C.preset(C.QUICK_PRESET).variant
    assert "running" in _badge(at)
    assert at.button(key="tr_start").disabled
    gate.touch()  # the fake trainer held until now: "running" above was no race
    _wait_for(at, lambda a: "finished" in _badge(a))
    assert not at.button(key="tr_start").disabled
    assert at.get("plotly_chart")  # loss/Dice curves
    assert len(read_history(runs[0].path)) == 2
    # the picker names the run's real state, not the one it had when the page was drawn
    assert at.selectbox(key="tr_run").options == [f"{runs[0].name}  (finished)"]


def test_live_view_table_and_batch_loss_follow_the_run(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "40")
    at = _app(PAGE)
    at.button(key="tr_start").click().run()
    _wait_for(at, lambda a: len(a.get("progress")) > 0 and "epoch" in a.get("progress")[0].proto.text)
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["Loss (this epoch)", "Images/s", "ETA", "Best val Dice"]
    # the "All runs" table follows the epochs while the run trains
    _wait_for(at, lambda a: a.dataframe[0].value["epochs"][0].split(" / ")[0] not in ("0",))
    first = at.dataframe[0].value["epochs"][0]
    _wait_for(at, lambda a: a.dataframe[0].value["epochs"][0] != first)
    _wait_for(at, lambda a: any("tr_batch_curve" in c.proto.id for c in a.get("plotly_chart")))
    y = [v for v in _plotly(at, "tr_batch_curve")["data"][0]["y"] if v is not None]
    assert len(y) >= 2 and all(0 < v < 1 for v in y)
    at.button(key="tr_stop").click().run()
    _wait_for(at, lambda a: "stopped" in _badge(a))


def test_first_step_shows_measuring_and_predicts_nothing_yet(workspace):
    info = pack.read_info(settings.demo_pack_path())
    level = 1 - info.positive_fractions["dev"]
    run = _hand_run("run-hand-1", [level], state="running")
    # the first step of epoch 2: the trainer has no rate yet
    (run / "progress.json").write_text(json.dumps({
        "stage": "train", "epoch": 2, "epochs": 2, "step": 1, "steps": 5, "loss": 0.4,
        "images_per_s": 0.0, "eta_s": 0.0, "updated": "2026-01-01T00:00:00+00:00"}))
    try:
        at = _app(PAGE)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Images/s"] == "measuring..." and metrics["ETA"] == "measuring..."
        assert any("predicts nothing yet" in i.value for i in at.info)
        dice = [t for t in _plotly(at, "tr_curves")["data"] if t.get("name") == "all-empty prediction"]
        assert dice and dice[0]["y"] == [pytest.approx(level)] * 2
        # with a rate, numbers
        (run / "progress.json").write_text(json.dumps({
            "stage": "train", "epoch": 2, "epochs": 2, "step": 3, "steps": 5, "loss": 0.4,
            "images_per_s": 12.5, "eta_s": 75.0, "updated": "2026-01-01T00:00:00+00:00"}))
        at.run()
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Images/s"] == "12.5" and metrics["ETA"] == "1 min 15 s"
    finally:
        _end(run)


def test_a_run_of_another_host_shows_running_there(workspace):
    """A runs folder shared with a GPU machine: its run's pid is not visible here, and that is no failure."""
    from pneumo._io import now_iso

    run = _hand_run("run-remote", [0.5], state="running")
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "pid": 999_999_999, "host": "gpu-node-7",
                                                 "updated": now_iso()}))
    try:
        at = _app(PAGE)
        assert "running" in _badge(at) and "failed" not in _badge(at)
        assert any(c.value == f"running on {md_escape('gpu-node-7')}" for c in at.caption)
        assert at.button(key="tr_start").disabled  # one job at a time, across the shared workspace
    finally:
        _end(run)


def test_a_run_shows_where_it_runs_strategy_batches_and_precision(workspace):
    """Issue 17 item 5: the setup the trainer recorded in status.json, one caption."""
    run = _hand_run("run-cluster", [0.5])
    status = json.loads((run / "status.json").read_text())
    setup = {"strategy": "MultiWorkerMirroredStrategy", "cluster": "Slurm", "workers": 2, "replicas": 8,
             "global_batch": 64, "per_replica_batch": 8, "precision": "bf16", "policy": "mixed_bfloat16",
             "devices": ["GPU:0 (NVIDIA H200)"], "addresses": ["n1:8888", "n2:8888"]}
    (run / "status.json").write_text(json.dumps({**status, "setup": setup}))
    at = _app(PAGE)
    _no_exception(at)
    want = ("2 workers (Slurm) x 4 replicas, MultiWorkerMirroredStrategy; batch 64 = 8 x 8 per replica; "
            "precision bf16; devices GPU:0 (NVIDIA H200)")
    assert any(c.value == md_escape(want) for c in at.caption), [c.value for c in at.caption]


def test_a_model_above_the_all_empty_level_is_not_said_to_predict_nothing(workspace):
    info = pack.read_info(settings.demo_pack_path())
    level = 1 - info.positive_fractions["dev"]
    _hand_run("run-hand-2", [level, min(1.0, level + 0.05)])
    at = _app(PAGE)
    assert not any("predicts nothing" in i.value for i in at.info)
    assert [t for t in _plotly(at, "tr_curves")["data"] if t.get("name") == "all-empty prediction"]


def test_training_stop(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "100")
    at = _app(PAGE)
    at.button(key="tr_start").click().run()
    run = list_runs()[0]
    _wait_for(at, lambda a: read_progress(run.path) is not None)
    at.button(key="tr_stop").click().run()
    _no_exception(at)
    # Both, in one rerun: the page's Start is read before its run view, so a stop landing between
    # the two reads shows "stopped" beside a still-disabled Start until the next refresh.
    _wait_for(at, lambda a: "stopped" in _badge(a) and not a.button(key="tr_start").disabled)
    assert read_status(run.path)["state"] == "stopped"
    assert (run.path / "last.keras").exists()
    assert not at.button(key="tr_start").disabled


def test_training_failure_is_shown_with_its_error(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_FAIL", "1")
    at = _app(PAGE)
    at.button(key="tr_start").click().run()
    _wait_for(at, lambda a: "failed" in _badge(a))
    assert any("fake failure" in e.value for e in at.error)
    table = at.dataframe[0].value
    assert list(table["state"]) == ["failed"] and list(table["error"]) == ["fake failure"]


def test_training_second_start_refused_while_one_runs(workspace, gate):
    first = _app(PAGE)
    first.button(key="tr_start").click().run()
    # a second tab (a new session) finds the run and cannot start another
    second = _app(PAGE)
    assert second.button(key="tr_start").disabled
    assert "running" in _badge(second)
    assert len(list_runs()) == 1


def test_past_runs_are_compared_on_whole_epochs(workspace):
    _hand_run("run-a", [0.5, 0.6, 0.7])
    _hand_run("run-b", [0.4, 0.5, 0.6])
    at = _app(PAGE)
    assert len(at.dataframe[0].value) == 2
    assert len(at.multiselect(key="tr_compare").value) == 2
    figure = _plotly(at, "tr_compare_chart")
    assert len(figure["data"]) == 2 and figure["layout"]["yaxis"]["title"]["text"] == "val loss"
    xaxis = figure["layout"]["xaxis"]
    assert xaxis["tickmode"] == "linear" and xaxis["dtick"] == 1  # ticks 1, 2, 3, not 1 1 1 2 2 2
