"""``python -m pneumo info PACK``: the split report and attributes of a pack."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``info``."""
    p = sub.add_parser("info", help="show a pack's split report and attributes")
    p.add_argument("pack", type=Path)
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--verify", action="store_true",
                   help="also read every image, mask and id (every chunk): damaged rows are listed and the "
                        "command exits with status 2")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report (no TensorFlow, no image data read; with ``--verify`` every chunk is read)."""
    from pneumo.ingest.manifest import shown
    from pneumo.store.pack import SPLITS, read_info, read_sources

    info = read_info(args.pack)
    problems = _verify(args.pack) if args.verify else None
    refs = {s: read_sources(args.pack, s) for s in SPLITS}
    has_refs = all(r is not None for r in refs.values())
    sample = next((r[0] for r in refs.values() if r), None)
    if args.json:
        print(json.dumps({"path": str(info.path), "size": info.size, "counts": info.counts,
                          "positive_fractions": info.positive_fractions,
                          "attrs": {k: v for k, v in info.attrs.items() if k != "report"},
                          "report": info.report, "source_references": has_refs,
                          "source_reference_sample": sample.__dict__ if sample else None,
                          **({} if problems is None else {"damaged_rows": problems})},
                         indent=2, default=str))
        if problems:
            _verified(args.pack, problems, echo=False)  # they are in the JSON: only the exit status
        return 0
    print(f"{info.path}: {info.size}x{info.size} px, source {info.attrs.get('source')}, "
          f"split seed {info.attrs.get('seed')}, created {info.attrs.get('created')}")
    print(info.format_report())
    if has_refs:
        example = f" (e.g. {sample.path}, {sample.width}x{sample.height} px)" if sample else ""
        identity = " with each file's size, time and SHA-256" if sample and sample.size is not None else ""
        print(f"source references: yes{identity}{example}")
    else:
        print("source references: no (packed before pneumo recorded where each image came from)")
    if "dicom_window" in info.attrs:
        print(f"DICOM window: {info.attrs['dicom_window']}")
    report = info.report
    exclusion = report.get("exclusion")
    if exclusion:
        print(f"excluded: {exclusion['excluded']} (list {exclusion['list']}; "
              f"{exclusion['unknown']} ids of the list not in the source)")
    skipped = report.get("skipped", [])
    for key, value in sorted((report.get("info") or {}).items()):
        print(f"{key}: {value}")
    n_skipped = int(report.get("n_skipped", len(skipped)))
    if skipped:
        print(f"skipped ({n_skipped}):")
        for name, reason in skipped:
            print(f"  {shown(name)}: {shown(reason)}")
        if n_skipped > len(skipped):
            print(f"  ... and {n_skipped - len(skipped)} more (dataset 'skipped' in the pack)")
    if problems is not None:
        _verified(args.pack, problems)
    return 0


def _verify(path: Path) -> list[str]:
    """Every chunk of the pack read, with a progress bar on a terminal: the damaged rows."""
    import sys

    from tqdm import tqdm

    from pneumo.store.pack import Pack

    with Pack(path) as pack, tqdm(unit="row", desc=f"verifying {path.name}", file=sys.stderr,
                                  disable=not sys.stderr.isatty()) as bar:
        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        return pack.verify(progress)


def _verified(path: Path, problems: list[str], echo: bool = True) -> None:
    """Print the damaged rows (``echo``); :class:`PackFormatError` (exit status 2) when there is one."""
    from pneumo.errors import PackFormatError

    for line in problems if echo else ():
        print(f"damaged: {line}")
    if problems:
        raise PackFormatError(f"{path}: damaged pack: {len(problems)} unreadable row(s) (first: {problems[0]}); "
                              "pack it again from its source")
    if echo:
        print("verified: every image, mask and id reads")
