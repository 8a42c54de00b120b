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

from pneumo.ingest import sources
from pneumo.config import PackConfig, SplitConfig
from pneumo.errors import InputError, PackFormatError
from pneumo.ingest.packer import make_demo_pack, pack_manifest
from pneumo.store.pack import SPLITS, Pack, read_info
from pneumo.store.pack_folder import scan_packs

ROOT = Path(__file__).resolve().parents[1]


def load_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split in memory through the public reader: images, masks ``(N, S, S, 1) uint8`` and the ids."""
    with Pack(path) as pack:
        return pack.images(split), pack.masks(split), pack.ids(split)


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
    from pneumo.ingest.phantom import make_phantom, sample_seed

    X, Y, ids = load_split(demo_pack, "dev")
    for k in range(len(ids)):
        index = int(ids[k].split("-")[1])
        image, mask = make_phantom(sample_seed(3, index), 64)
        assert np.array_equal(X[k, ..., 0], image)
        assert np.array_equal(Y[k, ..., 0], mask)


def test_read_info_and_scan_packs(demo_pack, tmp_path):
    info = read_info(demo_pack)
    assert info.size == 64 and sum(info.counts.values()) == 40
    assert "Train:" in info.format_report()
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    os.link(demo_pack, tmp_path / "a.h5")
    good, damaged = scan_packs(tmp_path)
    assert [p.path.name for p in good] == ["a.h5"] and [d.path.name for d in damaged] == ["junk.h5"]


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


def test_opening_errors(tmp_path, demo_pack):
    with pytest.raises(PackFormatError, match="no such pack file"):
        Pack(tmp_path / "missing.h5")
    with pytest.raises(PackFormatError, match="is a folder"):
        Pack(tmp_path)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"hello")
    with pytest.raises(PackFormatError, match="not a readable HDF5 file"):
        Pack(bad)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["X_train"] = np.zeros((1, 4, 4, 1), np.uint8)
    with pytest.raises(PackFormatError, match="not a pneumo pack"):
        Pack(foreign)
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(demo_pack.read_bytes())
    with h5py.File(damaged, "a") as f:
        del f["Y_dev"]
    with pytest.raises(PackFormatError, match="Y_dev is missing"):
        Pack(damaged)


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
    from pneumo.ingest.phantom import make_phantom, sample_seed

    X, Y, ids = load_split(tmp_path / "f.h5", "train")
    for k, name in enumerate(ids):
        image, mask = make_phantom(sample_seed(5, int(name.split("-")[1])), 64)
        assert np.array_equal(X[k, ..., 0], image) and np.array_equal(Y[k, ..., 0], mask)


def test_thousands_of_skipped_files_fit(tmp_path):
    from pneumo.ingest.sources import Manifest

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

    from pneumo.ingest.rle import siim_decode, siim_encode
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
    # The CLI has no TensorFlow and one thread, so its workers are forked (workers._start_method);
    # in this test process they would be spawned. Both must give the same pack.
    for workers in ("1", "2"):
        r = _cli("pack", "demo", "--count", "64", "--size", "32", "--workers", workers,
                 "--out", f"w{workers}.h5", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    for s in SPLITS:
        a, b = load_split(tmp_path / "w1.h5", s), load_split(tmp_path / "w2.h5", s)
        assert a[2] == b[2] and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --------------------------------------------------------------------------- hostile input
def _folders_with_bomb(root: Path) -> tuple[Path, Path]:
    from hostile_files import png_bomb

    images, masks = _write_folders(root, 6, size=32)
    png_bomb(images / "bomb.png")
    png_bomb(masks / "bomb.png")  # a mask of its own size: the pair would be packed
    return images, masks


def test_pixel_bomb_refused_or_skipped_by_name_with_bounded_memory(tmp_path):
    from hostile_files import peak_rss_mb

    images, masks = _folders_with_bomb(tmp_path)
    out = tmp_path / "o.h5"
    with pytest.raises(InputError, match=r"bomb\.png: image is 12000x12000 \(144\.0 Mpx\)"):
        pack_manifest(sources.folder_source(images, masks), out, PackConfig(size=32, workers=1))
    assert not out.exists()
    info = pack_manifest(sources.folder_source(images, masks), out, PackConfig(size=32, workers=1, skip_bad=True))
    assert sum(info.counts.values()) == 6
    assert any(name == "bomb" and "12000x12000" in reason for name, reason in info.report["skipped"])
    # The same pack in a fresh process with two workers: peak RSS stays far from 144 MB per image.
    grew, result = peak_rss_mb(
        "from pneumo.ingest import sources\nfrom pneumo.config import PackConfig\nfrom pneumo.ingest.packer import pack_manifest",
        f"i = pack_manifest(sources.folder_source({str(images)!r}, {str(masks)!r}), {str(tmp_path / 'p.h5')!r}, "
        "PackConfig(size=32, workers=2, skip_bad=True, isolate=True))\n"
        "result['n'] = sum(i.counts.values())",
    )
    assert result["n"] == 6
    assert grew < 120, f"peak RSS grew {grew:.0f} MB packing a folder with a PNG bomb (before: ~330)"


def test_deflated_dicom_bomb_in_a_siim_pack(tmp_path):
    from hostile_files import deflated_dicom
    from siim_fixtures import write_siim_tree

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 6, 32, 0)
    bomb_id = "1.2.276.0.7230010.3.1.99"
    deflated_dicom(dicom_dir / "bomb" / f"{bomb_id}.dcm", 12000, 12000, uid=bomb_id)
    with open(csv_path, "a") as f:
        f.write(f"{bomb_id}, -1\n")
    m = sources.siim_source(dicom_dir, csv_path, isolate=True)  # the header read does not inflate it
    assert any(s.id == bomb_id and s.height == 12000 for s in m.samples)
    with pytest.raises(InputError, match=r"\.99\.dcm: image is 12000x12000"):
        pack_manifest(m, tmp_path / "s.h5", PackConfig(size=32, workers=1))
    info = pack_manifest(m, tmp_path / "s.h5", PackConfig(size=32, workers=1, skip_bad=True))
    assert [r[0] for r in info.report["skipped"]] == [bomb_id]


def test_isolated_workers_run_apart_with_a_memory_cap():
    import resource

    from pneumo.ingest.packer import _ordered_map

    with _ordered_map(resource.getrlimit, [resource.RLIMIT_AS], (), 1, isolate=True,
                      memory_limit=3 << 30) as results:
        (soft, _), = list(results)
    assert soft == 3 << 30  # set in the worker
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 3 << 30  # not here


def test_cli_max_pixels(tmp_path):
    images, masks = _write_folders(tmp_path, 4, size=40)
    r = _cli("pack", "folders", str(images), str(masks), "--out", "x.h5", "--size", "32", "--max-pixels", "1000",
             "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and "image is 40x40 (0.0 Mpx); the limit is 0.0 Mpx (--max-pixels)" in r.stderr
    assert not (tmp_path / "x.h5").exists()
    r = _cli("pack", "folders", str(images), str(masks), "--out", "x.h5", "--size", "32", "--max-pixels", "1600",
             "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- damaged state
def test_foreign_and_damaged_h5_are_listed_as_damaged_never_raise(tmp_path, demo_pack):
    os.link(demo_pack, tmp_path / "good.h5")
    one = tmp_path / "one.h5"
    one.write_bytes(demo_pack.read_bytes())
    with h5py.File(one, "a") as f:
        f.attrs["format_version"] = "one"
    frac = tmp_path / "frac.h5"
    frac.write_bytes(demo_pack.read_bytes())
    with h5py.File(frac, "a") as f:
        f.attrs["positive_fraction_train"] = "lots"
    (tmp_path / "junk.h5").write_bytes(b"\xff\xfe not hdf5")
    (tmp_path / "folder.h5").mkdir()
    good, damaged = scan_packs(tmp_path)
    assert [p.path.name for p in good] == ["good.h5"]
    reasons = {d.path.name: d.reason for d in damaged}
    assert set(reasons) == {"one.h5", "frac.h5", "junk.h5", "folder.h5"}
    assert "format_version is 'one'" in reasons["one.h5"]
    assert "not a readable HDF5 file" in reasons["junk.h5"]
    with pytest.raises(PackFormatError, match="format_version"):
        read_info(one)


def test_sweep_removes_only_old_temporary_files(tmp_path):
    from pneumo.ingest.uploads import sweep_temp_files

    old_tmp, new_tmp = tmp_path / ".demo.h5.abc123.tmp", tmp_path / ".demo.h5.def456.tmp"
    keep = [tmp_path / "demo.h5", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for p in [old_tmp, new_tmp, *keep]:
        p.write_bytes(b"x")
    os.utime(old_tmp, (1e9, 1e9))
    os.utime(keep[1], (1e9, 1e9))
    os.utime(keep[2], (1e9, 1e9))
    assert sweep_temp_files(tmp_path) == [old_tmp]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new_tmp.name] + [p.name for p in keep])


def test_cli_pack_sweeps_leftovers_of_a_killed_pack(tmp_path):
    left = tmp_path / ".d.h5.k1ll3d.tmp"
    left.write_bytes(b"\0" * 1000)
    os.utime(left, (1e9, 1e9))
    r = _cli("pack", "demo", "--count", "8", "--size", "32", "--out", "d.h5", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not left.exists() and "removed .d.h5.k1ll3d.tmp" in r.stdout


# --------------------------------------------------------------------------- source references (issue 14)
def _refs(path: Path) -> dict[str, tuple[str, int, int]]:
    from pneumo.store.pack import read_sources

    out = {}
    for s in SPLITS:
        ids = load_split(path, s)[2]
        refs = read_sources(path, s)
        assert refs is not None and len(refs) == len(ids)
        out.update({i: (r.path, r.height, r.width) for i, r in zip(ids, refs)})
    return out


def test_source_references_for_folders_siim_and_demo(tmp_path, demo_pack):
    from tests.siim_fixtures import write_siim_tree

    images, masks = _write_folders(tmp_path / "f", 7, size=96, missing_mask=None)
    Image.fromarray(np.zeros((40, 72), np.uint8)).save(images / "wide.png")  # non-square: H and W kept apart
    Image.fromarray(np.zeros((40, 72), np.uint8)).save(masks / "wide.png")
    (images / "case002.png").write_bytes(b"garbage")  # skipped: its reference goes with it
    info = pack_manifest(sources.folder_source(images, masks), tmp_path / "f.h5",
                         PackConfig(size=32, skip_bad=True, split=SplitConfig(proportions=(1, 1, 1))))
    refs = _refs(info.path)
    assert set(refs) == {f"case{i:03d}" for i in range(7)} - {"case002"} | {"wide"}
    assert refs["wide"] == (str((images / "wide.png").absolute()), 40, 72)
    assert refs["case005"] == (str((images / "case005.png").absolute()), 96, 96)

    dicom_dir, csv_path = write_siim_tree(tmp_path / "siim", 6, 48, 0)
    info = pack_manifest(sources.siim_source(dicom_dir, csv_path), tmp_path / "s.h5",
                         PackConfig(size=32, split=SplitConfig(proportions=(1, 1, 1))))
    refs = _refs(info.path)
    assert len(refs) == 6
    for image_id, (path, h, w) in refs.items():
        assert Path(path).name == f"{image_id}.dcm" and Path(path).is_file() and (h, w) == (48, 48)

    from pneumo.ingest.phantom import sample_seed

    refs = _refs(demo_pack)
    assert refs["phantom-00007"] == (f"demo:{sample_seed(3, 7)}", 64, 64)


def test_old_pack_without_source_references_still_opens(tmp_path, demo_pack):
    import shutil

    from pneumo.store.pack import read_sources

    old = tmp_path / "old.h5"
    shutil.copy(demo_pack, old)
    with h5py.File(old, "a") as f:
        for s in SPLITS:
            del f[f"source_path_{s}"], f[f"source_hw_{s}"]
        del f.attrs["dicom_window"]
    assert read_info(old).counts == read_info(demo_pack).counts
    assert load_split(old, "test")[2] == load_split(demo_pack, "test")[2]
    assert all(read_sources(old, s) is None for s in SPLITS)
    r = _cli("info", str(old), cwd=tmp_path)
    assert r.returncode == 0 and "source references: no" in r.stdout, r.stdout + r.stderr
    r = _cli("info", str(demo_pack), cwd=tmp_path)
    assert r.returncode == 0 and "source references: yes (e.g. demo:" in r.stdout
    r = _cli("info", "--json", str(old), cwd=tmp_path)
    assert json.loads(r.stdout)["source_references"] is False
    with h5py.File(old, "a") as f:  # one of the pair alone: damaged, said so
        f.create_dataset("source_hw_dev", data=np.zeros((1, 2), np.int32))
    with pytest.raises(PackFormatError, match="source_path_dev/source_hw_dev do not match ids_dev"):
        read_sources(old, "dev")


def test_dicom_window_is_applied_and_recorded(tmp_path):
    from tests.siim_fixtures import UID_ROOT, write_dicom

    dicom_dir, csv_rows = tmp_path / "dicom", ["ImageId,EncodedPixels"]
    pixels = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0..4092 in 12 bits
    for k in range(3):
        uid = f"{UID_ROOT}.9.{k}"
        write_dicom(dicom_dir / f"{uid}.dcm", pixels, sop_uid=uid, bits_stored=12, window=(2000, 401))
        csv_rows.append(f"{uid},-1")
    (tmp_path / "labels.csv").write_text("\n".join(csv_rows) + "\n")
    packed = {}
    for window in ("voi", "full"):
        r = _cli("pack", "siim", "dicom", "labels.csv", "--size", "32", "--split", "1,1,1", "--quiet",
                 "--dicom-window", window, "--out", f"{window}.h5", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert read_info(tmp_path / f"{window}.h5").attrs["dicom_window"] == window
        packed[window] = load_split(tmp_path / f"{window}.h5", "train")[0][0, ..., 0]
    from pneumo.ingest.imageio import read_image

    path = next(dicom_dir.glob("*.dcm"))
    assert np.array_equal(packed["voi"], read_image(path, dicom_window="voi"))
    assert np.array_equal(packed["full"], read_image(path, dicom_window="full"))
    assert (packed["voi"] == 255).mean() > 0.4 and (packed["full"] == 255).mean() < 0.01  # the window clips


# --------------------------------------------------------------------------- --exclude (issue 14)
def test_exclude_list_removes_ids_after_splitting_and_reports_unknown(tmp_path):
    images, masks = _write_folders(tmp_path, 12, size=32)
    (images / "case003.png").rename(images / "=case003.png")  # a formula-like id, neutralised in the CSV
    (masks / "case003.png").rename(masks / "=case003.png")
    (tmp_path / "relabel.csv").write_text(
        "id,source,category,verdicts,notes\n"
        "'=case003,x,FP,a:label missed,\ncase005,y,FN,,\nnot-a-case,z,FP,,\n", encoding="utf-8")
    r = _cli("pack", "folders", "images", "masks", "--size", "32", "--split", "1,1,1", "--quiet",
             "--exclude", "relabel.csv", "--out", "x.h5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "excluded 2 images listed in" in r.stdout
    assert "1 ids of" in r.stdout and "not-a-case" in r.stdout
    ids = sum((load_split(tmp_path / "x.h5", s)[2] for s in SPLITS), [])
    assert len(ids) == 10 and "=case003" not in ids and "case005" not in ids
    info = read_info(tmp_path / "x.h5")
    assert info.attrs["excluded"] == 2 and info.attrs["exclude_list"] == str(tmp_path / "relabel.csv")
    assert info.report["exclusion"]["excluded_ids"] == ["=case003", "case005"]
    assert info.report["exclusion"]["unknown_ids"] == ["not-a-case"]
    with h5py.File(tmp_path / "x.h5") as f:
        assert [v.decode() for v in f["excluded_ids"][()]] == ["=case003", "case005"]
    r = _cli("info", "x.h5", cwd=tmp_path)
    assert "excluded: 2 (list" in r.stdout
    # issue 18 item 3: the split is that of the whole source, the listed ids taken out after it
    whole = sources.folder_source(images, masks)
    ref = pack_manifest(whole, tmp_path / "ref.h5", PackConfig(size=32, split=SplitConfig(proportions=(1, 1, 1))))
    assert all([i for i in load_split(ref.path, s)[2] if i not in ("=case003", "case005")]
               == load_split(tmp_path / "x.h5", s)[2] for s in SPLITS)
    assert read_info(ref.path).attrs["excluded"] == 0


def test_exclude_list_errors(tmp_path):
    from pneumo.store.relabel import read_list_ids

    (tmp_path / "noid.csv").write_text("image,category\na,FP\n")
    with pytest.raises(InputError, match=r"noid\.csv: exclusion list has no 'id' column \(found \['image', 'category'\]\)"):
        read_list_ids(tmp_path / "noid.csv")
    r = _cli("pack", "demo", "--count", "8", "--size", "32", "--exclude", "noid.csv", "--out", "x.h5", cwd=tmp_path)
    assert r.returncode == 2 and "noid.csv: exclusion list has no 'id' column" in r.stderr
    assert not (tmp_path / "x.h5").exists()
    with pytest.raises(InputError, match=r"missing\.csv: exclusion list not found"):
        read_list_ids(tmp_path / "missing.csv")
    (tmp_path / "all.csv").write_text("id\n" + "".join(f"phantom-{i:05d}\n" for i in range(4)))
    with pytest.raises(InputError, match=r"all\.csv excludes all 4 images"):
        pack_manifest(sources.demo_source(4, size=32), tmp_path / "y.h5", PackConfig(size=32, exclude=str(tmp_path / "all.csv")))
    (tmp_path / "ws.csv").write_text(" id ,notes\n'+a,\n'plain,\n\n b ,\n")
    assert read_list_ids(tmp_path / "ws.csv") == ["+a", "'plain", "b"]


# --------------------------------------------------------------------------- the store's API (issue 20)
def test_rows_in_any_order_with_repeats_read_like_numpy(demo_pack):
    X, Y, ids = load_split(demo_pack, "train")
    rows = [7, 2, 3, 3, 29, 0, 1, 2]
    with Pack(demo_pack) as pack:
        assert pack.size == 64 and pack.counts == {"train": 30, "dev": 5, "test": 5}
        assert np.array_equal(pack.images("train", rows), X[rows])
        assert np.array_equal(pack.masks("train", np.array(rows)), Y[rows])
        assert pack.ids("train", rows) == [ids[i] for i in rows]
        assert np.array_equal(pack.images("train", slice(4, 9)), X[4:9])
        assert pack.images("train", []).shape == (0, 64, 64, 1) and pack.ids("train", []) == []
        lazy = pack.lazy_masks("train")
        assert len(lazy) == 30 and lazy.shape == Y.shape and np.array_equal(lazy[3:5], Y[3:5])
        with pytest.raises(InputError, match="out of range"):
            pack.images("train", [30])
        with pytest.raises(InputError, match="unknown split 'val'"):
            pack.ids("val")


def test_positive_is_any_non_zero_pixel_found_chunk_by_chunk(tmp_path):
    from pneumo.store import pack as pack_mod

    masks = np.zeros((600, 8, 8, 1), np.uint8)
    masks[5, 3, 3] = 1  # faint: positive all the same (one rule: any non-zero pixel)
    masks[599, 0, 0] = 255
    reads = []

    class Spy:
        def __len__(self):
            return len(masks)

        def __getitem__(self, key):
            reads.append(key.stop - key.start)
            return masks[key]

    flags = pack_mod.positive_flags(Spy())
    assert flags.dtype == bool and np.flatnonzero(flags).tolist() == [5, 599]
    assert max(reads) <= pack_mod._FLAG_CHUNK  # never a full-size temporary copy
    assert pack_mod.positive_flags(masks, stop=10).tolist() == [i == 5 for i in range(10)]
    with pack_mod.PackWriter(tmp_path / "p.h5", 8, sources=False) as writer:
        writer.append("train", [f"i{k}" for k in range(600)], np.zeros_like(masks), masks)
    with Pack(tmp_path / "p.h5") as pack:
        assert np.array_equal(pack.positives("train"), flags) and pack.positives("dev").shape == (0,)
        assert pack.positive_fraction("train") == pytest.approx(2 / 600)


def test_pack_writer_grows_shrinks_and_is_atomic(tmp_path):
    from pneumo.store.pack import PackWriter, SourceRef

    out = tmp_path / "w.h5"
    images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    masks = np.zeros((5, 4, 4), np.uint8)
    masks[1] = 255
    refs = [SourceRef(f"/data/{k}.png", 10 + k, 20) for k in range(5)]
    with PackWriter(out, 4, {"train": 3, "dev": 9}, compression="gzip") as writer:
        writer.append("train", ["a", "b"], images[:2], masks[:2], refs[:2])
        writer.append("train", ["c", "d", "e"], images[2:], masks[2:], refs[2:])  # past the capacity of 3
        with pytest.raises(InputError, match="one source reference each"):
            writer.append("dev", ["x"], images[:1], masks[:1])
        assert not out.exists()  # nothing there until the block ends
        writer.finish(source="test", report={"note": 1}, skipped=[("bad.png", "unreadable")])
    with Pack(out) as pack:
        assert pack.counts == {"train": 5, "dev": 0, "test": 0}  # dev shrank to what was appended
        assert np.array_equal(pack.images("train")[..., 0], images) and pack.ids("train") == list("abcde")
        assert pack.sources("train") == refs and pack.sources("dev") == []
        info = pack.info
    assert info.positive_fractions == {"train": 0.2, "dev": 0.0, "test": 0.0}
    assert info.attrs["source"] == "test" and info.attrs["compression"] == "gzip"
    assert info.report["note"] == 1 and info.report["packed"] == 5 and info.report["skipped"] == [["bad.png", "unreadable"]]

    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="stop"):
        with PackWriter(out, 4, sources=False) as writer:
            writer.append("test", ["z"], images[:1], masks[:1])
            raise RuntimeError("stop")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["w.h5"]  # no temporary left
