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


def _pixels(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels like 50000000 or 5e7, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number of pixels, got {text!r}")
    return value


def add_pack_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every pack source."""
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
                   help="skip unreadable images (and ids with control characters), naming each on the "
                        "console and in the report, instead of failing")
    p.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                   help="refuse images larger than N pixels, checked before decoding "
                        "(default 50000000; 0 = no limit, for trusted data only)")
    p.add_argument("--exclude", type=Path, default=None, metavar="LIST.csv",
                   help="leave out the ids of this CSV's 'id' column (e.g. the relabel list "
                        "`pneumo curate` writes) after splitting the whole source, so every other id keeps "
                        "its split; ids the source lacks are reported")
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
    for q in (f, s):
        q.add_argument("--dicom-window", choices=("voi", "full"), default="voi",
                       help="DICOM to 8 bits: voi = the file's own VOI LUT or WindowCenter/WindowWidth "
                            "when it has one, else the full stored range (default); full = always the "
                            "full stored range (pneumo's behaviour before windowing)")
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
    extra = {}
    if args.max_pixels is not None:
        extra["max_pixels"] = args.max_pixels or None  # 0: no limit
    return PackConfig(
        size=args.size,
        split=split,
        compression=None if args.compression == "none" else args.compression,
        workers=args.workers,
        skip_bad=args.skip_bad,
        dicom_window=getattr(args, "dicom_window", "voi"),
        exclude=str(args.exclude) if args.exclude is not None else None,
        **extra,
    )


_SHOWN_SKIPPED = 20  # skipped files named on the console (all are in the pack's report)


def run(args: argparse.Namespace) -> int:
    """Build the manifest, pack it with a progress bar, print the split report. SIGTERM
    removes the temporary pack (and the workers) before exiting with status 143."""
    import sys

    from pneumo.workers import exit_on_sigterm, quiet_pillow_bomb_warning

    quiet_pillow_bomb_warning()  # pneumo's own pixel budget decides (--max-pixels)
    try:
        with exit_on_sigterm():
            return _run(args)
    except SystemExit:
        print(f"terminated; {args.out} was not written", file=sys.stderr)
        raise


def _run(args: argparse.Namespace) -> int:
    from pneumo.ingest import sources
    from pneumo.ingest.manifest import shown
    from pneumo.config import check_size
    from pneumo._io import refuse_existing
    from pneumo.settings import check_writable
    from pneumo.ingest.packer import pack_manifest
    from pneumo.ingest.uploads import sweep_temp_files

    config = config_from_args(args)
    check_size(config.size)
    refuse_existing(args.out, args.force)
    check_writable(args.out.parent, "the pack is written there")  # before reading any image
    for path in sweep_temp_files(args.out.absolute().parent):
        print(f"removed {path.name}, left behind by an interrupted pack")
    manifest = sources.manifest_from_spec(
        args.source,
        images=getattr(args, "images_dir", None),
        masks=getattr(args, "masks_dir", None),
        dicom=getattr(args, "dicom_dir", None),
        labels=getattr(args, "labels_csv", None),
        rle_format=getattr(args, "rle_format", "auto"),
        count=getattr(args, "count", 400),
        size=args.size,
        seed=getattr(args, "phantom_seed", 0),
    )
    if args.source == "siim":
        print(f"RLE format: {manifest.info.get('rle_format')}")
    for name, reason in manifest.skipped[:_SHOWN_SKIPPED]:
        print(f"skipped {shown(name)}: {shown(reason)}")
    if len(manifest.skipped) > _SHOWN_SKIPPED:
        print(f"... and {len(manifest.skipped) - _SHOWN_SKIPPED} more skipped (listed in the pack's report)")

    bar = None
    skipped_now = 0

    def on_skipped(sample_id: str, reason: str) -> None:
        # --skip-bad: each file named as it is skipped (its reason starts with the file), above the bar
        nonlocal skipped_now
        skipped_now += 1
        if skipped_now <= _SHOWN_SKIPPED:
            (print if bar is None else bar.write)(f"skipped {shown(reason)}")

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
        info = pack_manifest(manifest, args.out, config, force=args.force, progress=progress, on_skipped=on_skipped)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {info.path} ({info.size} px, {sum(info.counts.values())} pairs)")
    exclusion = info.report.get("exclusion")
    if exclusion:
        print(f"excluded {exclusion['excluded']} images listed in {exclusion['list']}")
        if exclusion["unknown"]:
            names = ", ".join(shown(i) for i in exclusion["unknown_ids"][:10])
            more = f" and {exclusion['unknown'] - 10} more" if exclusion["unknown"] > 10 else ""
            print(f"{exclusion['unknown']} ids of {exclusion['list']} are not in the source (ignored): {names}{more}")
    n_skipped = int(info.report.get("n_skipped", 0))
    if n_skipped:
        print(f"{n_skipped} skipped (see `python -m pneumo info {info.path}`)")
    print(info.format_report())
    return 0
