"""The full-resolution review view's library (pneumo.review.fullres): predict's resize rule, crop and
window maths on tiny images, the byte-bounded image cache and the source checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pneumo import evaluate as ev
from pneumo.review import fullres
from pneumo import predict as pr
from pneumo.errors import InputError
from pneumo.store.pack import SourceRef
from pneumo.ingest.windowing import window_to_uint8

from siim_fixtures import write_dicom

RED, GREEN = (255, 0, 0), (0, 255, 0)


class _FixedModel:
    """Stands in for a Keras model: fixed probabilities, whatever the input."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs
        self.input_shape = (None, probs.shape[0], probs.shape[1], 1)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(self.probs[None, ..., None], len(x), axis=0)


def _blob_probs(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.clip(1.2 - np.hypot(yy - 10.3, xx - 19.7) / 6.0, 0, 1).astype(np.float32)


def test_full_resolution_mask_equals_predicts_on_the_same_image(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"never loaded")
    (run / "config.json").write_text(json.dumps({"pack": ""}))
    (run / "metrics_test.json").write_text(json.dumps(
        {"checkpoint": "best", "triplet": ev.Triplet(0.45, 0.6, 9).to_dict(size=32)}))
    probs = _blob_probs(32)
    monkeypatch.setattr(pr, "_load_model", lambda path: _FixedModel(probs))
    rng = np.random.default_rng(0)
    dcm = write_dicom(tmp_path / "in" / "x.dcm", rng.integers(0, 4096, (48, 80)).astype(np.uint16),
                      bits_stored=12, window=(2000, 3000))  # not square, not the model's size
    [result] = pr.predict_files(run, [dcm], tmp_path / "out")
    written = np.asarray(Image.open(result["mask"]))
    triplet, _ = pr.run_triplet(run, 32, "best")
    ours = fullres.prediction_at(ev.quantize(probs)[..., None], triplet, 48, 80)
    assert ours.shape == written.shape == (48, 80)
    assert ours.dtype == np.uint8 and set(np.unique(ours)) == {0, 255}
    np.testing.assert_array_equal(ours, written)
    # at the pack's own size the rule is the review's evaluate.postprocess
    at_size = fullres.prediction_at(ev.quantize(probs), triplet, 32, 32)
    np.testing.assert_array_equal(at_size > 0, ev.postprocess(ev.quantize(probs)[None], triplet)[0])
    # an image called negative at the model's size stays empty at any size
    strict = ev.Triplet(0.45, 0.6, 10_000)
    assert not fullres.prediction_at(ev.quantize(probs), strict, 48, 80).any()


def test_target_at_is_nearest_and_binary():
    m = np.array([[0, 255, 0, 0], [0, 0, 0, 255], [1, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    big = fullres.target_at(m[..., None], 8, 8)
    np.testing.assert_array_equal(big, np.repeat(np.repeat(np.where(m > 0, 255, 0), 2, 0), 2, 1))
    assert fullres.target_at(m, 4, 4).tolist() == np.where(m > 0, 255, 0).tolist()


def test_crop_box_centres_and_stays_inside():
    assert fullres.crop_box(8, 8, 4, 1, 4, 4) == (2, 2, 4, 4)
    assert fullres.crop_box(8, 8, 4, 1, 0, 0) == (0, 0, 4, 4)  # pushed inside at the corner
    assert fullres.crop_box(8, 8, 4, 1, 7, 7) == (4, 4, 4, 4)
    assert fullres.crop_box(8, 8, 4, 2, 4, 4) == (3, 3, 2, 2)  # zoom 2: half the native pixels
    assert fullres.crop_box(4, 8, 16, 1, 1, 6) == (0, 0, 4, 8)  # smaller than the view: all of it
    assert fullres.crop_box(8, 4, 4, 1, 1, 6) == (4, 0, 4, 4)
    with pytest.raises(InputError):
        fullres.crop_box(8, 8, 4, 0, 0, 0)
    assert [fullres.zoom_factor(z) for z in fullres.ZOOMS] == [0, 1, 2, 4, 8]
    with pytest.raises(InputError):
        fullres.zoom_factor("3:1")


def _full(pixels: np.ndarray, invert: bool = False) -> fullres.FullImage:
    return fullres.FullImage(pixels, 2048.0, 4096.0, invert, "MONOCHROME2", "file", "x")


def test_draw_crop_windows_only_the_region_and_keeps_pixels_square():
    px = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 64)
    full = _full(px)
    box = fullres.crop_box(8, 8, 4, 1, 5, 5)  # (3, 3, 4, 4)
    out = fullres.draw_crop(full, 1000.0, 1500.0, box, 1)
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[..., 0], window_to_uint8(px[3:7, 3:7], 1000.0, 1500.0))
    zoomed = fullres.draw_crop(full, 1000.0, 1500.0, box, 2)
    assert zoomed.shape == (8, 8, 3)
    np.testing.assert_array_equal(zoomed[::2, ::2], out)
    np.testing.assert_array_equal(zoomed[1::2, 1::2], out)
    inverted = fullres.draw_crop(_full(px, invert=True), 1000.0, 1500.0, box, 1)
    np.testing.assert_array_equal(inverted, 255 - out)


def test_draw_crop_outlines_the_mask_not_the_crop_border():
    px = np.zeros((8, 8), np.uint16)
    everywhere = np.ones((8, 8), np.uint8)
    inner = fullres.draw_crop(_full(px), 2048.0, 4096.0, (2, 2, 4, 4), 1, [(everywhere, RED)])
    assert not (inner == RED).all(axis=-1).any()  # the mask goes on past the crop: no edge here
    corner = fullres.draw_crop(_full(px), 2048.0, 4096.0, (0, 0, 4, 4), 1, [(everywhere, RED)])
    red = (corner == RED).all(axis=-1)
    assert red[0].all() and red[:, 0].all() and not red[1:, 1:].any()  # the image's own edge
    square = np.zeros((8, 8), np.uint8)
    square[3:6, 3:6] = 1
    both = fullres.draw_crop(_full(px), 2048.0, 4096.0, (2, 2, 4, 4), 1, [(square, GREEN), (square, RED)])
    red = (both == RED).all(axis=-1)
    expected = np.zeros((4, 4), bool)
    expected[1:4, 1:4] = True
    expected[2, 2] = False  # the centre of the 3x3 square is inside, not on the outline
    np.testing.assert_array_equal(red, expected)  # the later mask is on top
    assert not (both == GREEN).all(axis=-1).any()


def test_overview_keeps_a_thin_band_and_draws_the_box():
    px = np.full((8, 8), 1000, np.uint16)
    band = np.zeros((8, 8), np.uint8)
    band[:, 5] = 1  # one native column: plain subsampling by 2 would drop it
    assert fullres.overview_step(8, 8, 4) == 2 and fullres.overview_step(9, 3, 4) == 3
    ov = fullres.draw_overview(_full(px), 2048.0, 4096.0, 4, [(band, RED)])
    assert ov.shape == (4, 4, 3)
    assert (ov[:, 2] == RED).all() and not (ov[:, [0, 1, 3]] == RED).all(axis=-1).any()
    boxed = fullres.draw_overview(_full(px), 2048.0, 4096.0, 4, box=(2, 2, 4, 4), box_color=GREEN)
    green = (boxed == GREEN).all(axis=-1)
    expected = np.zeros((4, 4), bool)
    expected[1, 1:3] = expected[2, 1:3] = expected[1:3, 1] = expected[1:3, 2] = True
    np.testing.assert_array_equal(green, expected)
    gray = fullres.draw_overview(_full(px), 2048.0, 4096.0, 4)
    np.testing.assert_array_equal(gray[..., 0], window_to_uint8(px[::2, ::2], 2048.0, 4096.0))


def test_default_centre_is_the_first_nonempty_mask():
    a, b = np.zeros((8, 8)), np.zeros((8, 8))
    b[1:3, 5:8] = 1
    assert fullres.default_centre(None, a) is None
    assert fullres.default_centre(a, b) == (6, 2)  # columns 5..7, rows 1..2 (halves round up)
    a[6, 0] = 1
    assert fullres.default_centre(a, b) == (0, 6)


def test_image_cache_is_bounded_in_bytes_least_recently_used_first():
    def img(nbytes: int) -> fullres.FullImage:
        return _full(np.zeros(nbytes, np.uint8))

    cache = fullres.ImageCache(max_bytes=250)
    loads: list[str] = []

    def get(key: str, nbytes: int = 100):
        return cache.get(key, lambda: loads.append(key) or img(nbytes))

    a = get("a")
    get("b")
    assert get("a") is a and loads == ["a", "b"]  # a hit: not loaded again
    get("c")  # 300 bytes > 250: the least recently used ("b") goes
    assert cache.nbytes == 200 and len(cache) == 2
    get("a"), get("c")
    assert loads == ["a", "b", "c"]
    get("b")
    assert loads == ["a", "b", "c", "b"]
    huge = get("huge", 1000)  # larger than the whole budget: returned, not kept
    assert huge.pixels.nbytes == 1000 and cache.nbytes <= 250 and len(cache) == 2
    get("huge", 1000)
    assert loads.count("huge") == 2


def test_check_source_says_why_in_one_line(tmp_path):
    f = tmp_path / "x.dcm"
    f.write_bytes(b"x")
    ok = fullres.check_source(SourceRef(str(f), 2048, 1024))
    assert (ok.path, ok.reason, ok.height, ok.width) == (str(f), None, 2048, 1024)
    for ref, words in ((None, "no source references"), (SourceRef("demo:7", 64, 64), "phantom"),
                       (SourceRef(str(tmp_path / "gone.dcm"), 9, 9), "gone")):
        c = fullres.check_source(ref)
        assert c.path is None and words in c.reason and "\n" not in c.reason
    assert fullres.file_key(f)[:2] == (str(f), 1)


def test_pack_copy_is_a_full_image_with_the_byte_window():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    full = fullres.pack_copy(img)
    assert full.pixels.shape == (4, 4) and not full.invert
    np.testing.assert_array_equal(window_to_uint8(full.pixels, full.center, full.width), img[..., 0])


def test_native_target_decodes_the_siim_rle_recorded_by_the_pack(tmp_path):
    from pneumo.ingest import packer, sources
    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest.siim_labels import read_labels

    from siim_fixtures import write_siim_tree

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", n=4, size=40, seed=1, positive_rate=1.0, stage=1)
    manifest = sources.siim_source(dicom_dir, csv_path, workers=1)
    info = packer.pack_manifest(manifest, tmp_path / "p.h5",
                                PackConfig(size=32, workers=1, split=SplitConfig(proportions=(0.0, 0.0, 1.0))))
    found = fullres.siim_labels(info.path)
    assert found == (str(csv_path.absolute()), True)  # stage 1: relative starts
    labels = read_labels(csv_path)[0]
    for sample in manifest.samples:
        native = fullres.native_target(labels, sample.id, 40, 40, found[1])
        np.testing.assert_array_equal(native, sources.load_pair(sample)[1])  # what packing decoded
    assert fullres.native_target(labels, "no-such-id", 40, 40, True) is None
    assert fullres.native_target(labels, manifest.samples[0].id, 2, 2, True) is None  # runs past: not this image
    demo = packer.make_demo_pack(tmp_path / "demo.h5", count=12, size=32, workers=1)
    assert fullres.siim_labels(demo.path) is None


def test_image_cache_bounds_any_value_by_its_given_size():
    """The Review page keeps lists of cases in it: bounded by their bytes, not their number."""
    cache = fullres.ImageCache(100, sizeof=lambda arrays: sum(a.nbytes for a in arrays))
    a = cache.get("a", lambda: [np.zeros(40, np.uint8)])
    cache.get("b", lambda: [np.zeros(30, np.uint8), np.zeros(30, np.uint8)])
    assert len(cache) == 2 and cache.nbytes == 100
    cache.get("c", lambda: [np.zeros(10, np.uint8)])  # 110 bytes: the least recent ("a") goes
    assert len(cache) == 2 and cache.nbytes == 70
    reloaded = [np.ones(40, np.uint8)]
    assert cache.get("a", lambda: reloaded) is reloaded and a[0].size == 40  # read again
    cache.get("big", lambda: [np.zeros(101, np.uint8)])  # larger than the cache: returned, not kept
    assert "big" not in cache._items


def test_a_replaced_source_is_refused_and_the_pack_copy_shown(tmp_path):
    """Issue 18 item 5: replacing images/<id>.png by another picture of another size showed it
    under the id with target and prediction drawn on it. The pack records each file's size,
    mtime and SHA-256; the view compares and says why it shows the pack's copy instead."""
    from pneumo.config import PackConfig
    from pneumo.ingest import sources
    from pneumo.ingest.packer import pack_manifest

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k in range(3):
        Image.fromarray(np.full((40, 60), 10 * k, np.uint8)).save(images / f"c{k}.png")
        Image.fromarray(np.zeros((40, 60), np.uint8)).save(masks / f"c{k}.png")
    info = pack_manifest(sources.folder_source(images, masks), tmp_path / "p.h5", PackConfig(size=32))
    refs = {}
    for split in ("train", "dev", "test"):
        refs.update(fullres.sources_by_id(info.path, split))
    assert fullres.check_source(refs["c0"]).path == str(images / "c0.png")  # untouched: its own file
    Image.fromarray(np.full((90, 70), 200, np.uint8)).save(images / "c0.png")  # another size
    c0 = fullres.check_source(refs["c0"])
    assert c0.path is None and "changed since it was packed" in c0.reason and str(images / "c0.png") in c0.reason
    data = bytearray((images / "c1.png").read_bytes())
    data[-20] ^= 0xFF  # the same byte size, other content
    (images / "c1.png").write_bytes(bytes(data))
    c1 = fullres.check_source(refs["c1"])
    assert c1.path is None and "its content differs" in c1.reason
    # a pack from before identities were recorded: the decoded dimensions still tell
    old = SourceRef(str(images / "c0.png"), 40, 60)
    check = fullres.check_source(old)
    full = fullres.read_full_resolution(check.path)
    why = fullres.size_mismatch(check, full)
    assert "it is 70x90 now, 60x40 then" in why
    assert fullres.size_mismatch(fullres.check_source(refs["c2"]),
                                 fullres.read_full_resolution(images / "c2.png")) is None
