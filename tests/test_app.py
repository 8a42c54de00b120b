"""The Streamlit app (Home, Data, Augmentation, Training) through streamlit.testing.v1.AppTest.

Each test gets its own workspace (``PNEUMO_WORKSPACE``) holding a copy of a tiny 64 px demo
pack; training uses ``tests/fake_trainer.py`` through ``PNEUMO_TRAIN_COMMAND``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from pneumo import settings  # noqa: E402
from pneumo.train import jobs
from pneumo.store.run import read_status, request_stop
from pneumo.store.run_list import active_run, list_runs, new_run_dir
from pneumo.ingest import packer
from pneumo.store import pack, quickstart_job
from pneumo.store.predictions import read_metrics
from pneumo.errors import InputError  # noqa: E402
from pneumo_app import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
FAKE_TRAINER = ROOT / "tests" / "fake_trainer.py"
FAKE_QUICKSTART = ROOT / "tests" / "fake_quickstart.py"
TIMEOUT = 60
WAIT_S = 120  # the longest any wait on another process may take before the test fails


@pytest.fixture(scope="session")
def demo_pack_file(tmp_path_factory) -> Path:
    """A 64 px demo pack of 40 phantoms (about 9 positive), made once and copied per test."""
    return packer.make_demo_pack(tmp_path_factory.mktemp("demo") / "demo.h5", count=40, size=64, workers=1).path


@pytest.fixture
def workspace(tmp_path, monkeypatch, demo_pack_file) -> Path:
    ws = tmp_path / "ws"
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(ws))
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.setenv("PNEUMO_TRAIN_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TRAINER))}")
    monkeypatch.setenv("PNEUMO_TESTING", "1")  # the hook is ignored without it
    monkeypatch.setenv("PNEUMO_FAKE_SECONDS_PER_EPOCH", "0.5")
    # Home's quick demo: the real quickstart with its TensorFlow steps faked, on a small quick pack
    monkeypatch.setenv("PNEUMO_QUICKSTART_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_QUICKSTART))}")
    monkeypatch.setenv("PNEUMO_FAKE_PACK_OPTIONS", json.dumps({"count": 100, "size": 64, "workers": 1}))
    for name in ("PNEUMO_FAKE_EPOCHS", "PNEUMO_FAKE_FAIL"):
        monkeypatch.delenv(name, raising=False)
    # A first launch or the quick start would otherwise render 400 phantoms at 256/128 px.
    monkeypatch.setattr(common, "DEMO_PACK_OPTIONS", {"count": 24, "size": 64, "workers": 1})
    settings.data_dir().mkdir(parents=True)
    shutil.copy(demo_pack_file, settings.demo_pack_path())
    yield ws
    _stop_all(ws / "runs")


def _stop_all(runs: Path) -> None:
    """Never leave a fake trainer or quick demo running after a test: ask it to stop (it ends
    within a step), and kill it if it has not ended after a bound far above that on any machine."""
    deadline = time.monotonic() + WAIT_S
    quick = quickstart_job.read_job(runs)
    if quick is not None and quick["state"] == "running":
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(quick["pid"], signal.SIGKILL)  # its run, if any, then reads as ended
    while (run := active_run(runs)) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(read_status(run).get("pid"), signal.SIGKILL)
            raise AssertionError(f"{run}: the fake trainer ignored STOP for {WAIT_S} s; killed")
        request_stop(run)
        time.sleep(0.2)


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(page).run()
    _no_exception(at)
    return at


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _wait_for(at: AppTest, predicate, seconds: float | None = None) -> None:
    """Re-run the app until ``predicate(at)`` holds (what the fragment's timer does in a browser).

    ``seconds`` (default :data:`WAIT_S`) only bounds how long a failing test takes: a loaded
    machine may be slow to start the fake trainer's Python, never wrong."""
    seconds = WAIT_S if seconds is None else seconds
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        _no_exception(at)
        if predicate(at):
            return
        time.sleep(0.3)
    raise AssertionError("condition not reached; markdown: " + repr([m.value for m in at.markdown][-5:]))


def _badge(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown if "-badge[" in m.value)


# --------------------------------------------------------------------------- navigation, home
def test_home_lists_packs_and_pages(workspace):
    at = _app()
    assert at.title[0].value == "pneumo"
    packs_table = at.dataframe[0].value
    assert list(packs_table["pack"]) == ["demo.h5"]
    assert int(packs_table["train"][0]) + int(packs_table["dev"][0]) + int(packs_table["test"][0]) == 40
    labels = {link.proto.label for link in at.get("page_link")}
    assert {"Augmentation preview", "Training", "Make or inspect a pack on the Data page"} <= labels
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert str(workspace.resolve()) in sidebar


def test_first_launch_creates_the_demo_pack(workspace):
    settings.demo_pack_path().unlink()
    at = _app()
    info = pack.read_info(settings.demo_pack_path())
    assert info.size == 64 and sum(info.counts.values()) == 24
    assert list(at.dataframe[0].value["pack"]) == ["demo.h5"]


def test_no_first_launch_pack_when_another_pack_exists(workspace):
    settings.demo_pack_path().rename(settings.data_dir() / "mine.h5")
    _app()
    assert not settings.demo_pack_path().exists()


@pytest.mark.parametrize("page", ["app_pages/data.py", "app_pages/augmentation.py", "app_pages/training.py"])
def test_page_renders_on_the_demo_pack(workspace, page):
    at = _app(page)
    assert at.title[0].value == {"app_pages/data.py": "Data", "app_pages/augmentation.py": "Augmentation",
                                 "app_pages/training.py": "Training"}[page]
    assert not at.error


def test_navigation_lists_every_page_and_survives_reruns(workspace):
    assert [p for p, _, _ in common.APP_PAGES] == [
        "app_pages/home.py", "app_pages/data.py", "app_pages/augmentation.py", "app_pages/training.py", "app_pages/review.py"]
    at = _app("app_pages/data.py")
    at.selectbox(key="data_browse_which").set_value("negative").run()  # a re-run of the page alone...
    _no_exception(at)
    # ...still goes through the app: the workspace sidebar is drawn
    assert str(workspace.resolve()) in " ".join(c.value for c in at.sidebar.caption)


def _wait_job(predicate, what: str) -> dict:
    """Poll the quick demo's record, with no app session running, until ``predicate(job)``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = jobs.quick_demo_job()
        if job is not None and predicate(job):
            return job
        time.sleep(0.1)
    log = quickstart_job.log_path()
    raise AssertionError(f"quick demo never {what}: {jobs.quick_demo_job()}; log:\n"
                         + (log.read_text(errors="replace")[-3000:] if log.exists() else ""))


def _progress_texts(at: AppTest) -> str:
    return " ".join(p.proto.text for p in at.get("progress"))


def test_home_quick_demo_ends_with_its_test_scores_and_opens_review(workspace):
    at = _app()
    at.button(key="home_quick").click().run()
    _no_exception(at)
    job = jobs.quick_demo_job()  # recorded before the click returned, by another process
    assert job["state"] == "running" and job["pid"] != os.getpid()
    job = _wait_job(lambda j: j["state"] != "running", "ended")
    assert job["state"] == "finished", job
    quick = settings.data_dir() / common.QUICK_PACK_NAME
    assert quick.is_file()
    (run,) = list_runs()
    assert run.path == job["run"] and run.name.startswith("quickstart-") and run.state == "finished"
    quick_demo = common.PRESETS[common.QUICK_PRESET]  # the fake keeps these, shrinks epochs and batches
    assert run.config["pack"] == str(quick) and run.config["encoder_weights"] is None
    assert run.config["variant"] == quick_demo.variant and run.config["width"] == quick_demo.width
    m = read_metrics(run.path, "test")
    at.run()
    _no_exception(at)
    shown = {x.label: x for x in at.metric}
    # the figures `python -m pneumo quickstart` prints, from what the evaluation wrote
    assert shown["SIIM score"].value == f"{m['siim_score']:.3f}"
    assert shown["SIIM score"].proto.delta == f"{m['siim_score'] - m['empty_baseline']:+.3f} vs all-empty"
    assert shown["All-empty prediction"].value == f"{m['empty_baseline']:.3f}"
    assert shown["Dice on positive images"].value == f"{m['dice_positive_mean']:.3f}"
    assert shown["Presence AUC"].value == f"{m['auc']:.3f}"
    assert m["siim_score"] > m["empty_baseline"]  # the fixed predictions find the lesions
    assert f"{m['n_images']} images, {m['n_positive']} with a lesion" in " ".join(x.value for x in at.success)
    assert not at.button(key="home_quick").disabled
    at.button(key="home_quick_review").click().run()
    _no_exception(at)
    assert at.selectbox(key="rv_run").value == str(run.path)  # Review opened that run


def test_home_quick_demo_survives_a_closed_tab(workspace, gate):
    at = _app()
    at.button(key="home_quick").click().run()
    del at  # the tab is closed: no session runs any script from here on
    job = _wait_job(lambda j: j["stage"] == "pack" and (j["done"] or 0) >= 1, "reached its pack")
    assert job["state"] == "running" and not job["run"]
    reloaded = _app()  # a new tab: it finds the job on disk and follows it
    assert "Step 1 of 3: making the demo pack" in _progress_texts(reloaded)
    assert reloaded.button(key="home_quick").disabled
    assert jobs.running_job() == "the quick demo (making its pack)"
    gate.touch()
    job = _wait_job(lambda j: j["state"] != "running", "ended")  # still no session
    assert job["state"] == "finished" and (settings.data_dir() / common.QUICK_PACK_NAME).is_file()
    at = _app()
    assert "SIIM score" in {x.label for x in at.metric} and not at.button(key="home_quick_review").disabled


def test_home_quick_demo_stops_while_it_makes_its_pack(workspace, gate):
    at = _app()
    at.button(key="home_quick").click().run()
    _wait_job(lambda j: j["stage"] == "pack" and (j["done"] or 0) >= 1, "reached its pack")
    at.run()
    at.button(key="home_quick_stop").click().run()
    job = _wait_job(lambda j: j["state"] != "running", "ended")
    assert job["state"] == "stopped", job
    assert not (settings.data_dir() / common.QUICK_PACK_NAME).exists()  # nothing half-made
    assert list_runs() == []
    at.run()
    _no_exception(at)
    assert "The last quick demo was stopped" in " ".join(w.value for w in at.warning)
    assert not at.button(key="home_quick").disabled


def test_home_quick_demo_failure_names_the_file(workspace):
    (settings.data_dir() / common.QUICK_PACK_NAME).write_text("not a pack")
    at = _app()
    at.button(key="home_quick").click().run()
    job = _wait_job(lambda j: j["state"] != "running", "ended")
    assert job["state"] == "failed" and common.QUICK_PACK_NAME in job["error"]
    at.run()
    _no_exception(at)
    assert at.error and "The last quick demo failed" in at.error[0].value
    assert common.md_escape(common.QUICK_PACK_NAME) in at.error[0].value


def test_home_quick_demo_waits_for_another_job(workspace, gate):
    run = new_run_dir(prefix="app")
    jobs.start_training(common.preset_config(common.QUICK_PRESET, settings.demo_pack_path()), run)  # at the gate
    at = _app()
    assert at.button(key="home_quick").disabled
    assert common.md_escape(f"training run {run.name}") in " ".join(i.value for i in at.info)
    with pytest.raises(InputError, match=f"another job is running \\(training run {run.name}\\)"):
        jobs.start_quick_demo()
    assert jobs.quick_demo_job() is None


# --------------------------------------------------------------------------- data page
def test_data_page_packs_demo_phantoms(workspace):
    at = _app("app_pages/data.py")
    at.number_input(key="data_demo_count").set_value(30)
    at.number_input(key="data_size").set_value(64)
    at.text_input(key="data_name_demo").set_value("phantoms30")
    at.checkbox(key="data_stratify").check()
    at.button(key="data_build").click().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    out = settings.data_dir() / "phantoms30.h5"
    info = pack.read_info(out)
    assert info.size == 64 and sum(info.counts.values()) == 30
    assert json.loads(info.attrs["split"])["stratify"] is True
    assert "Packed 30 images" in at.success[0].value
    # the new pack is selected and reported: chart, text report and outlined samples
    assert at.selectbox(key="data_pack").value == str(out)
    assert at.get("plotly_chart")
    assert "train" in at.code[0].value and "positive" in at.code[0].value
    assert len(at.image) == 8


def test_data_page_excludes_a_relabel_list_and_records_the_window(workspace, tmp_path):
    """The Data form passes the exclusion list, DICOM window and pixel budget to the pack."""
    relabel = tmp_path / "relabel.csv"
    relabel.write_text("id,category\nphantom-00003,FP\nphantom-00007,FN\nnot-in-the-pack,FP\n", encoding="utf-8")
    at = _app("app_pages/data.py")
    at.number_input(key="data_demo_count").set_value(20)
    at.number_input(key="data_size").set_value(64)
    at.text_input(key="data_name_demo").set_value("clean")
    at.text_input(key="data_exclude").set_value(str(relabel))
    at.selectbox(key="data_dicom_window").set_value("full")
    at.button(key="data_build").click().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    out = settings.data_dir() / "clean.h5"
    info = pack.read_info(out)
    assert sum(info.counts.values()) == 18 and info.attrs["excluded"] == 2
    assert info.attrs["dicom_window"] == "full"
    import h5py

    with h5py.File(out, "r") as f:
        ids = {x.decode() for s in ("train", "dev", "test") for x in f[f"ids_{s}"][:]}
    assert "phantom-00003" not in ids and "phantom-00007" not in ids and "phantom-00004" in ids


def test_data_page_packs_two_folders_with_exact_batches(workspace, tmp_path):
    images, masks = packer.write_demo_folders(tmp_path / "png", 20, size=96, workers=1)
    at = _app("app_pages/data.py")
    at.radio(key="data_source").set_value("folders").run()
    at.text_input(key="data_images").set_value(str(images))
    at.text_input(key="data_masks").set_value(str(masks))
    at.number_input(key="data_size").set_value(64)
    at.radio(key="data_split_mode").set_value("batches").run()
    for key, value in (("data_b_train", 3), ("data_b_dev", 1), ("data_b_test", 1), ("data_b_size", 4)):
        at.number_input(key=key).set_value(value)
    at.selectbox(key="data_compression").set_value("gzip")
    at.button(key="data_build").click().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    info = pack.read_info(settings.data_dir() / "folders.h5")
    assert info.counts == {"train": 12, "dev": 4, "test": 4}
    assert info.attrs["compression"] == "gzip"


def test_data_page_zip_upload_of_two_folders(workspace, tmp_path):
    images, masks = packer.write_demo_folders(tmp_path / "png", 12, size=64, workers=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for folder, arc in ((images, "images"), (masks, "masks")):
            for p in sorted(folder.iterdir()):
                z.write(p, f"set/{arc}/{p.name}")
    at = _app("app_pages/data.py")
    at.radio(key="data_source").set_value("folders").run()
    at.radio(key="data_where").set_value("upload").run()
    at.file_uploader(key="data_zip").set_value(("set.zip", buf.getvalue(), "application/zip"))
    at.text_input(key="data_zip_images").set_value("set/images")
    at.text_input(key="data_zip_masks").set_value("set/masks")
    at.number_input(key="data_size").set_value(64)
    at.text_input(key="data_name_folders").set_value("upload.h5")
    at.button(key="data_build").click().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert sum(pack.read_info(settings.data_dir() / "upload.h5").counts.values()) == 12
    # the unpacked copy of the images is gone once they are in the pack
    assert not any((settings.data_dir() / "uploads").iterdir())


@pytest.mark.parametrize(
    "setup, message",
    [
        (dict(source="folders", images="/nonexistent/images", masks="/nonexistent/masks"), "/nonexistent"),
        (dict(source="folders", images="", masks=""), "give the image folder"),
        (dict(source="demo", name="demo"), 'already exists; use the "Replace existing" checkbox'),
        (dict(source="demo", size=100), "multiple of 32"),
        (dict(source="demo", name="../escape"), "plain file name"),
        (dict(source="folders", where="upload"), "choose a zip"),
    ],
)
def test_data_page_errors_are_messages(workspace, setup, message):
    at = _app("app_pages/data.py")
    if setup["source"] != "demo":
        at.radio(key="data_source").set_value(setup["source"]).run()
    if setup.get("where"):
        at.radio(key="data_where").set_value(setup["where"]).run()
    if "images" in setup:
        at.text_input(key="data_images").set_value(setup["images"])
        at.text_input(key="data_masks").set_value(setup["masks"])
    if "name" in setup:
        at.text_input(key="data_name_demo").set_value(setup["name"])
    at.number_input(key="data_size").set_value(setup.get("size", 64))
    before = sorted(p.name for p in settings.data_dir().iterdir())
    at.button(key="data_build").click().run()
    _no_exception(at)
    assert at.error and message in at.error[0].value, [e.value for e in at.error]
    assert sorted(p.name for p in settings.data_dir().iterdir() if p.name != "uploads") == before
    assert pack.read_info(settings.demo_pack_path()).size == 64  # the existing pack is untouched


def test_data_page_sample_browser_filters_positives(workspace):
    at = _app("app_pages/data.py")
    at.selectbox(key="data_browse_which").set_value("positive").run()
    n_pos = int(common.positives(settings.demo_pack_path(), "train").sum())
    assert len(at.image) == min(8, n_pos) > 0
    assert f"{n_pos} positive sample(s) in train" in at.main.caption[-1].value


# --------------------------------------------------------------------------- data page: hostile input
def _upload(at: AppTest, kind: str, data: bytes, name: str = "up.h5") -> None:
    at.radio(key="data_source").set_value(kind).run()
    at.radio(key="data_where").set_value("upload").run()
    at.file_uploader(key="data_zip").set_value(("set.zip", data, "application/zip"))
    at.number_input(key="data_size").set_value(64)
    at.text_input(key=f"data_name_{kind}").set_value(name)
    at.button(key="data_build").click().run()
    _no_exception(at)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_data_page_zip_with_one_top_level_folder_just_works(workspace, tmp_path, monkeypatch):
    images, masks = packer.write_demo_folders(tmp_path / "png", 12, size=64, workers=1)
    members = {f"mydata/{arc}/{p.name}": p.read_bytes()
               for folder, arc in ((images, "images"), (masks, "masks")) for p in sorted(folder.iterdir())}
    seen = []
    real = packer.pack_manifest
    monkeypatch.setattr(packer, "pack_manifest", lambda m, out, config, **kw: seen.append(config) or real(m, out, config, **kw))
    at = _app("app_pages/data.py")
    _upload(at, "folders", _zip_bytes(members))  # default folder names "images" and "masks"
    assert not at.error, [e.value for e in at.error]
    assert sum(pack.read_info(settings.data_dir() / "up.h5").counts.values()) == 12
    # the user's files are decoded in worker processes with a memory cap, never in the server
    assert seen[0].isolate and seen[0].worker_memory == common.WORKER_MEMORY
    assert not any((settings.data_dir() / "uploads").iterdir())


@pytest.mark.parametrize(
    "members, message",
    [
        ({"a": b"1", "a/b": b"2"}, "is both a file and a folder in the zip"),
        ({f"images/{i:03d}.png": b"\0" * (1 << 20) for i in range(200)}, "(zip bomb?)"),
        ({"![x](evil.png)": b"1", "![x](evil.png)/b": b"2"}, "'![x](evil.png)' is both a file and a folder"),
        ({"other/a.png": b"1"}, "zip:images: images folder not found"),
    ],
)
def test_data_page_hostile_zips_are_clean_messages(workspace, members, message):
    at = _app("app_pages/data.py")
    _upload(at, "folders", _zip_bytes(members))
    assert at.error and message in at.error[0].value.replace("\\", ""), [e.value for e in at.error]
    assert "](" not in at.error[0].value  # shown escaped: no link can be made of a member name
    assert "/uploads/" not in at.error[0].value  # no server path
    assert not (settings.data_dir() / "up.h5").exists()
    assert not any((settings.data_dir() / "uploads").iterdir())


def test_data_page_png_bomb_upload_is_refused_by_name(workspace, tmp_path):
    from hostile_files import png_bomb

    bomb = png_bomb(tmp_path / "bomb.png").read_bytes()
    at = _app("app_pages/data.py")
    _upload(at, "folders", _zip_bytes({"images/bomb.png": bomb, "masks/bomb.png": bomb}))
    assert at.error and "zip:images/bomb.png: image is 12000x12000 (144.0 Mpx)" in at.error[0].value.replace("\\", "")


def test_damaged_pack_is_named_and_every_page_still_renders(workspace):
    import h5py

    foreign = settings.data_dir() / "foreign.h5"
    shutil.copy(settings.demo_pack_path(), foreign)
    with h5py.File(foreign, "a") as f:
        f.attrs["format_version"] = "one"
    at = _app("app_pages/data.py")
    assert [str(p.path.name) for p in common.packs()] == ["demo.h5"]
    shown = [c.value.replace("\\", "") for c in at.caption]
    assert any("foreign.h5 (damaged pack, attribute format_version is 'one'" in c for c in shown), shown
    for page in ("app_pages/home.py", "app_pages/augmentation.py", "app_pages/training.py"):
        at.switch_page(page).run()
        _no_exception(at)


def test_md_escape_makes_ids_literal():
    text = common.md_escape("![i](http://evil/p.png) [l](http://x) **b** :red[x] $x$ <b>")
    for raw in ("![", "](", "**", ":red[", "$x$", "<b>"):
        assert raw not in text
    assert text.replace("\\", "") == "![i](http://evil/p.png) [l](http://x) **b** :red[x] $x$ <b>"


# --------------------------------------------------------------------------- augmentation page
@pytest.mark.slow
def test_augmentation_grid_shows_original_and_n_augmented(workspace):
    at = _app("app_pages/augmentation.py")
    assert len(at.image) == 1 + 5
    at.slider(key="aug_n").set_value(3).run()
    _no_exception(at)
    assert len(at.image) == 1 + 3
    # the default image is a positive one (its outline shows the geometry)
    assert "Mask area: original 0 px" not in at.main.caption[-1].value
    at.slider(key="aug_rotation").set_value(0.0)
    at.slider(key="aug_wshift").set_value(0.0)
    at.slider(key="aug_hshift").set_value(0.0)
    at.slider(key="aug_zoom").set_value(0.0)
    at.checkbox(key="aug_hflip").uncheck().run()
    _no_exception(at)
    # every range off: each augmented mask keeps the original's area exactly
    areas = at.main.caption[-1].value
    original = areas.split("original ")[1].split(" px")[0]
    augmented = areas.split("augmented ")[1].split(" px")[0].split(", ")
    assert augmented == [original] * 3


# The Training page's tests are in test_app_training.py; this one is about pneumo.config's labels.
def test_training_form_shows_the_labels_defined_beside_the_vocabularies(workspace):
    from pneumo import config as C

    at = _app("app_pages/training.py")
    assert at.selectbox(key="tr_variant").options == [f"{n}: {C.VARIANT_LABELS[n]}" for n in C.VARIANTS]
    assert at.selectbox(key="tr_loss").options == [C.LOSS_LABELS[n] for n in C.LOSSES]
    assert at.selectbox(key="tr_lr_schedule").options == [C.LR_SCHEDULE_LABELS[n] for n in C.LR_SCHEDULES]


# --------------------------------------------------------------------------- start-up cost
def test_home_data_training_pages_do_not_import_tensorflow(workspace):
    code = textwrap.dedent(
        f"""
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({APP!r}, default_timeout=60)
        at.run()
        for page in ("app_pages/data.py", "app_pages/training.py", "app_pages/home.py"):
            at.switch_page(page).run()
            assert not at.exception, (page, at.exception)
        print("TF" if "tensorflow" in sys.modules else "NO-TF")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "NO-TF"


def test_streamlit_config_keeps_the_app_on_this_machine():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
    assert 0 < config["server"]["maxUploadSize"] <= 512  # MB, held in server memory while uploading
    assert config["client"]["showErrorDetails"] == "type"  # no tracebacks, no server paths
    assert config["client"]["showErrorLinks"] == "false"  # no "Ask Google / Ask ChatGPT" links


# --------------------------------------------------------------------------- start checks (issue 18)
class _Settings:
    """streamlit.config as the guard sees it: Streamlit's defaults (what a config.toml with a
    syntax error leaves), or the given values with where each was defined."""

    DEFAULTS = {"server.address": (None, "<default>"), "browser.gatherUsageStats": (True, "<default>"),
                "client.showErrorDetails": ("full", "<default>"), "client.showErrorLinks": ("auto", "<default>")}

    def __init__(self, **values):
        self.values = {**self.DEFAULTS, **{k.replace("__", "."): v for k, v in values.items()}}

    def get_option(self, key):
        return self.values[key][0]

    def get_where_defined(self, key):
        return self.values[key][1]


def test_app_shows_no_data_when_streamlit_fell_back_to_its_defaults(workspace, tmp_path, monkeypatch):
    """Issue 18 item 7: a syntax error in .streamlit/config.toml made Streamlit listen on every
    interface, send usage statistics and show full tracebacks, and the app showed data."""
    from pneumo_app import guard

    broken = tmp_path / "config.toml"
    broken.write_text('[server]\naddress = "127.0.0.1\n')
    monkeypatch.setattr(guard, "config", _Settings())
    monkeypatch.setattr(guard, "CONFIG_FILE", broken)
    for page in (None, "app_pages/data.py", "app_pages/review.py"):
        at = _app(page)
        assert len(at.error) == 1 and not at.dataframe and not at.sidebar.caption, page
        text = at.error[0].value.replace("\\", "")
        for part in ("shows no data", "server.address is not set", "gatherUsageStats is on",
                     "showErrorDetails is 'full'", "showErrorLinks is on", f"{broken} is not valid TOML"):
            assert part in text, (part, text)


def test_an_address_chosen_on_the_command_line_is_the_users_choice(workspace, monkeypatch):
    from pneumo_app import guard

    chosen = _Settings(server__address=("0.0.0.0", "command-line argument or environment variable"),
                       browser__gatherUsageStats=(False, "x"), client__showErrorDetails=("type", "x"),
                       client__showErrorLinks=("false", "x"))
    monkeypatch.setattr(guard, "config", chosen)
    assert not _app().error
    chosen.values["server.address"] = ("0.0.0.0", "/home/me/.streamlit/config.toml")  # not on the command line
    assert "server.address is '0.0.0.0'" in _app().error[0].value.replace("\\", "")


def test_the_real_settings_hold():
    from pneumo_app import guard

    assert guard.setting_problems() == [] and guard.config_file_problem() is None


def test_a_workspace_that_is_a_file_is_one_message_on_every_page(tmp_path, monkeypatch):
    """Issue 18 item 12: every page showed NotADirectoryError twice."""
    ws = tmp_path / "ws"
    ws.write_text("not a folder")
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(ws))
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    for page in (None, "app_pages/data.py", "app_pages/augmentation.py", "app_pages/training.py", "app_pages/review.py"):
        at = _app(page)
        assert [e.value.replace("\\", "") for e in at.error] == [
            f"PNEUMO_WORKSPACE={ws}: is a file, not a folder; set PNEUMO_WORKSPACE to a folder"], page
    assert ws.read_text() == "not a folder"


def _review_run(workspace: Path) -> Path:
    from run_fixtures import make_review_run

    return make_review_run(workspace / "runs" / "r1", settings.demo_pack_path(), splits=("test",))


def test_opening_the_review_page_creates_no_review_file(workspace):
    """Issue 18 item 12: the Review page created reviews.sqlite when opened."""
    run = _review_run(workspace)
    at = _app("app_pages/review.py")
    assert any(b.key and b.key.startswith("rv_verdict::") for b in at.button)  # a case is shown
    assert not (run / "reviews.sqlite").exists()


def test_a_read_only_workspace_is_viewed_and_says_what_cannot_be_saved(workspace, monkeypatch):
    """Issue 18 item 12: in a read-only workspace the Review page showed no case (and tried
    to create reviews.sqlite); now every page renders, the sidebar says the workspace is
    read-only, and the Review page shows the case with its verdict controls off."""
    from pneumo.store import verdicts

    run = _review_run(workspace)
    root = str(workspace.resolve())

    def read_only(folder):
        return "read-only file system" if str(Path(folder).resolve()).startswith(root) else None

    monkeypatch.setattr(settings, "write_problem", read_only)
    monkeypatch.setattr(verdicts, "write_problem", read_only)
    for page in (None, "app_pages/data.py", "app_pages/training.py"):
        at = _app(page)
        assert any("Read-only workspace" in w.value for w in at.sidebar.warning), page
    at = _app("app_pages/data.py")  # packing there is refused by name before any work
    at.text_input(key="data_name_demo").set_value("new")
    at.number_input(key="data_size").set_value(64)
    at.button(key="data_build").click().run()
    _no_exception(at)
    assert "cannot be written (read-only file system)" in at.error[0].value.replace("\\", "")
    assert not (settings.data_dir() / "new.h5").exists() and not (settings.data_dir() / "uploads").exists()
    at = _app("app_pages/review.py")
    assert not at.error, [e.value for e in at.error]
    assert any("Verdicts cannot be saved in this run folder (read-only file system)" in w.value.replace("\\", "")
               for w in at.warning), [w.value for w in at.warning]
    buttons = [b for b in at.button if b.key and b.key.startswith("rv_verdict::")]
    assert buttons and all(b.disabled for b in buttons)
    assert not (run / "reviews.sqlite").exists()


def test_reviews_so_far_shows_notes_and_names_as_typed(workspace):
    """Issue 18 item 8: the "Reviews so far" table rendered Markdown from notes and reader
    names (a note's link became live, ":red[...]" was coloured)."""
    from pneumo.store import verdicts

    run = _review_run(workspace)
    note = "see [here](http://example.invalid) :red[urgent] **now**"
    at = _app("app_pages/review.py")
    shown = next(b.key.split("::")[1] for b in at.button if b.key and b.key.startswith("rv_verdict::"))
    verdicts.VerdictStore.for_run(run).set_verdict(run.name, "test", shown, "unsure", note=note, reader="dr_[x](y)")
    at.session_state["rv_tab"] = "Readers"  # where the table is
    at.run()
    _no_exception(at)
    (table,) = [t.value for t in at.table if "note" in t.value.columns]
    assert list(table["note"]) == [common.md_escape(note)] and list(table["reader"]) == [common.md_escape("dr_[x](y)")]
    assert list(table.index) == [common.md_escape(shown)]
