"""Exclusion lists: the ids a pack (``pneumo pack --exclude``) or a run (``pneumo train --exclude``) leaves out.

The list is a CSV with an ``id`` column: the relabel list ``pneumo curate`` writes (columns
id, source, category, verdicts, notes) or any hand-made file; only ``id`` is read. Cells
written through :func:`pneumo._io.csv_cell` (a leading ``'`` before ``= + - @``) are read back
with :func:`pneumo._io.csv_value`.

A pack leaves the ids out before splitting. A run leaves them out of the pack's train and dev
splits (:func:`pack_exclusion`) but never out of test, so its test score stays comparable with
runs on the whole pack; it records what it left out in ``RUN/excluded.json`` and a resumed run
refuses a list whose ids changed (:func:`check_recorded`).
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pneumo._io import atomic_write_json, csv_value, load_json, now_iso
from pneumo.errors import InputError

__all__ = ["Exclusion", "apply_exclusion", "read_exclude_list", "PackExclusion", "pack_exclusion",
           "EXCLUDED_RECORD", "EXCLUDED_SPLITS", "record_exclusion", "check_recorded"]

EXCLUDED_RECORD = "excluded.json"  # in a run folder: what ``train --exclude`` left out
# The splits a run filters; test never is, so test scores of runs with and without a list compare.
EXCLUDED_SPLITS = ("train", "dev")

_REPORT_IDS = 50  # ids listed in a pack's report attribute (all excluded ids are in a dataset)


def read_exclude_list(path: str | os.PathLike) -> list[str]:
    """The ids of an exclusion CSV, in file order without duplicates (blank cells ignored).

    Raises ``InputError`` naming the file when it is missing, unreadable, not UTF-8 text or has
    no ``id`` column (header names are matched after trimming spaces, case-sensitively).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: exclusion list not found" if not path.exists() else f"{path}: exclusion list is not a file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, None) or []]
            if "id" not in header:
                raise InputError(
                    f"{path}: exclusion list has no 'id' column (found {header or 'no header'}); "
                    "expected a CSV such as the relabel list `pneumo curate` writes"
                )
            col = header.index("id")
            ids = [csv_value(row[col].strip()) for row in reader if len(row) > col and row[col].strip()]
    except InputError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read exclusion list ({type(e).__name__}: {e})") from None
    return list(dict.fromkeys(ids))


@dataclass
class Exclusion:
    """What an exclusion list did to a manifest."""

    path: str  # the list file as given
    excluded: list[str] = field(default_factory=list)  # ids removed from the source, in source order
    unknown: list[str] = field(default_factory=list)  # ids of the list that the source lacks

    def report(self) -> dict[str, Any]:
        """The pack report's entry: counts, the list's path and the first ids."""
        return {
            "list": self.path,
            "excluded": len(self.excluded),
            "excluded_ids": self.excluded[:_REPORT_IDS],
            "unknown": len(self.unknown),
            "unknown_ids": self.unknown[:_REPORT_IDS],
        }


def apply_exclusion(manifest: Any, path: str | os.PathLike) -> tuple[Any, Exclusion]:
    """``manifest`` without the samples whose id the list at ``path`` names, and what was done.

    Ids of the list that the manifest lacks (already fixed, another source, a typo) are
    reported in ``Exclusion.unknown``, never an error. The manifest is copied, not changed.
    """
    ids = read_exclude_list(path)
    wanted = set(ids)
    keep = [s for s in manifest.samples if s.id not in wanted]
    excluded = [s.id for s in manifest.samples if s.id in wanted]
    known = {s.id for s in manifest.samples}
    unknown = [i for i in ids if i not in known]
    return replace(manifest, samples=keep), Exclusion(str(Path(path).absolute()), excluded, unknown)


# --------------------------------------------------------------------------- runs
@dataclass
class PackExclusion:
    """What an exclusion list leaves out of a pack's splits while training."""

    path: str  # the list file, absolute
    ids_sha256: str  # digest of the list's sorted ids: a resumed run must see the same ones
    listed: int  # ids in the list
    indices: dict[str, np.ndarray]  # per split of EXCLUDED_SPLITS: sorted int64 positions to leave out
    ids: dict[str, list[str]]  # per split: the ids left out, in split order
    test_kept: list[str] = field(default_factory=list)  # listed ids in the test split (kept there)
    unknown: list[str] = field(default_factory=list)  # listed ids in no split of the pack

    def describe(self) -> str:
        """One line for the training log."""
        return (f"exclusion list {self.path}: {self.listed} ids; left out {len(self.ids['train'])} train and "
                f"{len(self.ids['dev'])} dev images (test is never filtered: {len(self.test_kept)} of them "
                f"kept there); {len(self.unknown)} not in the pack")

    def record(self) -> dict[str, Any]:
        """The ``excluded.json`` object: the list, every id left out per split, and the rest."""
        return {
            "list": self.path, "ids_sha256": self.ids_sha256, "listed": self.listed,
            "count": sum(len(v) for v in self.ids.values()),
            "splits": {s: {"count": len(self.ids[s]), "ids": self.ids[s]} for s in EXCLUDED_SPLITS},
            "test_kept": {"count": len(self.test_kept), "ids": self.test_kept},
            "unknown": {"count": len(self.unknown), "ids": self.unknown},
            "recorded": now_iso(),
        }


def _ids_digest(ids: list[str]) -> str:
    digest = hashlib.sha256()
    for i in sorted(set(ids)):
        digest.update(i.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def pack_exclusion(pack: str | os.PathLike, path: str | os.PathLike) -> PackExclusion:
    """Where the ids of the list at ``path`` sit in ``pack``'s train and dev splits.

    Errors (:class:`InputError`) name the list or the pack. Listed ids that the pack lacks are
    reported in ``unknown``, never an error, as for packing.
    """
    from pneumo.store.predictions import decode_ids
    from pneumo.store.pack import open_pack

    listed = read_exclude_list(path)
    wanted = set(listed)
    indices, ids, found = {}, {}, set()
    with open_pack(pack) as f:
        for split in ("train", "dev", "test"):
            split_ids = decode_ids(f[f"ids_{split}"][()], errors="replace")
            hits = [i for i, v in enumerate(split_ids) if v in wanted]
            found.update(split_ids[i] for i in hits)
            if split in EXCLUDED_SPLITS:
                indices[split] = np.asarray(hits, np.int64)
                ids[split] = [split_ids[i] for i in hits]
            else:
                test_kept = [split_ids[i] for i in hits]
    return PackExclusion(str(Path(path).absolute()), _ids_digest(listed), len(listed), indices, ids,
                         test_kept, [i for i in listed if i not in found])


def record_exclusion(run_dir: str | os.PathLike, exclusion: PackExclusion) -> None:
    """Write ``RUN/excluded.json`` (atomically): enough to rebuild the run's training data."""
    atomic_write_json(Path(run_dir) / EXCLUDED_RECORD, exclusion.record())


def check_recorded(run_dir: str | os.PathLike, exclusion: PackExclusion) -> None:
    """Refuse to resume a run whose exclusion list now names other ids than when it started.

    A run without a record passes (it had not written one yet); a damaged record fails. Only
    the ids count: notes or verdicts edited in a relabel list do not change the training data.
    """
    run_dir = Path(run_dir)
    old, problem = load_json(run_dir / EXCLUDED_RECORD)
    if problem == "missing":
        return
    if not isinstance(old, dict) or not isinstance(old.get("ids_sha256"), str):
        raise InputError(f"{run_dir / EXCLUDED_RECORD}: damaged ({problem or 'no ids_sha256'}); cannot tell "
                         f"whether {exclusion.path} still lists the ids this run left out")
    if old["ids_sha256"] != exclusion.ids_sha256:
        raise InputError(f"exclusion list {exclusion.path} changed since run {run_dir.name} started with it "
                         f"({old.get('listed')} ids then, {exclusion.listed} now, other ids); resuming would "
                         f"train on other images. Restore the list, or start a new run with it")
