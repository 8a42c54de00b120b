"""Workspaces for the Review page's benchmarks and screenshots: a pack whose images have source files.

``write_source_workspace(root, n, side)`` writes ``n`` SIIM-layout DICOMs of ``side`` px, 12 bits
stored in 16, with WindowCenter/WindowWidth (demo phantoms rendered at 512 px, enlarged and given
fine noise: rendering phantoms at 2048 px takes seconds each), their ``stage_2_train.csv``, packs
them at ``pack_size`` px (all in test) with their source references, and adds a finished run
with fixed predictions (``tests/run_fixtures.make_review_run``): the page's full-resolution view
reads every case from its DICOM.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

RUN_NAME = "run-20260101-120000"
_POOL = 12  # phantoms rendered; every image is one of them with its own noise


def write_source_workspace(root: Path, n: int = 40, side: int = 2048, pack_size: int = 256, seed: int = 0) -> Path:
    """The workspace folder ``root`` (``data/``, ``runs/``, ``siim/``); returns the run folder."""
    from PIL import Image
    from siim_fixtures import UID_ROOT, write_dicom

    from pneumo.config import PackConfig, SplitConfig
    from pneumo.ingest import packer, phantom, sources
    from pneumo.ingest.rle import siim_encode
    from run_fixtures import make_review_run

    root = Path(root)
    rng = np.random.default_rng(seed)
    pool = [phantom.make_phantom(phantom.sample_seed(seed, i), 512) for i in range(_POOL)]
    dicom_dir, rows = root / "siim" / "dicom", []
    for i in range(n):
        image, mask = pool[i % _POOL]
        big = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR), np.float32)
        values = np.clip(np.rint(big * 14 + 200 + rng.normal(0, 18, big.shape)), 0, 4095).astype(np.uint16)
        big_mask = np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.NEAREST)) > 0
        uid = f"{UID_ROOT}.9.{seed}.{i}"
        write_dicom(dicom_dir / f"{uid}.dcm", values, sop_uid=uid, patient_id=f"P{i:04d}", bits_stored=12,
                    window=(2000, 3200))
        rows.append((uid, siim_encode(big_mask) if big_mask.any() else "-1"))
    labels = root / "siim" / "stage_2_train.csv"
    labels.write_text("ImageId,EncodedPixels\n" + "".join(f"{u},{r}\n" for u, r in rows), encoding="utf-8")
    info = packer.pack_manifest(sources.siim_source(dicom_dir, labels, workers=1), root / "data" / "siim.h5",
                                PackConfig(size=pack_size, workers=2, split=SplitConfig(proportions=(0.0, 0.0, 1.0))))
    return make_review_run(root / "runs" / RUN_NAME, info.path, splits=("test",))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--side", type=int, default=2048)
    args = ap.parse_args()
    print(write_source_workspace(args.root, args.n, args.side))
