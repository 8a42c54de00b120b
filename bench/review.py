"""Review page: time to show the next case and to re-threshold, from cached predictions; the
full-resolution view; and click-to-picture latency in real browsers, several readers at once.

``python bench/review.py [--n 2000] [--size 256] [--repeats 60] [--write]`` (server side):

- open: ``ReviewData`` + its per-image histograms (once per predictions file; cached by the app);
- next case: read one case (image, mask, probabilities from the HDF5 files) + post-process it +
  draw the reading room's picture (``pneumo.review.picture.case_picture``: 620 px, outlines at
  screen resolution), and the same plus its PNG encoding, which the page sends;
- threshold change: re-score every image under a new triplet (``ReviewData.evaluate``:
  categories, Dice, summary, ROC) + the FP filter and sort (``review.select``).

Baseline in the same run for the threshold change: the pixel-by-pixel way, with all
probabilities and masks already in memory, ``evaluate.postprocess`` + ``evaluate.categorize``
+ ``evaluate.summarize`` per triplet.

``--full-resolution`` times reading a large DICOM and drawing the full-resolution picture;
``--readers 1 4`` runs real browsers against a ``streamlit run`` server (see ``readers_main``).
``--write`` replaces the matching section of docs/benchmarks.md (``bench/_common.write_section``).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumo import evaluate  # noqa: E402
from pneumo.review import cases as review  # noqa: E402
from _common import machine_line, write_section  # noqa: E402


def _blocks(n: int, size: int, seed: int, pool: int, step: int = 100):
    """Images, masks and probability levels of the run, ``step`` at a time: ``(a, b, X, Y, P)``
    with ``(k, S, S) uint8`` each; the same for the same arguments."""
    from pneumo.ingest import phantom

    rng = np.random.default_rng(seed)
    pairs = [phantom.make_phantom(phantom.sample_seed(seed, i), size) for i in range(pool)]
    yy, xx = np.mgrid[:size, :size]
    for a in range(0, n, step):
        b = min(n, a + step)
        k = b - a
        X = np.empty((k, size, size), np.uint8)
        Y = np.empty((k, size, size), np.uint8)
        Pr = np.empty((k, size, size), np.float32)
        for j in range(k):
            X[j], Y[j] = pairs[int(rng.integers(pool))]
            p = (Y[j] > 0) * rng.uniform(0.3, 0.95)
            if rng.random() < 0.15:  # a false alarm somewhere
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                p = np.maximum(p, rng.uniform(0.3, 0.9) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size * 2.0)))
            Pr[j] = p
        Pr += rng.normal(0, 0.02, Pr.shape).astype(np.float32)
        yield a, b, X, Y, evaluate.quantize(np.clip(Pr, 0, 1))


def _write_run(root: Path, n: int, size: int, seed: int = 0, pool: int = 40) -> Path:
    """A pack of demo phantoms (a pool of ``pool`` reused, so writing is quick) and smooth
    model-like probabilities: high on the lesion, a false alarm on some negatives, low noise."""
    from pneumo.store.pack import PackWriter
    from pneumo.store.predictions import create_predictions

    pack, run = root / "bench.h5", root / "runs" / "bench-run"
    run.mkdir(parents=True)
    ids = [f"img-{i:05d}" for i in range(n)]
    with PackWriter(pack, size, {"test": n}, sources=False) as writer:  # train and dev stay empty
        for a, b, X, Y, _ in _blocks(n, size, seed, pool):
            writer.append("test", ids[a:b], X, Y)
        writer.finish(seed=seed, split="{}", source="bench")
    # the run has no model: the page checks these predictions against the pack only
    with create_predictions(run, "test", ids, size, pack) as writer:
        for a, _, _, _, P in _blocks(n, size, seed, pool):
            writer.write(a, P[..., None])
    return run


def _stats(ts: list[float]) -> tuple[float, float]:
    a = np.asarray(ts) * 1000
    return float(np.median(a)), float(np.percentile(a, 95))


def _png_default(panel: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(panel).save(buf, format="PNG")
    return buf.getvalue()


def _page_reruns(workspace: Path, clicks: int) -> list[float]:
    """AppTest round trip per Next press (the case viewer is a fragment: only it reruns).

    AppTest runs no JavaScript, so each press sends what the Previous/Next control's script
    sends: the absolute target position under the nonce the page last gave it."""
    import json

    from streamlit.proto.WidgetStates_pb2 import WidgetStates
    from streamlit.testing.v1 import AppTest

    os.environ["PNEUMO_WORKSPACE"] = str(workspace)
    at = AppTest.from_file(str(ROOT / "app_pages" / "review.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    out = []
    for serial in range(1, clicks + 1):
        (nav,) = at.get("bidi_component")
        data = json.loads(nav.proto.json)
        states = WidgetStates()
        states.CopyFrom(at._tree.get_widget_states())
        w = states.widgets.add()
        w.id = nav.proto.id
        w.json_value = json.dumps({"nav": {"target": {"index": data["pos"] + 1, "nonce": data["nonce"]}, "actions": []}})
        s = time.perf_counter()
        at._run(states)
        out.append(time.perf_counter() - s)
        assert not at.exception, at.exception
    return out


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} (1 / 5 min)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--write", action="store_true", help="replace the section of docs/benchmarks.md")
    args = ap.parse_args()
    from pneumo.review.picture import ViewSettings, case_picture

    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = _write_run(Path(tmp), args.n, args.size)
        t_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        data = review.ReviewData(run, "test")
        _ = data.stats
        t_open = time.perf_counter() - t0

        rng = np.random.default_rng(1)
        triplets = [evaluate.Triplet(round(float(rng.uniform(0.2, 0.8)), 2), round(float(rng.uniform(0.3, 0.9)), 2),
                                     int(rng.integers(0, 400))) for _ in range(args.repeats)]
        # threshold change: re-score everything + filter/sort
        t_thr = []
        for t in triplets:
            s = time.perf_counter()
            ev = data.evaluate(t)
            review.select(ev.cases, "FP", review.SORTS[0])
            t_thr.append(time.perf_counter() - s)

        ev = data.evaluate(evaluate.Triplet(0.5, 0.5, 0))
        order = review.select(ev.cases, "all", review.SORTS[0])
        plain, heat = ViewSettings(), ViewSettings(heat=True, window="contrast", magnify=2)
        t_next, t_next_png, t_next_heat, t_png_default = [], [], [], []
        for k in range(args.repeats):
            i = int(order[(k * 37) % order.size])
            s = time.perf_counter()
            case = data.case(i)
            pic = case_picture(case.image, case.target, case.probs, ev.triplet, plain, 620)
            t_next.append(time.perf_counter() - s)
            pic.png()
            t_next_png.append(time.perf_counter() - s)
            s = time.perf_counter()
            _png_default(pic.rgb)
            t_png_default.append(time.perf_counter() - s)
            s = time.perf_counter()
            case = data.case(i)
            case_picture(case.image, case.target, case.probs, ev.triplet, heat, 620).png()
            t_next_heat.append(time.perf_counter() - s)

        # the whole page: one Streamlit script rerun per Next click (AppTest, no browser)
        t_page = _page_reruns(Path(tmp), max(5, args.repeats // 4))

        # baseline: pixel by pixel with everything in memory
        from pneumo.store.pack import Pack

        probs = data.predictions.read()
        with Pack(data.pack_path) as pack:
            Y = pack.masks("test")
        t_base = []
        for t in triplets[: max(3, args.repeats // 10)]:
            s = time.perf_counter()
            post = evaluate.postprocess(probs, t)
            cases = evaluate.categorize(Y, post, probs, min_area=t.min_area)
            evaluate.summarize(cases["dice"], cases["true_area"] > 0, cases["pred_area"] > 0, cases["score"], t)
            t_base.append(time.perf_counter() - s)
        # sanity: both ways agree on the categories
        ref = evaluate.categorize(Y, evaluate.postprocess(probs, triplets[0]))["category"]
        assert (data.evaluate(triplets[0]).cases["category"] == ref).all()

    nm, np95 = _stats(t_next)
    pm, pp95 = _stats(t_next_png)
    dm, dp95 = _stats(t_png_default)
    hm, hp95 = _stats(t_next_heat)
    tm, tp95 = _stats(t_thr)
    bm, bp95 = _stats(t_base)
    gm, gp95 = _stats(t_page)
    lines = [
        "## Review page (bench/review.py)\n",
        f"{date.today().isoformat()}, `python bench/review.py --n {args.n} --size {args.size} --repeats {args.repeats}`, "
        f"{machine_line()}, numpy {np.__version__}; {load_before} at the start, {_load()} at the end. "
        f"{args.n} cached test predictions at {args.size} px (demo phantoms and smooth synthetic probabilities, "
        f"written in {t_write:.1f} s). Server side only (no browser).\n",
        "| step | median | p95 |",
        "|---|---|---|",
        f"| open the run once (ids, pack match, per-image histograms of all {args.n}) | {t_open * 1000:.0f} ms | - |",
        f"| next case: read image, mask, probabilities + post-process + the 620 px picture (outlines) | {nm:.1f} ms | {np95:.1f} ms |",
        f"| next case + lossless PNG encoding of the picture (zlib level 1): what the page sends | {pm:.1f} ms | {pp95:.1f} ms |",
        f"| (for comparison: encoding the picture alone at PIL's default PNG level 6) | {dm:.1f} ms | {dp95:.1f} ms |",
        f"| next case, heat map, high-contrast window, 2x magnified, with PNG | {hm:.1f} ms | {hp95:.1f} ms |",
        f"| threshold change: re-score all {args.n} (categories, Dice, summary, ROC) + FP filter/sort | {tm:.1f} ms | {tp95:.1f} ms |",
        f"| Next through Streamlit (AppTest round trip of the reading room's fragment; includes AppTest's polling) | {gm:.0f} ms | {gp95:.0f} ms |",
        f"| baseline threshold change: pixel by pixel, arrays in memory | {bm:.0f} ms | {bp95:.0f} ms |",
        "",
        f"Threshold change from the cached histograms is {bm / tm:.0f}x faster than re-thresholding the pixels "
        "(median against median) and needs no pixels in memory. On the page the next case's picture is drawn in "
        "a background thread while the reader looks at the current one (`pneumo.review.prefetch`), so a Next finds "
        "it made; readers stepping through the same cases share the encoded pictures.",
    ]
    _emit("## Review page (bench/review.py)", "\n".join(lines), args.write)


def _emit(section: str, text: str, write: bool) -> None:
    print(text)
    if write:
        write_section(section, text)


# ----------------------------------------------------------------------------- full resolution (issue 14)
def full_resolution_main(argv: list[str]) -> None:
    """``python bench/review.py --full-resolution [--side 3000] [--repeats 15]``: load a 16-bit
    DICOM (12 bits stored, WindowCenter/WindowWidth) at native size and window it to uint8
    (``fullres.read_full_resolution`` + ``window_to_uint8``), against pydicom's own way
    (``dcmread`` + ``pixel_array`` + ``apply_modality_lut`` + ``apply_voi_lut`` on the image)."""
    import tracemalloc

    ap = argparse.ArgumentParser()
    ap.add_argument("--full-resolution", action="store_true")
    ap.add_argument("--side", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--write", action="store_true", help="replace the section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from siim_fixtures import write_dicom

    from pneumo.ingest.imageio import read_image
    from pneumo.ingest.windowing import window_to_uint8
    from pneumo.review.fullres import read_full_resolution

    def pydicom_way(path: Path) -> np.ndarray:
        ds = pydicom.dcmread(path)
        v = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        return np.clip(np.rint(v * (255 / 4095)), 0, 255).astype(np.uint8)

    def ours(path: Path) -> np.ndarray:
        f = read_full_resolution(path)
        return window_to_uint8(f.pixels, f.center, f.width, f.invert)

    from pneumo import evaluate
    from pneumo.review import fullres, picture, view

    levels = np.zeros((256, 256), np.uint8)  # a cached 256 px prediction with one lesion
    levels[90:150, 180:200] = 220

    def viewer(path: Path, full: fullres.FullImage | None = None, zoom: str = "fit") -> bytes:
        """The Review page's full-resolution picture (pneumo_app/review_fullres.py): read (unless
        ``full`` is given: the page's cache), prediction and target at the native size, the 620 px
        picture (``zoom`` "fit": the whole image; "1:1": a crop with the navigator) PNG-encoded."""
        full = full or read_full_resolution(path)
        h, w = full.pixels.shape
        pred = fullres.prediction_at(levels, evaluate.Triplet(0.5, 0.5, 4), h, w)
        target = fullres.target_at(levels > 100, h, w)
        return picture.source_picture(full, *view.value_range(full.pixels), target, pred, levels,
                                      picture.ViewSettings(zoom=zoom), 620, "DICOM units").png()

    rng = np.random.default_rng(0)
    side = args.side
    pixels = (np.add.outer(np.arange(side), np.arange(side)) * (4095 / (2 * side)) + rng.normal(0, 40, (side, side)))
    pixels = np.clip(np.rint(pixels), 0, 4095).astype(np.uint16)  # noisy ramp: realistic file size
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dicom(Path(tmp) / "big.dcm", pixels, bits_stored=12, window=(2048, 1600))
        del pixels
        size_mb = path.stat().st_size / 1e6
        rows = []
        for label, fn in (("`read_full_resolution` + `window_to_uint8` (the review view)", ours),
                          ("`read_image` (packing, window applied)", lambda p: read_image(p)),
                          ("pydicom's way: `pixel_array` + `apply_modality_lut` + `apply_voi_lut` (float64)", pydicom_way),
                          ("encode the windowed uint8 image as PNG (zlib level 1)", None),
                          ("reading room, full resolution on, first look: read + prediction and target at native "
                           "size + the whole image drawn at 620 px and PNG-encoded", viewer),
                          ("the same, image cached (Next to a prefetched case, or another reader's)",
                           lambda p, f=read_full_resolution(path): viewer(p, f)),
                          ("zoom 1:1 (image cached): a 620 px native crop with the navigator, PNG-encoded",
                           lambda p, f=read_full_resolution(path): viewer(p, f, "1:1"))):
            times, peak = [], 0
            image = ours(path)
            for _ in range(args.repeats):
                tracemalloc.start()
                s = time.perf_counter()
                if fn is None:
                    Image.fromarray(image).save(io.BytesIO(), format="PNG", compress_level=1)
                else:
                    fn(path)
                times.append(time.perf_counter() - s)
                peak = max(peak, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
            rows.append((label, *_stats(times), peak / 1e6))
        assert np.abs(ours(path).astype(int) - read_image(path).astype(int)).max() <= 1
    lines = ["## Full-resolution view (bench/review.py --full-resolution)\n",
             f"{date.today().isoformat()}, `python bench/review.py --full-resolution --side {side} --repeats {args.repeats}`, "
             f"{machine_line()}, numpy {np.__version__}, pydicom {pydicom.__version__}; {_load()} at the end. "
             f"One {side}x{side} DICOM, 12 bits stored in 16, WindowCenter/WindowWidth, uncompressed ({size_mb:.0f} MB). "
             "Peak memory by tracemalloc (numpy's allocations).\n",
             "| step | median | p95 | peak traced memory |", "|---|---|---|---|"]
    lines += [f"| {label} | {med:.0f} ms | {p95:.0f} ms | {mb:.0f} MB |" for label, med, p95, mb in rows]
    lines += ["", "The picture is drawn at screen size only: the region shown is windowed (every k-th pixel of a "
              "large image first, then an area average) and resized to 620 px, and the outlines are drawn at that "
              "size. With full resolution on, the page decodes the next case's source, makes its prediction and "
              "target at native size and draws its picture in a background thread while the reader looks at the "
              "current one, so Next waits for none of the first look's cost (`bench/review.py --readers` measures "
              "it in the browser)."]
    _emit("## Full-resolution view (bench/review.py --full-resolution)", "\n".join(lines), args.write)


# ----------------------------------------------------------------------------- readers at once (issue 14, 19)
_LATENCY_JS = r"""
() => {
  // Browser-side timing, so the Python driver's own delays do not count: a capturing click
  // listener stamps the press; the moment the case line names another case and the case
  // picture is current (its element container no longer marked stale by this rerun, the
  // image loaded) is the end. Image sources alone are no signal: two cases can look alike.
  const caseId = () => {
    for (const p of document.querySelectorAll('[data-testid="stMain"] [data-testid="stMarkdownContainer"] p')) {
      const m = /^(\S+): (FP|FN|TP|TN)$/.exec(p.innerText.trim());
      if (m && p.querySelector("strong")) return m[1];
    }
    return null;
  };
  const pictureReady = () => {
    const box = document.querySelector('.st-key-rv_view [data-testid="stElementContainer"]');
    const img = document.querySelector('.st-key-rv_view img');
    return !!(box && img && box.getAttribute("data-stale") !== "true" && img.complete && img.naturalWidth > 0);
  };
  const r = window.__rv = { t0: 0, before: null, pending: false, done: [] };
  document.addEventListener("click", () => {
    r.t0 = performance.now(); r.before = caseId(); r.pending = true;
  }, true);
  const check = () => {
    if (!r.pending) return;
    const now = caseId();
    if (now && now !== r.before && pictureReady()) {
      r.pending = false;
      r.done.push(performance.now() - r.t0);
    }
  };
  new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true,
                                                        characterData: true });
  document.addEventListener("load", check, true);  // an image finished loading (load does not bubble)
}
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; page loads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one_reader(browser, url: str, name: str, clicks: int, pause_s: float, ready, fullres: bool
                      ) -> tuple[list[float], int]:
    """One reader (its own browser context, so its own Streamlit session) on a 1440x900 screen:
    open the Review page as ``?reader=NAME``, show all cases (at full resolution with ``fullres``:
    the F key), then press Next ``clicks`` times (Previous at the end), each press as soon as
    the previous case is drawn. Returns (latencies in s, errors)."""
    import re

    ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await ctx.new_page()
    errors = 0
    try:
        await page.goto(f"{url}/review?reader={name}", wait_until="domcontentloaded")
        await page.locator(".st-key-rv_view img").wait_for(timeout=180_000)
        await page.locator('[data-testid="stMain"]').get_by_role("radio", name=re.compile(r"^all · ")).click()
        await page.wait_for_timeout(3000)  # the full rerun for the filter settles
        if fullres:
            await page.keyboard.press("f")
            await page.get_by_text(re.compile(r"\(DICOM units\)\.$")).first.wait_for(timeout=180_000)
            await page.wait_for_timeout(2000)
        await page.evaluate(_LATENCY_JS)
        await ready.wait()  # every reader presses at the same time
        nxt, prv = page.locator('[data-testid="rvNavNext"]'), page.locator('[data-testid="rvNavPrev"]')
        forward = True
        for k in range(clicks):
            try:
                if forward and await nxt.is_disabled(timeout=10_000):
                    forward = False
                elif not forward and await prv.is_disabled(timeout=10_000):
                    forward = True
                await (nxt if forward else prv).click(timeout=10_000)
                await page.wait_for_function(f"window.__rv.done.length > {k}", timeout=60_000, polling="raf")
            except Exception:  # noqa: BLE001 - a press that failed or a case that never came: an error
                errors += 1
                await page.wait_for_timeout(500)
                await page.evaluate(f"window.__rv.pending = false; while (window.__rv.done.length <= {k}) "
                                    "window.__rv.done.push(NaN);")
            if pause_s:
                await page.wait_for_timeout(pause_s * 1000)
        errors += await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()
        if fullres:
            errors += int(await page.get_by_text(re.compile(r"\(DICOM units\)\.$")).count() == 0)
        done = await page.evaluate("window.__rv.done")
        return [d / 1000 for d in done if d == d], errors
    finally:
        await ctx.close()


def readers_main(argv: list[str]) -> None:
    """``python bench/review.py --readers 1 4 [--modes off on] [--clicks 20] [--sources 60]
    [--side 2048] [--write]``: one ``streamlit run`` server, N headless chromium sessions on its
    Review page at once, each pressing Next as soon as the previous case is drawn, with full
    resolution off (the pack's 256 px copy) and on (each case's DICOM source at ``side`` px);
    click-to-picture latency per N (median, p90, max) and errors. Browsers and server share
    this machine's cores."""
    import asyncio
    import signal
    import socket
    import subprocess
    import urllib.request

    from playwright.async_api import async_playwright

    from _review_workspace import write_source_workspace

    ap = argparse.ArgumentParser()
    ap.add_argument("--readers", type=int, nargs="+", required=True)
    ap.add_argument("--modes", nargs="+", choices=("off", "on"), default=["off", "on"],
                    help="full resolution off and/or on")
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--sources", type=int, default=60, help="cases, each a DICOM source")
    ap.add_argument("--side", type=int, default=2048, help="the DICOM sources' side in px")
    ap.add_argument("--pause-ms", type=float, nargs="+", default=[0.0],
                    help="a reader's look at each case before the next press (several: one table row each)")
    ap.add_argument("--streamlit-option", action="append", default=[], metavar="NAME=VALUE",
                    help="passed to `streamlit run` as --NAME VALUE (e.g. runner.postScriptGC=true, to compare)")
    ap.add_argument("--write", action="store_true", help="replace the section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    # a `timeout` or Ctrl-C still stops the server below (it runs in a session of its own)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_source_workspace(root, n=args.sources, side=args.side)
        t_write = time.perf_counter() - t0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PNEUMO_WORKSPACE": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
        for name in ("PNEUMO_DATA_DIR", "PNEUMO_RUNS_DIR"):
            env.pop(name, None)
        log = open(root / "streamlit.log", "w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             # other work in this tree must not reload modules under the measurement
             "--server.fileWatcherType", "none",
             *(x for o in args.streamlit_option for x in (f"--{o.split('=', 1)[0]}", o.split("=", 1)[1]))],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        results = []
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"streamlit did not start:\n{log.read()[-3000:]}")
                time.sleep(0.3)

            async def run_all() -> None:
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                      args=["--no-sandbox", "--disable-gpu"])
                    try:
                        for pause, mode, n in ((pp, m, k) for pp in args.pause_ms for m in args.modes
                                               for k in args.readers):
                            ready = asyncio.Barrier(n + 1)

                            async def start() -> float:
                                await ready.wait()
                                return _cpu_seconds(proc.pid)

                            cpu0, *out = await asyncio.gather(start(), *(
                                _one_reader(browser, url, f"bench-{pause:g}-{mode}-{n}-{k}", args.clicks,
                                            pause / 1000, ready, mode == "on")
                                for k in range(n)))
                            lat = [t for ts, _ in out for t in ts]
                            results.append((pause, mode, n, lat, sum(e for _, e in out), os.getloadavg(),
                                            (_cpu_seconds(proc.pid) - cpu0) / max(1, n * args.clicks)))
                            a = np.asarray(lat or [np.nan]) * 1000
                            print(f"look {pause:g} ms, full resolution {mode}, {n} readers: {len(lat)} presses, "
                                  f"median {np.median(a):.0f} ms, p90 {np.percentile(a, 90):.0f} ms, errors "
                                  f"{results[-1][4]}", file=sys.stderr, flush=True)
                    finally:
                        await browser.close()

            asyncio.run(run_all())
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
            log.close()
    command = (f"python bench/review.py --readers {' '.join(map(str, args.readers))} --modes {' '.join(args.modes)} "
               f"--clicks {args.clicks} --sources {args.sources} --side {args.side}"
               f" --pause-ms {' '.join(f'{p:g}' for p in args.pause_ms)}"
               f"{''.join(f' --streamlit-option {o}' for o in args.streamlit_option)}")
    lines = ["## Readers at once (bench/review.py --readers)\n",
             f"{date.today().isoformat()}, `{command}`, {machine_line()}; {load_before} at the start. One `streamlit "
             "run` server and N headless chromium sessions (one browser, a context each, 1440x900) on the same "
             f"cores; {args.sources} cases, each a {args.side}x{args.side} DICOM (12 bits stored) packed at 256 px "
             f"(the workspace took {t_write:.0f} s to write), category 'all'. Each reader looks at a case for the "
             "time in the first column (0: presses Next as soon as the case is drawn, so the next case's picture is "
             "still being made in the background) and presses Next. Latency is timed in the browser, from the click to the case line naming "
             "the next case with its picture current (not stale) and loaded. Full resolution off: the pack's 256 px "
             f"copy drawn at 620 px; on: each case's {args.side} px source, whole, in DICOM units. Server CPU per "
             "press: the `streamlit run` process's CPU time from the moment all readers start pressing, divided by "
             "the presses. Targets (issue 19): median <= 250 ms alone, <= 500 ms with 4 readers, either way. "
             "Before issue 19 the page showed a 3-panel triptych of ~300 px panels (73 ms median alone, 174 ms "
             "with 4 readers on an 8.7-9.6 load, pack view only, 1400x1000) and full resolution took ~1 s per "
             "Next; now one 620 px picture, drawn ahead by the prefetcher.\n",
             "| look per case | full resolution | readers at once | presses | median | p90 | max | errors "
             "| server CPU per press | load average (1 min) after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for pause, mode, n, lat, errors, load, cpu in results:
        a = np.asarray(lat) * 1000 if lat else np.asarray([np.nan])
        lines.append(f"| {pause / 1000:g} s | {mode} | {n} | {len(lat)} | {np.median(a):.0f} ms | "
                     f"{np.percentile(a, 90):.0f} ms | {a.max():.0f} ms | {errors} | {cpu * 1000:.0f} ms | {load[0]:.1f} |")
    _emit("## Readers at once (bench/review.py --readers)", "\n".join(lines), args.write)


if __name__ == "__main__":
    if "--full-resolution" in sys.argv[1:]:
        full_resolution_main(sys.argv[1:])
    elif "--readers" in sys.argv[1:]:
        readers_main(sys.argv[1:])
    else:
        main()
