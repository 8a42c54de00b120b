"""The Streamlit app (Home, Data, Augmentation, Training) through streamlit.testing.v1.AppTest.

Each test gets its own workspace (``PNEUMO_WORKSPACE``) holding a copy of a tiny 64 px demo
pack; training uses ``tests/fake_trainer.py`` through ``PNEUMO_TRAIN_COMMAND``.
"""
from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from pneumo import jobs, pack, settings  # noqa: E402
from pneumo.errors import InputError  # noqa: E402
from pneumo_app import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
FAKE_TRAINER = ROOT / "tests" / "fake_trainer.py"
TIMEOUT = 60


@pytest.fixture(scope="session")
def demo_pack_file(tmp_path_factory) -> Path:
    """A 64 px demo pack of 40 phantoms (about 9 positive), made once and copied per test."""
    return pack.make_demo_pack(tmp_path_factory.mktemp("demo") / "demo.h5", count=40, size=64, workers=1).path


@pytest.fixture
def workspace(tmp_path, monkeypatch, demo_pack_file) -> Path:
    ws = tmp_path / "ws"
    monkeypatch.setenv("PNEUMO_WORKSPACE", str(ws))
    monkeypatch.delenv("PNEUMO_DATA_DIR", raising=False)
    monkeypatch.delenv("PNEUMO_RUNS_DIR", raising=False)
    monkeypatch.setenv("PNEUMO_TRAIN_COMMAND", f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE_TRAINER))}")
    monkeypatch.setenv("PNEUMO_FAKE_SECONDS_PER_EPOCH", "0.5")
    for name in ("PNEUMO_FAKE_EPOCHS", "PNEUMO_FAKE_FAIL"):
        monkeypatch.delenv(name, raising=False)
    # A first launch or the quick start would otherwise render 400 phantoms at 256/128 px.
    monkeypatch.setattr(common, "DEMO_PACK_OPTIONS", {"count": 24, "size": 64, "workers": 1})
    settings.data_dir().mkdir(parents=True)
    shutil.copy(demo_pack_file, settings.demo_pack_path())
    yield ws
    _stop_all(ws / "runs")


def _stop_all(runs: Path) -> None:
    """Never leave a fake trainer running after a test."""
    deadline = time.monotonic() + 20
    while (run := jobs.active_run(runs)) is not None and time.monotonic() < deadline:
        jobs.request_stop(run)
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


def _wait_for(at: AppTest, predicate, seconds: float = 30.0) -> None:
    """Re-run the app until ``predicate(at)`` holds (what the fragment's timer does in a browser)."""
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


@pytest.mark.parametrize("page", ["pages/data.py", "pages/augmentation.py", "pages/training.py"])
def test_page_renders_on_the_demo_pack(workspace, page):
    at = _app(page)
    assert at.title[0].value == {"pages/data.py": "Data", "pages/augmentation.py": "Augmentation",
                                 "pages/training.py": "Training"}[page]
    assert not at.error


def test_navigation_lists_every_page_and_survives_reruns(workspace):
    assert [p for p, _, _ in common.APP_PAGES] == [
        "pages/home.py", "pages/data.py", "pages/augmentation.py", "pages/training.py", "pages/review.py"]
    at = _app("pages/data.py")
    at.selectbox(key="data_browse_which").set_value("negative").run()  # a re-run of the page alone...
    _no_exception(at)
    # ...still goes through the app: the workspace sidebar is drawn
    assert str(workspace.resolve()) in " ".join(c.value for c in at.sidebar.caption)


def test_home_quick_start_makes_the_quick_pack_and_starts_a_run(workspace):
    at = _app()
    at.button(key="home_quick").click().run()
    _no_exception(at)
    quick = settings.data_dir() / common.QUICK_PACK_NAME
    assert quick.is_file()
    runs = jobs.list_runs()
    assert len(runs) == 1 and runs[0].name.startswith("demo-")
    cfg = runs[0].config
    assert cfg["pack"] == str(quick) and cfg["encoder_weights"] is None and cfg["epochs"] == 6
    _wait_for(at, lambda a: jobs.read_status(runs[0].path)["state"] == "finished")


# --------------------------------------------------------------------------- data page
def test_data_page_packs_demo_phantoms(workspace):
    at = _app("pages/data.py")
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


def test_data_page_packs_two_folders_with_exact_batches(workspace, tmp_path):
    images, masks = pack.write_demo_folders(tmp_path / "png", 20, size=96, workers=1)
    at = _app("pages/data.py")
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
    images, masks = pack.write_demo_folders(tmp_path / "png", 12, size=64, workers=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for folder, arc in ((images, "images"), (masks, "masks")):
            for p in sorted(folder.iterdir()):
                z.write(p, f"set/{arc}/{p.name}")
    at = _app("pages/data.py")
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
        (dict(source="folders", images="", masks=""), "both the image folder"),
        (dict(source="demo", name="demo"), "already exists"),
        (dict(source="demo", size=100), "multiple of 32"),
        (dict(source="demo", name="../escape"), "plain file name"),
        (dict(source="folders", where="upload"), "choose a zip"),
    ],
)
def test_data_page_errors_are_messages(workspace, setup, message):
    at = _app("pages/data.py")
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
    at = _app("pages/data.py")
    at.selectbox(key="data_browse_which").set_value("positive").run()
    n_pos = int(common.positives(settings.demo_pack_path(), "train").sum())
    assert len(at.image) == min(8, n_pos) > 0
    assert f"{n_pos} positive sample(s) in train" in at.main.caption[-1].value


# --------------------------------------------------------------------------- zip safety
def _zip(members: dict[str, bytes], symlink: str | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    buf.seek(0)
    return buf


def test_safe_extract_zip_writes_inside_dest(tmp_path):
    out = common.safe_extract_zip(_zip({"a/b.txt": b"hi", "c.txt": b"x"}), tmp_path / "u")
    assert (out / "a" / "b.txt").read_bytes() == b"hi" and (out / "c.txt").read_bytes() == b"x"


@pytest.mark.parametrize(
    "members, symlink, kwargs, message",
    [
        ({"../evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"a/../../evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"/etc/evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"C:/evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"ok.txt": b"x"}, "link", {}, "symbolic link"),
        ({f"{i}.txt": b"x" for i in range(5)}, None, {"max_members": 4}, "limit is 4"),
        ({"big.bin": b"x" * 5000}, None, {"max_bytes": 4000}, "limit"),
        ({"bomb.bin": b"\0" * (4 << 20)}, None, {}, "zip bomb"),
    ],
)
def test_safe_extract_zip_rejects(tmp_path, members, symlink, kwargs, message):
    dest = tmp_path / "u"
    with pytest.raises(InputError, match=message):
        common.safe_extract_zip(_zip(members, symlink), dest, **kwargs)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or not any(dest.rglob("*"))


def test_safe_extract_zip_rejects_a_non_zip(tmp_path):
    with pytest.raises(InputError, match="not a readable zip"):
        common.safe_extract_zip(io.BytesIO(b"not a zip"), tmp_path / "u")


# --------------------------------------------------------------------------- augmentation page
@pytest.mark.slow
def test_augmentation_grid_shows_original_and_n_augmented(workspace):
    at = _app("pages/augmentation.py")
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


# --------------------------------------------------------------------------- training page
def test_training_start_runs_then_finishes(workspace):
    at = _app("pages/training.py")
    assert at.selectbox(key="tr_preset").value == common.QUICK_PRESET
    at.number_input(key="tr_epochs").set_value(2)
    at.button(key="tr_start").click().run()
    _no_exception(at)
    runs = jobs.list_runs()
    assert len(runs) == 1
    cfg = runs[0].config
    assert cfg["epochs"] == 2 and cfg["pack"] == str(settings.demo_pack_path()) and cfg["variant"] == "unet"
    assert "running" in _badge(at)
    assert at.button(key="tr_start").disabled
    _wait_for(at, lambda a: "finished" in _badge(a))
    assert not at.button(key="tr_start").disabled
    assert at.get("plotly_chart")  # loss/Dice curves
    assert len(jobs.read_history(runs[0].path)) == 2


def test_training_live_view_shows_progress(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "40")
    at = _app("pages/training.py")
    at.button(key="tr_start").click().run()
    _wait_for(at, lambda a: len(a.get("progress")) > 0 and "epoch" in a.get("progress")[0].proto.text)
    labels = [m.label for m in at.metric]
    assert labels[:3] == ["Batch loss", "Images/s", "ETA"]
    at.button(key="tr_stop").click().run()
    _wait_for(at, lambda a: "stopped" in _badge(a))


def test_training_stop(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "100")
    at = _app("pages/training.py")
    at.button(key="tr_start").click().run()
    run = jobs.list_runs()[0]
    _wait_for(at, lambda a: jobs.read_progress(run.path) is not None)
    at.button(key="tr_stop").click().run()
    _no_exception(at)
    _wait_for(at, lambda a: "stopped" in _badge(a))
    assert jobs.read_status(run.path)["state"] == "stopped"
    assert (run.path / "last.keras").exists()
    assert not at.button(key="tr_start").disabled


def test_training_failure_is_shown_with_its_error(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_FAIL", "1")
    at = _app("pages/training.py")
    at.button(key="tr_start").click().run()
    _wait_for(at, lambda a: "failed" in _badge(a))
    assert any("fake failure" in e.value for e in at.error)
    table = at.dataframe[0].value
    assert list(table["state"]) == ["failed"] and list(table["error"]) == ["fake failure"]


def test_training_second_start_refused_while_one_runs(workspace, monkeypatch):
    monkeypatch.setenv("PNEUMO_FAKE_EPOCHS", "100")
    first = _app("pages/training.py")
    first.button(key="tr_start").click().run()
    # a second tab (a new session) finds the run and cannot start another
    second = _app("pages/training.py")
    assert second.button(key="tr_start").disabled
    assert "running" in _badge(second)
    assert len(jobs.list_runs()) == 1


def test_training_presets_fill_the_form(workspace):
    at = _app("pages/training.py")
    at.selectbox(key="tr_preset").set_value("Blog (2019) settings").run()
    _no_exception(at)
    assert at.selectbox(key="tr_variant").value == "blog"
    assert at.number_input(key="tr_epochs").value == 90
    assert at.number_input(key="tr_batch").value == 32
    assert at.number_input(key="tr_lr").value == pytest.approx(2e-5)
    assert at.selectbox(key="tr_loss").value == "bce"
    assert at.selectbox(key="tr_weights").value == "imagenet"


def test_missing_encoder_weights_offers_training_without_them(workspace, monkeypatch):
    monkeypatch.setattr(jobs, "encoder_weights_available", lambda: False)
    at = _app("pages/training.py")
    at.selectbox(key="tr_preset").set_value("Blog (2019) settings").run()
    assert at.warning and "ImageNet VGG16 weights are not on this machine" in at.warning[0].value
    assert at.button(key="tr_start").disabled
    at.button(key="tr_no_weights").click().run()
    _no_exception(at)
    assert at.selectbox(key="tr_weights").value == "none"
    assert not at.warning
    at.number_input(key="tr_epochs").set_value(1)
    at.button(key="tr_start").click().run()
    assert jobs.list_runs()[0].config["encoder_weights"] is None


def test_past_runs_are_compared(workspace):
    at = _app("pages/training.py")
    for _ in range(2):
        at.number_input(key="tr_epochs").set_value(2)
        at.button(key="tr_start").click().run()
        _wait_for(at, lambda a: "finished" in _badge(a) and jobs.active_run() is None)
        time.sleep(1.1)  # run folder names have one-second resolution
    at.run()
    assert len(at.dataframe[0].value) == 2
    assert len(at.multiselect(key="tr_compare").value) == 2
    chart = at.get("plotly_chart")[-1]
    figure = json.loads(chart.proto.spec)
    assert len(figure["data"]) == 2 and figure["layout"]["yaxis"]["title"]["text"] == "val loss"


# --------------------------------------------------------------------------- start-up cost
def test_home_data_training_pages_do_not_import_tensorflow(workspace):
    code = textwrap.dedent(
        f"""
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({APP!r}, default_timeout=60)
        at.run()
        for page in ("pages/data.py", "pages/training.py", "pages/home.py"):
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
    assert 0 < config["server"]["maxUploadSize"] <= 4096
