"""``python -m pneumo review RUN_DIR``: review progress and verdict export, from the command line.

The review page stores verdicts in ``RUN_DIR/reviews.sqlite``; this prints how far the review
of a split has gone (per category) and exports the verdicts as CSV, e.g. on a cluster where
the app is not running. ``--reader NAME`` restricts progress and export to one reader;
``--agreement`` prints, per pair of readers, the cases both judged, observed agreement,
Cohen's kappa (overall and per category) and the cases where they disagree.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from pneumo.config import SPLITS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``review``."""
    p = sub.add_parser("review", help="show review progress of a run and export verdicts as CSV")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=SPLITS, help="split (default test)")
    p.add_argument("--export", type=Path, default=None, metavar="CSV",
                   help="write the verdicts to this CSV file (one row per case and reader)")
    p.add_argument("--force", action="store_true", help="replace an existing --export file")
    p.add_argument("--reader", default=None, metavar="NAME",
                   help="only this reader's reviews (default: every reader); 'unnamed' for reviews saved without a name")
    p.add_argument("--agreement", action="store_true",
                   help="print agreement and Cohen's kappa per pair of readers, per category, and where they disagree")
    p.set_defaults(func=run)


def _categories(run_dir: Path, split: str) -> tuple[dict[str, str], str] | None:
    """Category per id under the run's thresholds (the one rule the Review page uses too:
    :func:`pneumo.store.thresholds.run_thresholds`, the thresholds saved with the run, else the
    dev-tuned triplet) from the cached predictions when they are fresh for the pack, else from
    the case table ``evaluate`` wrote (dev-tuned); and a line saying which."""
    from pneumo.review.cases import ReviewData
    from pneumo.store import predictions, thresholds

    if predictions.freshness(run_dir, split, None).fresh:
        data = ReviewData(run_dir, split)
        chosen = thresholds.run_thresholds(run_dir, data.size, data.checkpoint)
        cases = data.evaluate(chosen.triplet).cases
        how = {"chosen": "chosen on the Review page and saved with the run", "dev-tuned": "tuned on dev",
               "default": "plain 0.5 thresholding: the run was never evaluated"}[chosen.source]
        line = f"triplet: {thresholds.describe(chosen.triplet, data.size)} ({chosen.origin}), {how}"
        return {str(i): str(c) for i, c in zip(cases["id"], cases["category"])}, line
    rows = predictions.read_cases(run_dir, split)
    if not rows:
        return None
    line = f"categories from {predictions.cases_path(run_dir, split).name} (the dev-tuned triplet"
    if thresholds.thresholds_path(run_dir).is_file():
        line += f"; the thresholds saved with the run need fresh predictions: run `python -m pneumo evaluate {run_dir} --split {split}`"
    return {str(r["id"]): str(r["category"]) for r in rows}, line + ")"


def run(args: argparse.Namespace) -> int:
    """Print per-category progress (no TensorFlow); export when asked."""
    from collections import Counter

    from pneumo._io import refuse_existing
    from pneumo.settings import check_writable
    from pneumo.errors import InputError
    from pneumo.store.verdicts import DB_NAME, VerdictStore, check_reader

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run folder not found")
    # reviews are keyed by the run folder's name; "." or "runs/first/.." must name it too
    run_dir = Path(os.path.abspath(run_dir))
    if args.export is not None:  # before any work: a refused export is the whole answer
        refuse_existing(args.export, args.force)
        check_writable(args.export.parent)
    reader = check_reader(args.reader) if args.reader is not None else None
    found = _categories(run_dir, args.split)
    if not (run_dir / DB_NAME).exists():
        print(f"{args.run_dir}: no reviews yet ({DB_NAME} not found); review on the app's Review page")
        if found:
            print(f"  {found[1]}")
        if args.export is not None:  # nothing to export, and no empty review file made for it
            print(f"nothing to export; {args.export} not written")
        return 0
    store = VerdictStore(run_dir / DB_NAME, read_only=True)  # progress and export only read
    verdicts = store.verdicts(run_dir.name, args.split, reader)
    done = {v.image_id for v in verdicts}  # a verdict or a note: what the page counts and exports
    readers = store.readers(run_dir.name, args.split)
    if reader is not None:
        print(f"reader: {reader}" + ("" if reader in readers else " (no reviews yet)"))
    else:
        print(f"readers: {', '.join(readers) if readers else 'none yet'}")
    if found:
        category, line = found
        totals = Counter(category.values())
        reviewed = Counter(category[i] for i in done if i in category)
        print(f"{run_dir.name}, {args.split}: {len(done & set(category))} of {len(category)} cases reviewed")
        print(f"  {line}")
        for cat in ("FP", "FN", "TP", "TN"):
            print(f"  {cat}: {reviewed[cat]} of {totals[cat]}")
    else:
        print(f"{run_dir.name}, {args.split}: {len(done)} reviews "
              f"(run `python -m pneumo evaluate {run_dir}` for per-category progress)")
    if found:
        moved = sorted((v.image_id, v.category, found[0][v.image_id]) for v in verdicts
                       if v.verdict and v.category and v.image_id in found[0] and found[0][v.image_id] != v.category)
        if moved:
            shown = ", ".join(f"{i} ({then} then, {now} now)" for i, then, now in moved[:5])
            print(f"  {len(moved)} verdict{'s' if len(moved) != 1 else ''} given under another category than the "
                  f"case has now: {shown}{' ...' if len(moved) > 5 else ''}")
    counts = Counter((v.category or "?", v.verdict) for v in verdicts if v.verdict)
    for cat in (*("FP", "FN", "TP", "TN"), "?"):
        given = [(verdict, n) for (c, verdict), n in counts.most_common() if c == cat]
        if given:
            print(f"  verdicts given under {cat if cat != '?' else 'an unrecorded category'}: "
                  + ", ".join(f"{verdict} {n}" for verdict, n in given))
    if args.agreement:
        _print_agreement(store.verdicts(run_dir.name, args.split))
    if args.export is not None:
        n = store.export_csv(args.export, run_dir.name, args.split, reader, force=args.force)
        print(f"wrote {n} rows to {args.export}")
    return 0


def _print_agreement(rows: list) -> None:
    """Per pair of readers: overall then per category, with the cases they disagree on."""
    from pneumo.review.agreement import agreement_rows, reader_agreement

    table = agreement_rows(reader_agreement(rows))
    if not table:
        print("agreement: needs verdicts from at least two readers")
        return
    print("agreement (cases both judged, observed agreement, Cohen's kappa; '-' = undefined):")

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    for r in table:
        pair = f"{r['reader_a']} vs {r['reader_b']}" if r["category"] == "overall" else ""
        ids = ", ".join(r["disagree_ids"][:8]) + (" ..." if len(r["disagree_ids"]) > 8 else "")
        print(f"  {pair:<24} {r['category']:<8} n={r['n']:<4} agreement {num(r['observed']):>4}  "
              f"kappa {num(r['kappa']):>5}  disagree {r['disagree']}" + (f": {ids}" if ids else ""))
