"""``python -m pneumo curate RUN --split S``: the relabel list of the cases readers flagged.

Writes a CSV (id, source, category, verdicts by reader, notes) of the cases whose verdict
says the label is wrong ("label missed a pneumothorax", "label doubtful", "disagree" on a
TP/TN), which ``python -m pneumo pack ... --exclude LIST.csv`` leaves out of a new pack.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pneumo.config import SPLITS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``curate``."""
    from pneumo.store.relabel import DEFAULT_NAME
    from pneumo.store.verdicts import DB_NAME

    p = sub.add_parser("curate", help="write the relabel list of the cases reviewers flagged as label problems")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=SPLITS, help="split (default test)")
    p.add_argument("--out", type=Path, default=None, metavar="LIST.csv",
                   help=f"where to write the list (default RUN/{DEFAULT_NAME})")
    p.add_argument("--verdicts", type=Path, nargs="+", default=None, metavar="REVIEWS.sqlite",
                   help=f"review files to read, merged (e.g. one per reader's machine; default RUN/{DB_NAME})")
    p.add_argument("--pack", type=Path, default=None,
                   help="pack whose source paths fill the source column (default: the run's pack)")
    p.add_argument("--min-readers", type=int, default=1, metavar="N",
                   help="list a case only when at least N readers flagged it (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the list and say what is in it (no TensorFlow)."""
    from pneumo.review.curate import curate
    from pneumo.settings import check_writable

    if args.out is not None or args.run_dir.is_dir():  # a missing run folder is curate's to name
        check_writable(args.out.parent if args.out is not None else args.run_dir, "the relabel list is written there")
    result = curate(args.run_dir, args.split, args.out, verdict_files=args.verdicts, pack=args.pack,
                    min_readers=args.min_readers, force=args.force)
    who = ", ".join(result.readers) if result.readers else "no readers"
    print(f"{len(result.cases)} cases flagged as label problems in {args.split} "
          f"(readers: {who}; at least {args.min_readers} per case)")
    for c in result.cases[:10]:
        print(f"  {c.id} [{c.category}] {c.verdicts}")
    if len(result.cases) > 10:
        print(f"  ... and {len(result.cases) - 10} more")
    if result.sources_note:
        print(f"note: {result.sources_note}")
    print(f"wrote {result.path}")
    if result.cases:
        print(f"repack without them: python -m pneumo pack ... --exclude {result.path}")
    return 0
