"""Pack: layout, content, determinism, atomicity, bad input, and the pack/info/demo-data CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from pneumo import sources
from pneumo.config import PackConfig, SplitConfig
from pneumo.errors import InputError, PackFormatError
from pneumo.pack import SPLITS, list_packs, load_split, make_demo_pack, open_pack, pack_manifest, read_info

ROOT = Path(__file__).resolve().parents[1]


def _write_folders(root: Path, n: int, size: int = 96, missing_mask: str | None = None) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        m = np.zeros((size, size), np.uint8)
        if i % 3 == 0:
            m[size // 4: size // 2, size // 4: size // 2] = 255
        Image.fromarray(img).save(images / f"case{i:03d}.png")
        if f"case{i:03d}" != missing_mask:
            Image.fromarray(m).save(masks / f"case{i:03d}.png")
    return images, masks


@pytest.fixture(scope="module")
def demo_pack(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo.h5"
    make_demo_pack(out, count=40, size=64, seed=3, workers=1)
    return out


def test_demo_pack_layout(demo_pack):
    with h5py.File(demo_pack) as f:
        assert f.attrs["format"] == "pneumo-pack"
        assert f.attrs["format_version"] == 1
        assert f.attrs["size"] == 64
        assert f.attrs["source"] == "demo"
        assert json.loads(f.attrs["split"])["seed"] == 2
        total = 0
        for s in SPLITS:
            x, y, ids = f[f"X_{s}"], f[f"Y_{s}"], f[f"ids_{s}"]
            assert x.dtype == np.uint8 and y.dtype == np.uint8
            assert x.shape[1:] == (64, 64, 1) and y.shape == x.shape and ids.shape == (x.shape[0],)
            assert x.chunks == (1, 64, 64, 1)
            assert set(np.unique(y[()])) <= {0, 255}
            frac = float(np.mean([m.any() for m in y[()]])) if len(y) else 0.0
            assert f.attrs[f"positive_fraction_{s}"] == pytest.approx(frac)
            total += x.shape[0]
        assert total == 40
        assert [f.attrs[f"count_{s}"] for s in SPLITS] == [30, 5, 5]  # 250/40/40 of 40, largest remainder


def test_demo_pack_matches_phantoms_and_ids(demo_pack):
    from pneumo.phantom import make_phantom, sample_seed

    X, Y, ids = load_split(demo_pack, "dev")
    for k in range(len(ids)):
        index = int(ids[k].split("-")[1])
        image, mask = make_phantom(sample_seed(3, index), 64)
        assert np.array_equal(X[k, ..., 0], image)
        assert np.array_equal(Y[k, ..., 0], mask)


def test_read_info_and_list_packs(demo_pack, tmp_path):
    info = read_info(demo_pack)
    assert info.size == 64 and sum(info.counts.values()) == 40
    assert "Train:" in info.format_report()
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    os.link(demo_pack, tmp_path / "a.h5")
    assert [p.path.name for p in list_packs(tmp_path)] == ["a.h5"]


def test_folder_pack_pairs_by_stem_and_resizes_by_area(tmp_path):
    images, masks = _write_folders(tmp_path, 12, size=128, missing_mask="case004")
    manifest = sources.folder_source(images, masks)
    assert any("case004" in name for name, _ in manifest.skipped)
    out = tmp_path / "p.h5"
    info = pack_manifest(manifest, out, PackConfig(size=64, split=SplitConfig(proportions=(1, 1, 1))))
    assert sum(info.counts.values()) == 11
    assert any("case004" in str(row) for row in info.report["skipped"])
    for split in SPLITS:
        X, Y, ids = load_split(out, split)
        for k, name in enumerate(ids):
            src = Image.open(images / f"{name}.png")
            expected = np.asarray(src.resize((64, 64), Image.Resampling.BOX))
            assert np.array_equal(X[k, ..., 0], expected)
            i = int(name[4:])
            m = Y[k, ..., 0]
            if i % 3 == 0:  # the square [32:64) at 128 px is [16:32) at 64 px
                assert (m[16:32, 16:32] == 255).all() and m.sum() == 16 * 16 * 255
            else:
                assert not m.any()


def test_same_seed_same_split_and_workers_agree(tmp_path):
    cfg = PackConfig(size=32, split=SplitConfig(seed=7), workers=1)
    a = pack_manifest(sources.demo_source(60, size=32, seed=1), tmp_path / "a.h5", cfg)
    b = pack_manifest(sources.demo_source(60, size=32, seed=1), tmp_path / "b.h5",
                      PackConfig(size=32, split=SplitConfig(seed=7), workers=2))
    c = pack_manifest(sources.demo_source(60, size=32, seed=1), tmp_path / "c.h5",
                      PackConfig(size=32, split=SplitConfig(seed=8), workers=1))
    for s in SPLITS:
        xa, ya, ia = load_split(a.path, s)
        xb, yb, ib = load_split(b.path, s)
        assert ia == ib and np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert load_split(a.path, "train")[2] != load_split(c.path, "train")[2]


def test_stratified_folder_pack_computes_positives(tmp_path):
    images, masks = _write_folders(tmp_path, 30, size=64)
    info = pack_manifest(sources.folder_source(images, masks), tmp_path / "s.h5",
                         PackConfig(size=32, split=SplitConfig(proportions=(1, 1, 1), stratify=True)))
    # 10 positives in three splits of 10: as even as integers allow
    assert sorted(round(f * 10) for f in info.positive_fractions.values()) == [3, 3, 4]


def test_existing_out_refused_without_force_and_replaced_with_it(tmp_path):
    out = tmp_path / "x.h5"
    out.write_bytes(b"precious")
    m = sources.demo_source(8, size=32, seed=0)
    with pytest.raises(InputError, match="already exists; use --force"):
        pack_manifest(m, out, PackConfig(size=32))
    assert out.read_bytes() == b"precious"
    pack_manifest(m, out, PackConfig(size=32), force=True)
    assert read_info(out).size == 32


def test_failure_midway_leaves_existing_pack_untouched_and_no_temp_files(tmp_path):
    images, masks = _write_folders(tmp_path, 10, size=64)
    (images / "case007.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out.h5"
    out.write_bytes(b"old pack")
    with pytest.raises(InputError, match="case007"):
        pack_manifest(sources.folder_source(images, masks), out, PackConfig(size=32), force=True)
    assert out.read_bytes() == b"old pack"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks", "out.h5"]


def test_interrupt_leaves_nothing(tmp_path):
    out = tmp_path / "out.h5"

    def progress(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack_manifest(sources.demo_source(20, size=32, seed=0), out, PackConfig(size=32, workers=1), progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_skip_bad_reports_the_file(tmp_path):
    images, masks = _write_folders(tmp_path, 9, size=64)
    (images / "case002.png").write_bytes(b"garbage")
    info = pack_manifest(sources.folder_source(images, masks), tmp_path / "o.h5",
                         PackConfig(size=32, skip_bad=True, split=SplitConfig(proportions=(1, 1, 1))))
    assert sum(info.counts.values()) == 8
    assert [row[0] for row in info.report["skipped"]] == ["case002"]
    ids = sum((load_split(info.path, s)[2] for s in SPLITS), [])
    assert "case002" not in ids and len(ids) == 8


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(InputError, match="multiple of 32"):
        pack_manifest(sources.demo_source(4, size=32), tmp_path / "o.h5", PackConfig(size=100))
    assert not (tmp_path / "o.h5").exists()


def test_open_pack_errors(tmp_path, demo_pack):
    with pytest.raises(PackFormatError, match="no such pack file"):
        open_pack(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"hello")
    with pytest.raises(PackFormatError, match="not a readable HDF5 file"):
        open_pack(bad)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["X_train"] = np.zeros((1, 4, 4, 1), np.uint8)
    with pytest.raises(PackFormatError, match="not a pneumo pack"):
        open_pack(foreign)
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(demo_pack.read_bytes())
    with h5py.File(damaged, "a") as f:
        del f["Y_dev"]
    with pytest.raises(PackFormatError, match="Y_dev is missing"):
        open_pack(damaged)


def test_siim_pack(tmp_path):
    from tests.siim_fixtures import write_siim_tree

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 12, 64, 0)
    info = pack_manifest(sources.siim_source(dicom_dir, csv_path), tmp_path / "siim.h5",
                         PackConfig(size=32, split=SplitConfig(proportions=(1, 1, 1), group_by_patient=True)))
    assert info.attrs["source"] == "siim"
    assert sum(info.counts.values()) > 0
    raw = open(info.path, "rb").read()
    for dcm in dicom_dir.rglob("*.dcm"):
        import pydicom

        pid = str(pydicom.dcmread(dcm, stop_before_pixels=True).PatientID)
        if len(pid) >= 6:
            assert pid.encode() not in raw  # no raw patient id enters the pack


# --------------------------------------------------------------------------- CLI
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pneumo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_pack_demo_info_and_no_tensorflow(tmp_path):
    r = _cli("pack", "demo", "--count", "24", "--size", "32", "--out", "d.h5", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Train:" in r.stdout and "wrote" in r.stdout
    r = _cli("info", "d.h5", cwd=tmp_path)
    assert r.returncode == 0 and "test" in r.stdout
    code = ("import sys; from pneumo.cli import main; "
            "rc = main(['info', 'd.h5']); assert rc == 0; "
            "assert 'tensorflow' not in sys.modules, 'info imported tensorflow'; "
            "main(['pack', 'demo', '--count', '4', '--size', '32', '--out', 'e.h5', '--quiet']); "
            "assert 'tensorflow' not in sys.modules, 'pack imported tensorflow'")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, message", [
    (["pack", "demo", "--size", "100", "--out", "x.h5"], "not a positive multiple of 32"),
    (["pack", "folders", "nope_images", "nope_masks", "--out", "x.h5"], "nope_images"),
    (["pack", "demo", "--count", "10", "--split-batches", "1,1,1", "--batch-size", "8", "--out", "x.h5"],
     "need 24 pairs, but only 10"),
    (["info", "missing.h5"], "missing.h5: no such pack file"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "x.h5").exists()


def test_cli_existing_out_needs_force(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"keep")
    r = _cli("pack", "demo", "--count", "4", "--size", "32", "--out", "x.h5", cwd=tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr
    assert (tmp_path / "x.h5").read_bytes() == b"keep"


def test_cli_demo_data_writes_blog_layout_and_packs_back(tmp_path):
    r = _cli("demo-data", "ph", "--count", "6", "--size", "64", "--seed", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pngs = sorted((tmp_path / "ph" / "train").glob("*.png"))
    assert len(pngs) == 6 and len(list((tmp_path / "ph" / "masks").glob("*.png"))) == 6
    r = _cli("pack", "folders", "ph/train", "ph/masks", "--out", "f.h5", "--size", "64", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # the folder pack of demo-data PNGs equals the demo pack of the same phantoms
    from pneumo.phantom import make_phantom, sample_seed

    X, Y, ids = load_split(tmp_path / "f.h5", "train")
    for k, name in enumerate(ids):
        image, mask = make_phantom(sample_seed(5, int(name.split("-")[1])), 64)
        assert np.array_equal(X[k, ..., 0], image) and np.array_equal(Y[k, ..., 0], mask)


def test_thousands_of_skipped_files_fit(tmp_path):
    from pneumo.sources import Manifest

    m = sources.demo_source(6, size=32, seed=0)
    many = Manifest(m.kind, m.samples, [(f"unpaired-{i:05d}.png", "no mask with this stem " * 4) for i in range(5000)], {})
    info = pack_manifest(many, tmp_path / "o.h5", PackConfig(size=32))
    assert info.report["n_skipped"] == 5000 and len(info.report["skipped"]) == 50
    with h5py.File(info.path) as f:
        assert f["skipped"].shape == (5000, 2)
        assert f["skipped"][4999, 0].decode() == "unpaired-04999.png"


@pytest.mark.parametrize("fmt", ["relative", "absolute"])
def test_siim_absolute_rle_csv_detected_and_packed_like_relative(tmp_path, fmt):
    import csv

    from pneumo.rle import siim_decode, siim_encode
    from tests.siim_fixtures import write_siim_tree

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 12, 64, 1)
    truth = {s.id: sources.load_pair(s)[1] for s in sources.siim_source(dicom_dir, csv_path, rle_format="relative").samples}
    rows = list(csv.reader(open(csv_path)))
    if fmt == "absolute":  # re-encode every row with absolute starts
        rows = [rows[0]] + [[r[0], r[1] if r[1].strip() == "-1" else
                             siim_encode(siim_decode(r[1], 64, 64), relative=False)] for r in rows[1:]]
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    m = sources.siim_source(dicom_dir, csv_path, salt="s")
    assert m.info["rle_format"] == fmt
    for sample in m.samples:
        assert np.array_equal(sources.load_pair(sample)[1], truth[sample.id])
    positives = [s for s in m.samples if s.positive]
    assert positives and all(sources.load_pair(s)[1].any() for s in positives)


def test_cli_parallel_workers_match_one_worker(tmp_path):
    # The CLI has no TensorFlow and one thread, so its workers are forked (pack._start_method);
    # in this test process they would be spawned. Both must give the same pack.
    for workers in ("1", "2"):
        r = _cli("pack", "demo", "--count", "64", "--size", "32", "--workers", workers,
                 "--out", f"w{workers}.h5", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    for s in SPLITS:
        a, b = load_split(tmp_path / "w1.h5", s), load_split(tmp_path / "w2.h5", s)
        assert a[2] == b[2] and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
