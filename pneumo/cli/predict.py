"""``python -m pneumo predict RUN_DIR INPUT...``: masks and overlays for new X-rays."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``predict``."""
    from pneumo.store.run import CHECKPOINTS, CONFIG, checkpoint_file

    p = sub.add_parser("predict", help="predict PNG/JPEG/DICOM files or folders: mask and overlay PNGs, SIIM CSV")
    files = "/".join(map(checkpoint_file, CHECKPOINTS))
    p.add_argument("run_dir", type=Path, help=f"run folder (with {CONFIG} and {files})")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("predictions"),
                   help="folder for <stem>_mask.png and <stem>_overlay.png (default ./predictions)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="best", help="model file (default best)")
    p.add_argument("--siim-csv", type=Path, default=None, metavar="OUT.csv",
                   help="also write a Kaggle submission (ImageId,EncodedPixels at the original resolution)")
    p.add_argument("--batch-size", type=int, default=16, help="images per prediction batch (default 16)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes decoding the inputs and writing the outputs around the model "
                        "(default: one per core; 0: all in this process)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false",
                   help="write the masks (and CSV) only, no <stem>_overlay.png (the costliest file to write)")
    p.add_argument("--force", action="store_true", help="replace masks, overlays or the CSV that exist already")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict, write the PNGs (and CSV), print presence and score per input."""
    from pneumo.predict import predict_files

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # made once the workers run: tqdm's monitor thread would make them spawn, not fork
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc="predicting", leave=False)
        bar.update(done - bar.n)

    try:
        results = predict_files(args.run_dir, args.inputs, args.out, args.checkpoint, args.siim_csv,
                                batch_size=args.batch_size, progress=progress, workers=args.workers,
                                force=args.force, overlays=args.overlays)
    finally:
        if bar is not None:
            bar.close()
    width = max(len(r["input"]) for r in results)
    print(f"{'input':<{width}}  present  score   area px")
    for r in results:
        print(f"{r['input']:<{width}}  {'yes' if r['present'] else 'no':<7}  {r['score']:.3f}  {r['area']}")
    n = sum(r["present"] for r in results)
    outputs = "masks and overlays" if args.overlays else "masks"
    print(f"{n} of {len(results)} with pneumothorax (triplet: {results[0]['triplet_source']}); "
          f"{outputs} in {args.out}")
    if args.siim_csv is not None:
        print(f"wrote {args.siim_csv}")
    return 0
