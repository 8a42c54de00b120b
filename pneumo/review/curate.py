"""The relabel list: cases reviewers flagged as label problems, for ``pack --exclude``.

No streamlit, no TensorFlow. ``python -m pneumo curate RUN --split S`` and the Review page
call :func:`curate`. A case is listed when at least ``min_readers`` readers gave it a verdict
of :data:`pneumo.store.verdicts.LABEL_PROBLEM_VERDICTS` (e.g. "label missed a pneumothorax" on a
false positive, "label doubtful" on a false negative). The CSV (:mod:`pneumo.store.relabel`,
columns :data:`pneumo.store.relabel.RELABEL_COLUMNS`) names each case by its pack id, the file
it was packed from (empty for packs made before source references), its category when judged,
every reader's verdict and every reader's note; ``python -m pneumo pack ... --exclude LIST.csv``
reads its ``id`` column and repacks without those cases.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pneumo.errors import InputError, PneumoError
from pneumo.store import relabel
from pneumo.store.verdicts import DB_NAME, LABEL_PROBLEM_VERDICTS, Verdict, VerdictStore

_ANY_LABEL_PROBLEM = frozenset(v for vs in LABEL_PROBLEM_VERDICTS.values() for v in vs)


@dataclass(frozen=True)
class RelabelCase:
    """One row of the relabel list."""

    id: str                       # the pack id (what `pack --exclude` matches)
    source: str                   # the image file it was packed from; "" when the pack lacks sources
    category: str                 # category when judged ("FP", or "FP/TN" when readers saw it differently)
    verdicts: str                 # "alice: label missed a pneumothorax; bob: model wrong" (by reader)
    notes: str                    # "alice: rib edge?" (readers with a note)
    flagged_by: tuple[str, ...]   # readers whose verdict is a label problem


@dataclass(frozen=True)
class RelabelList:
    """What :func:`curate` wrote."""

    path: Path
    cases: list[RelabelCase]
    readers: list[str]            # every reader with a verdict or note in the split
    sources_note: str | None      # why the source column is empty, when it is


def is_label_problem(category: str | None, verdict: str | None) -> bool:
    """Whether ``verdict`` on a case of ``category`` says its label is wrong (a row stored
    without a category is judged by the verdict alone)."""
    if not verdict:
        return False
    if category in LABEL_PROBLEM_VERDICTS:
        return verdict in LABEL_PROBLEM_VERDICTS[category]
    return verdict in _ANY_LABEL_PROBLEM


def relabel_cases(rows: Iterable[Verdict], *, sources: Mapping[str, str] | None = None,
                  min_readers: int = 1) -> list[RelabelCase]:
    """The flagged cases among review ``rows`` (one run and split, any readers), by id.

    ``sources`` maps a pack id to its source path (missing ids get ""). A case is listed when
    at least ``min_readers`` readers flagged it; its verdicts and notes columns still show
    every reader, flagging or not, so the person relabelling sees the disagreement.
    """
    if min_readers < 1:
        raise InputError(f"--min-readers must be at least 1, got {min_readers}")
    by_case: dict[str, dict[str, Verdict]] = {}
    for r in rows:
        by_case.setdefault(r.image_id, {})[r.reader] = r
    out: list[RelabelCase] = []
    for case_id in sorted(by_case):
        readers = by_case[case_id]
        flagged = tuple(sorted(n for n, r in readers.items() if is_label_problem(r.category, r.verdict)))
        if len(flagged) < min_readers:
            continue
        cats = list(dict.fromkeys(readers[n].category for n in flagged if readers[n].category))
        out.append(RelabelCase(
            id=case_id,
            source=(sources or {}).get(case_id, ""),
            category="/".join(cats),
            verdicts="; ".join(f"{n}: {readers[n].verdict}" for n in sorted(readers) if readers[n].verdict),
            notes="; ".join(f"{n}: {readers[n].note}" for n in sorted(readers) if readers[n].note),
            flagged_by=flagged,
        ))
    return out


def write_relabel_list(cases: Sequence[RelabelCase], path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``cases`` as a relabel list at ``path`` (:func:`pneumo.store.relabel.write_list`:
    atomic; an existing file is replaced only with ``force``)."""
    return relabel.write_list(path, [(c.id, c.source, c.category, c.verdicts, c.notes) for c in cases], force=force)


def read_review_rows(run: str, split: str, verdict_files: Sequence[str | os.PathLike]) -> list[Verdict]:
    """The reviews of ``run``/``split`` in several review files (e.g. one per reader's machine),
    merged: for the same case and reader, the most recently updated row wins. Files are opened
    read-only (never migrated or switched to WAL); a missing one is an :class:`InputError`."""
    merged: dict[tuple[str, str], Verdict] = {}
    for p in verdict_files:
        for r in VerdictStore(p, read_only=True).verdicts(run, split):
            key = (r.image_id, r.reader)
            if key not in merged or r.updated >= merged[key].updated:
                merged[key] = r
    return sorted(merged.values(), key=lambda r: (r.image_id, r.reader))


def pack_sources(run_dir: str | os.PathLike, split: str,
                 pack: str | os.PathLike | None = None) -> tuple[dict[str, str], str | None]:
    """``{pack id: source path}`` for a run's split, and None; or ``{}`` and the reason
    (pack not found, a pack made before source references, damaged). The pack is ``pack``,
    else the one the run's predictions were made from, else the run's config's."""
    from pneumo.review.fullres import sources_by_id
    from pneumo.store import predictions

    try:
        if pack is None:
            pack = predictions.find_pack(run_dir, predictions.predictions_pack(run_dir, split))
        refs = sources_by_id(pack, split)
    except PneumoError as e:
        return {}, f"no source paths: {e}"
    if refs is None:
        return {}, f"{pack}: packed before source references were recorded; the source column is empty"
    return {i: r.path for i, r in refs.items()}, None


def curate(run_dir: str | os.PathLike, split: str, out: str | os.PathLike | None = None, *,
           verdict_files: Sequence[str | os.PathLike] | None = None, pack: str | os.PathLike | None = None,
           min_readers: int = 1, force: bool = False) -> RelabelList:
    """Write the relabel list of a run's split (default :func:`pneumo.store.relabel.relabel_path`)
    from its review file (:data:`pneumo.store.verdicts.DB_NAME` in the run folder, or
    ``verdict_files`` merged) and return what was written. Reviews are those saved under the
    run's folder name."""
    run_dir = Path(os.path.abspath(run_dir))  # reviews are keyed by the folder's name, also for "."
    default = relabel.relabel_path(run_dir, split)  # checks the split
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run folder not found")
    if not verdict_files:
        if not (run_dir / DB_NAME).is_file():
            raise InputError(f"{run_dir}: no reviews yet ({DB_NAME} not found); review on the app's Review page")
        verdict_files = [run_dir / DB_NAME]
    rows = read_review_rows(run_dir.name, split, verdict_files)
    sources, note = pack_sources(run_dir, split, pack)
    cases = relabel_cases(rows, sources=sources, min_readers=min_readers)
    path = write_relabel_list(cases, out if out is not None else default, force=force)
    return RelabelList(path, cases, sorted({r.reader for r in rows}), note)
