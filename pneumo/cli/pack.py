"""``python -m pneumo pack {folders,siim,demo}``: sources to one HDF5 pack."""
from __future__ import annotations

import argparse
from pathlib import Path


def _int_triple(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers like 250,40,40, got {text!r}") from None
    if len(parts) != 3 or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative integers like 250,40,40, got {text!r}")
    return parts  # type: ignore[return-value]


def _float_triple(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 250,40,40 or 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative numbers, not all 0, got {text!r}")
    return parts  # type: ignore[return-value]


def add_pack_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every pack source (also used by ``demo-data``'s siblings)."""
    p.add_argument("--out", required=True, type=Path, help="HDF5 pack to write")
    p.add_argument("--size", type=int, default=256, help="side in pixels, a multiple of 32 (default 256)")
    p.add_argument("--seed", type=int, default=2, help="split seed (default 2, the blog's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--split", type=_float_triple, default=None, metavar="A,B,C",
                   help="train,dev,test proportions (default 250,40,40)")
    g.add_argument("--split-batches", type=_int_triple, default=None, metavar="A,B,C",
                   help="exact counts in batches of --batch-size (the blog: 250,40,40)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for --split-batches (default 32)")
    p.add_argument("--stratify", action="store_true", help="same positive fraction in each split")
    p.add_argument("--group-by-patient", action="store_true", help="no patient in two splits")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--compression", choices=("none", "gzip", "lzf"), default="none",
                   help="HDF5 compression (default none: fastest to read)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images and list them in the report, instead of failing")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pack`` and its three sources."""
    p = sub.add_parser("pack", help="pack images and masks into one HDF5 file",
                       description="Pack a data source into the blog's HDF5 layout (X_train ... Y_test).")
    srcs = p.add_subparsers(dest="source", metavar="SOURCE")
    srcs.required = True
    f = srcs.add_parser("folders", help="an images folder and a masks folder, paired by file stem")
    f.add_argument("images_dir", type=Path)
    f.add_argument("masks_dir", type=Path)
    s = srcs.add_parser("siim", help="SIIM-ACR DICOM tree + train-rle.csv / stage_2_train.csv")
    s.add_argument("dicom_dir", type=Path)
    s.add_argument("labels_csv", type=Path)
    s.add_argument("--rle-format", choices=("auto", "relative", "absolute"), default="auto",
                   help="RLE starts: relative (the competition's), absolute (standard) or auto-detect (default)")
    d = srcs.add_parser("demo", help="built-in synthetic chest phantoms")
    d.add_argument("--count", type=int, default=400, help="number of phantoms (default 400)")
    d.add_argument("--phantom-seed", type=int, default=0, help="seed of the phantoms themselves (default 0)")
    for q in (f, s, d):
        add_pack_options(q)
        q.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The PackConfig the options describe."""
    from pneumo.config import PackConfig, SplitConfig

    split = SplitConfig(
        proportions=args.split or SplitConfig().proportions,
        batches=args.split_batches,
        batch_size=args.batch_size,
        seed=args.seed,
        stratify=args.stratify,
        group_by_patient=args.group_by_patient,
    )
    return PackConfig(
        size=args.size,
        split=split,
        compression=None if args.compression == "none" else args.compression,
        workers=args.workers,
        skip_bad=args.skip_bad,
    )


def run(args: argparse.Namespace) -> int:
    """Build the manifest, pack it with a progress bar, print the split report."""
    from pneumo import sources
    from pneumo.config import check_size
    from pneumo.errors import InputError
    from pneumo.pack import pack_manifest

    config = config_from_args(args)
    check_size(config.size)
    if args.out.exists() and not args.force:
        raise InputError(f"{args.out}: already exists; use --force to replace it")
    if args.source == "folders":
        manifest = sources.folder_source(args.images_dir, args.masks_dir)
    elif args.source == "siim":
        manifest = sources.siim_source(args.dicom_dir, args.labels_csv, rle_format=args.rle_format)
        print(f"RLE format: {manifest.info.get('rle_format')}")
    else:
        manifest = sources.demo_source(args.count, size=args.size, seed=args.phantom_seed)
    for name, reason in manifest.skipped[:20]:
        print(f"skipped {name}: {reason}")
    if len(manifest.skipped) > 20:
        print(f"... and {len(manifest.skipped) - 20} more skipped (listed in the pack's report)")

    bar = None

    def progress(done: int, total: int) -> None:
        # Created on the first image, so errors found before decoding print alone.
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc=f"packing {args.out.name}")
        bar.n = done
        if done == total or done % 16 == 0:
            bar.refresh()

    try:
        info = pack_manifest(manifest, args.out, config, force=args.force, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {info.path} ({info.size} px, {sum(info.counts.values())} pairs)")
    n_skipped = int(info.report.get("n_skipped", 0))
    if n_skipped:
        print(f"{n_skipped} skipped (see `python -m pneumo info {info.path}`)")
    print(info.format_report())
    return 0
