"""Data sources: folder pairing, image formats, DICOM, the SIIM manifest, demo phantoms."""
from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from siim_fixtures import write_dicom, write_siim_tree

from pneumo.ingest import phantom
from pneumo.errors import InputError
from pneumo.ingest.rle import siim_encode
from pneumo.ingest.sources import (
    Manifest,
    Sample,
    demo_source,
    folder_source,
    hash_patient_id,
    load_pair,
    read_dicom_meta,
    read_image,
    read_mask,
    sample_positive,
    siim_source,
)


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    img.save(path, **kwargs)
    return path


def _square_mask(index: int, size: int = 16) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[index : index + 3, index : index + 3] = 255
    return m


# ----------------------------------------------------------------------------- folders


def test_folder_pairs_by_stem_not_sorted_position(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    # image "b" has no mask and mask "x" no image: zip(sorted, sorted) would pair b-c, c-d, d-x.
    for i, stem in enumerate("abcd"):
        ext = ".jpg" if stem == "d" else ".png"
        _save(images / f"{stem}{ext}", np.full((16, 16), 10 * (i + 1), np.uint8))
    for i, stem in [(0, "a"), (2, "c"), (3, "d"), (5, "x")]:
        _save(masks / f"{stem}.png", _square_mask(i))
    manifest = folder_source(images, masks)
    assert isinstance(manifest, Manifest) and manifest.kind == "folders"
    assert [s.id for s in manifest.samples] == ["a", "c", "d"]
    for s in manifest.samples:
        assert Path(s.image).stem == Path(s.mask).stem == s.id == s.patient
        assert s.kind == "folders" and s.positive is None
        image, mask = load_pair(s)
        index = "abcd".index(s.id)
        np.testing.assert_array_equal(mask, _square_mask(index))
        assert abs(int(image.mean()) - 10 * (index + 1)) <= 1
    reasons = dict(manifest.skipped)
    assert set(reasons) == {str(images / "b.png"), str(masks / "x.png")}
    assert "no mask" in reasons[str(images / "b.png")]
    assert "no image" in reasons[str(masks / "x.png")]
    assert manifest.info["pairs"] == 3
    assert manifest.info["images_without_mask"] == 1 and manifest.info["masks_without_image"] == 1


def test_folder_ignores_hidden_and_non_image_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8), np.uint8))
    _save(masks / "a.png", np.zeros((8, 8), np.uint8))
    _save(images / ".hidden.png", np.zeros((8, 8), np.uint8))
    (images / "notes.txt").write_text("hello")
    (masks / ".DS_Store").write_bytes(b"\0\1")
    (images / "sub").mkdir()
    manifest = folder_source(images, masks)
    assert [s.id for s in manifest.samples] == ["a"]
    assert manifest.skipped == [] and manifest.info["ignored_files"] == 4


def test_folder_stems_are_case_sensitive(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8), np.uint8))
    _save(images / "B.png", np.zeros((8, 8), np.uint8))
    _save(masks / "a.PNG", np.zeros((8, 8), np.uint8))  # extension case does not matter
    _save(masks / "b.png", np.zeros((8, 8), np.uint8))
    manifest = folder_source(images, masks)
    assert [s.id for s in manifest.samples] == ["a"]
    assert len(manifest.skipped) == 2


def test_folder_duplicate_stem_names_both(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8), np.uint8))
    _save(images / "a.jpg", np.zeros((8, 8), np.uint8))
    _save(masks / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=r"a\.jpg.*a\.png|a\.png.*a\.jpg"):
        folder_source(images, masks)


def test_folder_missing_empty_and_unpaired(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    with pytest.raises(InputError, match="images.*not found"):
        folder_source(images, masks)
    images.mkdir()
    (images / "readme.txt").write_text("x")
    _save(masks / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=f"{images}.*no image files"):
        folder_source(images, masks)
    _save(images / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="no image/mask pairs"):
        folder_source(images, masks)
    with pytest.raises(InputError, match="not found"):
        folder_source(images, tmp_path / "nope")


def test_folder_shape_mismatch_names_both_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", np.zeros((8, 8), np.uint8))
    _save(masks / "a.png", np.zeros((8, 9), np.uint8))
    (sample,) = folder_source(images, masks).samples
    with pytest.raises(InputError, match=r"images/a\.png.*masks/a\.png"):
        load_pair(sample)


def test_sample_positive_decodes_mask_only_when_unknown(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem, mask in [("neg", np.zeros((8, 8), np.uint8)), ("pos", _square_mask(2, 8))]:
        _save(images / f"{stem}.png", np.zeros((8, 8), np.uint8))
        _save(masks / f"{stem}.png", mask)
    by_id = {s.id: s for s in folder_source(images, masks).samples}
    assert sample_positive(by_id["pos"]) is True and sample_positive(by_id["neg"]) is False
    assert sample_positive(Sample(id="s", patient="s", kind="siim", positive=True)) is True


# ----------------------------------------------------------------------------- image formats

GRAY = np.array([[0, 1, 127, 128], [200, 254, 255, 17]], np.uint8)


@pytest.mark.parametrize("name", ["g.png", "g.tif", "g.bmp"])
def test_read_8bit_gray_lossless(tmp_path, name):
    out = read_image(_save(tmp_path / name, GRAY))
    assert out.dtype == np.uint8 and out.shape == (2, 4)
    np.testing.assert_array_equal(out, GRAY)


def test_read_jpeg_gray_close(tmp_path):
    smooth = np.tile(np.linspace(20, 230, 32), (32, 1)).astype(np.uint8)
    out = read_image(_save(tmp_path / "g.jpeg", smooth, quality=95))
    assert out.dtype == np.uint8 and out.shape == (32, 32)
    assert np.abs(out.astype(int) - smooth).max() <= 4


@pytest.mark.parametrize("name", ["w.png", "w.tif"])
def test_read_16bit_full_range(tmp_path, name):
    values = np.array([[0, 65535], [32768, 257]], np.uint16)
    out = read_image(_save(tmp_path / name, values))
    # stretched over the image's range 0..65535: 32768 * 255 / 65535 = 127.5 -> 128, 257 -> 1
    np.testing.assert_array_equal(out, [[0, 255], [128, 1]])


def test_read_16bit_uses_actual_range(tmp_path):
    # 12-bit values in a 16-bit container: stretched over 1000..3000, not 0..65535
    values = np.array([[1000, 3000, 2000, 1500]], np.uint16)
    out = read_image(_save(tmp_path / "w12.png", values))
    np.testing.assert_array_equal(out, [[0, 255, 128, 64]])  # 500/2000*255 = 63.75 -> 64
    assert not read_image(_save(tmp_path / "flat.png", np.full((2, 2), 700, np.uint16))).any()


def test_read_float_tiff(tmp_path):
    out = read_image(_save(tmp_path / "f.tif", np.array([[0.0, 0.5, 1.0]], np.float32)))
    np.testing.assert_array_equal(out, [[0, 128, 255]])


def test_read_gray_alpha_ignores_alpha(tmp_path):
    la = np.stack([GRAY, np.array([[0, 255, 10, 20], [30, 40, 50, 60]], np.uint8)], axis=2)
    np.testing.assert_array_equal(read_image(_save(tmp_path / "la.png", la, "LA")), GRAY)


# Pillow's ITU-R 601-2 luma, hand-computed: red 255*0.299 = 76.2 -> 76,
# green 255*0.587 = 149.7 -> 150, blue 255*0.114 = 29.1 -> 29, white 255, black 0.
RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.uint8)
RGB_LUMA = np.array([[76, 150, 29, 255, 0]], np.uint8)


@pytest.mark.parametrize("name", ["c.png", "c.jpg", "c.tif"])
def test_read_rgb_to_luminance(tmp_path, name):
    big = np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1)  # 8x8 blocks survive JPEG
    out = read_image(_save(tmp_path / name, big))
    expected = np.repeat(np.repeat(RGB_LUMA, 8, axis=0), 8, axis=1)
    tolerance = 12 if name.endswith(".jpg") else 0
    assert out.shape == (8, 40) and np.abs(out.astype(int) - expected)[2:6, :].max() <= tolerance


def test_read_rgba_and_palette(tmp_path):
    rgba = np.concatenate([RGB, np.array([[[0], [50], [100], [200], [255]]], np.uint8)], axis=2)
    np.testing.assert_array_equal(read_image(_save(tmp_path / "c.png", rgba, "RGBA")), RGB_LUMA)
    pal = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), [[0, 255, 76]])


def test_read_bilevel(tmp_path):
    Image.fromarray(np.array([[True, False, True]])).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), [[255, 0, 255]])


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = good.read_bytes()
    cases = {
        "truncated.png": data[: len(data) // 2],
        "garbage.png": b"this is not an image at all" * 10,
        "empty.png": b"",
        "badcrc.png": data[:60] + bytes([data[60] ^ 0xFF]) + data[61:],
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            read_image(tmp_path / name)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            read_mask(tmp_path / name)
    with pytest.raises(InputError, match="missing.png.*not found"):
        read_image(tmp_path / "missing.png")


def test_multi_frame_tiff_refused(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (1, 2)]
    frames[0].save(tmp_path / "multi.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match=r"multi\.tif.*2 frames"):
        read_image(tmp_path / "multi.tif")


def test_read_mask_any_nonzero_any_channel(tmp_path):
    gray = np.array([[0, 1, 255, 0]], np.uint8)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "g.png", gray)), [[0, 255, 255, 0]])
    rgb = np.zeros((1, 4, 3), np.uint8)
    rgb[0, 1, 0] = 3  # red only
    rgb[0, 2, 2] = 200  # blue only
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "c.png", rgb)), [[0, 255, 255, 0]])
    rgba = np.concatenate([rgb, np.full((1, 4, 1), 255, np.uint8)], axis=2)  # opaque alpha is ignored
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "a.png", rgba, "RGBA")), [[0, 255, 255, 0]])
    wide = np.array([[0, 65535, 1]], np.uint16)
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "w.png", wide)), [[0, 255, 255]])
    # palette judged by colour: index 1 is black here, index 0 white
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * (256 * 3 - 6))
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), [[255, 0]])
    assert read_mask(tmp_path / "g.png").dtype == np.uint8


# ----------------------------------------------------------------------------- DICOM


def test_dicom_8bit_monochrome2(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GRAY)
    np.testing.assert_array_equal(read_image(path), GRAY)


def test_dicom_monochrome1_inverted(tmp_path):
    path = write_dicom(tmp_path / "m1.dcm", GRAY, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_image(path), 255 - GRAY)


def test_dicom_12bit_scaled_by_bits_stored(tmp_path):
    values = np.array([[0, 4095], [2048, 1000]], np.uint16)
    path = write_dicom(tmp_path / "b12.dcm", values, bits_stored=12)
    # x * 255 / 4095: 2048 -> 127.5 -> 128, 1000 -> 62.3 -> 62 (not stretched to the image's range)
    np.testing.assert_array_equal(read_image(path), [[0, 255], [128, 62]])
    narrow = write_dicom(tmp_path / "n12.dcm", np.array([[0, 2048]], np.uint16), bits_stored=12)
    np.testing.assert_array_equal(read_image(narrow), [[0, 128]])


def test_dicom_16bit(tmp_path):
    path = write_dicom(tmp_path / "b16.dcm", np.array([[0, 65535, 257]], np.uint16))
    np.testing.assert_array_equal(read_image(path), [[0, 255, 1]])


def test_dicom_negative_rescale_slope_flips(tmp_path):
    path = write_dicom(tmp_path / "r.dcm", np.array([[0, 4095]], np.uint16), bits_stored=12, rescale=(-1.0, 4095.0))
    np.testing.assert_array_equal(read_image(path), [[255, 0]])


def test_dicom_jpeg_baseline_decodes_close(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    original = (60 + 2 * xx + yy).astype(np.uint8)
    path = write_dicom(tmp_path / "j.dcm", original, jpeg=True)
    import pydicom

    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert np.abs(out.astype(int) - original).max() <= 4


def test_dicom_detected_by_magic_without_extension(tmp_path):
    path = write_dicom(tmp_path / "1.2.3.4.5", GRAY)
    np.testing.assert_array_equal(read_image(path), GRAY)
    np.testing.assert_array_equal(read_mask(path), np.where(GRAY > 0, 255, 0))


def test_dicom_multi_frame_refused(tmp_path):
    path = write_dicom(tmp_path / "mf.dcm", np.zeros((2, 4, 4), np.uint8), frames=2)
    with pytest.raises(InputError, match=r"mf\.dcm.*multi-frame"):
        read_image(path)
    with pytest.raises(InputError, match=r"mf\.dcm.*multi-frame"):
        read_mask(path)


def test_dicom_truncated_and_garbage(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", np.zeros((64, 64), np.uint8), sop_uid="9.8.7", patient_id="P1")
    data = path.read_bytes()
    path.write_bytes(data[:-1000])  # pixel data cut short
    # the header alone still reads (stop_before_pixels): manifests do not decode pixels
    assert read_dicom_meta(path) == ("9.8.7", "P1", 64, 64)
    with pytest.raises(InputError, match=r"t\.dcm"):
        read_image(path)
    (tmp_path / "g.dcm").write_bytes(b"not a dicom file" * 20)
    with pytest.raises(InputError, match=r"g\.dcm"):
        read_image(tmp_path / "g.dcm")
    with pytest.raises(InputError, match=r"g\.dcm"):
        read_dicom_meta(tmp_path / "g.dcm")


def test_dicom_in_folder_source(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_dicom(images / "a.dcm", GRAY)
    _save(masks / "a.png", (GRAY > 100).astype(np.uint8))
    ((image, mask),) = [load_pair(s) for s in folder_source(images, masks).samples]
    np.testing.assert_array_equal(image, GRAY)
    np.testing.assert_array_equal(mask, np.where(GRAY > 100, 255, 0))


# ----------------------------------------------------------------------------- SIIM

A_RLE_1 = siim_encode(_square_mask(1, 8))
A_RLE_2 = siim_encode(_square_mask(5, 8))


def _hand_siim(tmp_path: Path, stage: int, extra_rows: list[str] = ()) -> tuple[Path, Path]:
    """1.2.1 positive (two rows), 1.2.2 negative, 1.2.3 without a label row, 1.2.4 a label row only."""
    dicom = tmp_path / "dicom"
    for number, patient in [(1, "PAT-1"), (2, "PAT-1"), (3, "PAT-2")]:
        pixels = np.full((8, 8), 100, np.uint8)
        path = dicom / "study" / str(number) / f"1.2.{number}.dcm"
        write_dicom(path, pixels, sop_uid=f"1.2.{number}", patient_id=patient)
    rows = [("1.2.1", A_RLE_1), ("1.2.2", "-1"), ("1.2.1", A_RLE_2), ("1.2.4", "3 4")]
    if stage == 1:
        text = "ImageId, EncodedPixels\n" + "".join(f"{i}, {r}\n" for i, r in rows)
    else:
        text = "ImageId,EncodedPixels\n" + "".join(f"{i},{r}\n" for i, r in rows)
    text += "".join(line + "\n" for line in extra_rows)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(text)
    return dicom, csv_path


@pytest.mark.parametrize("stage", [1, 2])
def test_siim_manifest(tmp_path, stage):
    dicom, csv_path = _hand_siim(tmp_path, stage)
    manifest = siim_source(dicom, csv_path, salt="pepper")
    assert manifest.kind == "siim"
    by_id = {s.id: s for s in manifest.samples}
    assert set(by_id) == {"1.2.1", "1.2.2"}
    a, b = by_id["1.2.1"], by_id["1.2.2"]
    assert a.rles == (A_RLE_1, A_RLE_2) and a.positive is True and (a.height, a.width) == (8, 8)
    assert b.rles == () and b.positive is False
    assert sample_positive(a) and not sample_positive(b)
    image, mask = load_pair(a)
    np.testing.assert_array_equal(mask, np.maximum(_square_mask(1, 8), _square_mask(5, 8)))
    assert image.shape == (8, 8) and image.dtype == np.uint8 and (image == 100).all()
    assert not load_pair(b)[1].any()
    assert manifest.info["images_without_label"] == 1 and manifest.info["labels_without_image"] == 1
    assert manifest.info["label_rows"] == 4 and manifest.info["positive"] == 1
    assert len(manifest.skipped) == 1 and "1.2.3" in manifest.skipped[0][0]
    # patient: salted hash, shared by A and B (same PatientID), never the raw id
    assert a.patient == b.patient == hash_patient_id("PAT-1", "pepper")
    assert "PAT-1" not in a.patient and len(a.patient) == 16
    assert siim_source(dicom, csv_path, salt="salt2").samples[0].patient != a.patient
    # default salt: random per call
    assert siim_source(dicom, csv_path).samples[0].patient != siim_source(dicom, csv_path).samples[0].patient


def test_siim_duplicate_file_skipped(tmp_path):
    dicom, csv_path = _hand_siim(tmp_path, 2)
    first = next(dicom.rglob("1.2.1.dcm"))
    copy = dicom / "copy" / "1.2.1.dcm"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    manifest = siim_source(dicom, csv_path)
    assert sorted(s.id for s in manifest.samples) == ["1.2.1", "1.2.2"]
    assert manifest.info["duplicate_files"] == 1
    # folders are walked in sorted order: "copy" before "study", so the original is the duplicate
    reasons = dict(manifest.skipped)
    assert "duplicate" in reasons[str(first)] and str(copy) in reasons[str(first)]


def test_siim_stage1_and_stage2_fixture_trees_agree(tmp_path):
    d1, c1 = write_siim_tree(tmp_path / "s1", 6, 32, seed=4, stage=1)
    d2, c2 = write_siim_tree(tmp_path / "s2", 6, 32, seed=4, stage=2)
    assert c1.read_text().startswith("ImageId, EncodedPixels\n") and ", -1\n" in c1.read_text()
    m1, m2 = siim_source(d1, c1, salt="s"), siim_source(d2, c2, salt="s")
    key = [(s.id, s.rles, s.positive, s.patient) for s in m1.samples]
    assert key == [(s.id, s.rles, s.positive, s.patient) for s in m2.samples]
    assert len(m1.samples) == 6 and m1.info["images_without_label"] == 0
    assert len({s.patient for s in m1.samples}) == 3  # two images per patient
    for s in m1.samples:
        image, mask = load_pair(s)
        assert image.shape == mask.shape == (32, 32)
        assert mask.any() == s.positive
        if s.positive:  # the fixture darkens the lesion
            assert image[mask > 0].mean() < image[mask == 0].mean()


def test_siim_fixture_jpeg(tmp_path):
    dicom, csv_path = write_siim_tree(tmp_path, 2, 32, seed=1, jpeg=True)
    for s in siim_source(dicom, csv_path).samples:
        image, mask = load_pair(s)
        assert image.shape == mask.shape == (32, 32)


@pytest.mark.parametrize(
    "rle, problem",
    [("1 2 x", "not an integer"), ("1 2 3", "odd number"), ("5 -2", "negative"), ("", "empty"), ("60 10", "past")],
)
def test_siim_malformed_rle_names_image_and_line(tmp_path, rle, problem):
    dicom, csv_path = _hand_siim(tmp_path, 2, extra_rows=[f"1.2.2,{rle}"])
    with pytest.raises(InputError, match=rf"labels\.csv: line 6: ImageId 1\.2\.2: bad RLE: .*{problem}"):
        siim_source(dicom, csv_path)


def test_siim_bad_rle_at_load_names_image(tmp_path):
    sample = Sample(id="1.2.1", patient="p", kind="siim", image=str(write_dicom(tmp_path / "a.dcm", GRAY)),
                    rles=("0 100",), positive=True)
    with pytest.raises(InputError, match=r"ImageId 1\.2\.1: bad RLE: run past the image"):
        load_pair(sample)


def test_siim_bad_csv_and_folders(tmp_path):
    dicom, csv_path = _hand_siim(tmp_path, 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,rle\n1.2.1,-1\n")
    with pytest.raises(InputError, match=r"bad\.csv: expected the columns ImageId and EncodedPixels"):
        siim_source(dicom, bad)
    bad.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(InputError, match=r"bad\.csv"):
        siim_source(dicom, bad)
    bad.write_text("ImageId,EncodedPixels\n1.2.1,-1,extra\n")
    with pytest.raises(InputError, match=r"bad\.csv: line 2"):
        siim_source(dicom, bad)
    bad.write_text("ImageId,EncodedPixels\n")
    with pytest.raises(InputError, match=r"bad\.csv.*no rows"):
        siim_source(dicom, bad)
    with pytest.raises(InputError, match=r"missing\.csv.*not found"):
        siim_source(dicom, tmp_path / "missing.csv")
    with pytest.raises(InputError, match="nodir.*not found"):
        siim_source(tmp_path / "nodir", csv_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty.*no \.dcm files"):
        siim_source(tmp_path / "empty", csv_path)
    other = tmp_path / "other.csv"
    other.write_text("ImageId,EncodedPixels\n9.9.9,-1\n")
    with pytest.raises(InputError, match="no labelled images"):
        siim_source(dicom, other)


# ----------------------------------------------------------------------------- demo


def test_demo_source_deterministic():
    a, b = demo_source(6, size=32, seed=3), demo_source(6, size=32, seed=3)
    assert a.samples == b.samples and a.kind == "demo"
    assert [s.id for s in a.samples] == [f"phantom-{i:05d}" for i in range(6)]
    for i, s in enumerate(a.samples):
        assert s.phantom_seed == phantom.sample_seed(3, i) and s.size == 32
        assert s.positive == phantom.is_positive(s.phantom_seed)
    assert [s.phantom_seed for s in demo_source(6, size=32, seed=4).samples] != [s.phantom_seed for s in a.samples]
    image, mask = load_pair(a.samples[0])
    image2, mask2 = load_pair(b.samples[0])
    assert image.shape == mask.shape == (32, 32) and image.dtype == mask.dtype == np.uint8
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(mask, mask2)
    assert mask.any() == a.samples[0].positive


@pytest.mark.parametrize("count", [0, -1])
def test_demo_source_bad_count(count):
    with pytest.raises(InputError, match="count"):
        demo_source(count)


# ----------------------------------------------------------------------------- workers


def test_load_pair_in_worker_process(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", GRAY)
    _save(masks / "a.png", (GRAY > 100).astype(np.uint8))
    samples = folder_source(images, masks).samples + demo_source(1, size=32).samples
    assert pickle.loads(pickle.dumps(samples)) == samples
    with ProcessPoolExecutor(max_workers=1) as pool:
        results = list(pool.map(load_pair, samples))
    np.testing.assert_array_equal(results[0][0], GRAY)
    assert results[1][0].shape == (32, 32)


def test_siim_headers_read_in_worker_processes(tmp_path, monkeypatch):
    import pneumo.ingest.siim as siim

    dicom, csv_path = write_siim_tree(tmp_path, 5, 16, seed=2)
    serial = siim_source(dicom, csv_path, salt="s", workers=1)
    monkeypatch.setattr(siim, "_PARALLEL_HEADERS", 2)
    parallel = siim_source(dicom, csv_path, salt="s", workers=2)
    assert parallel.samples == serial.samples and parallel.info == serial.info


# ------------------------------------------------------------------ load_for_pack (the pack's fast path)
def _load_resized(sample, size):
    from pneumo.ingest.sources import load_for_pack

    return load_for_pack(sample, size)[:2]


def test_load_for_pack_fast_path_equals_general_path(tmp_path):
    from PIL import Image

    from pneumo.ingest.sources import Sample, load_pair, resize_pair

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    cases = {
        "gray_mask_255": np.where(rng.random((96, 96)) < 0.3, 255, 0).astype(np.uint8),
        "gray_mask_ones": np.where(rng.random((96, 96)) < 0.3, 1, 0).astype(np.uint8),  # any non-zero
    }
    for name, m in cases.items():
        Image.fromarray(img).save(tmp_path / f"{name}_img.png")
        Image.fromarray(m).save(tmp_path / f"{name}_mask.png")
        s = Sample(id=name, patient=name, kind="folders", image=str(tmp_path / f"{name}_img.png"),
                   mask=str(tmp_path / f"{name}_mask.png"))
        for size in (32, 96):
            fast = _load_resized(s, size)
            slow = resize_pair(*load_pair(s), size)
            assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1]), (name, size)
            assert set(np.unique(fast[1])) <= {0, 255} and fast[1].any()
    # an RGB mask takes the general path and gives the same answer
    Image.fromarray(np.stack([cases["gray_mask_255"]] * 3, -1)).save(tmp_path / "rgb_mask.png")
    s = Sample(id="rgb", patient="rgb", kind="folders", image=str(tmp_path / "gray_mask_255_img.png"),
               mask=str(tmp_path / "rgb_mask.png"))
    assert np.array_equal(_load_resized(s, 32)[1], resize_pair(*load_pair(s), 32)[1])


def test_load_for_pack_size_mismatch_and_corrupt_file(tmp_path):
    from PIL import Image

    from pneumo.ingest.sources import Sample

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(tmp_path / "m.png")
    s = Sample(id="a", patient="a", kind="folders", image=str(tmp_path / "a.png"), mask=str(tmp_path / "m.png"))
    with pytest.raises(InputError, match="differ in size"):
        _load_resized(s, 32)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    s = Sample(id="b", patient="b", kind="folders", image=str(tmp_path / "bad.png"), mask=str(tmp_path / "m.png"))
    with pytest.raises(InputError, match="bad.png"):
        _load_resized(s, 32)


# ----------------------------------------------------------------------------- one entry point
def test_manifest_from_spec_matches_each_source(tmp_path):
    from pneumo.ingest.sources import manifest_from_spec

    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in "ab":
        _save(images / f"{stem}.png", np.full((16, 16), 9, np.uint8))
        _save(masks / f"{stem}.png", _square_mask(2))
    assert manifest_from_spec("folders", images=str(images), masks=masks).samples == folder_source(images, masks).samples
    # an unpacked upload: folder names relative to its root (default images/ and masks/)
    assert [s.id for s in manifest_from_spec("folders", root=tmp_path).samples] == ["a", "b"]
    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 4, 32, 0)
    by_paths = manifest_from_spec("siim", dicom=dicom_dir, labels=csv_path, salt="s")
    by_root = manifest_from_spec("siim", root=tmp_path / "siim", salt="s")  # the one CSV under it
    assert by_paths.samples == by_root.samples == siim_source(dicom_dir, csv_path, salt="s").samples
    assert manifest_from_spec("demo", count=5, size=32, seed=1).samples == demo_source(5, size=32, seed=1).samples


@pytest.mark.parametrize(
    "kind, kwargs, message",
    [
        ("folders", {"images": " ", "masks": "m"}, "give the image folder"),
        ("siim", {"dicom": "d"}, "give the label CSV"),
        ("nope", {}, "unknown source kind 'nope'"),
    ],
)
def test_manifest_from_spec_errors(kind, kwargs, message):
    from pneumo.ingest.sources import manifest_from_spec

    with pytest.raises(InputError, match=message):
        manifest_from_spec(kind, **kwargs)


def test_upload_root_needs_exactly_one_label_csv(tmp_path):
    from pneumo.ingest.sources import manifest_from_spec

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 2, 32, 0)
    (csv_path.parent / "other.csv").write_text("x\n")
    with pytest.raises(InputError, match="expected exactly one label CSV, found 2"):
        manifest_from_spec("siim", root=tmp_path / "siim")


def test_siim_headers_isolated_in_a_worker(tmp_path):
    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 3, 32, 0)
    assert siim_source(dicom_dir, csv_path, salt="s", isolate=True, memory_limit=3 << 30).samples \
        == siim_source(dicom_dir, csv_path, salt="s").samples


def test_sources_reexports_the_decoders():
    import pneumo.ingest.imageio as imageio
    import pneumo.ingest.sources as sources

    for name in ("read_image", "read_mask", "read_dicom_meta", "resize_pair", "IMAGE_EXTENSIONS"):
        assert getattr(sources, name) is getattr(imageio, name)


# ------------------------------------------------------------------ source references and DICOM windows (issue 14)
def test_load_for_pack_gives_the_native_size_and_source_path(tmp_path):
    from pneumo.ingest.sources import load_for_pack, source_path

    images, masks = tmp_path / "i", tmp_path / "m"
    images.mkdir(), masks.mkdir()
    Image.fromarray(np.full((40, 72), 9, np.uint8)).save(images / "a.png")  # the fast (Pillow) path
    Image.fromarray(np.zeros((40, 72), np.uint8)).save(masks / "a.png")
    Image.fromarray(np.full((24, 48, 3), 9, np.uint8)).save(images / "b.png")  # RGB: the general path
    Image.fromarray(np.zeros((24, 48), np.uint8)).save(masks / "b.png")
    a, b = folder_source(images, masks).samples
    image, mask, native = load_for_pack(a, 32)
    assert image.shape == mask.shape == (32, 32) and native == (40, 72)
    assert load_for_pack(b, 32)[2] == (24, 48)
    assert all(np.array_equal(x, y) for x, y in zip(_load_resized(a, 32), (image, mask)))
    assert source_path(a) == str((images / "a.png").absolute())
    d = demo_source(2, size=32, seed=5).samples[1]
    assert source_path(d) == f"demo:{phantom.sample_seed(5, 1)}" and load_for_pack(d, 32)[2] == (32, 32)


def test_siim_load_pair_applies_the_dicom_window(tmp_path):
    pixels = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)  # 0..4080, 12 bits
    uid = "1.2.3.77"
    write_dicom(tmp_path / "d" / f"{uid}.dcm", pixels, sop_uid=uid, bits_stored=12, window=(2048, 1025),
                photometric="MONOCHROME1")
    (tmp_path / "l.csv").write_text(f"ImageId,EncodedPixels\n{uid},-1\n")
    (sample,) = siim_source(tmp_path / "d", tmp_path / "l.csv").samples
    voi, _ = load_pair(sample)
    full, _ = load_pair(sample, dicom_window="full")
    expect_voi = 255 - np.clip(np.rint(((pixels - 2047.5) / 1024 + 0.5) * 255), 0, 255).astype(np.uint8)
    expect_full = 255 - np.rint(pixels.astype(np.float64) * 255 / 4095).astype(np.uint8)
    assert np.array_equal(voi, expect_voi) and np.array_equal(full, expect_full)
    with pytest.raises(InputError, match="--dicom-window must be one of voi, full"):
        load_pair(sample, dicom_window="window")


def test_siim_labels_module_reads_the_csv(tmp_path):
    from pneumo.ingest.siim_labels import read_labels

    (tmp_path / "l.csv").write_text("ImageId, EncodedPixels\na, -1\na, 3 2\nb, 1 1 2 1\n")
    labels, rows, fmt = read_labels(tmp_path / "l.csv", "relative")
    assert rows == 3 and fmt == "relative" and [rle for _, rle, _ in labels["a"]] == ["-1", "3 2"]
    (tmp_path / "bad.csv").write_text("Id,Pixels\na,-1\n")
    with pytest.raises(InputError, match=r"bad\.csv: expected the columns ImageId and EncodedPixels"):
        read_labels(tmp_path / "bad.csv")


def test_source_kinds_are_a_registry_equal_to_the_vocabulary():
    from pneumo.config import SOURCE_KINDS, check_registry
    from pneumo.ingest import sources

    assert tuple(sources.SOURCES) == SOURCE_KINDS
    with pytest.raises(RuntimeError, match="missing 'demo'"):
        check_registry("SOURCES", {k: v for k, v in sources.SOURCES.items() if k != "demo"}, SOURCE_KINDS)
    odd = Sample(id="x", patient="x", kind="scanner", image="x.png")
    for fn in (load_pair, sample_positive):
        with pytest.raises(InputError, match="sample x: unknown source kind 'scanner'"):
            fn(odd)
