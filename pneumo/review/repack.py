"""The command that repacks a pack without the cases of a relabel list, from what the pack recorded.

No streamlit, no TensorFlow. A pack records its source kind (``source``), the split options
(``split``: a :class:`pneumo.config.SplitConfig`), ``size``, ``compression``, ``dicom_window``
and, in its report, what the source found: the folders or DICOM tree and label CSV it was
given (packs made since these were recorded), the RLE format, the demo phantoms' seed and
count, whether files were skipped. :func:`repack_command` turns that into the
``python -m pneumo pack ...`` line with ``--exclude LIST``; what a pack does not record
becomes a placeholder (``IMAGES_DIR``) with one line saying what to fill in.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumo.config import SplitConfig


@dataclass(frozen=True)
class RepackCommand:
    """``argv`` of the command (placeholders in capitals where the pack lacks a value),
    ``missing``: one sentence per placeholder, and ``notes``: other things to know."""

    argv: list[str]
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The command as one shell line."""
        return shlex.join(self.argv)


def _number(v: float) -> str:
    return f"{v:g}"


def _split_options(attrs: dict[str, Any]) -> list[str]:
    try:
        raw = json.loads(attrs.get("split") or "{}")
        if "seed" not in raw and attrs.get("seed") is not None:
            raw["seed"] = int(attrs["seed"])  # the split's seed is also a root attribute of the pack
        split = SplitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except (TypeError, ValueError):
        split = None
    if split is None:
        return []
    out = ["--seed", str(split.seed)]
    if split.batches:
        out += ["--split-batches", ",".join(str(int(b)) for b in split.batches), "--batch-size", str(split.batch_size)]
    else:
        out += ["--split", ",".join(_number(float(p)) for p in split.proportions)]
    if split.stratify:
        out.append("--stratify")
    if split.group_by_patient:
        out.append("--group-by-patient")
    return out


def _common_folder(paths: list[str]) -> str | None:
    files = [p for p in paths if p and not p.startswith("demo:")]
    if not files:
        return None
    try:
        return os.path.commonpath([os.path.dirname(p) for p in files]) or None
    except ValueError:  # relative and absolute mixed
        return None


def _source_args(kind: str, info: dict[str, Any], attrs: dict[str, Any], sources: list[str],
                 missing: list[str]) -> list[str]:
    def given(key: str, placeholder: str, what: str, inferred: str | None = None) -> str:
        if info.get(key):
            return str(info[key])
        if inferred:
            missing.append(f"{placeholder}: the pack does not record {what}; {inferred} is the folder all its "
                           "images came from: check it is the one packed")
            return inferred
        missing.append(f"{placeholder}: the pack does not record {what} (packed before pneumo recorded it): "
                       "fill it in")
        return placeholder

    window = ["--dicom-window", str(attrs["dicom_window"])] if attrs.get("dicom_window") else []
    if kind == "folders":
        images = given("images_dir", "IMAGES_DIR", "its images folder", _common_folder(sources))
        return ["folders", images, given("masks_dir", "MASKS_DIR", "its masks folder"), *window]
    if kind == "siim":
        dicom = given("dicom_dir", "DICOM_DIR", "its DICOM folder", _common_folder(sources))
        args = ["siim", dicom, given("labels_csv", "LABELS_CSV", "its label CSV"), *window]
        if info.get("rle_format") in ("relative", "absolute"):
            args += ["--rle-format", str(info["rle_format"])]
        return args
    if kind == "demo":
        args = ["demo"]
        if info.get("samples"):
            args += ["--count", str(int(info["samples"]))]
        else:
            missing.append("COUNT: the pack does not record how many phantoms it was made from: fill it in")
            args += ["--count", "COUNT"]
        return args + ["--phantom-seed", str(int(info.get("seed") or 0))]
    missing.append(f"SOURCE: the pack's source kind {kind!r} is not one `pneumo pack` knows: fill in the source")
    return ["SOURCE"]


def repack_command(pack_path: str | os.PathLike, exclude: str | os.PathLike, out: str | os.PathLike | None = None,
                   *, python: str = "python") -> RepackCommand:
    """``python -m pneumo pack <source> ... --out OUT --exclude LIST``: the pack at
    ``pack_path`` made again from its recorded source and options, without the ids listed in
    ``exclude``. ``out`` defaults to ``<pack stem>-clean.h5`` beside the pack.
    :class:`pneumo.errors.InputError` (via :func:`pneumo.store.pack.read_info`) for an unreadable pack."""
    from pneumo.config import SPLITS
    from pneumo.store.pack import read_info, read_sources

    pack_path = Path(pack_path)
    info = read_info(pack_path)
    attrs, report = info.attrs, info.report
    found = report.get("info") if isinstance(report.get("info"), dict) else {}
    kind = str(attrs.get("source") or report.get("source") or "")
    sources: list[str] = []
    for split in SPLITS:
        refs = read_sources(pack_path, split)
        sources += [r.path for r in refs or ()]
    missing: list[str] = []
    notes: list[str] = []
    argv = [python, "-m", "pneumo", "pack", *_source_args(kind, found, attrs, sources, missing)]
    out = Path(out) if out is not None else pack_path.with_name(f"{pack_path.stem}-clean.h5")
    argv += ["--out", str(out), "--size", str(info.size), *_split_options(attrs)]
    if attrs.get("compression") not in (None, "", "none"):
        argv += ["--compression", str(attrs["compression"])]
    if int(report.get("n_skipped") or 0):
        argv.append("--skip-bad")
        notes.append(f"the pack skipped {int(report['n_skipped'])} unreadable files: --skip-bad skips them again")
    if attrs.get("exclude_list"):
        notes.append(f"the pack already left out the ids of {attrs['exclude_list']}: add them to the new list, "
                     "or they come back")
    argv += ["--exclude", str(exclude)]
    return RepackCommand(argv, missing, notes)
