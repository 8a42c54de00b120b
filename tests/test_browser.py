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
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip("playwright (Python) is not installed", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_workspace(ws: Path) -> None:
    """A 128 px demo pack and a finished run on it with test-split predictions."""
    from pneumo import pack, predict
    from run_fixtures import make_trained_run

    demo = pack.make_demo_pack(ws / "data" / "demo.h5", count=60, size=128, workers=1)
    run = make_trained_run(ws / "runs" / "run-20260101-120000", demo.path, size=128, fit_steps=2)
    predict.evaluate_run(run)


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
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
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
def server(tmp_path_factory):
    given = os.environ.get("PNEUMO_BROWSER_WORKSPACE")
    if given:
        ws = Path(given)
    else:
        ws = tmp_path_factory.mktemp("browser-ws")
        _prepare_workspace(ws)
    # Training started from the browser runs the fake trainer (a few seconds, no TensorFlow).
    fake = dict(PNEUMO_TRAIN_COMMAND=f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'tests' / 'fake_trainer.py'))}",
                PNEUMO_FAKE_EPOCHS="4", PNEUMO_FAKE_SECONDS_PER_EPOCH="2")
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
        if path == "review":
            # FP first by default; a barely trained test model may have none: then show all cases.
            _wait_until_idle(page)
            if page.get_by_text("FP (0)", exact=True).count():
                page.get_by_text(re.compile(r"^all \(\d+\)$")).first.click()
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
def test_training_live_view_follows_a_run_without_reloading(server, browser, tmp_path):
    """Start on the Training page; the fragment's timer alone shows progress, then "finished"."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/training", wait_until="domcontentloaded")
        page.get_by_role("heading", name="Training", exact=True).first.wait_for(timeout=60_000)
        _wait_until_idle(page)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text(re.compile(r"^running$")).first.wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"epoch \d of 4, step \d of 5")).first.wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Start training").is_disabled()
        page.get_by_text(re.compile(r"^finished$")).first.wait_for(timeout=60_000)
        _wait_until_idle(page)
        assert page.get_by_role("button", name="Start training").is_enabled()
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(tmp_path / "training-finished.png"))
    finally:
        page.close()


def test_first_launch_from_a_bookmarked_page(browser, tmp_path):
    """A fresh server, an empty workspace, and a first request for /data (not the home page).

    The app's navigation must be in charge (Streamlit would otherwise run `pages/data.py`
    alone, as an old-style multipage app), and the first launch makes the demo pack with
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
    from pneumo import pack

    info = pack.read_info(ws / "data" / "demo.h5")
    assert sum(info.counts.values()) == pack.DEMO_COUNT
