"""pneumo.predict_images and the ordered map of pneumo.workers, without a model (no TensorFlow):
PNG writing, overlays, the pipeline's order, memory window and failure rule with a fixed ``infer``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo import evaluate as ev
from pneumo import predict_images as pi
from pneumo.errors import InputError
from pneumo.review.viz import PRED_COLOR, overlay
from pneumo.workers import InlineExecutor, ordered_map, worker_pool


# --------------------------------------------------------------------------- PNG
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 48), (130, 7), (7, 9, 3), (40, 33, 3), (129, 5, 3)])
def test_png_bytes_round_trip_through_pillow(shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    img = Image.open(io.BytesIO(pi.png_bytes(a)))
    assert img.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(img), a)


def test_png_bytes_of_gray_as_rgb_is_the_rgb_png():
    gray = np.random.default_rng(1).integers(0, 256, (150, 20), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    assert pi.png_bytes(gray, as_rgb=True) == pi.png_bytes(rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(pi.png_bytes(gray, as_rgb=True)))), rgb)


def test_png_bytes_refuses_other_layouts():
    with pytest.raises(InputError, match="PNG"):
        pi.png_bytes(np.zeros((4, 4, 2), np.uint8))


def test_save_png_writes_blank_and_other_images_alike(tmp_path):
    for i, a in enumerate([np.zeros((5, 7), np.uint8), np.zeros((5, 7), np.uint8), np.eye(5, 7, dtype=np.uint8) * 255,
                           np.zeros((6, 4, 3), np.uint8)]):
        pi.save_png(tmp_path / f"{i}.png", a)
        assert (tmp_path / f"{i}.png").read_bytes() == pi.png_bytes(a)


def test_save_png_names_an_unwritable_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="file/x.png: cannot write"):
        pi.save_png(tmp_path / "file" / "x.png", np.zeros((2, 2), np.uint8))


# --------------------------------------------------------------------------- overlay
def _whole_image_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What the serial predict drew: pneumo.review.viz on the whole image."""
    thickness = max(1, int(round(min(image.shape) / 256)))
    rgb = overlay(image, mask, PRED_COLOR, alpha=0.3, mode="fill")
    return overlay(rgb, mask, PRED_COLOR, alpha=1.0, mode="outline", thickness=thickness)


@pytest.mark.parametrize("size", [(40, 30), (600, 520)])  # thickness 1 and 2
def test_overlay_on_the_bounding_box_equals_the_whole_image(size):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size, dtype=np.uint8)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    masks = [np.zeros(size, np.uint8)]
    blob = ((yy - h // 3) ** 2 + (xx - w // 2) ** 2 < (h // 6) ** 2)
    masks.append(np.where(blob, 255, 0).astype(np.uint8))
    edge = blob | ((yy > h - h // 5) & (xx < w // 4))  # two blobs, one touching two borders
    masks.append(np.where(edge, 255, 0).astype(np.uint8))
    single = np.zeros(size, np.uint8)
    single[0, w - 1] = 255  # one pixel in a corner
    masks.append(single)
    for mask in masks:
        np.testing.assert_array_equal(pi.overlay_image(image, mask), _whole_image_overlay(image, mask))


def test_mask_at_resolution_skips_upsampling_only_when_nothing_can_pass():
    """Below the pixel threshold everywhere: empty without upsampling; at it or above: the
    upsampled, thresholded probabilities, exactly."""
    t = ev.Triplet(0.5, 0.5, 0)
    level = ev.threshold_level(0.5)
    rng = np.random.default_rng(2)
    for top in (level - 1, level, level + 1, 255):
        for _ in range(20):
            lv = rng.integers(0, top + 1, (8, 8)).astype(np.uint8)
            lv[rng.integers(8), rng.integers(8)] = top
            h, w = (int(v) for v in rng.integers(5, 90, 2))
            mask, _ = pi.mask_at_resolution(lv, t, h, w)
            np.testing.assert_array_equal(mask > 0, pi._upsample_levels(lv, h, w) > level)


def test_a_negatives_overlay_is_the_gray_input_and_a_positives_is_drawn_in_rgb(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (40, 30), dtype=np.uint8)
    t = ev.Triplet(0.5, 0.5, 0)
    empty = np.zeros((8, 8), np.uint8)
    found = empty.copy()
    found[2:5, 3:6] = 255
    for name, levels in (("neg", empty), ("pos", found)):
        result, rle = pi._finish(tmp_path / f"{name}.png", image, name, levels, t, tmp_path, name, True, True)
        with Image.open(result["overlay"]) as ov:
            mode, pixels = ov.mode, np.asarray(ov)
        if name == "neg":
            assert not result["present"] and rle is None and mode == "L"
            np.testing.assert_array_equal(pixels, image)
        else:
            mask = np.asarray(Image.open(result["mask"])) > 0
            assert result["present"] and rle and mode == "RGB" and mask.any()
            np.testing.assert_array_equal(pixels, pi.overlay_image(image, mask.astype(np.uint8) * 255))


# --------------------------------------------------------------------------- ordered map
def test_ordered_map_keeps_order_and_a_bounded_window():
    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    out = []
    for value in ordered_map(InlineExecutor(), lambda x, k: x * k, items(), 3, 10):
        assert len(pulled) - len(out) <= 3 + 1  # at most the window ahead of the consumer (+ the one yielded)
        out.append(value)
    assert out == [10 * i for i in range(20)]


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise InputError(f"item {x}: bad")
    return x


def test_ordered_map_raises_an_items_error_at_its_turn_on_processes():
    pool = worker_pool(2)
    try:
        got = []
        with pytest.raises(InputError, match="item 3: bad"):
            for v in ordered_map(pool, _fail_on_three, range(8), 4):
                got.append(v)
        assert got == [0, 1, 2]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_inline_executor_delivers_exceptions_through_the_future():
    f = InlineExecutor().submit(_fail_on_three, 3)
    with pytest.raises(InputError, match="item 3"):
        f.result()


# --------------------------------------------------------------------------- the pipeline, with fixed predictions
def _images(folder: Path, n: int, bad: int | None = None) -> list[Path]:
    """``n`` small gray PNGs of different sizes (``bad``: a broken file at that index)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    files = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        if i == bad:
            p.write_bytes(b"not a png")
        else:  # every third image dark: no pixel above the fixed model's threshold
            high = 150 if i % 3 == 2 else 256
            Image.fromarray(rng.integers(0, high, (40 + i, 50 - i), dtype=np.uint8)).save(p)
        files.append(p)
    return files


def _fixed_infer(x: np.ndarray) -> np.ndarray:
    """Levels from the pixels alone (bright = likely): a stand-in for a model."""
    return np.where(x > 200, np.uint8(230), np.uint8(10))


def test_pipeline_order_progress_and_memory_window(tmp_path, monkeypatch):
    files = _images(tmp_path / "in", 30)
    prepared, finished = [], []
    real_prepare = pi._prepare

    def counting_prepare(path, size):
        prepared.append(path)
        return real_prepare(path, size)

    monkeypatch.setattr(pi, "_prepare", counting_prepare)  # the inline executor runs it here

    def progress(done, total):
        finished.append((done, total))
        # decoded images not yet finished: a batch being assembled, the window ahead, the finishing ones
        assert len(prepared) - done <= 2 * (3 + 2) + 3

    results, rles = pi.run_pipeline(InlineExecutor(), files, pi.output_stems(files), tmp_path / "out", 32,
                                    ev.Triplet(0.5, 0.5, 0), _fixed_infer, batch_size=3, workers=1, rle=True,
                                    progress=progress)
    assert [r["input"] for r in results] == [str(f) for f in files]
    assert finished == [(i, 30) for i in range(1, 31)]
    assert len(rles) == 30 and all((code is None) == (not r["present"]) for r, code in zip(results, rles))


def test_pipeline_failure_finishes_the_files_before_and_nothing_after(tmp_path):
    files = _images(tmp_path / "in", 7, bad=4)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="img04.png"):
        pi.run_pipeline(InlineExecutor(), files, pi.output_stems(files), out, 32, ev.DEFAULT_TRIPLET,
                        _fixed_infer, batch_size=3, workers=1)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"img{i:02d}{s}" for i in range(4) for s in (pi.MASK_SUFFIX, pi.OVERLAY_SUFFIX))


def test_output_stems_number_repeats():
    files = [Path("a/x.png"), Path("b/x.dcm"), Path("c/y.png"), Path("d/x.jpg")]
    assert pi.output_stems(files) == ["x", "x_2", "y", "x_3"]



def test_pipeline_same_outputs_in_worker_processes(tmp_path):
    """Fixed predictions through 0 and 2 worker processes: the same results, RLEs and files,
    byte for byte, positives and negatives, PNG and DICOM inputs."""
    from siim_fixtures import write_dicom

    files = _images(tmp_path / "in", 8)
    rng = np.random.default_rng(4)
    files += [write_dicom(tmp_path / "in" / f"d{i}.dcm", rng.integers(0, 256, (48, 40), dtype=np.uint8),
                          sop_uid=f"1.2.3.{i}") for i in range(3)]
    runs = []
    for pool in (InlineExecutor(), worker_pool(2)):
        out = tmp_path / f"out{len(runs)}"
        try:
            results, rles = pi.run_pipeline(pool, files, pi.output_stems(files), out, 32, ev.Triplet(0.5, 0.5, 0),
                                            _fixed_infer, batch_size=4, workers=2, rle=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        files_out = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        runs.append(([{k: v for k, v in r.items() if k not in ("mask", "overlay")} for r in results], rles, files_out))
    present = [r["present"] for r in runs[0][0]]
    assert any(present) and not all(present)
    assert [r["id"] for r in runs[0][0]][-3:] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert runs[1] == runs[0]
