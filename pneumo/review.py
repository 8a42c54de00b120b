"""Reviewing a model's predictions case by case, as a radiologist would: the model of a session.

No streamlit and no TensorFlow: the review page (``pages/review.py``) is a thin view over this.

* :class:`ReviewData` reads a run's cached predictions (``RUN/predictions_<split>.h5``,
  written by ``python -m pneumo evaluate``) and the pack's images and masks for that split,
  lazily: per-image histograms once (:func:`pneumo.evaluate.prob_stats`), then any triplet is
  re-scored in milliseconds by :func:`pneumo.evaluate.evaluate_stats`; pixels are read only
  for the cases shown.
* :func:`select`, :func:`position_label`: filter by category (FP first by default) and sort.
* :class:`VerdictStore`: the reviewer's verdicts in ``RUN/reviews.sqlite`` (WAL mode, one
  connection per operation, committed at once), so two tabs or processes never lose a click.
* :func:`start_evaluation` / :func:`evaluation_job`: the page computes missing predictions by
  launching ``python -m pneumo evaluate`` as a separate process and polling it.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import h5py
import numpy as np

from pneumo import evaluate
from pneumo._io import atomic_path, atomic_write_json, read_json
from pneumo.errors import InputError
from pneumo.split import SPLITS

CHECKPOINTS = ("best", "last")
CATEGORIES = ("FP", "FN", "TP", "TN")  # review order: false positives first
FILTERS = CATEGORIES + ("all",)
SORTS = ("most confident first", "worst Dice", "largest predicted area")

#: Verdict vocabulary per category at the time of review.
VERDICTS: dict[str, tuple[str, ...]] = {
    "FP": ("model wrong", "label missed a pneumothorax", "unsure"),
    "FN": ("model missed it", "label doubtful", "unsure"),
    "TP": ("agree", "disagree", "unsure"),
    "TN": ("agree", "disagree", "unsure"),
}
ALL_VERDICTS = tuple(dict.fromkeys(v for vs in VERDICTS.values() for v in vs))

DB_NAME = "reviews.sqlite"
EXPORT_COLUMNS = ("run", "split", "image_id", "category", "verdict", "note", "reviewer", "updated")


def predictions_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN/predictions_<split>.h5`` (the evaluation cache)."""
    return Path(run_dir) / f"predictions_{split}.h5"


def metrics_path(run_dir: str | os.PathLike, split: str) -> Path:
    """``RUN/metrics_<split>.json``."""
    return Path(run_dir) / f"metrics_{split}.json"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- runs
def run_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """Checkpoints present in a run folder, in ``CHECKPOINTS`` order (``best``, ``last``)."""
    return [c for c in CHECKPOINTS if (Path(run_dir) / f"{c}.keras").is_file()]


def reviewable_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """Run folders holding a model (``best.keras``/``last.keras``) or cached predictions, newest first."""
    if runs_dir is None:
        from pneumo import settings

        runs_dir = settings.runs_dir()
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.is_dir() and (run_checkpoints(d) or any(d.glob("predictions_*.h5"))):
            out.append(d)

    def _key(d: Path) -> float:
        with contextlib.suppress(OSError):
            return max(p.stat().st_mtime for p in [d, *d.glob("*.keras")])
        return 0.0

    return sorted(out, key=_key, reverse=True)


def cached_splits(run_dir: str | os.PathLike) -> list[str]:
    """Splits whose predictions are cached in the run folder."""
    return [s for s in SPLITS if predictions_path(run_dir, s).is_file()]


def default_triplet(run_dir: str | os.PathLike, split: str, size: int | None = None) -> evaluate.Triplet:
    """The triplet tuned on dev, as recorded in ``metrics_<split>.json`` (else ``metrics_dev.json``);
    plain 0.5 thresholding when neither has one. ``min_area`` rescaled to ``size`` when given."""
    for s in (split, "dev"):
        m = read_json(metrics_path(run_dir, s))
        if isinstance(m, dict) and isinstance(m.get("triplet"), dict):
            with contextlib.suppress(InputError):
                return evaluate.Triplet.from_dict(m["triplet"], size)
    return evaluate.DEFAULT_TRIPLET


# --------------------------------------------------------------------------- data
@dataclass
class Case:
    """One case at the pack's resolution: ``image``, ``target`` (0/255) and ``probs``
    (levels 0..255), each ``(S, S) uint8``; ``index`` into the predictions file."""

    index: int
    id: str
    image: np.ndarray
    target: np.ndarray
    probs: np.ndarray


@dataclass
class Evaluation:
    """Scores of one triplet: ``summary`` (see :func:`pneumo.evaluate.summarize`), ``cases``
    (``(N,)`` columns ``id``, ``category``, ``dice``, ``true_area``, ``pred_area``, ``score``),
    and the ROC curve of the presence score ``roc = (fpr, tpr, thresholds)``."""

    triplet: evaluate.Triplet
    summary: dict[str, Any]
    cases: dict[str, np.ndarray]
    roc: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """Images per category, ``{"FP": .., "FN": .., "TP": .., "TN": ..}``."""
        return {c: int(self.summary[c.lower()]) for c in CATEGORIES}


class ReviewData:
    """A run's cached predictions for one split, with the pack's images and masks.

    Opening reads only ids and attributes. :attr:`stats` (per-image histograms, one pass over
    the probabilities and masks) is computed on first use and kept; :meth:`evaluate` then
    costs O(N). :meth:`case` and :meth:`cases` read only the requested images.
    """

    def __init__(self, run_dir: str | os.PathLike, split: str, pack_path: str | os.PathLike | None = None):
        _check_split(split)
        self.run_dir = Path(run_dir)
        self.split = split
        self.predictions_path = predictions_path(run_dir, split)
        if not self.predictions_path.is_file():
            raise InputError(
                f"{self.predictions_path}: no cached predictions; run `python -m pneumo evaluate "
                f"{self.run_dir} --split {split}` first"
            )
        try:
            with h5py.File(self.predictions_path, "r") as f:
                if "probs" not in f or "ids" not in f:
                    raise InputError(f"{self.predictions_path}: not a predictions file (needs datasets probs and ids)")
                probs = f["probs"]
                if probs.dtype != np.uint8 or probs.ndim != 4 or probs.shape[-1] != 1:
                    raise InputError(f"{self.predictions_path}: probs must be (N, S, S, 1) uint8, got {probs.shape} {probs.dtype}")
                self.ids: list[str] = [_str(s) for s in f["ids"][()]]
                self.shape: tuple[int, int] = (int(probs.shape[1]), int(probs.shape[2]))
                self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        except OSError as e:
            raise InputError(f"{self.predictions_path}: unreadable predictions file ({e})") from None
        if len(self.ids) != int(probs.shape[0]):
            raise InputError(f"{self.predictions_path}: {len(self.ids)} ids for {probs.shape[0]} predictions")
        self.pack_path = Path(pack_path) if pack_path is not None else self._find_pack()
        self._rows = self._match_pack_rows()
        self._stats: evaluate.ProbStats | None = None

    # ---- setup
    def _find_pack(self) -> Path:
        from pneumo import settings

        candidates: list[Path] = []
        stored = self.attrs.get("pack")
        cfg = read_json(self.run_dir / "config.json")
        for p in (stored, cfg.get("pack") if isinstance(cfg, dict) else None):
            if p:
                p = Path(_str(p))
                candidates += [p] if p.is_absolute() else [p, settings.workspace() / p, self.run_dir / p]
        for p in candidates:
            if p.is_file():
                return p
        raise InputError(
            f"{self.predictions_path}: cannot find the pack it was made from "
            f"(tried {', '.join(map(str, candidates)) or 'nothing: no pack attribute or config.json'})"
        )

    def _match_pack_rows(self) -> np.ndarray:
        from pneumo import pack

        with pack.open_pack(self.pack_path) as f:
            pack_ids = [_str(s) for s in f[f"ids_{self.split}"][()]]
            size = int(f.attrs["size"])
        if (size, size) != self.shape:
            raise InputError(
                f"{self.predictions_path}: predictions are {self.shape[0]} px but the pack {self.pack_path} is {size} px"
            )
        if pack_ids == self.ids:
            return np.arange(len(self.ids))
        where = {s: i for i, s in enumerate(pack_ids)}
        missing = [s for s in self.ids if s not in where]
        if missing:
            raise InputError(
                f"{self.predictions_path}: {len(missing)} ids are not in {self.pack_path} split {self.split} "
                f"(first: {missing[0]!r}); the predictions belong to another pack"
            )
        return np.array([where[s] for s in self.ids], np.int64)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return self.shape[0]

    # ---- scoring
    @property
    def stats(self) -> evaluate.ProbStats:
        """Per-image histograms of all predictions (computed once, chunked reads)."""
        if self._stats is None:
            from pneumo import pack

            with h5py.File(self.predictions_path, "r") as fp, pack.open_pack(self.pack_path) as fk:
                Y = fk[f"Y_{self.split}"]
                identity = bool(np.array_equal(self._rows, np.arange(self.n)))
                masks = Y if identity else Y[()][self._rows]
                self._stats = evaluate.prob_stats(fp["probs"], masks, chunk=64)
        return self._stats

    def set_stats(self, stats: evaluate.ProbStats) -> None:
        """Reuse histograms computed elsewhere (e.g. a cache keyed by file mtimes)."""
        if stats.n != self.n:
            raise InputError(f"stats hold {stats.n} images, the predictions {self.n}")
        self._stats = stats

    def evaluate(self, triplet: evaluate.Triplet) -> Evaluation:
        """Every category, Dice and the summary for ``triplet`` (O(N), by :mod:`pneumo.evaluate`)."""
        summary, cases = evaluate.evaluate_stats(self.stats, triplet, self.ids)
        true_pos = cases["true_area"] > 0
        roc = evaluate.roc_curve(true_pos, cases["score"])
        return Evaluation(triplet, summary, cases, roc)

    # ---- pixels
    def cases(self, indices: Sequence[int]) -> list[Case]:
        """Read only these cases (indices into the predictions), in the given order."""
        from pneumo import pack

        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.n:
                raise InputError(f"case index {i} out of range 0..{self.n - 1}")
        if not idx:
            return []
        # h5py fancy indexing wants increasing, unique indices
        uniq = sorted(set(idx))
        rows = self._rows[uniq]
        order_rows = np.argsort(rows, kind="stable")
        with h5py.File(self.predictions_path, "r") as fp, pack.open_pack(self.pack_path) as fk:
            P = fp["probs"][uniq][..., 0] if len(uniq) > 1 else fp["probs"][uniq[0]][None, ..., 0]
            sorted_rows = rows[order_rows]
            X = fk[f"X_{self.split}"]
            Y = fk[f"Y_{self.split}"]
            if len(uniq) > 1:
                Xs, Ys = X[sorted_rows][..., 0], Y[sorted_rows][..., 0]
            else:
                Xs, Ys = X[int(sorted_rows[0])][None, ..., 0], Y[int(sorted_rows[0])][None, ..., 0]
        inv = np.empty_like(order_rows)
        inv[order_rows] = np.arange(order_rows.size)
        pos = {u: k for k, u in enumerate(uniq)}
        return [Case(i, self.ids[i], Xs[inv[pos[i]]], Ys[inv[pos[i]]], P[pos[i]]) for i in idx]

    def case(self, index: int) -> Case:
        """One case: image, target and probabilities at the pack's resolution."""
        return self.cases([index])[0]

    def default_triplet(self) -> evaluate.Triplet:
        """The dev-tuned triplet from the run's metrics (see :func:`default_triplet`)."""
        return default_triplet(self.run_dir, self.split, self.size)


# --------------------------------------------------------------------------- navigation
def confidence(cases: dict[str, np.ndarray]) -> np.ndarray:
    """How sure the model is of its own call, ``(N,) float``: the presence score for images it
    called positive, ``1 - score`` for those it called negative."""
    score = np.asarray(cases["score"], np.float64)
    called = np.asarray(cases["pred_area"]) > 0
    return np.where(called, score, 1.0 - score)


def select(cases: dict[str, np.ndarray], category: str = "FP", sort: str = SORTS[0]) -> np.ndarray:
    """Indices of the cases in ``category`` (or ``"all"``), ordered by ``sort``: ``(K,) int64``.

    ``"most confident first"``: the model's surest calls first (:func:`confidence`), so the
    most confident false positives and the most confidently missed cases lead.
    ``"worst Dice"``: lowest Dice first. ``"largest predicted area"``: biggest post-processed
    mask first. Ties keep file order, so the order is deterministic.
    """
    if category not in FILTERS:
        raise InputError(f"unknown category filter {category!r}; choose one of {', '.join(FILTERS)}")
    if sort not in SORTS:
        raise InputError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
    cat = np.asarray(cases["category"])
    idx = np.arange(cat.size) if category == "all" else np.flatnonzero(cat == category)
    conf = confidence(cases)[idx]
    if sort == SORTS[0]:
        keys = (idx, -conf)
    elif sort == SORTS[1]:
        keys = (idx, -conf, np.asarray(cases["dice"], np.float64)[idx])
    else:
        keys = (idx, -conf, -np.asarray(cases["pred_area"], np.float64)[idx])
    return idx[np.lexsort(keys)].astype(np.int64)


def position_label(category: str, position: int, total: int) -> str:
    """``("FP", 2, 41) -> "FP 3 of 41"`` (position is 0-based); ``"no FP cases"`` when empty."""
    name = "cases" if category == "all" else category
    if total <= 0:
        return f"no {name} cases" if category != "all" else "no cases"
    return f"{'case' if category == 'all' else category} {min(max(position, 0), total - 1) + 1} of {total}"


def step(position: int, total: int, delta: int) -> int:
    """Move ``delta`` cases, clamped to ``0..total-1`` (0 when empty)."""
    if total <= 0:
        return 0
    return int(min(max(position + delta, 0), total - 1))


# --------------------------------------------------------------------------- verdicts
_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    run TEXT NOT NULL,
    split TEXT NOT NULL,
    image_id TEXT NOT NULL,
    verdict TEXT,
    note TEXT NOT NULL DEFAULT '',
    category TEXT,
    reviewer TEXT,
    updated TEXT NOT NULL,
    PRIMARY KEY (run, split, image_id)
)
"""


@dataclass(frozen=True)
class Verdict:
    """One stored review row."""

    run: str
    split: str
    image_id: str
    category: str | None
    verdict: str | None
    note: str
    reviewer: str | None
    updated: str


class VerdictStore:
    """Verdicts in a SQLite file (``RUN/reviews.sqlite``), keyed by ``(run, split, image_id)``.

    WAL journal (readers never block the writer), a busy timeout for concurrent writers, one
    short-lived connection per call and a commit per change: two browser tabs or two
    processes can review the same run and no click is lost on reload.
    """

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.path}: not a usable review database ({e})") from None

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike) -> "VerdictStore":
        """The store of a run folder: ``RUN/reviews.sqlite``."""
        return cls(Path(run_dir) / DB_NAME)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            yield con
        finally:
            con.close()

    def journal_mode(self) -> str:
        """The database's journal mode (``"wal"``)."""
        with self._connect() as con:
            return str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    @staticmethod
    def _check(verdict: str | None, category: str | None) -> None:
        if category is not None and category not in VERDICTS:
            raise InputError(f"unknown category {category!r}; choose one of {', '.join(VERDICTS)}")
        if verdict is None:
            return
        allowed = VERDICTS[category] if category is not None else ALL_VERDICTS
        if verdict not in allowed:
            where = f"a {category} case" if category else "any case"
            raise InputError(f"verdict {verdict!r} is not one for {where}; choose one of {', '.join(allowed)}")

    def set_verdict(
        self,
        run: str,
        split: str,
        image_id: str,
        verdict: str | None,
        *,
        category: str | None = None,
        note: str | None = None,
        reviewer: str | None = None,
    ) -> Verdict:
        """Insert or update a case's verdict (and note, when given), committed at once.

        ``verdict`` must belong to ``category``'s vocabulary (:data:`VERDICTS`); ``None`` keeps
        the stored verdict (e.g. to save only a note). ``note=None`` keeps the stored note.
        Returns the stored row.
        """
        self._check(verdict, category)
        with self._connect() as con:
            con.execute(
                """INSERT INTO verdicts (run, split, image_id, verdict, note, category, reviewer, updated)
                   VALUES (?, ?, ?, ?, COALESCE(?, ''), ?, ?, ?)
                   ON CONFLICT (run, split, image_id) DO UPDATE SET
                     verdict = COALESCE(excluded.verdict, verdict),
                     note = COALESCE(?, note),
                     category = COALESCE(excluded.category, category),
                     reviewer = COALESCE(excluded.reviewer, reviewer),
                     updated = excluded.updated""",
                (str(run), str(split), str(image_id), verdict, note, category, reviewer, _now(), note),
            )
        got = self.get(run, split, image_id)
        assert got is not None
        return got

    def set_note(self, run: str, split: str, image_id: str, note: str, *, category: str | None = None,
                 reviewer: str | None = None) -> Verdict:
        """Save a free-text note for a case, keeping its verdict."""
        return self.set_verdict(run, split, image_id, None, category=category, note=str(note), reviewer=reviewer)

    def clear(self, run: str, split: str, image_id: str) -> None:
        """Remove a case's verdict and note."""
        with self._connect() as con:
            con.execute("DELETE FROM verdicts WHERE run=? AND split=? AND image_id=?", (str(run), str(split), str(image_id)))

    def get(self, run: str, split: str, image_id: str) -> Verdict | None:
        """The stored row of a case, or None."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT {', '.join(EXPORT_COLUMNS)} FROM verdicts WHERE run=? AND split=? AND image_id=?",
                (str(run), str(split), str(image_id)),
            ).fetchone()
        return _verdict(row) if row else None

    def all(self, run: str, split: str) -> list[Verdict]:
        """Every row of a run and split, by image id."""
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {', '.join(EXPORT_COLUMNS)} FROM verdicts WHERE run=? AND split=? ORDER BY image_id",
                (str(run), str(split)),
            ).fetchall()
        return [_verdict(r) for r in rows]

    def reviewed_ids(self, run: str, split: str) -> set[str]:
        """Ids of the cases that have a verdict."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT image_id FROM verdicts WHERE run=? AND split=? AND verdict IS NOT NULL", (str(run), str(split))
            ).fetchall()
        return {r[0] for r in rows}

    def progress(self, run: str, split: str, ids: Sequence[str]) -> tuple[int, int]:
        """``(reviewed, total)``: how many of ``ids`` have a verdict ("12 of 41 reviewed")."""
        done = self.reviewed_ids(run, split)
        return sum(1 for i in ids if str(i) in done), len(ids)

    def export_csv(self, path_or_buffer: str | os.PathLike | IO[str], run: str, split: str) -> int:
        """Write the rows of a run and split as CSV (columns :data:`EXPORT_COLUMNS`); returns
        the row count. A path is written atomically; a text buffer is written in place."""
        rows = self.all(run, split)
        if isinstance(path_or_buffer, (str, os.PathLike)):
            with atomic_path(path_or_buffer) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    _write_csv(f, rows)
        else:
            _write_csv(path_or_buffer, rows)
        return len(rows)

    def csv_text(self, run: str, split: str) -> str:
        """The export as a string (for a download button)."""
        buf = io.StringIO()
        self.export_csv(buf, run, split)
        return buf.getvalue()


def _verdict(row: Sequence[Any]) -> Verdict:
    return Verdict(*row)


def _write_csv(f: IO[str], rows: list[Verdict]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    for r in rows:
        w.writerow([r.run, r.split, r.image_id, r.category or "", r.verdict or "", r.note, r.reviewer or "", r.updated])


# --------------------------------------------------------------------------- computing predictions
def _job_path(run_dir: str | os.PathLike, split: str) -> Path:
    return Path(run_dir) / f"evaluate_{split}.json"


def _log_path(run_dir: str | os.PathLike, split: str) -> Path:
    return Path(run_dir) / f"evaluate_{split}.log"


def evaluate_command(run_dir: str | os.PathLike, split: str, checkpoint: str) -> list[str]:
    """``python -m pneumo evaluate RUN --split S --checkpoint C``; the prefix before ``evaluate``
    can be replaced by ``$PNEUMO_EVALUATE_COMMAND`` (tests use a fake)."""
    prefix = os.environ.get("PNEUMO_EVALUATE_COMMAND")
    head = shlex.split(prefix) if prefix else [sys.executable, "-m", "pneumo"]
    return [*head, "evaluate", str(run_dir), "--split", split, "--checkpoint", checkpoint]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a finished child not yet reaped is a zombie: treat as gone
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[-1][:1] == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                return False
    return True


def start_evaluation(run_dir: str | os.PathLike, split: str, checkpoint: str = "best") -> int:
    """Launch ``python -m pneumo evaluate`` for a run and split in its own session; returns the pid.

    Output goes to ``RUN/evaluate_<split>.log``; ``RUN/evaluate_<split>.json`` records the job
    so a reload or a second tab finds it. A job already running for this split is reused.
    """
    _check_split(split)
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"unknown checkpoint {checkpoint!r}; choose one of {', '.join(CHECKPOINTS)}")
    run_dir = Path(run_dir)
    if not (run_dir / f"{checkpoint}.keras").is_file() and not os.environ.get("PNEUMO_EVALUATE_COMMAND"):
        raise InputError(f"{run_dir}: no {checkpoint}.keras checkpoint to evaluate")
    job = evaluation_job(run_dir, split)
    if job and job["state"] == "running":
        return int(job["pid"])
    log = _log_path(run_dir, split)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            evaluate_command(run_dir, split, checkpoint),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    atomic_write_json(
        _job_path(run_dir, split),
        {"pid": proc.pid, "split": split, "checkpoint": checkpoint, "started": _now(), "log": log.name},
    )
    return proc.pid


_PROGRESS_RE = re.compile(r"(\d+)\s*/\s*(\d+)")


def evaluation_job(run_dir: str | os.PathLike, split: str) -> dict[str, Any] | None:
    """State of the last evaluation launched from the app for this split, or None.

    ``{"state": "running"|"finished"|"failed", "pid", "checkpoint", "started",
    "fraction": float|None (from the last "k/n" in the log), "log_tail": str}``.
    Finished means the process is gone and the predictions file exists.
    """
    job = read_json(_job_path(run_dir, split))
    if not isinstance(job, dict) or "pid" not in job:
        return None
    try:
        text = _log_path(run_dir, split).read_text(errors="replace")
    except OSError:
        text = ""
    tail = text[-2000:]
    fraction = None
    for m in _PROGRESS_RE.finditer(tail.replace("\r", "\n")):
        k, n = int(m.group(1)), int(m.group(2))
        if 0 < n and k <= n:
            fraction = k / n
    if _alive(int(job["pid"])):
        state = "running"
    elif predictions_path(run_dir, split).is_file():
        state = "finished"
    else:
        state = "failed"
    return {**job, "state": state, "fraction": fraction, "log_tail": tail[-800:]}


def stop_evaluation(run_dir: str | os.PathLike, split: str) -> None:
    """Terminate a running evaluation job of this split (its whole process group)."""
    job = evaluation_job(run_dir, split)
    if job and job["state"] == "running":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(job["pid"]), signal.SIGTERM)
