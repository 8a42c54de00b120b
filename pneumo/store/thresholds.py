"""The post-processing chosen for a run: ``RUN/thresholds.json``, the one owner of that file.

The thresholds a reader chooses on the Review page (pixel threshold, top threshold, minimum
area: a :class:`pneumo.evaluate.Triplet`) belong to the run, not to one browser session: the
page saves them here on every change, and the page and ``python -m pneumo review`` both count
categories with :func:`run_thresholds`. Without the file a run uses its dev-tuned triplet (the
one rule of :func:`pneumo.store.predictions.run_triplet`); removing the file
(:func:`clear_thresholds`, the page's "Reset to the dev-tuned triplet") goes back to it.

File: ``{"triplet": {pixel_threshold, top_threshold, min_area, size, min_area_fraction},
"checkpoint": "best"|"last"|null, "reader": str|null, "saved": iso}``, written atomically.
``min_area`` counts pixels at ``size``; a reader at another size rescales it
(:meth:`pneumo.evaluate.Triplet.from_dict`). A damaged file is named, never read as defaults.
No streamlit, no TensorFlow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumo import evaluate as ev
from pneumo._io import atomic_write_json, load_json, now_iso
from pneumo.errors import InputError
from pneumo.store.predictions import run_triplet

THRESHOLDS = "thresholds.json"
#: Where a run's triplet came from (:attr:`RunThresholds.source`).
SOURCES = ("chosen", "dev-tuned", "default")


def thresholds_path(run_dir: str | os.PathLike) -> Path:
    """``RUN/thresholds.json``."""
    return Path(run_dir) / THRESHOLDS


@dataclass(frozen=True)
class RunThresholds:
    """A run's post-processing: ``triplet`` (at the size asked for) and where it came from.

    ``source``: ``"chosen"`` (saved in ``thresholds.json``), ``"dev-tuned"`` (tuned on dev by
    ``evaluate``: ``origin`` names the metrics file) or ``"default"`` (plain 0.5 thresholding:
    the run was never evaluated). ``dev_tuned`` is what Reset returns to, ``dev_origin`` its file.
    ``saved``: the file's ``reader`` and ``saved`` fields for a chosen triplet, else ``{}``."""

    triplet: ev.Triplet
    source: str
    origin: str
    dev_tuned: ev.Triplet
    dev_origin: str
    saved: dict[str, Any]

    @property
    def is_dev_tuned(self) -> bool:
        """Whether the triplet in use equals the dev-tuned one (saved or not)."""
        return self.triplet == self.dev_tuned


def read_saved(run_dir: str | os.PathLike, size: int | None = None) -> tuple[ev.Triplet, dict[str, Any]] | None:
    """The saved triplet (``min_area`` rescaled to ``size`` when given) and the file's other
    fields, or None while there is no file. :class:`InputError` naming a damaged file."""
    path = thresholds_path(run_dir)
    data, problem = load_json(path)
    if problem == "missing":
        return None
    try:
        if problem is not None:
            raise InputError(problem)
        if not isinstance(data, dict) or not isinstance(data.get("triplet"), dict):
            raise InputError("no triplet object")
        triplet = ev.Triplet.from_dict(data["triplet"], size=size)
    except InputError as e:
        raise InputError(f"{path}: damaged thresholds ({e}); reset to the dev-tuned triplet to replace it") from None
    return triplet, {k: data.get(k) for k in ("checkpoint", "reader", "saved")}


def save_thresholds(run_dir: str | os.PathLike, triplet: ev.Triplet, size: int, *, checkpoint: str | None = None,
                    reader: str | None = None) -> Path:
    """Save ``triplet`` (``min_area`` in pixels of ``size``) as the run's thresholds, atomically.
    :class:`InputError` naming the file when the run folder cannot be written (read-only)."""
    path = thresholds_path(run_dir)
    if not Path(run_dir).is_dir():
        raise InputError(f"{run_dir}: run folder not found")
    try:
        atomic_write_json(path, {"triplet": triplet.to_dict(int(size)), "checkpoint": checkpoint, "reader": reader,
                                 "saved": now_iso()})
    except OSError as e:
        raise InputError(f"{path}: cannot save the thresholds ({e.strerror or type(e).__name__}); "
                         "they apply to this session only") from None
    return path


def clear_thresholds(run_dir: str | os.PathLike) -> bool:
    """Remove the run's saved thresholds (back to the dev-tuned triplet); False when there were
    none. :class:`InputError` naming the file when it cannot be removed."""
    path = thresholds_path(run_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        raise InputError(f"{path}: cannot remove the saved thresholds ({e.strerror or type(e).__name__})") from None
    return True


def run_thresholds(run_dir: str | os.PathLike, size: int | None = None, checkpoint: str | None = None
                   ) -> RunThresholds:
    """The run's post-processing, one rule for the Review page and ``pneumo review``: the saved
    thresholds when there are some, else the dev-tuned triplet
    (:func:`pneumo.store.predictions.run_triplet` with ``checkpoint``). ``min_area`` at ``size``.
    :class:`InputError` naming a damaged thresholds or metrics file."""
    tuned, origin = run_triplet(run_dir, size, checkpoint)
    dev_source = "default" if origin == "default" else "dev-tuned"
    saved = read_saved(run_dir, size)
    if saved is None:
        return RunThresholds(tuned, dev_source, origin, tuned, origin, {})
    return RunThresholds(saved[0], "chosen", THRESHOLDS, tuned, origin, saved[1])


def all_empty(triplet: ev.Triplet, size: int) -> bool:
    """Whether ``triplet`` calls no image of ``size`` x ``size`` pixels positive: a minimum area
    above the pixel count (the tuning grid's all-empty candidate)."""
    return int(triplet.min_area) > int(size) * int(size)


def describe(triplet: ev.Triplet, size: int) -> str:
    """``"pixel > 0.50, top > 0.50, min area 4 px"`` (and ``"(all-empty: ...)"`` when it is)."""
    text = (f"pixel > {triplet.pixel_threshold:.2f}, top > {triplet.top_threshold:.2f}, "
            f"min area {triplet.min_area} px")
    if all_empty(triplet, size):
        text += f" (all-empty: above the {size}x{size} = {size * size} px of an image, nothing is called positive)"
    return text
