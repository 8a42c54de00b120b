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
    p.add_argument("--batch-size", type=int, default=8, help="images per prediction batch (default 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict, write the PNGs (and CSV), print presence and score per input."""
    from tqdm import tqdm

    from pneumo.predict import predict_files

    with tqdm(unit="img", desc="predicting", leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        results = predict_files(args.run_dir, args.inputs, args.out, args.checkpoint, args.siim_csv,
                                batch_size=args.batch_size, progress=progress)
    width = max(len(r["input"]) for r in results)
    print(f"{'input':<{width}}  present  score   area px")
    for r in results:
        print(f"{r['input']:<{width}}  {'yes' if r['present'] else 'no':<7}  {r['score']:.3f}  {r['area']}")
    n = sum(r["present"] for r in results)
    print(f"{n} of {len(results)} with pneumothorax (triplet: {results[0]['triplet_source']}); "
          f"masks and overlays in {args.out}")
    if args.siim_csv is not None:
        print(f"wrote {args.siim_csv}")
    return 0
