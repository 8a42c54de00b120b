"""The real app in a real browser: `streamlit run` on 127.0.0.1, driven by Debian's chromium.

Visits every page of a workspace holding a small demo pack and a finished run with cached
predictions (so the Review page has a triptych), checks each renders without an exception or
an error message, and takes a screenshot. Screenshots go to ``tmp_path``; with
``PNEUMO_SAVE_SCREENSHOTS=1`` they go to ``docs/screenshots/`` (the README shows them), so CI
never modifies the repository. ``PNEUMO_BROWSER_WORKSPACE=<folder>`` uses an existing workspace
instead of building one (for README screenshots of a real training run).
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# (url path, heading, a CSS selector that must be present once the page's content is drawn)
PAGES = [
    ("", "pneumo", '[data-testid="stDataFrame"]'),
    ("data", "Data", '[data-testid="stImage"]'),
    ("augmentation", "Augmentation", '[data-testid="stImage"]'),
    ("training", "Training", '[data-testid="stPlotlyChart"]'),
    ("review", "Review", '[data-testid="stImage"]'),
]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("playwright (Python) is not installed", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_workspace(ws: Path) -> None:
    """A 128 px demo pack and a finished run on it whose predictions are written directly
    (fixed TP/FP/FN/TN cases: the page never depends on what a model happened to learn)."""
    from pneumo.ingest import packer
    from run_fixtures import make_review_run

    # 120 images leave 14 in test: enough to step through in the review tests
    demo = packer.make_demo_pack(ws / "data" / "demo.h5", count=120, size=128, workers=1)
    make_review_run(ws / "runs" / "run-20260101-120000", demo.path)


@contextlib.contextmanager
def _serve(ws: Path, log_path: Path, **extra_env: str):
    """``streamlit run streamlit_app.py`` on a free port of 127.0.0.1 with ``ws`` as workspace."""
    port = _free_port()
    env = {**os.environ, "PNEUMO_WORKSPACE": str(ws), "TF_CPP_MIN_LOG_LEVEL": "3", **extra_env}
    for name in ("PNEUMO_DATA_DIR", "PNEUMO_RUNS_DIR"):
        env.pop(name, None)
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],  # a file edited mid-test must not reload modules
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.seek(0)
        print(log.read()[-3000:])
        log.close()


@pytest.fixture(scope="module")
def training_gate(tmp_path_factory) -> Path:
    """Fake trainers started from :func:`server` hold in state ``running`` until this file exists
    (tests/fake_trainer.py): the training test says when its run may go on."""
    return tmp_path_factory.mktemp("gate") / "fake-trainer-gate"


@pytest.fixture(scope="module")
def server(tmp_path_factory, training_gate):
    given = os.environ.get("PNEUMO_BROWSER_WORKSPACE")
    if given:
        ws = Path(given)
    else:
        ws = tmp_path_factory.mktemp("browser-ws")
        _prepare_workspace(ws)
    # Training started from the browser runs the fake trainer (no TensorFlow), held at the gate;
    # then 4 epochs of 20 s: the test stops it long before its end, however slow the machine.
    fake = dict(PNEUMO_TRAIN_COMMAND=f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'fake_trainer.py'))}",
                PNEUMO_FAKE_EPOCHS="4", PNEUMO_FAKE_SECONDS_PER_EPOCH="20", PNEUMO_TESTING="1",
                PNEUMO_FAKE_GATE=str(training_gate))
    with _serve(ws, tmp_path_factory.mktemp("browser-log") / "streamlit.log", **fake) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("PNEUMO_SAVE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "screenshots"
    else:
        out = tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait_until_idle(page, timeout_s: float = 90.0) -> None:
    """Wait until the script has stopped running (the status widget shows nothing) for a moment."""
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0 or page.locator(
            '[data-testid="stSpinner"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.5:
            return
        page.wait_for_timeout(250)
    raise AssertionError("the page kept running")


@pytest.mark.parametrize("path, heading, content", PAGES, ids=[p[1].lower() for p in PAGES])
def test_page_renders_in_chromium(server, browser, tmp_path, path, heading, content):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
        page.locator(content).first.wait_for(timeout=120_000)
        _wait_until_idle(page)
        page.wait_for_timeout(1500)  # plotly and images finish drawing after the script ends
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.first.inner_text()
        errors = page.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, errors.first.inner_text()
        # Streamlit scrolls inside its main block, so "full page" means: grow the window to it.
        height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": 1400, "height": int(min(max(height, 1000), 5000))})
        page.wait_for_timeout(1000)
        name = path or "home"
        page.screenshot(path=str(_screenshot_dir(tmp_path) / f"{name}.png"))
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise
    finally:
        page.close()


@pytest.mark.skipif(bool(os.environ.get("PNEUMO_BROWSER_WORKSPACE")), reason="would add a run to a given workspace")
def test_training_live_view_follows_a_run_without_reloading(server, browser, training_gate, tmp_path):
    """Start on the Training page; the fragment's timer alone shows the run running, its progress,
    and its end after Stop. Every step waits for what the page must show next: the run holds at
    the gate until the page has shown it running, and then lasts far longer than the test."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = page.get_by_role("button", name="Start training")
    try:
        page.goto(f"{server}/training", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Training", exact=True).first.wait_for(timeout=60_000)
        _wait_until_idle(page)
        start.click()
        page.get_by_text(re.compile(r"^running$")).first.wait_for(timeout=60_000)
        expect(start).to_be_disabled(timeout=60_000)
        training_gate.touch()  # the run held until now: "running" and the disabled Start were no race
        page.get_by_text(re.compile(r"epoch \d of 4, step \d of 5")).first.wait_for(timeout=60_000)
        expect(start).to_be_disabled()
        # by role: Streamlit also draws a hidden copy of a button that has a tooltip
        page.locator(".st-key-tr_stop").get_by_role("button", name="Stop").click()
        page.get_by_text(re.compile(r"^stopped$")).first.wait_for(timeout=60_000)
        expect(start).to_be_enabled(timeout=60_000)
        _wait_until_idle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(tmp_path / "training-stopped.png"))
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        page.close()


def test_first_launch_from_a_bookmarked_page(browser, tmp_path):
    """A fresh server, an empty workspace, and a first request for /data (not the home page).

    The app's navigation must be in charge (Streamlit would run a page alone, as an old-style multipage app, if a
    `pages/` folder sat beside streamlit_app.py), and the first launch makes the demo pack with
    worker processes under `streamlit run`.
    """
    ws = tmp_path / "empty"
    with _serve(ws, tmp_path / "streamlit.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/data", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Data", exact=True).first.wait_for(timeout=60_000)
            page.locator('[data-testid="stImage"]').first.wait_for(timeout=180_000)
            _wait_until_idle(page)
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Home" in nav and "Training" in nav and "streamlit app" not in nav, nav
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        finally:
            page.close()
    from pneumo.ingest.packer import DEMO_COUNT
    from pneumo.store import pack

    info = pack.read_info(ws / "data" / "demo.h5")
    assert sum(info.counts.values()) == DEMO_COUNT


@pytest.fixture(scope="module")
def deep_link_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("deep-link-ws")
    _prepare_workspace(ws)
    return ws


@pytest.mark.parametrize("path, heading, content", PAGES, ids=[p[1].lower() for p in PAGES])
def test_deep_link_to_every_page_on_a_fresh_server(browser, deep_link_ws, tmp_path, path, heading, content):
    """The first request a fresh server gets is a bookmarked page: the app's navigation serves
    it (no old-style multipage mode: no pages/ folder beside streamlit_app.py)."""
    assert not (ROOT / "pages").exists(), "a pages/ folder would switch Streamlit to its old multipage mode"
    with _serve(deep_link_ws, tmp_path / "streamlit.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/{path}", wait_until="domcontentloaded")
            page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
            page.locator(content).first.wait_for(timeout=120_000)
            _wait_until_idle(page)
            nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
            assert all(t in nav for t in ("Home", "Data", "Augmentation", "Training", "Review")), nav
            assert "streamlit app" not in nav
            assert str(deep_link_ws.resolve()) in page.locator('[data-testid="stSidebar"]').inner_text()
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            page.close()


def test_nothing_is_fetched_from_outside_this_machine(server, browser):
    """The app promises that nothing leaves the machine: every asset (the tab's icon included,
    which a :material: or emoji page icon would fetch from a font CDN) comes from the server."""
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else outside.append(r.url))
    try:
        for path, heading, _ in PAGES:
            page.goto(f"{server}/{path}", wait_until="domcontentloaded")
            page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
            _wait_until_idle(page)
        icons = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
    finally:
        page.close()
    assert outside == [], outside
    assert icons and all(i.startswith(server) for i in icons), icons


# --------------------------------------------------------------------------- review
REVIEW_RUN = "run-20260101-120000"


@pytest.fixture(scope="module")
def review_server(tmp_path_factory):
    """A server of its own for the review tests: the training test adds runs to the shared
    workspace, and the last review test re-packs the pack."""
    ws = tmp_path_factory.mktemp("review-ws")
    _prepare_workspace(ws)
    with _serve(ws, tmp_path_factory.mktemp("review-log") / "streamlit.log") as url:
        yield url, ws


def _open_review(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/review", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review", exact=True).first.wait_for(timeout=60_000)
    page.locator('[data-testid="stImage"]').first.wait_for(timeout=120_000)
    _wait_until_idle(page)
    return page


_CASE_LINE = re.compile(r"^(\S+): (FP|FN|TP|TN)$")


def _case_ids(page) -> list[str]:
    """The ids above the triptych (``**<id>**: FP``) the page shows now: one once the server has drawn it."""
    texts = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"] p:has(strong)').all_inner_texts()
    return [m.group(1) for t in texts if (m := _CASE_LINE.match(t.strip()))]


def _shown_case_id(page) -> str:
    """The id above the triptych, as the server drew it (on a page that has finished loading)."""
    found = _case_ids(page)
    assert len(found) == 1, found
    return found[0]


def _expect_case(page, want: str, timeout_s: float = 90.0) -> None:
    """Wait until the page, idle, shows case ``want``: an action's rerun may start late on a busy
    machine, so the page going quiet alone does not say the server has drawn its outcome yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        _wait_until_idle(page, timeout_s)
        found = _case_ids(page)
        if found == [want]:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the page shows {found}, not {want!r}")
        page.wait_for_timeout(250)


def _eventually(page, check, what: str, timeout_s: float = 90.0):
    """Poll ``check()`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s:g} s")
        page.wait_for_timeout(250)
    return got


def _expected_order(ws: Path, category: str) -> list[str]:
    from pneumo.review import cases as review

    data = review.ReviewData(ws / "runs" / REVIEW_RUN, "test")
    ev = data.evaluate(data.default_triplet())
    return [str(ev.cases["id"][i]) for i in review.select(ev.cases, category)]


def _review_rows(ws: Path) -> list:
    from pneumo.store import verdicts

    return verdicts.VerdictStore.for_run(ws / "runs" / REVIEW_RUN).all(REVIEW_RUN, "test")


def test_fast_clicks_and_keys_each_move_one_case(review_server, browser, tmp_path):
    url, ws = review_server
    order = _expected_order(ws, "all")
    assert len(order) >= 10
    page = _open_review(browser, url)
    try:
        page.locator('[data-testid="stMain"] [data-testid="stRadio"]').first.get_by_text("all", exact=True).click()
        _expect_case(page, order[0])
        nxt = page.locator('[data-testid="rvNavNext"]')
        for _ in range(6):  # faster than the page reruns: nothing waits for the server
            nxt.click(no_wait_after=True)
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        _expect_case(page, order[4])
        assert page.locator('[data-testid="rvNavLabel"]').inner_text() == f"case 5 of {len(order)}"
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        _expect_case(page, order[9])
        # passing cases writes no review: the export and the progress still say 0
        assert _review_rows(ws) == []
        assert page.get_by_role("button", name="Export 0 reviews (CSV)").count() == 1
        assert page.get_by_text(f"0 of {len(order)} cases reviewed").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        page.close()


def test_threshold_sweep_keeps_fp_and_a_verdict_and_note_survive_a_reload(review_server, browser, tmp_path):
    url, ws = review_server
    page = _open_review(browser, url)
    other = None
    try:
        # Top threshold 0.80 -> 0.79 -> 0.78 with the keyboard: FP stays chosen, no error
        top = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"]').filter(has_text="Top threshold")
        slider = top.get_by_role("slider")
        slider.focus()
        for _ in range(30):  # the run's 0.50 -> 0.80
            page.keyboard.press("ArrowRight")
        _wait_until_idle(page)
        fp = page.locator('[data-testid="stMain"] [data-testid="stRadio"] input[type=radio]').first
        for value in ("0.80", "0.79", "0.78"):
            assert top.locator('[data-testid="stSliderThumbValue"]').inner_text() == value
            errors = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
            assert errors.count() == 0, errors.all_inner_texts()
            assert fp.is_checked()
            assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() == 3
            slider.press("ArrowLeft")
            _wait_until_idle(page)
        # nothing reaches 0.99: no FP, and the page says what it shows instead
        slider.press("End")
        no_fp = page.get_by_text("No false positives at these thresholds: showing misses.")
        expect(no_fp).to_have_count(1, timeout=90_000)  # the server's answer to "End", however late
        _wait_until_idle(page)
        assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() == 3
        assert fp.is_checked()
        # back to the run's triplet, then a verdict and a note on the first FP
        page.get_by_role("button", name=re.compile("^Reset to the dev-tuned triplet")).click()
        expect(no_fp).to_have_count(0, timeout=90_000)  # the reset's rerun has drawn the FP again
        _wait_until_idle(page)
        image_id = _shown_case_id(page)
        page.get_by_role("button", name="label missed a pneumothorax").click()
        expect(page.get_by_text("Saved: label missed a pneumothorax")).to_have_count(1, timeout=90_000)
        _wait_until_idle(page)
        note = page.get_by_label("Note (saved when you press Enter or leave the field)")
        note.fill("air at the apex")
        note.press("Enter")
        want = [(image_id, "label missed a pneumothorax", "air at the apex")]
        _eventually(page, lambda: [(r.image_id, r.verdict, r.note) for r in _review_rows(ws)] == want,
                    f"the review database holding {want}")
        _wait_until_idle(page)
        page.reload(wait_until="domcontentloaded")
        page.locator('[data-testid="stImage"]').first.wait_for(timeout=120_000)
        _wait_until_idle(page)
        assert _shown_case_id(page) == image_id
        assert page.get_by_label("Note (saved when you press Enter or leave the field)").input_value() == "air at the apex"
        assert page.get_by_text("Saved: label missed a pneumothorax").count() == 1
        assert page.get_by_role("button", name="Export 1 reviews (CSV)").count() == 1
        other = _open_review(browser, url)  # a second tab
        assert _shown_case_id(other) == image_id
        assert other.get_by_label("Note (saved when you press Enter or leave the field)").input_value() == "air at the apex"
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        page.close()
        if other is not None:
            other.close()


def test_repack_under_an_open_page_is_not_shown_as_current(review_server, browser, tmp_path):
    url, ws = review_server
    page = _open_review(browser, url)  # the server has cached this pack's predictions
    try:
        before = _shown_case_id(page)
        from pneumo.ingest import packer

        # "Replace existing": other phantoms under the same file name
        from pneumo.config import SplitConfig

        packer.make_demo_pack(ws / "data" / "demo.h5", count=120, size=128, workers=1, seed=7,
                            split=SplitConfig(seed=11), force=True)
        page.get_by_role("button", name=re.compile("^Reset to the dev-tuned triplet")).click()  # any rerun
        page.get_by_text("out of date").first.wait_for(timeout=60_000)
        _wait_until_idle(page)
        assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() == 0
        assert before not in page.locator('[data-testid="stMain"]').inner_text()
        assert page.get_by_role("button", name="Recompute with best.keras").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        page.close()


# --------------------------------------------------------------------------- full resolution (issue 14)
def test_full_resolution_review_of_a_siim_pack_shows_native_pixels(browser, tmp_path):
    """A SIIM-layout tree (8-bit 1024 px and 12-bit 2048 px DICOMs with window tags) packed at
    256 px, a run with fixed predictions, reviewed at full resolution: the crop is drawn at the
    original 2048 px resolution, one PNG pixel per native pixel, with the target and the
    prediction drawn at that size, exactly as the library draws them."""
    import io

    import numpy as np
    from PIL import Image

    from pneumo import evaluate
    from pneumo.review import fullres
    from pneumo.store import pack
    from pneumo.ingest import packer, sources
    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest.siim_labels import read_labels
    from pneumo.review.viz import PRED_COLOR, TARGET_COLOR
    from run_fixtures import REVIEW_TRIPLET, designed_probs, make_review_run
    from siim_fixtures import write_review_tree

    ws = tmp_path / "ws"
    dicom_dir, csv_path = write_review_tree(ws / "siim")
    info = packer.pack_manifest(sources.siim_source(dicom_dir, csv_path, workers=1), ws / "data" / "siim.h5",
                                PackConfig(size=256, workers=1, split=SplitConfig(proportions=(0.0, 0.0, 1.0))))
    make_review_run(ws / "runs" / REVIEW_RUN, info.path, splits=("test",))
    with pack.Pack(info.path) as packed:
        masks, ids = packed.masks("test"), packed.ids("test")
        refs = dict(zip(ids, packed.sources("test")))
    big = next(i for i, r in refs.items() if r.height == 2048)
    with _serve(ws, tmp_path / "streamlit.log") as url:
        page = _open_review(browser, url)
        try:
            main = page.locator('[data-testid="stMain"]')
            main.locator('[data-testid="stRadio"]').first.get_by_text("TP", exact=True).click()
            _expect_case(page, big)  # the designed predictions: the 2048 px image is the TP
            main.get_by_text("Full resolution", exact=True).click()
            _wait_until_idle(page)
            shown = main.locator('[data-testid="stImage"]').filter(has_text="2048x2048 (source)")
            shown.first.wait_for(timeout=60_000)
            caption = shown.inner_text()
            m = re.search(r"x (\d+)\.\.(\d+), y (\d+)\.\.(\d+), crop 768x768 at 1:1", caption)
            assert m, caption
            img = shown.locator("img")
            assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [768, 768]
            assert img.evaluate("i => i.getBoundingClientRect().width") == 768  # shown 1:1, not scaled
            notes = main.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
            assert any("the RLE of stage_2_train.csv decoded at 2048x2048" in n and "resized bilinearly to 2048x2048" in n
                       and "1800 / 1600" in n for n in notes), notes  # the file's own window
            assert main.locator('[data-testid="stImage"]').filter(has_text="Navigator").count() == 1
            src = img.get_attribute("src")
            png = urllib.request.urlopen(src if src.startswith("http") else url + src, timeout=10).read()
            got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            assert page.locator('[data-testid="stException"]').count() == 0
            shown.scroll_into_view_if_needed()
            page.screenshot(path=str(_screenshot_dir(tmp_path) / "review-fullres.png"))
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            page.close()
    # the same drawing from the library: the source at 2048 px, its window, both masks at 2048 px
    left, right, top, bottom = (int(v) for v in m.groups())
    k = ids.index(big)
    full = fullres.read_full_resolution(refs[big].path)
    probs = designed_probs(masks)[k, ..., 0]
    pred = fullres.prediction_at(probs, evaluate.Triplet.from_dict(REVIEW_TRIPLET), 2048, 2048)
    target = fullres.native_target(read_labels(csv_path)[0], big, 2048, 2048, fullres.siim_labels(info.path)[1])
    assert target.shape == (2048, 2048) and np.count_nonzero(target) > 0
    box = (top, left, bottom - top + 1, right - left + 1)
    want = fullres.draw_crop(full, full.center, full.width, box, 1, [(target, TARGET_COLOR), (pred, PRED_COLOR)])
    np.testing.assert_array_equal(got, want)
    assert (got == PRED_COLOR).all(axis=-1).sum() > 100  # the band's outline is in the crop


# --------------------------------------------------------------------------- readers (issue 14)
def test_two_readers_verdicts_show_their_agreement(browser, tmp_path):
    """Two browser sessions, ``?reader=alice`` and ``?reader=bob``, judge the same false
    positives; the Readers panel shows the pair's table, a disagreement opens its case, and the
    relabel list is written. With ``PNEUMO_SAVE_SCREENSHOTS=1`` the panel goes to
    docs/screenshots/ (the review protocol shows it)."""
    from pneumo.store import verdicts

    ws = tmp_path / "ws"
    _prepare_workspace(ws)
    fp = _expected_order(ws, "FP")
    assert len(fp) >= 3
    wanted = {"alice": ("label missed a pneumothorax", "model wrong", "model wrong"),
              "bob": ("label missed a pneumothorax", "label missed a pneumothorax", "model wrong")}
    with _serve(ws, tmp_path / "streamlit.log") as url:
        pages = {}
        try:
            for reader, choices in wanted.items():
                page = pages[reader] = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/review?reader={reader}", wait_until="domcontentloaded")
                page.locator('[data-testid="stImage"]').first.wait_for(timeout=120_000)
                _wait_until_idle(page)
                assert page.get_by_text(f"Reading as {reader}").count() == 1
                for k, verdict in enumerate(choices):
                    _expect_case(page, fp[k])
                    page.get_by_role("button", name=verdict, exact=True).click()
                    expect(page.get_by_text(f"Saved: {verdict}")).to_have_count(1, timeout=90_000)
                    _wait_until_idle(page)
                    page.locator('[data-testid="rvNavNext"]').click()
                expect(page.get_by_text(f"3 of {len(fp)} FP cases reviewed")).to_have_count(1, timeout=90_000)
                _wait_until_idle(page)
            rows = verdicts.VerdictStore.for_run(ws / "runs" / REVIEW_RUN).verdicts(REVIEW_RUN, "test")
            assert sorted((r.reader, r.image_id, r.verdict) for r in rows) == sorted(
                (reader, fp[k], v) for reader, vs in wanted.items() for k, v in enumerate(vs))
            page = pages["alice"]
            page.reload(wait_until="domcontentloaded")  # the address keeps the reader
            page.locator('[data-testid="stImage"]').first.wait_for(timeout=120_000)
            _wait_until_idle(page)
            assert page.get_by_text("Reading as alice").count() == 1
            page.screenshot(path=str(_screenshot_dir(tmp_path) / "review-reader.png"))
            panel = page.locator('[data-testid="stExpander"]').filter(has_text="Readers (2)")
            panel.get_by_text("Readers (2)").click()  # computed when opened: a rerun
            _wait_until_idle(page)
            table = panel.locator('[data-testid="stTable"]')
            table.wait_for(timeout=90_000)
            cells = [[c.strip() for c in row.split("\t")] for row in table.locator("tr").all_inner_texts()]
            assert ["overall", "3", "0.67", "0.40", "1"] in cells, cells
            assert ["FP", "3", "0.67", "0.40", "1"] in cells, cells
            panel.get_by_role("button", name="Write relabel list").click()
            expect(panel.get_by_text("Wrote 1 case to")).to_have_count(1, timeout=90_000)
            _wait_until_idle(page)
            assert (ws / "runs" / REVIEW_RUN / "relabel_test.csv").read_text().splitlines()[1].startswith(fp[0])
            panel.screenshot(path=str(_screenshot_dir(tmp_path) / "review-readers.png"))
            panel.get_by_role("button", name="Open").click()  # the one disagreement
            _expect_case(page, fp[1])
            assert page.locator('[data-testid="rvNavLabel"]').inner_text() == f"FP 2 of {len(fp)}"
            assert page.locator('[data-testid="stException"]').count() == 0
        except BaseException:
            for reader, page in pages.items():
                page.screenshot(path=str(tmp_path / f"failure-{reader}.png"))
            raise
        finally:
            for page in pages.values():
                page.close()
