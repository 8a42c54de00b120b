"""Exclusion lists: the ids a pack (``pneumo pack --exclude``) or a run (``pneumo train --exclude``) leaves out.

The list is a CSV with an ``id`` column: the relabel list ``pneumo curate`` writes or any
hand-made file, read by :func:`pneumo.store.relabel.read_list_ids` (only ``id`` is read).

A pack leaves the ids out after splitting the whole source (:func:`exclusion_of`), so every
other id keeps the split it has without the list. A run leaves them out of the pack's train and dev
splits (:func:`pack_exclusion`) but never out of test, so its test score stays comparable with
runs on the whole pack; it records what it left out in ``RUN/excluded.json`` and a resumed run
refuses a list whose ids changed (:func:`check_recorded`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumo._io import now_iso
from pneumo.errors import InputError
from pneumo.store.run import RunFolder, read_exclusion_record
from pneumo.store.relabel import read_list_ids

__all__ = ["Exclusion", "exclusion_of", "PackExclusion", "pack_exclusion",
           "EXCLUDED_SPLITS", "check_recorded"]

# The splits a run filters; test never is, so test scores of runs with and without a list compare.
EXCLUDED_SPLITS = ("train", "dev")


@dataclass
class Exclusion:
    """What an exclusion list did to a manifest."""

    path: str  # the list file as given
    excluded: list[str] = field(default_factory=list)  # ids removed from the source, in source order
    unknown: list[str] = field(default_factory=list)  # ids of the list that the source lacks



def exclusion_of(manifest: Any, path: str | os.PathLike) -> Exclusion:
    """Which samples of ``manifest`` the list at ``path`` leaves out of a pack (ids in source
    order) and which of its ids the manifest lacks; the manifest is not changed.

    Ids of the list that the manifest lacks (already fixed, another source, a typo) are
    reported in ``Exclusion.unknown``, never an error. The packer splits the whole manifest
    first and drops these ids afterwards, so every other id keeps its split.
    """
    ids = read_list_ids(path)
    wanted = set(ids)
    excluded = [s.id for s in manifest.samples if s.id in wanted]
    known = {s.id for s in manifest.samples}
    unknown = [i for i in ids if i not in known]
    return Exclusion(str(Path(path).absolute()), excluded, unknown)


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
    from pneumo.store.pack import Pack

    listed = read_list_ids(path)
    wanted = set(listed)
    indices, ids, found = {}, {}, set()
    with Pack(pack) as packed:
        for split in packed.counts:  # train, dev, test
            split_ids = packed.ids(split, errors="replace")
            hits = [i for i, v in enumerate(split_ids) if v in wanted]
            found.update(split_ids[i] for i in hits)
            if split in EXCLUDED_SPLITS:
                indices[split] = np.asarray(hits, np.int64)
                ids[split] = [split_ids[i] for i in hits]
            else:
                test_kept = [split_ids[i] for i in hits]
    return PackExclusion(str(Path(path).absolute()), _ids_digest(listed), len(listed), indices, ids,
                         test_kept, [i for i in listed if i not in found])


def check_recorded(run_dir: str | os.PathLike, exclusion: PackExclusion) -> None:
    """Refuse to resume a run whose exclusion list now names other ids than when it started.

    A run without a record passes (it had not written one yet); a damaged record fails. Only
    the ids count: notes or verdicts edited in a relabel list do not change the training data.
    """
    run_dir = Path(run_dir)
    old, problem = read_exclusion_record(run_dir)
    if problem == "missing":
        return
    if not isinstance(old, dict) or not isinstance(old.get("ids_sha256"), str):
        raise InputError(f"{RunFolder(run_dir).exclusion_record}: damaged ({problem or 'no ids_sha256'}); cannot tell "
                         f"whether {exclusion.path} still lists the ids this run left out")
    if old["ids_sha256"] != exclusion.ids_sha256:
        raise InputError(f"exclusion list {exclusion.path} changed since run {run_dir.name} started with it "
                         f"({old.get('listed')} ids then, {exclusion.listed} now, other ids); resuming would "
                         f"train on other images. Restore the list, or start a new run with it")
