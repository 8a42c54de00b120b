"""``python -m pneumo evaluate RUN_DIR``: the SIIM-ACR score of a run, with per-image cases."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pneumo.config import SPLITS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    from pneumo.store.run import CHECKPOINTS, CONFIG, checkpoint_file

    p = sub.add_parser("evaluate", help="score a run on a split (SIIM metric, confusion, AUC); caches predictions")
    files = "/".join(map(checkpoint_file, CHECKPOINTS))
    p.add_argument("run_dir", type=Path, help=f"run folder (with {CONFIG} and {files})")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="split to score (default test; the triplet is always tuned on dev)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="best", help="model file (default best)")
    p.add_argument("--batch-size", type=int, default=32, help="images per prediction batch (default 32)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes scoring predictions while the model runs (default: one per core from "
                        "2,000 images, else none; 0: none)")
    p.add_argument("--force", action="store_true", help="predict again even if the cached predictions are fresh")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--allow-changed-pack", action="store_true",
                   help="evaluate even though the pack changed since the run trained on it")
    p.set_defaults(func=run)


def _f(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def format_metrics(m: dict[str, Any]) -> str:
    """The short table printed by the command."""
    t = m.get("triplet") or {}
    size = t.get("size")
    frac = t.get("min_area_fraction")
    area = f"min area {t.get('min_area')} px" + (f" ({100 * frac:.2f}% of {size}x{size})" if frac is not None else "")
    dev = (f"tuned on dev, {m.get('dev_n_images')} images, dev score {_f(m.get('dev_siim_score'))}"
           if m.get("triplet_source") == "dev" else "default: dev split is empty")
    lines = [
        f"split {m['split']} ({m['n_images']} images, {m['n_positive']} with pneumothorax), checkpoint {m['checkpoint']}",
        f"  SIIM score (post-processed)   {_f(m['siim_score'])}    all-empty baseline {_f(m['empty_baseline'])}",
        f"  SIIM score raw (p > 0.5)      {_f(m['siim_score_raw'])}",
        f"  Dice on positive images       {_f(m['dice_positive_mean'])}",
        f"  presence  TP {m['tp']}  FP {m['fp']}  FN {m['fn']}  TN {m['tn']}"
        f"   sensitivity {_f(m.get('sensitivity'), 3)}  specificity {_f(m.get('specificity'), 3)}",
        f"  presence AUC                  {_f(m['auc'])}",
        f"  triplet ({dev}): pixel > {t.get('pixel_threshold'):.2f}, top > {t.get('top_threshold'):.2f}, {area}",
    ]
    if m["split"] == "dev":
        lines.append("  note: the triplet was tuned on this same split, so the score is optimistic")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Predict (or reuse the cache), tune on dev, score, write metrics and cases, print."""
    from pneumo.predict import evaluate_run
    from pneumo.settings import check_writable
    from pneumo.store.predictions import cases_path, metrics_path

    if args.run_dir.is_dir():  # a missing folder is evaluate_run's to name
        check_writable(args.run_dir, "evaluate writes its predictions and scores in the run folder")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc="predicting", leave=False)
        bar.update(done - bar.n)

    try:
        metrics = evaluate_run(args.run_dir, args.split, args.checkpoint, progress,
                               force=args.force, batch_size=args.batch_size,
                               allow_changed_pack=args.allow_changed_pack, workers=args.workers)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(format_metrics(metrics))
    print(f"wrote {metrics_path(args.run_dir, args.split)} and {cases_path(args.run_dir, args.split)}")
    return 0
