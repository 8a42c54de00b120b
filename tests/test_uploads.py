"""Uploaded zips: checked as a whole before extraction, unpacked safely, swept when orphaned."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from pneumo.ingest import uploads
from pneumo.errors import InputError
from pneumo.ingest.uploads import content_root, data_root, extract_upload, hide_root, safe_extract_zip, sweep_uploads


def _zip(members: dict[str, bytes], symlink: str | None = None, *, dirs: tuple[str, ...] = ()) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for d in dirs:
            z.writestr(zipfile.ZipInfo(d), b"")
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    buf.seek(0)
    return buf


def test_safe_extract_zip_writes_inside_dest(tmp_path):
    out = safe_extract_zip(_zip({"a/b.txt": b"hi", "c.txt": b"x"}), tmp_path / "u")
    assert (out / "a" / "b.txt").read_bytes() == b"hi" and (out / "c.txt").read_bytes() == b"x"


@pytest.mark.parametrize(
    "members, symlink, kwargs, message",
    [
        ({"../evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"a/../../evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"/etc/evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"C:/evil.txt": b"x"}, None, {}, "unsafe path"),
        ({"ok.txt": b"x"}, "link", {}, "symbolic link"),
        ({f"{i}.txt": b"x" for i in range(5)}, None, {"max_members": 4}, "limit is 4"),
        ({"big.bin": b"x" * 5000}, None, {"max_bytes": 4000}, "limit"),
        ({"bomb.bin": b"\0" * (16 << 20)}, None, {}, "zip bomb"),
    ],
)
def test_safe_extract_zip_rejects(tmp_path, members, symlink, kwargs, message):
    dest = tmp_path / "u"
    with pytest.raises(InputError, match=message):
        safe_extract_zip(_zip(members, symlink), dest, **kwargs)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists()  # refused from the listing: nothing written, not even dest


def test_safe_extract_zip_rejects_a_non_zip(tmp_path):
    with pytest.raises(InputError, match="not a readable zip"):
        safe_extract_zip(io.BytesIO(b"not a zip"), tmp_path / "u")


def test_many_small_members_bomb_refused_before_extraction(tmp_path):
    # 200 members of 1 MiB of zeros: each under the old per-member threshold, 210 MB in all.
    buf = _zip({f"images/{i:03d}.png": b"\0" * (1 << 20) for i in range(200)})
    assert len(buf.getvalue()) < 400_000
    dest = tmp_path / "u"
    with pytest.raises(InputError, match=r"upload: the zip expands \d+x .*the limit is 100x \(zip bomb\?\)"):
        safe_extract_zip(buf, dest)
    assert not dest.exists()


def test_total_declared_size_checked_before_extraction(tmp_path):
    buf = _zip({f"{i}.bin": os.urandom(3000) for i in range(4)})  # incompressible: ratio ~1
    with pytest.raises(InputError, match="limit is 0.0 GB"):
        safe_extract_zip(buf, tmp_path / "u", max_bytes=10_000)
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize(
    "members, dirs",
    [
        ({"a": b"file", "a/b": b"inside"}, ()),
        ({"a/b": b"inside", "a": b"file"}, ()),
        ({"x/a": b"file"}, ("x/a/",)),
    ],
)
def test_file_and_folder_of_the_same_name_is_a_clean_error(tmp_path, members, dirs):
    with pytest.raises(InputError, match="is both a file and a folder in the zip"):
        safe_extract_zip(_zip(members, dirs=dirs), tmp_path / "u")
    assert not (tmp_path / "u").exists()


def test_duplicate_member_is_a_clean_error(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning):
        z.writestr("a.png", b"1")
        z.writestr("a.png", b"2")
    with pytest.raises(InputError, match="'a.png' appears twice"):
        safe_extract_zip(buf, tmp_path / "u")


def test_member_names_are_shown_quoted_with_control_characters_escaped(tmp_path):
    name = "../[x](http://evil)\n![i](http://evil/p.png)"
    with pytest.raises(InputError) as e:
        safe_extract_zip(_zip({name: b"x"}), tmp_path / "u")
    assert "\n" not in str(e.value) and "\\n" in str(e.value)


def test_one_top_level_folder_is_stepped_into(tmp_path):
    top = safe_extract_zip(_zip({"mydata/images/a.png": b"1", "mydata/masks/a.png": b"2",
                                 "__MACOSX/mydata/._a.png": b"", ".DS_Store": b""}), tmp_path / "u")
    assert content_root(top) == top / "mydata"
    assert data_root(top, ["images", "masks"]) == top / "mydata"
    assert data_root(top, ["mydata/images", "mydata/masks"]) == top  # names given from the top
    flat = safe_extract_zip(_zip({"images/a.png": b"1", "masks/a.png": b"2"}), tmp_path / "v")
    assert content_root(flat) == flat and data_root(flat, ["images", "masks"]) == flat


def test_extract_upload_streams_to_disk_and_cleans_up(tmp_path):
    class Upload(io.BytesIO):  # like Streamlit's UploadedFile: a BytesIO; reads must be chunked
        sizes: list[int] = []

        def read(self, n=-1):
            self.sizes.append(n)
            return super().read(n)

    folder, top = extract_upload(Upload(_zip({"set/images/a.png": b"1"}).getvalue()), tmp_path)
    assert folder.parent == tmp_path / "uploads" and top == folder / "files"
    assert (top / "set" / "images" / "a.png").read_bytes() == b"1"
    assert not (folder / ".upload.zip").exists()  # the zip itself is gone once unpacked
    assert Upload.sizes and all(0 < n <= 1 << 20 for n in Upload.sizes)
    with pytest.raises(InputError, match="both a file and a folder"):
        extract_upload(_zip({"a": b"1", "a/b": b"2"}), tmp_path)
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == [folder.name]  # nothing left


def test_hide_root_names_files_inside_the_zip(tmp_path):
    root = tmp_path / "uploads" / "abc" / "files"
    assert hide_root(f"{root}/images: images folder not found", root) == "zip:images: images folder not found"


def test_sweep_removes_stale_upload_folders_only(tmp_path):
    old, new = uploads.new_upload_dir(tmp_path), uploads.new_upload_dir(tmp_path)
    (old / "files").mkdir()
    (old / "files" / "patient.dcm").write_bytes(b"x")
    os.utime(old, (1e9, 1e9))
    assert sweep_uploads(tmp_path) == [old]
    assert not old.exists() and new.exists()
    assert sweep_uploads(tmp_path / "missing") == []


def test_bounded_memory_while_extracting(tmp_path):
    from hostile_files import peak_rss_mb

    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"d/{i}.bin", os.urandom(1 << 20) * 16)  # 16 MB each, ~1 MB zipped: 16x
    grew, result = peak_rss_mb(
        "from pneumo.ingest.uploads import safe_extract_zip",
        f"safe_extract_zip({str(path)!r}, {str(tmp_path / 'out')!r})\nresult['ok'] = 1",
    )
    assert result == {"ok": 1} and sum(p.stat().st_size for p in (tmp_path / "out" / "d").iterdir()) == 64 << 20
    assert grew < 40, f"peak RSS grew {grew:.0f} MB unpacking 64 MB"


def test_module_has_no_streamlit():
    assert "streamlit" not in Path(uploads.__file__).read_text()


# --------------------------------------------------------------------------- issue 18 item 11
def _eocd(entries: int, cd_bytes: int, *, zip64: bool = False) -> bytes:
    """A zip that is only its end of central directory (ZIP64: the record, its locator, then the
    classic record with 0xFFFF/0xFFFFFFFF): what a listing-free check must read."""
    import struct

    body = b"\0" * 64
    if not zip64:
        return body + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(entries, 0xFFFF), min(entries, 0xFFFF),
                                   cd_bytes, 0, 0)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_bytes, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + eocd


def _no_listing(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("the listing was parsed")

    monkeypatch.setattr(uploads.zipfile, "ZipFile", refuse)


@pytest.mark.parametrize("data, message", [
    (_eocd(1_000_000, 92_000_000, zip64=True), "1,000,000 entries in the zip; the limit is 50,000 files"),
    (_eocd(2**33, 10**12, zip64=True), "8,589,934,592 entries in the zip"),
    (_eocd(3, 90_000_000), "listing is 90 MB, too large for the 50,000 files allowed"),  # the count lies
], ids=["zip64-million", "zip64-huge", "classic-lying-count"])
def test_entry_count_is_read_from_the_end_record_before_any_listing(tmp_path, monkeypatch, data, message):
    """Issue 18 item 11: a 92 MB zip of a million empty entries was listed inside the server
    (30 s, +740 MB) before the count check. Now the end-of-central-directory record (and its
    ZIP64 form) decides first, reading 64 KiB: the listing is never parsed."""
    _no_listing(monkeypatch)
    (tmp_path / "a.zip").write_bytes(data)
    for source in (tmp_path / "a.zip", io.BytesIO(data)):
        with pytest.raises(InputError, match=message):
            safe_extract_zip(source, tmp_path / "u")
    with pytest.raises(InputError, match=message):
        extract_upload(io.BytesIO(data), tmp_path / "data", isolate=True)
    assert not any((tmp_path / "data" / "uploads").iterdir())


def test_a_real_zip_of_many_entries_is_refused_unlisted_and_a_fair_one_unpacks_in_a_worker(tmp_path, monkeypatch):
    """The record of a real zip (3,000 empty entries) is read right; a zip within the limit is
    listed and unpacked in a capped worker process when ``isolate`` (the app), not in this one."""
    many, fair = _zip({f"e{i}": b"" for i in range(3000)}), _zip({"images/a.png": b"1", "masks/a.png": b"2"})
    real_zipfile = uploads.zipfile.ZipFile
    _no_listing(monkeypatch)
    with pytest.raises(InputError, match="3,000 entries in the zip; the limit is 100 files"):
        safe_extract_zip(many, tmp_path / "u", max_members=100)
    listed_by: list[int] = []

    def spy(*a, **k):  # records only calls made in this process (a worker has its own list)
        listed_by.append(os.getpid())
        return real_zipfile(*a, **k)

    monkeypatch.setattr(uploads.zipfile, "ZipFile", spy)
    folder, top = extract_upload(fair, tmp_path / "data", isolate=True, memory_limit=2 << 30)
    assert (top / "images" / "a.png").read_bytes() == b"1" and (top / "masks" / "a.png").read_bytes() == b"2"
    assert os.getpid() not in listed_by
