"""``python -m pneumo demo-data OUT_DIR``: the phantoms as the blog's PNG folder layout."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo-data``."""
    p = sub.add_parser("demo-data", help="write demo phantoms as OUT_DIR/train/*.png and OUT_DIR/masks/*.png")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--count", type=int, default=100, help="number of phantoms (default 100)")
    p.add_argument("--size", type=int, default=1024, help="side in pixels (default 1024, as SIIM)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace existing OUT_DIR/train and OUT_DIR/masks folders")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render and write the PNG pairs."""
    from tqdm import tqdm

    from pneumo._io import refuse_existing
    from pneumo.settings import check_writable
    from pneumo.ingest.packer import write_demo_folders

    for name in ("train", "masks"):  # before the progress bar: a refusal is the whole answer
        refuse_existing(args.out_dir / name, args.force)
    check_writable(args.out_dir)
    bar = tqdm(total=args.count, unit="img", desc="rendering phantoms")

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        images, masks = write_demo_folders(args.out_dir, args.count, size=args.size, seed=args.seed,
                                           workers=args.workers, progress=progress, force=args.force)
    finally:
        bar.close()
    print(f"wrote {args.count} pairs: {images} and {masks}")
    return 0
