"""The real app in a real browser: `streamlit run` on 127.0.0.1, driven by Debian's chromium.

Visits every page of a workspace holding a small demo pack and a finished run with cached
predictions (so the Review page has a case picture), checks each renders without an exception or
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
def _serve(ws: Path, log_path: Path, cwd: Path = ROOT, **extra_env: str):
    """``streamlit run streamlit_app.py`` (of ``cwd``) on a free port of 127.0.0.1 with ``ws`` as workspace."""
    port = _free_port()
    env = {**os.environ, "PNEUMO_WORKSPACE": str(ws), "TF_CPP_MIN_LOG_LEVEL": "3", **extra_env}
    for name in ("PNEUMO_DATA_DIR", "PNEUMO_RUNS_DIR"):
        env.pop(name, None)
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],  # a file edited mid-test must not reload modules
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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


@contextlib.contextmanager
def _screenshot_on_failure(page, tmp_path: Path):
    """Run a test's steps on ``page``; a failure leaves ``tmp_path/failure.png`` (its path is
    printed); the page is closed either way."""
    try:
        yield page
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise
    finally:
        page.close()


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
    with _screenshot_on_failure(page, tmp_path):
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


@pytest.mark.skipif(bool(os.environ.get("PNEUMO_BROWSER_WORKSPACE")), reason="would add a run to a given workspace")
def test_training_live_view_follows_a_run_without_reloading(server, browser, training_gate, tmp_path):
    """Start on the Training page; the fragment's timer alone shows the run running, its progress,
    and its end after Stop. Every step waits for what the page must show next: the run holds at
    the gate until the page has shown it running, and then lasts far longer than the test."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = page.get_by_role("button", name="Start training")
    with _screenshot_on_failure(page, tmp_path):
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
SCREEN = {"width": 1440, "height": 900}  # a radiologist's reading screen: the case must fit it


@pytest.fixture(scope="module")
def review_server(tmp_path_factory):
    """A server of its own for the review tests: the training test adds runs to the shared
    workspace, and the last review test re-packs the pack."""
    ws = tmp_path_factory.mktemp("review-ws")
    _prepare_workspace(ws)
    with _serve(ws, tmp_path_factory.mktemp("review-log") / "streamlit.log") as url:
        yield url, ws


def _open_review(browser, url: str, query: str = ""):
    page = browser.new_page(viewport=SCREEN, device_scale_factor=1)
    page.goto(f"{url}/review{query}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Review", exact=True).first.wait_for(timeout=60_000)
    page.locator('[data-testid="stImage"]').first.wait_for(timeout=120_000)
    _wait_until_idle(page)
    return page


_CASE_LINE = re.compile(r"^(\S+): (FP|FN|TP|TN)$")


def _case_ids(page) -> list[str]:
    """The ids above the verdicts (``**<id>**: FP``) the page shows now: one once the server has drawn it."""
    texts = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"] p:has(strong)').all_inner_texts()
    return [m.group(1) for t in texts if (m := _CASE_LINE.match(t.strip()))]


def _shown_case_id(page) -> str:
    """The id of the case shown, as the server drew it (on a page that has finished loading)."""
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


def _filter(page, category: str) -> None:
    """Click a category of the filter row ("FP · 7")."""
    page.locator('[data-testid="stMain"]').get_by_role("radio", name=re.compile(rf"^{category} · \d+$")).click()


def _picture(page):
    return page.locator('.st-key-rv_view [data-testid="stImage"] img')


def _box(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, "not drawn"
    return box


def test_the_case_fits_a_1440x900_screen_with_its_verdicts(review_server, browser, tmp_path):
    """Issue 19: the first case image started ~1,440 px down. On a 1440x900 screen, without
    scrolling, the case picture (>= 400 px tall) and its verdict buttons are in view, with the
    position and the category. With PNEUMO_SAVE_SCREENSHOTS=1 this is the README's picture."""
    url, ws = review_server
    page = _open_review(browser, url)
    with _screenshot_on_failure(page, tmp_path):
        pic = _box(_picture(page))
        assert pic["height"] >= 400 and pic["y"] >= 0 and pic["y"] + pic["height"] <= SCREEN["height"], pic
        assert _picture(page).evaluate("i => [i.naturalWidth, i.naturalHeight]") == [620, 620]
        for k, verdict in enumerate(("model wrong", "label missed a pneumothorax", "unsure")):
            button = _box(page.get_by_role("button", name=f"{k + 1} · {verdict}", exact=True))
            assert button["y"] + button["height"] <= SCREEN["height"] and button["x"] > pic["x"] + pic["width"]
        label = page.locator('[data-testid="rvNavLabel"]')
        assert re.fullmatch(r"FP 1 of \d+", label.inner_text()) and _box(label)["y"] < SCREEN["height"]
        assert _shown_case_id(page) == _expected_order(ws, "FP")[0]
        assert page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollTop") == 0
        assert page.get_by_text(re.compile(r"^Opened run-20260101-120000: the finished run with the highest dev "
                                           r"score")).count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(_screenshot_dir(tmp_path) / "review.png"))


def test_fast_clicks_and_keys_each_move_one_case(review_server, browser, tmp_path):
    url, ws = review_server
    order = _expected_order(ws, "all")
    assert len(order) >= 10
    page = _open_review(browser, url)
    with _screenshot_on_failure(page, tmp_path):
        _filter(page, "all")
        _expect_case(page, order[0])
        nxt = page.locator('[data-testid="rvNavNext"]')
        for _ in range(6):  # faster than the page reruns: nothing waits for the server
            nxt.click(no_wait_after=True)
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("p")
        _expect_case(page, order[4])
        assert page.locator('[data-testid="rvNavLabel"]').inner_text() == f"case 5 of {len(order)}"
        for key in ("ArrowRight", "n", "n", "ArrowRight", "n"):
            page.keyboard.press(key)
        _expect_case(page, order[9])
        # passing cases writes no review
        assert _review_rows(ws) == []
        assert page.get_by_text(f"0 of {len(order)} cases reviewed").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0


def test_keys_give_verdicts_and_drive_the_view(review_server, browser, tmp_path):
    """Keys 1-3 record the shown category's verdicts in the buttons' order; O overlay, W window
    presets, F full resolution; a click on the picture magnifies about that point."""
    url, ws = review_server
    fp = _expected_order(ws, "FP")
    page = _open_review(browser, url, "?reader=keys")
    with _screenshot_on_failure(page, tmp_path):
        main = page.locator('[data-testid="stMain"]')
        _expect_case(page, fp[0])
        page.keyboard.press("2")
        want = [("keys", fp[0], "label missed a pneumothorax")]
        _eventually(page, lambda: [(r.reader, r.image_id, r.verdict) for r in _review_rows(ws)
                                   if r.reader == "keys"] == want, "the key's verdict in the review database")
        expect(main.get_by_text("Saved: label missed a pneumothorax under FP")).to_have_count(1, timeout=90_000)
        page.keyboard.press("1")
        want = [("keys", fp[0], "model wrong")]
        _eventually(page, lambda: [(r.reader, r.image_id, r.verdict) for r in _review_rows(ws)
                                   if r.reader == "keys"] == want, "the second key's verdict")
        page.keyboard.press("n")
        _expect_case(page, fp[1])
        page.keyboard.press("3")
        _eventually(page, lambda: {r.image_id: r.verdict for r in _review_rows(ws) if r.reader == "keys"}
                    == {fp[0]: "model wrong", fp[1]: "unsure"}, "a verdict on the next case")
        overlay = main.locator(".st-key-rv_overlay input")
        assert overlay.is_checked()
        page.keyboard.press("o")
        expect(overlay).not_to_be_checked(timeout=90_000)
        page.keyboard.press("w")
        expect(main.locator(".st-key-rv_window input")).to_have_value("Window: High contrast", timeout=90_000)
        _wait_until_idle(page)
        before = _picture(page).get_attribute("src")
        box = _box(_picture(page))
        page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
        expect(main.get_by_role("radio", name="2×", exact=True)).to_be_checked(timeout=90_000)
        _wait_until_idle(page)
        assert _picture(page).get_attribute("src") != before
        assert main.get_by_text(re.compile(r"Shown: x 0\.\.63, y 0\.\.63 of 128x128")).count() == 1  # about (32, 32)
        page.keyboard.press("f")
        expect(main.get_by_text(re.compile("^Full resolution unavailable: this image is a generated phantom"))
               ).to_have_count(1, timeout=90_000)
        page.keyboard.press("f")
        expect(main.get_by_text(re.compile("^Full resolution unavailable"))).to_have_count(0, timeout=90_000)
        assert page.locator('[data-testid="stException"]').count() == 0


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
        fp = page.locator('[data-testid="stMain"]').get_by_role("radio", name=re.compile(r"^FP · \d+$"))
        for value in ("0.80", "0.79", "0.78"):
            assert top.locator('[data-testid="stSliderThumbValue"]').inner_text() == value
            errors = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
            assert errors.count() == 0, errors.all_inner_texts()
            assert fp.is_checked()
            assert _picture(page).count() == 1
            slider.press("ArrowLeft")
            _wait_until_idle(page)
        # nothing reaches 0.99: no FP, and the page offers the near misses instead
        slider.press("End")
        near = page.get_by_text(re.compile("^No false positives at these thresholds. Near misses:"))
        expect(near).to_have_count(1, timeout=90_000)  # the server's answer to "End", however late
        _wait_until_idle(page)
        assert _picture(page).count() == 1 and fp.is_checked()
        assert re.fullmatch(r"near miss 1 of \d+", page.locator('[data-testid="rvNavLabel"]').inner_text())
        # back to the run's triplet, then a verdict and a note on the first FP
        page.get_by_role("button", name=re.compile("^Reset to the dev-tuned triplet")).click()
        expect(near).to_have_count(0, timeout=90_000)  # the reset's rerun has drawn the FP again
        _wait_until_idle(page)
        image_id = _shown_case_id(page)
        page.get_by_role("button", name="2 · label missed a pneumothorax").click()
        expect(page.get_by_text("Saved: label missed a pneumothorax")).to_have_count(1, timeout=90_000)
        _wait_until_idle(page)
        note = page.get_by_label("Note (saved when you press Enter or leave the field)")
        note.fill("air at the apex")
        note.press("Enter")
        want = [(image_id, "label missed a pneumothorax", "air at the apex")]
        _eventually(page, lambda: [(r.image_id, r.verdict, r.note) for r in _review_rows(ws) if r.reader == "unnamed"]
                    == want, f"the review database holding {want}")
        _wait_until_idle(page)
        page.reload(wait_until="domcontentloaded")
        page.locator('[data-testid="stImage"]').first.wait_for(timeout=120_000)
        _wait_until_idle(page)
        assert _shown_case_id(page) == image_id
        assert page.get_by_label("Note (saved when you press Enter or leave the field)").input_value() == "air at the apex"
        assert page.get_by_text("Saved: label missed a pneumothorax").count() == 1
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
    with _screenshot_on_failure(page, tmp_path):
        before = _shown_case_id(page)
        from pneumo.config import SplitConfig
        from pneumo.ingest import packer

        # "Replace existing": other phantoms under the same file name
        packer.make_demo_pack(ws / "data" / "demo.h5", count=120, size=128, workers=1, seed=7,
                              split=SplitConfig(seed=11), force=True)
        page.get_by_role("tab", name="Dashboard").click()  # any rerun
        page.get_by_text("out of date").first.wait_for(timeout=60_000)
        _wait_until_idle(page)
        assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() == 0
        assert before not in page.locator('[data-testid="stMain"]').inner_text()
        assert page.get_by_role("button", name="Recompute with best.keras").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0


# --------------------------------------------------------------------------- full resolution (issue 14, 19)
def test_full_resolution_review_of_a_siim_pack_shows_native_pixels(browser, tmp_path):
    """A SIIM-layout tree (8-bit 1024 px and 12-bit 2048 px DICOMs with window tags) packed at
    256 px, a run with fixed predictions, reviewed at full resolution: at 1:1 the picture is
    drawn at the original 2048 px resolution, one PNG pixel per native pixel, with the target
    and the prediction at that size, exactly as the library draws them; a click on the picture
    centres it there; Next shows the next case's source."""
    import io

    import numpy as np
    from PIL import Image

    from pneumo import evaluate
    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest import packer, sources
    from pneumo.ingest.siim_labels import read_labels
    from pneumo.review import fullres, picture, view
    from pneumo.store import pack
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
        with _screenshot_on_failure(page, tmp_path):
            main = page.locator('[data-testid="stMain"]')
            _filter(page, "TP")
            _expect_case(page, big)  # the designed predictions: the 2048 px image is the TP
            main.get_by_text("Full resolution", exact=True).click()
            shown = main.get_by_text(re.compile(r"Shown: x 0\.\.2047, y 0\.\.2047 of 2048x2048; window 1800 / 1600 "
                                                r"\(DICOM units\)"))
            expect(shown).to_have_count(1, timeout=90_000)
            notes = main.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
            assert any(n.startswith("2048x2048 (source)") and "the RLE of stage_2_train.csv decoded at 2048x2048" in n
                       and "resized bilinearly to 2048x2048" in n for n in notes), notes
            main.get_by_role("radio", name="1:1", exact=True).click()
            crop = main.get_by_text(re.compile(r"Shown: x (\d+)\.\.(\d+), y (\d+)\.\.(\d+) of 2048x2048"))
            expect(crop).to_have_count(1, timeout=90_000)
            _wait_until_idle(page)
            m = re.search(r"x (\d+)\.\.(\d+), y (\d+)\.\.(\d+) of", crop.inner_text())
            img = _picture(page)
            assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [620, 620]
            assert img.evaluate("i => i.getBoundingClientRect().width") == 620  # shown 1:1, not scaled
            src = img.get_attribute("src")
            png = urllib.request.urlopen(src if src.startswith("http") else url + src, timeout=10).read()
            got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            page.screenshot(path=str(_screenshot_dir(tmp_path) / "review-fullres.png"))
            # a click at the picture's left edge, halfway down, centres the view there
            box = _box(img)
            page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)
            left, top = int(m.group(1)), int(m.group(3))
            moved = main.get_by_text(re.compile(rf"Shown: x {max(0, left + 2 - 310)}\.\."))
            expect(moved).to_have_count(1, timeout=90_000)
            assert page.locator('[data-testid="stException"]').count() == 0
    # the same drawing from the library: the source at 2048 px, its window, both masks at 2048 px
    left, right, top, bottom = (int(v) for v in m.groups())
    k = ids.index(big)
    full = fullres.read_full_resolution(refs[big].path)
    probs = designed_probs(masks)[k, ..., 0]
    pred = fullres.prediction_at(probs, evaluate.Triplet.from_dict(REVIEW_TRIPLET), 2048, 2048)
    target = fullres.native_target(read_labels(csv_path)[0], big, 2048, 2048, fullres.siim_labels(info.path)[1])
    assert target.shape == (2048, 2048) and np.count_nonzero(target) > 0
    want = picture.source_picture(full, *view.value_range(full.pixels), target, pred, probs,
                                  picture.ViewSettings(zoom="1:1"), 620, "DICOM units")
    assert want.box == (top, left, bottom - top + 1, right - left + 1)
    np.testing.assert_array_equal(got, want.rgb)
    reddish = (got[..., 0].astype(int) - got[..., 1] > 120) & (got[..., 0] > 200)  # red at 0.9 opacity
    assert reddish.sum() > 100  # the band's outline is in the crop


# --------------------------------------------------------------------------- readers (issue 14)
def test_two_readers_verdicts_show_their_agreement(browser, tmp_path):
    """Two browser sessions, ``?reader=alice`` and ``?reader=bob``, judge the same false
    positives; the Readers tab shows the pair's table, the relabel list is written with the
    command that repacks the pack without it, and a disagreement opens its case. With
    ``PNEUMO_SAVE_SCREENSHOTS=1`` the tab goes to docs/screenshots/ (the review protocol shows it)."""
    from pneumo.store import verdicts

    ws = tmp_path / "ws"
    _prepare_workspace(ws)
    fp = _expected_order(ws, "FP")
    assert len(fp) >= 3
    wanted = {"alice": ("label missed a pneumothorax", "model wrong", "model wrong"),
              "bob": ("label missed a pneumothorax", "label missed a pneumothorax", "model wrong")}
    labels = {"model wrong": "1 · model wrong", "label missed a pneumothorax": "2 · label missed a pneumothorax"}
    with _serve(ws, tmp_path / "streamlit.log") as url:
        pages = {}
        try:
            for reader, choices in wanted.items():
                page = pages[reader] = _open_review(browser, url, f"?reader={reader}")
                assert page.get_by_text(f"Reading as {reader}").count() == 1
                for k, verdict in enumerate(choices):
                    _expect_case(page, fp[k])
                    page.get_by_role("button", name=labels[verdict], exact=True).click()
                    expect(page.get_by_text(f"Saved: {verdict} under FP")).to_have_count(1, timeout=90_000)
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
            page.get_by_role("tab", name="Readers").click()  # computed when opened: a rerun
            panel = page.locator('[data-testid="stTabs"]')
            table = panel.locator('[data-testid="stTable"]').first
            table.wait_for(timeout=90_000)
            _wait_until_idle(page)
            cells = [[c.strip() for c in row.split("\t")] for row in table.locator("tr").all_inner_texts()]
            assert ["overall", "3", "0.67", "0.40", "1"] in cells, cells
            assert ["FP", "3", "0.67", "0.40", "1"] in cells, cells
            panel.get_by_role("button", name="Write relabel list").click()
            expect(panel.get_by_text("Wrote 1 case to")).to_have_count(1, timeout=90_000)
            _wait_until_idle(page)
            relabel = ws / "runs" / REVIEW_RUN / "relabel_test.csv"
            assert relabel.read_text().splitlines()[1].strip('"').startswith(fp[0])
            command = panel.locator('[data-testid="stCode"]').filter(has_text="--exclude").inner_text()
            assert command.startswith("python -m pneumo pack demo --count 120 --phantom-seed 0 --out ")
            assert command.rstrip().endswith(f"--exclude {relabel}")
            panel.screenshot(path=str(_screenshot_dir(tmp_path) / "review-readers.png"))
            panel.get_by_role("button", name="Open", exact=True).click()  # the one disagreement
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


def test_a_broken_streamlit_config_shows_no_data(browser, tmp_path):
    """Issue 18 item 7: with a syntax error in .streamlit/config.toml, Streamlit ignores the file
    and runs on its defaults (full tracebacks, "Ask Google" links; every interface and usage
    statistics unless given on the command line); the app then shows no data, only what to fix."""
    import shutil

    app = tmp_path / "app"  # a copy of the app with a broken config file of its own
    app.mkdir()
    for name in ("streamlit_app.py", "app_pages", "pneumo_app"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, app / name)
    (app / ".streamlit").mkdir()
    (app / ".streamlit" / "config.toml").write_text('[server]\naddress = "127.0.0.1\n')
    ws = tmp_path / "ws"
    _prepare_workspace(ws)
    with _serve(ws, tmp_path / "streamlit.log", cwd=app, PYTHONPATH=str(ROOT)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url, wait_until="domcontentloaded")
            error = page.locator('[data-testid="stAlertContentError"]').first
            error.wait_for(timeout=60_000)
            _wait_until_idle(page)
            text = error.inner_text()
            for part in ("shows no data", "showErrorDetails is 'full'", "showErrorLinks is on",
                         "config.toml is not valid TOML"):
                assert part in text, (part, text)
            assert page.locator('[data-testid="stDataFrame"]').count() == 0  # no pack listed
            assert str(ws) not in page.locator("body").inner_text()  # not even the workspace's path
        finally:
            page.close()
