"""``python -m pneumo review RUN_DIR``: review progress and verdict export, from the command line.

The review page stores verdicts in ``RUN_DIR/reviews.sqlite``; this prints how far the review
of a split has gone (per category) and exports the verdicts as CSV, e.g. on a cluster where
the app is not running.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``review``."""
    p = sub.add_parser("review", help="show review progress of a run and export verdicts as CSV")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="split (default test)")
    p.add_argument("--export", type=Path, default=None, metavar="CSV", help="write the verdicts to this CSV file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print per-category progress from the cached cases; export when asked (no TensorFlow)."""
    from collections import Counter

    from pneumo.errors import InputError
    from pneumo.predict import read_cases_csv
    from pneumo.review import DB_NAME, VerdictStore

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run folder not found")
    if not (run_dir / DB_NAME).exists() and args.export is None:
        print(f"{run_dir}: no reviews yet ({DB_NAME} not found); review on the app's Review page")
        return 0
    store = VerdictStore.for_run(run_dir)
    verdicts = store.all(run_dir.name, args.split)
    cases_csv = run_dir / f"cases_{args.split}.csv"
    cases = read_cases_csv(cases_csv)
    if cases:
        ids = [str(row["id"]) for row in cases]
        category = {str(row["id"]): str(row["category"]) for row in cases}
        done = {v.image_id for v in verdicts if v.verdict}
        totals = Counter(category.values())
        reviewed = Counter(category[i] for i in done if i in category)
        print(f"{run_dir.name}, {args.split}: {len(done & set(ids))} of {len(ids)} cases reviewed")
        for cat in ("FP", "FN", "TP", "TN"):
            print(f"  {cat}: {reviewed[cat]} of {totals[cat]}")
    else:
        print(f"{run_dir.name}, {args.split}: {sum(1 for v in verdicts if v.verdict)} verdicts "
              f"(run `python -m pneumo evaluate {run_dir}` for per-category progress)")
    counts = Counter(v.verdict for v in verdicts if v.verdict)
    for verdict, n in counts.most_common():
        print(f"  {verdict}: {n}")
    if args.export is not None:
        n = store.export_csv(args.export, run_dir.name, args.split)
        print(f"wrote {n} rows to {args.export}")
    return 0
