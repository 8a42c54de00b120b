"""Which runs can be reviewed, and the one a review opens: the best finished run.

No streamlit, no TensorFlow. A run's *dev score* is the validation Dice (on the dev split) of
the epoch whose weights ``best.keras`` holds (the lowest validation loss): what training
recorded for that checkpoint in ``history.csv`` (:func:`pneumo.store.run_list.list_runs`).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pneumo.store import predictions
from pneumo.store.run import RunFolder, checkpoint_file


def reviewable_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """Run folders holding a model (a checkpoint) or cached predictions, newest first."""
    if runs_dir is None:
        from pneumo import settings

        runs_dir = settings.runs_dir()
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.is_dir() and (RunFolder(d).checkpoints() or predictions.has_predictions(d)):
            out.append(d)

    def _key(d: Path) -> float:
        with contextlib.suppress(OSError):
            folder = RunFolder(d)
            return max(p.stat().st_mtime for p in [d, *map(folder.checkpoint, folder.checkpoints())])
        return 0.0

    return sorted(out, key=_key, reverse=True)


def run_label(path: Path) -> str:
    """``"run-... (finished)"``: the run's name and the state in its ``status.json``."""
    try:
        from pneumo.store.run import read_status

        state = read_status(path).get("state", "")
    except Exception:  # a damaged status file must not hide the run
        state = ""
    return f"{path.name}  ({state})" if state else path.name


@dataclass(frozen=True)
class RunChoice:
    """The run a review opens (``path``; None when there is none) and ``why``, one sentence
    fragment ("the finished run with the highest dev score (val Dice 0.842, epoch 8) ...")."""

    path: Path | None
    why: str
    dev_score: float | None = None


@dataclass(frozen=True)
class _Candidate:
    path: Path
    state: str
    has_best: bool
    has_checkpoint: bool
    score: float | None
    epoch: int | None
    order: int  # position in newest-first order: ties go to the newest


def _candidates(runs: Sequence[Path]) -> list[_Candidate]:
    from pneumo.store.run_list import list_runs

    infos = {}
    for parent in dict.fromkeys(Path(d).parent for d in runs):
        infos.update({info.path.resolve(): info for info in list_runs(parent)})  # never raises
    out = []
    for k, d in enumerate(runs):
        d = Path(d)
        info = infos.get(d.resolve())
        score = info.best_val_dice if info is not None else None
        if not isinstance(score, (int, float)) or score != score:
            score = None  # a damaged history gives no score: ranked last, never an error
        out.append(_Candidate(d, info.state if info else "", RunFolder(d).checkpoint("best").is_file(),
                              bool(RunFolder(d).checkpoints()), score, info.best_epoch if info else None, k))
    return out


def _score_text(c: _Candidate) -> str:
    if c.score is None:
        return "no dev score recorded"
    return f"val Dice {c.score:.3f}" + (f" at epoch {c.epoch}" if c.epoch is not None else "")


def best_run(runs: Sequence[Path]) -> RunChoice:
    """The run a new review session opens, from ``runs`` (newest first, as
    :func:`reviewable_runs` lists them), and why.

    The finished runs holding ``best.keras`` come first, ranked by dev score (highest first;
    a run without one last; ties to the newest); else any run with ``best.keras`` (stopped,
    failed, still training) ranked the same way; else the newest with any checkpoint; else the
    newest with cached predictions. A run stopped early (a low dev score) never wins over a
    finished one.
    """
    cands = _candidates(runs)
    best = checkpoint_file("best")

    def ranked(pool: list[_Candidate]) -> list[_Candidate]:
        return sorted(pool, key=lambda c: (c.score is None, -(c.score or 0.0), c.order))

    finished = ranked([c for c in cands if c.has_best and c.state == "finished"])
    if finished:
        c = finished[0]
        of = f" of {len(finished)} finished runs" if len(finished) > 1 else ""
        return RunChoice(c.path, f"the finished run with the highest dev score ({_score_text(c)}) and a {best}{of}",
                         c.score)
    with_best = ranked([c for c in cands if c.has_best])
    if with_best:
        c = with_best[0]
        return RunChoice(c.path, f"no run has finished; the {c.state or 'unknown-state'} run with the highest dev "
                                 f"score ({_score_text(c)}) and a {best}", c.score)
    for c in cands:
        if c.has_checkpoint:
            return RunChoice(c.path, f"the newest run with a checkpoint (none has a {best})", c.score)
    if cands:
        return RunChoice(cands[0].path, "the newest run with cached predictions (none has a checkpoint)")
    return RunChoice(None, "no run to review")
