"""Image decoding within a pixel budget: bombs refused from the header, 16-bit without float64 copies."""
from __future__ import annotations

import numpy as np
import pytest
from hostile_files import deflated_dicom, peak_rss_mb, png_bomb
from PIL import Image
from siim_fixtures import write_dicom

from pneumo.errors import InputError
from pneumo.ingest import pixels
from pneumo.ingest.imageio import gray_file_at, read_dicom_meta, read_image, read_mask
from pneumo.ingest.windowing import window_to_uint8
from pneumo.review.fullres import read_full_resolution


# ----------------------------------------------------------------------------- pixel budget
def test_png_bomb_refused_from_the_header_with_bounded_memory(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 400_000
    for read in (read_image, read_mask):
        with pytest.raises(InputError, match=r"bomb\.png: image is 12000x12000 \(144\.0 Mpx\); the limit is 50\.0 Mpx"):
            read(bomb)
    with pytest.raises(InputError, match="12000x12000"):
        gray_file_at(bomb, 64, is_mask=False)
    grew, result = peak_rss_mb(
        "from pneumo.ingest.imageio import read_image\nfrom pneumo.errors import InputError",
        f"try:\n    read_image({str(bomb)!r})\nexcept InputError as e:\n    result['error'] = str(e)",
    )
    assert "12000x12000" in result["error"]
    assert grew < 60, f"peak RSS grew {grew:.0f} MB refusing a PNG bomb"


def test_budget_is_a_parameter(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((40, 50), 7, np.uint8)).save(path)
    with pytest.raises(InputError, match=r"a\.png: image is 50x40 \(0\.0 Mpx\); the limit is"):
        read_image(path, max_pixels=1999)
    assert read_image(path, max_pixels=2000).shape == (40, 50)
    assert read_image(path, max_pixels=None).shape == (40, 50)


def test_beyond_pillows_own_limit_is_an_input_error(tmp_path):
    bomb = png_bomb(tmp_path / "huge.png", 20000, 20000)  # 400 Mpx: Pillow raises at open
    with pytest.raises(InputError, match="huge.png: image is too large"):
        read_image(bomb, max_pixels=None)


def test_native_dicom_checked_from_the_header(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.full((40, 50), 9, np.uint8))
    with pytest.raises(InputError, match=r"a\.dcm: image is 50x40"):
        read_image(path, max_pixels=1000)
    with pytest.raises(InputError, match=r"a\.dcm: image is 50x40"):
        read_mask(path, max_pixels=1000)
    assert read_image(path).shape == (40, 50)


# ----------------------------------------------------------------------------- deflated DICOM
def test_deflated_dicom_decodes_like_its_pixels(tmp_path):
    pixels = (np.arange(21 * 30) % 251).astype(np.uint8).reshape(21, 30)  # odd size: padded data
    path = deflated_dicom(tmp_path / "small.dcm", 21, 30, pixels=pixels)
    assert read_dicom_meta(path) == ("1.2.3.9", "patient-0", 21, 30)
    assert np.array_equal(read_image(path), pixels)
    assert np.array_equal(read_mask(path), np.where(pixels > 0, 255, 0))


def test_deflated_dicom_bomb_header_read_and_decode_stay_small(tmp_path):
    bomb = deflated_dicom(tmp_path / "bomb.dcm", 12000, 12000)
    assert bomb.stat().st_size < 400_000
    with pytest.raises(InputError, match=r"bomb\.dcm: image is 12000x12000 \(144\.0 Mpx\)"):
        read_image(bomb)
    grew, result = peak_rss_mb(
        "from pneumo.ingest.imageio import read_dicom_meta, read_image\nfrom pneumo.errors import InputError",
        f"result['meta'] = read_dicom_meta({str(bomb)!r})\n"
        f"try:\n    read_image({str(bomb)!r})\nexcept InputError as e:\n    result['error'] = str(e)",
    )
    assert result["meta"] == ["1.2.3.9", "patient-0", 12000, 12000]
    assert "144.0 Mpx" in result["error"]
    assert grew < 60, f"peak RSS grew {grew:.0f} MB on a deflated DICOM bomb (pydicom alone: ~150)"


def test_deflated_dicom_that_inflates_past_its_header_is_refused(tmp_path):
    liar = deflated_dicom(tmp_path / "liar.dcm", 16, 16, extra=64 << 20)
    with pytest.raises(InputError, match=r"liar\.dcm: deflated DICOM inflates past its declared 16x16"):
        read_image(liar)


# ----------------------------------------------------------------------------- 16-bit memory
def _stretched(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    lo, hi = v.min(), v.max()
    return np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def test_16bit_lookup_table_matches_the_float_formula(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(100, 4000, (33, 47)).astype(np.uint16)
    path = tmp_path / "a.png"
    Image.fromarray(values).save(path)
    assert np.array_equal(read_image(path), _stretched(values))
    signed = rng.integers(-3000, 3000, (5, 7)).astype(np.int16)
    lo, hi = float(signed.min()), float(signed.max())
    assert np.array_equal(pixels.stretch(signed, lo, hi), _stretched(signed))
    floats = rng.normal(size=(9, 11)).astype(np.float32)
    floats[0, 0] = np.nan
    expect = _stretched(np.nan_to_num(floats, nan=np.nanmin(floats)))
    assert np.array_equal(pixels.stretch(floats, *pixels.finite_range(floats)), expect)


def test_16bit_4000px_png_peak_memory(tmp_path):
    path = tmp_path / "big16.png"
    ramp = (np.arange(4000, dtype=np.uint32)[None, :] * 16 + np.arange(4000, dtype=np.uint32)[:, None]) % 60000
    Image.fromarray(ramp.astype(np.uint16)).save(path)
    grew, result = peak_rss_mb(
        "import numpy as np\nfrom pneumo.ingest.imageio import read_image",
        f"g = read_image({str(path)!r})\nresult['shape'] = list(g.shape)\nresult['max'] = int(g.max())",
    )
    assert result == {"shape": [4000, 4000], "max": 255}
    # 16 M pixels: 32 MB decoded + 16 MB out; the float64 path took ~490 MB.
    assert grew < 150, f"peak RSS grew {grew:.0f} MB for one 4000x4000 16-bit PNG"


def test_16bit_dicom_peak_memory(tmp_path):
    path = write_dicom(tmp_path / "big16.dcm", (np.arange(3000 * 3000, dtype=np.uint32) % 4096)
                       .astype(np.uint16).reshape(3000, 3000), bits_stored=12)
    grew, result = peak_rss_mb(
        "from pneumo.ingest.imageio import read_image",
        f"g = read_image({str(path)!r})\nresult['max'] = int(g.max())",
    )
    assert result["max"] == 255
    assert grew < 150, f"peak RSS grew {grew:.0f} MB for one 3000x3000 16-bit DICOM"


# ----------------------------------------------------------------------------- DICOM windowing
# 12-bit values in 16 bits; WindowCenter 1000 / WindowWidth 201 (DICOM LINEAR: c' = 999.5,
# w' = 200; at or below 899.5 -> 0, above 1099.5 -> 255, between ((x - c') / w' + 0.5) * 255).
_PIXELS = np.array([[0, 899, 900, 1000], [1050, 1100, 4095, 2000], [1, 2, 3, 4], [5, 6, 7, 8]], np.uint16)
_VOI = np.array([[0, 0, 1, 128], [192, 255, 255, 255], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
# ((900 - 999.5) / 200 + 0.5) * 255 = 0.64 -> 1; 1000 -> 128.14 -> 128; 1050 -> 191.89 -> 192
_FULL = np.rint(_PIXELS.astype(np.float64) * 255 / 4095).astype(np.uint8)  # the old behaviour


def test_dicom_window_from_its_tags_by_default(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", _PIXELS, bits_stored=12, window=(1000, 201))
    assert np.array_equal(read_image(path), _VOI)
    assert np.array_equal(read_image(path, dicom_window="voi"), _VOI)
    assert np.array_equal(read_image(path, dicom_window="full"), _FULL)
    assert _FULL[0, 3] == 62  # 1000 of 4095: the washed-out grey the window fixes
    multi = write_dicom(tmp_path / "m.dcm", _PIXELS, bits_stored=12, window=([1000, 2000], [201, 4000]))
    assert np.array_equal(read_image(multi), _VOI)  # several windows: the first
    with pytest.raises(InputError, match="--dicom-window must be one of voi, full"):
        read_image(path, dicom_window="auto")


def test_dicom_without_window_keeps_the_full_range(tmp_path):
    path = write_dicom(tmp_path / "n.dcm", _PIXELS, bits_stored=12)
    assert np.array_equal(read_image(path), _FULL)
    assert np.array_equal(read_image(path, dicom_window="full"), _FULL)


def test_monochrome1_is_inverted_after_the_window(tmp_path):
    path = write_dicom(tmp_path / "m1.dcm", _PIXELS, bits_stored=12, window=(1000, 201), photometric="MONOCHROME1")
    assert np.array_equal(read_image(path), 255 - _VOI)
    assert np.array_equal(read_image(path, dicom_window="full"), 255 - _FULL)
    full = read_full_resolution(path)
    assert full.invert and full.photometric == "MONOCHROME1"
    assert np.array_equal(window_to_uint8(full.pixels, full.center, full.width, full.invert), 255 - _VOI)


def test_window_applies_to_rescaled_values(tmp_path):
    # modality value = 2 x stored - 1000 (range -1000..7190); the window is in modality units.
    stored = np.array([[0, 500, 1000, 1025], [1050, 1100, 4095, 950]], np.uint16)
    path = write_dicom(tmp_path / "r.dcm", stored, bits_stored=12, rescale=(2, -1000), window=(1000, 201))
    modality = stored.astype(np.float64) * 2 - 1000  # -1000, 0, 1000, 1050, 1100, 1200, 7190, 900
    expect = np.clip(np.rint(((modality - 999.5) / 200 + 0.5) * 255), 0, 255).astype(np.uint8)
    assert expect.tolist() == [[0, 0, 128, 192], [255, 255, 255, 1]]
    assert np.array_equal(read_image(path), expect)
    full = read_full_resolution(path)
    assert full.pixels.dtype == np.int16 and np.array_equal(full.pixels, modality.astype(np.int16))
    assert np.array_equal(read_image(path, dicom_window="full"),
                          np.rint((modality + 1000) * 255 / 8190).astype(np.uint8))


def test_voi_lut_sequence_is_preferred(tmp_path):
    # LUT: input 0..4095 -> clip(4 x (x - 1000), 0, 4095); output range 0..4095 -> 0..255.
    table = np.clip(4 * (np.arange(4096) - 1000), 0, 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "l.dcm", _PIXELS, bits_stored=12, voi_lut=(0, table), window=(3000, 10))
    expect = np.rint(table[_PIXELS].astype(np.float64) * 255 / 4095).astype(np.uint8)
    assert expect[0, 3] == 0 and expect[1, 0] == 12 and expect[1, 1] == 25
    assert np.array_equal(read_image(path), expect)
    assert np.array_equal(read_image(path, dicom_window="full"), _FULL)


def test_read_full_resolution_keeps_12_and_16_bit_values(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", _PIXELS, bits_stored=12, window=([1000, 2000], [201, 4000]))
    full = read_full_resolution(path)
    assert full.pixels.dtype == np.uint16 and np.array_equal(full.pixels, _PIXELS)
    assert (full.center, full.width, full.window_source, full.invert) == (1000.0, 201.0, "file", False)
    assert np.array_equal(window_to_uint8(full.pixels, full.center, full.width), _VOI)
    bare = read_full_resolution(write_dicom(tmp_path / "n.dcm", _PIXELS, bits_stored=12))
    assert (bare.center, bare.width, bare.window_source) == (2048.0, 4096.0, "full-range")  # 0..4095
    assert np.array_equal(window_to_uint8(bare.pixels, bare.center, bare.width), _FULL)
    sixteen = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000 + 300).astype(np.uint16)
    png = tmp_path / "a.png"
    Image.fromarray(sixteen).save(png)
    full = read_full_resolution(png)
    assert full.pixels.dtype == np.uint16 and np.array_equal(full.pixels, sixteen)
    assert (full.center, full.width) == ((300 + 63300 + 1) / 2, 63300 - 300 + 1)
    assert np.array_equal(window_to_uint8(full.pixels, full.center, full.width), read_image(png))
    eight = tmp_path / "b.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(eight)
    full = read_full_resolution(eight)
    assert full.pixels.dtype == np.uint8 and (full.center, full.width) == (128.0, 256.0)
    assert np.array_equal(window_to_uint8(full.pixels, full.center, full.width), read_image(eight))
    with pytest.raises(InputError, match=r"w\.dcm: image is 4x4"):
        read_full_resolution(path, max_pixels=10)


def test_window_to_uint8_any_dtype():
    values = np.array([[-100, 0, 50], [100, 101, 1000]])
    expect = np.clip(np.rint(((values - 49.5) / 100 + 0.5) * 255), 0, 255).astype(np.uint8)  # c=50, w=101
    for dtype in (np.int16, np.int32, np.float32, np.float64):
        got = window_to_uint8(values.astype(dtype), 50, 101)
        assert got.dtype == np.uint8 and np.array_equal(got, expect), dtype
        assert np.array_equal(window_to_uint8(values.astype(dtype), 50, 101, invert=True), 255 - expect)
    assert window_to_uint8(np.array([[4.0, np.nan]], np.float32), 0, 1).tolist() == [[255, 0]]  # step; NaN -> 0
    assert window_to_uint8(np.array([[3, 4]], np.uint16), 4, 1).tolist() == [[0, 255]]  # width 1: a step


def test_windowed_16bit_dicom_peak_memory(tmp_path):
    path = write_dicom(tmp_path / "big16w.dcm", (np.arange(3000 * 3000, dtype=np.uint32) % 4096)
                       .astype(np.uint16).reshape(3000, 3000), bits_stored=12, window=(2048, 1024))
    grew, result = peak_rss_mb(
        "from pneumo.ingest.imageio import read_image\nfrom pneumo.ingest.windowing import window_to_uint8\n"
        "from pneumo.review.fullres import read_full_resolution",
        f"g = read_image({str(path)!r})\nresult['max'] = int(g.max())\ndel g\n"
        f"f = read_full_resolution({str(path)!r})\n"
        "result['dtype'] = str(f.pixels.dtype)\nresult['u8'] = int(window_to_uint8(f.pixels, f.center, f.width).max())",
    )
    assert result == {"max": 255, "dtype": "uint16", "u8": 255}
    # 9 M pixels: 18 MB decoded + 9 MB out; pydicom's own apply_voi_lut would add 72 MB of float64 x3.
    assert grew < 150, f"peak RSS grew {grew:.0f} MB windowing one 3000x3000 16-bit DICOM"


# ----------------------------------------------------------------------------- issue 18 item 14
def test_a_header_beyond_pillows_limit_gets_pneumos_message_naming_max_pixels(tmp_path):
    """A header claiming 60,000 px got Pillow's message, which does not mention --max-pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "huge.png"  # the header only: its pixels would be 3.6 GB
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    for read in (read_image, read_mask):
        with pytest.raises(InputError, match=r"huge\.png: image is 60000x60000 \(3600\.0 Mpx\); the limit is "
                                             r"50\.0 Mpx \(--max-pixels\)$"):
            read(bomb)
    with pytest.raises(InputError, match=r"huge\.png: image is too large for the decoder \(60000x60000, more than "
                                         r"Pillow opens whatever --max-pixels says"):
        read_image(bomb, max_pixels=None)


def test_a_dicom_without_its_decoder_is_one_line_naming_what_to_install():
    """JPEG-LS without a decoder gave pydicom's 4-line error; now one line naming the syntax."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder

    path = get_testdata_file("JPEGLSNearLossless_16.dcm")
    if path is None:
        pytest.skip("pydicom's test file is not installed")
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(InputError) as e:
        read_image(path)
    message = str(e.value)
    assert "\n" not in message and "\t" not in message
    assert message.startswith(f"{path}: cannot decode DICOM pixel data: no decoder for its transfer syntax JPEG-LS")
    assert "install one of: " in message and "pylibjpeg" in message
