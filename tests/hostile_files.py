"""Hostile inputs made in the tests: small files that decode to huge images.

``png_bomb`` writes an 8-bit gray PNG of zeros (12000x12000 is about 140 kB) without ever
holding the image in memory; ``deflated_dicom`` writes a Deflated Explicit VR DICOM whose
pixel data (zeros, or ``pixels``) inflates to ``rows x cols`` bytes, optionally followed by
``extra`` bytes that its header does not declare. ``peak_rss_mb`` runs a snippet in a fresh
interpreter and returns its peak RSS growth in MB (after the imports it names).
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: str | Path, width: int = 12000, height: int = 12000) -> Path:
    """A gray 8-bit PNG of zeros, written row block by row block (never in memory)."""
    path = Path(path)
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + zeros
    idat = bytearray()
    block = row * 256
    left = height
    while left:
        k = min(left, 256)
        idat += comp.compress(block if k == 256 else row * k)
        left -= k
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b""))
    return path


def deflated_dicom(path: str | Path, rows: int, cols: int, *, pixels: np.ndarray | None = None,
                   extra: int = 0, uid: str = "1.2.3.9") -> Path:
    """A deflated DICOM of ``rows x cols`` 8-bit pixels (zeros unless ``pixels``) + ``extra`` bytes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid
    ds.PatientID = "patient-0"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    n = rows * cols + (rows * cols & 1)
    head = body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, n)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        m = DicomBytesIO()
        m.is_little_endian, m.is_implicit_VR = True, False
        write_file_meta_info(m, meta)
        f.write(m.getvalue())
        f.write(comp.compress(head))
        if pixels is not None:
            f.write(comp.compress(np.ascontiguousarray(pixels, np.uint8).tobytes() + bytes(n - rows * cols)))
            left = extra
        else:
            left = n + extra
        zero = bytes(1 << 20)
        while left:
            k = min(left, len(zero))
            f.write(comp.compress(zero[:k]))
            left -= k
        f.write(comp.flush())
    return path


def peak_rss_mb(setup: str, code: str) -> tuple[float, dict]:
    """Run ``setup`` then ``code`` in a fresh interpreter; the peak RSS growth (MB) during
    ``code`` and the JSON it left in ``result`` (a dict)."""
    script = "\n".join([
        "import json, resource, sys",
        f"sys.path.insert(0, {str(ROOT)!r})",
        textwrap.dedent(setup),
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
        "result = {}",
        textwrap.dedent(code),
        "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,",
        "           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
        'print(json.dumps({"grew_mb": (peak - base) / 1024, "result": result}))',
    ])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["grew_mb"], data["result"]
