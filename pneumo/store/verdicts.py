"""Readers' verdicts on a run's cases: ``RUN/reviews.sqlite``, safe for several tabs.

No streamlit. WAL journal (readers never block the writer), a busy timeout for concurrent
writers, one short-lived connection per call and a commit per change, so two browser tabs or
two processes review the same run without losing a click.

Each verdict belongs to a *reader* (the person reviewing): rows are keyed by
``(run, split, image_id, reader)``, so two radiologists judge the same case independently and
:mod:`pneumo.review.agreement` compares them. Review files of the first release have no reader
column: opening one migrates it in place, in one transaction (copy into the new table, check
the row count, drop, rename), every old row going to the reader :data:`UNNAMED_READER`.
The migration is idempotent and a second process opening the file at the same time waits,
then finds it done.

A review row exists only while it holds something: a verdict or a non-empty note. Saving an
empty note on a case without a verdict, or clearing the verdict of a case without a note,
removes the row, so "reviewed" counts and the export always agree.

``reader`` arguments: calls that touch one row (``set_verdict``, ``set_note``,
``clear_verdict``, ``clear``, ``get``) default to :data:`UNNAMED_READER`, the single reader
of a review made without names; calls that list rows (``verdicts``, ``reviewed_ids``,
``export_csv``, ``csv_text``) take ``reader=None`` as "every reader".
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Sequence

from pneumo._io import CsvWriter, atomic_path, now_iso, refuse_existing
from pneumo.errors import InputError
from pneumo.settings import write_problem
from pneumo.store import verdicts_schema as schema

#: Verdict vocabulary per category at the time of review (keys in review order).
VERDICTS: dict[str, tuple[str, ...]] = {
    "FP": ("model wrong", "label missed a pneumothorax", "unsure"),
    "FN": ("model missed it", "label doubtful", "unsure"),
    "TP": ("agree", "disagree", "unsure"),
    "TN": ("agree", "disagree", "unsure"),
}
ALL_VERDICTS = tuple(dict.fromkeys(v for vs in VERDICTS.values() for v in vs))

#: The verdicts that say the *label* is wrong, per category: what ``pneumo curate`` lists for
#: relabelling. On a TP or TN the model and the label agree, so a reader who disagrees with
#: the case disagrees with its label too; "unsure" flags nothing.
LABEL_PROBLEM_VERDICTS: dict[str, tuple[str, ...]] = {
    "FP": ("label missed a pneumothorax",),
    "FN": ("label doubtful",),
    "TP": ("disagree",),
    "TN": ("disagree",),
}

#: The reader of verdicts saved without a name, and of every row of a first-release file.
UNNAMED_READER = "unnamed"
MAX_READER_LENGTH = 64  # a name, not a note: fits a table column and a CSV cell

DB_NAME = "reviews.sqlite"
#: ``category`` is the case's category when the verdict was given and ``thresholds`` the
#: post-processing it was computed under (JSON of :meth:`pneumo.evaluate.Triplet.to_dict`;
#: empty for rows saved before it was recorded): a verdict keeps them when thresholds change.
EXPORT_COLUMNS = ("run", "split", "image_id", "reader", "category", "verdict", "note", "reviewer", "updated",
                  "thresholds")

# Rows an older version left with neither verdict nor note (fast Next clicks saved them)
# are not reviews: every read skips them.
_HOLDS_SOMETHING = "(verdict IS NOT NULL OR note != '')"
_KEY = "run=? AND split=? AND image_id=? AND reader=?"
# An upsert's category and thresholds (the stored row's columns, before the update, are the
# unqualified names): a new verdict takes the new ones; otherwise a stored verdict keeps the
# category it was given under, and a row without a verdict (a note) follows the case.
_KEEP_CATEGORY = """category = CASE WHEN {new_verdict} OR verdict IS NULL
                                 THEN COALESCE(excluded.category, category) ELSE category END,
                     thresholds = CASE WHEN ({new_verdict} OR verdict IS NULL) AND excluded.category IS NOT NULL
                                   THEN excluded.thresholds ELSE thresholds END"""
# Bidirectional overrides can make a name display as another one; line and paragraph
# separators break table rows. Control characters (Cc) are refused too.
_REFUSED_FORMAT = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def check_reader(name: Any) -> str:
    """A reader name as stored: NFC-normalised and trimmed; :class:`InputError` when it is not
    a string, is empty after trimming, is longer than :data:`MAX_READER_LENGTH` characters or
    holds a control character."""
    if not isinstance(name, str):
        raise InputError(f"reader name must be text, not {type(name).__name__}")
    s = unicodedata.normalize("NFC", name).strip()
    if not s:
        raise InputError("reader name is empty; give the name of the person reviewing (e.g. 'alice')")
    if len(s) > MAX_READER_LENGTH:
        raise InputError(f"reader name is {len(s)} characters long; at most {MAX_READER_LENGTH} are allowed")
    bad = [c for c in s if unicodedata.category(c) == "Cc" or c in _REFUSED_FORMAT]
    if bad:
        raise InputError(f"reader name {s!r} contains a control character ({', '.join(f'U+{ord(c):04X}' for c in bad[:3])})")
    return s


@dataclass(frozen=True)
class Verdict:
    """One stored review row (fields in :data:`EXPORT_COLUMNS` order)."""

    run: str
    split: str
    image_id: str
    reader: str          # who judged; "unnamed" for reviews made without a name
    category: str | None  # the case's category when judged (FP/FN/TP/TN)
    verdict: str | None
    note: str
    reviewer: str | None  # free text an earlier API let callers attach; readers are `reader`
    updated: str
    thresholds: str | None = None  # JSON of the triplet ``category`` was computed under (None: unrecorded)

    def triplet(self) -> dict[str, Any] | None:
        """:attr:`thresholds` as a dict (a :meth:`pneumo.evaluate.Triplet.to_dict`), None when unrecorded or unreadable."""
        if not self.thresholds:
            return None
        try:
            value = json.loads(self.thresholds)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class NoteConflict(InputError):
    """A note changed elsewhere (another tab) since it was loaded; ``stored`` is the newer one."""

    def __init__(self, image_id: str, stored: str):
        super().__init__(f"the note on {image_id} was changed elsewhere since you loaded it")
        self.image_id = image_id
        self.stored = stored


class VerdictStore:
    """Verdicts in a SQLite file (``RUN/reviews.sqlite``), keyed by
    ``(run, split, image_id, reader)``; a first-release file is migrated on opening.

    Opening never creates the file: until the first verdict or note is saved, a missing file
    reads as no reviews (so viewing a run, even a read-only one, leaves its folder as it was).

    ``read_only=True`` (export, progress, merging other machines' files): the file must exist
    and is never changed (no table, no WAL switch, no migration: a first-release file is read
    as it is, every row under :data:`UNNAMED_READER`); the writing methods then raise
    :class:`InputError`. A store whose folder cannot be written opens read-only by itself;
    :attr:`save_problem` says why nothing can be saved (None when it can). SQLite may still
    leave empty ``-wal``/``-shm`` files beside a WAL-mode file it reads."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 10.0, *, read_only: bool = False):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._legacy_view: str | None = None  # read-only first-release file: a temp view adds the reader
        if read_only and not self.path.is_file():
            raise InputError(f"{self.path}: review file not found")
        folder_problem = write_problem(self.path.parent)
        #: Why verdicts cannot be saved in this store (opened read-only, a read-only folder), or None.
        self.save_problem: str | None = "opened read-only" if read_only else folder_problem
        self.read_only = self.save_problem is not None
        # SQLite's read-only mode still needs to write the -shm file of a WAL database beside it;
        # in a folder nobody can write, nobody changes the file either: read it as immutable.
        self._read_mode = "immutable=1" if folder_problem else "mode=ro"
        self._ready = False  # set up (the file exists): else reads see an empty table
        if self.path.exists():
            self._open()

    def _writing(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection for a change: the file is made (and set up) by the first one."""
        if self.save_problem is not None:
            raise InputError(f"{self.path}: verdicts cannot be saved ({self.save_problem})")
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        return self._connect()

    def _open(self) -> None:
        # Switching to WAL and migrating need the write lock; SQLite answers "locked" at once
        # (its busy handler is skipped to avoid deadlocks) when another opener holds it, e.g.
        # two tabs opening a first-release file together, so the whole set-up is retried.
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                self._set_up()
                self._ready = True
                return
            except sqlite3.OperationalError as e:
                busy = "locked" in str(e) or "busy" in str(e)
                if busy and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if busy:
                    raise InputError(f"{self.path}: the review database is busy (locked by another program for "
                                     f"over {self.busy_timeout_s:g} s); try again") from None
                raise InputError(f"{self.path}: not a usable review database ({e})") from None
            except sqlite3.DatabaseError as e:
                raise InputError(f"{self.path}: not a usable review database ({e})") from None

    def _set_up(self) -> None:
        with self._connect(setting_up=True) as con:
            if self.read_only:
                self._legacy_view = schema.legacy_view(schema.columns(con, "verdicts"), UNNAMED_READER)
                return
            con.execute("PRAGMA journal_mode=WAL")
            if schema.columns(con, "verdicts") and "reader" not in schema.columns(con, "verdicts"):
                schema.migrate(con, VERDICTS, UNNAMED_READER)
            elif schema.columns(con, "verdicts") and "thresholds" not in schema.columns(con, "verdicts"):
                schema.add_thresholds(con, VERDICTS)
            con.execute(schema.table_sql("verdicts", UNNAMED_READER))

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike) -> "VerdictStore":
        """The store of a run folder: ``RUN/reviews.sqlite``."""
        return cls(Path(run_dir) / DB_NAME)

    @contextlib.contextmanager
    def _connect(self, *, setting_up: bool = False) -> Iterator[sqlite3.Connection]:
        if not (self._ready or setting_up) and not self.path.exists():  # nothing saved yet: an empty table
            con = sqlite3.connect(":memory:", isolation_level=None)
            con.execute(schema.table_sql("verdicts", UNNAMED_READER))
        elif self.read_only:
            con = sqlite3.connect(f"{self.path.absolute().as_uri()}?{self._read_mode}", uri=True,
                                  timeout=self.busy_timeout_s, isolation_level=None)
        else:
            con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            if self._legacy_view:
                con.execute(self._legacy_view)
            yield con
        finally:
            con.close()

    def journal_mode(self) -> str:
        """The database's journal mode (``"wal"``; ``"memory"`` before anything is saved)."""
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

    def set_verdict(self, run: str, split: str, image_id: str, verdict: str | None, *,
                    category: str | None = None, note: str | None = None, reader: str = UNNAMED_READER,
                    reviewer: str | None = None, thresholds: Mapping[str, Any] | None = None) -> Verdict | None:
        """Insert or update ``reader``'s verdict on a case (and note, when given), committed at once.

        ``verdict`` must belong to ``category``'s vocabulary (:data:`VERDICTS`); ``None`` keeps
        the stored verdict. ``note=None`` keeps the stored note. ``reader`` is checked by
        :func:`check_reader`. ``category`` and ``thresholds`` (the triplet the category was
        computed under, :meth:`pneumo.evaluate.Triplet.to_dict`) are what a new verdict was
        given under; a call without a new verdict never moves a stored verdict to another
        category. Returns the stored row, or None when the case holds neither verdict nor note
        for this reader (then no row is kept).
        """
        self._check(verdict, category)
        reader = check_reader(reader)
        key = (str(run), str(split), str(image_id), reader)
        with self._writing() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                f"""INSERT INTO verdicts (run, split, image_id, reader, verdict, note, category, reviewer, updated,
                                         thresholds)
                   VALUES (?, ?, ?, ?, ?, COALESCE(?, ''), ?, ?, ?, ?)
                   ON CONFLICT (run, split, image_id, reader) DO UPDATE SET
                     {_KEEP_CATEGORY.format(new_verdict="excluded.verdict IS NOT NULL")},
                     verdict = COALESCE(excluded.verdict, verdict),
                     note = COALESCE(?, note),
                     reviewer = COALESCE(excluded.reviewer, reviewer),
                     updated = excluded.updated""",
                (*key, verdict, note, category, reviewer, now_iso(), _thresholds_text(thresholds), note),
            )
            con.execute(f"DELETE FROM verdicts WHERE {_KEY} AND NOT {_HOLDS_SOMETHING}", key)
            con.execute("COMMIT")
        return self.get(run, split, image_id, reader=reader)

    def set_note(self, run: str, split: str, image_id: str, note: str, *, category: str | None = None,
                 reader: str = UNNAMED_READER, reviewer: str | None = None,
                 expected: str | None = None, thresholds: Mapping[str, Any] | None = None) -> Verdict | None:
        """Save ``reader``'s free-text note on a case, keeping their verdict; an empty note on a
        case without a verdict removes the row.

        With ``expected`` (the note as it was when the reader loaded it), the save is refused
        with :class:`NoteConflict` if the stored note has changed since (another tab of the
        same reader saved one): nothing is overwritten unseen. Check and write are one
        transaction. Other readers' notes are separate rows and never conflict. ``category``
        and ``thresholds`` are recorded only on a row without a verdict (a verdict keeps the
        category it was given under).
        """
        self._check(None, category)
        reader = check_reader(reader)
        key = (str(run), str(split), str(image_id), reader)
        with self._writing() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(f"SELECT note FROM verdicts WHERE {_KEY}", key).fetchone()
                stored = row[0] if row else ""
                if expected is not None and stored != expected and stored != note:
                    raise NoteConflict(str(image_id), stored)
                con.execute(
                    f"""INSERT INTO verdicts (run, split, image_id, reader, verdict, note, category, reviewer,
                                             updated, thresholds)
                       VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)
                       ON CONFLICT (run, split, image_id, reader) DO UPDATE SET
                         {_KEEP_CATEGORY.format(new_verdict="0")},
                         note = excluded.note,
                         reviewer = COALESCE(excluded.reviewer, reviewer),
                         updated = excluded.updated""",
                    (*key, str(note), category, reviewer, now_iso(), _thresholds_text(thresholds)),
                )
                con.execute(f"DELETE FROM verdicts WHERE {_KEY} AND NOT {_HOLDS_SOMETHING}", key)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return self.get(run, split, image_id, reader=reader)

    def clear_verdict(self, run: str, split: str, image_id: str, *, reader: str = UNNAMED_READER) -> Verdict | None:
        """Remove ``reader``'s verdict on a case, keeping their note (the row goes when no note is left)."""
        key = (str(run), str(split), str(image_id), check_reader(reader))
        with self._writing() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(f"UPDATE verdicts SET verdict = NULL, updated = ? WHERE {_KEY}", (now_iso(), *key))
            con.execute(f"DELETE FROM verdicts WHERE {_KEY} AND NOT {_HOLDS_SOMETHING}", key)
            con.execute("COMMIT")
        return self.get(run, split, image_id, reader=key[3])

    def clear(self, run: str, split: str, image_id: str, *, reader: str = UNNAMED_READER) -> None:
        """Remove ``reader``'s verdict and note on a case (other readers' rows stay)."""
        key = (str(run), str(split), str(image_id), check_reader(reader))
        with self._writing() as con:
            con.execute(f"DELETE FROM verdicts WHERE {_KEY}", key)

    def get(self, run: str, split: str, image_id: str, *, reader: str = UNNAMED_READER) -> Verdict | None:
        """``reader``'s stored row on a case, or None (also for a row holding nothing)."""
        key = (str(run), str(split), str(image_id), check_reader(reader))
        with self._connect() as con:
            row = con.execute(
                f"SELECT {', '.join(EXPORT_COLUMNS)} FROM verdicts WHERE {_KEY} AND {_HOLDS_SOMETHING}", key,
            ).fetchone()
        return Verdict(*row) if row else None

    def _where(self, run: str, split: str, reader: str | None) -> tuple[str, tuple[str, ...]]:
        if reader is None:
            return f"run=? AND split=? AND {_HOLDS_SOMETHING}", (str(run), str(split))
        return f"run=? AND split=? AND reader=? AND {_HOLDS_SOMETHING}", (str(run), str(split), check_reader(reader))

    def verdicts(self, run: str, split: str, reader: str | None = None) -> list[Verdict]:
        """Every review (a verdict or a note) of a run and split by ``reader`` (None: every
        reader), ordered by image id then reader."""
        where, args = self._where(run, split, reader)
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {', '.join(EXPORT_COLUMNS)} FROM verdicts WHERE {where} ORDER BY image_id, reader", args,
            ).fetchall()
        return [Verdict(*r) for r in rows]

    def all(self, run: str, split: str, reader: str | None = None) -> list[Verdict]:
        """Same as :meth:`verdicts` (the name the first release used)."""
        return self.verdicts(run, split, reader)

    def reviewed_ids(self, run: str, split: str, reader: str | None = None) -> set[str]:
        """Ids of the cases ``reader`` (None: any reader) reviewed: the ids of :meth:`verdicts`."""
        where, args = self._where(run, split, reader)
        with self._connect() as con:
            rows = con.execute(f"SELECT DISTINCT image_id FROM verdicts WHERE {where}", args).fetchall()
        return {r[0] for r in rows}

    def readers(self, run: str, split: str) -> list[str]:
        """The readers with at least one review of a run and split, sorted."""
        with self._connect() as con:
            rows = con.execute(
                f"SELECT DISTINCT reader FROM verdicts WHERE run=? AND split=? AND {_HOLDS_SOMETHING} ORDER BY reader",
                (str(run), str(split)),
            ).fetchall()
        return [r[0] for r in rows]

    def export_csv(self, path_or_buffer: str | os.PathLike | IO[str], run: str, split: str,
                   reader: str | None = None, *, force: bool = False) -> int:
        """Write the reviews of a run and split by ``reader`` (None: every reader) as CSV
        (columns :data:`EXPORT_COLUMNS`, reader included; text cells neutralised against
        spreadsheet formulas); returns the row count. A path is written atomically, and an
        existing one only replaced with ``force``; a text buffer is written in place."""
        if isinstance(path_or_buffer, (str, os.PathLike)):
            refuse_existing(path_or_buffer, force)
        rows = self.verdicts(run, split, reader)
        if isinstance(path_or_buffer, (str, os.PathLike)):
            with atomic_path(path_or_buffer) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    _write_csv(f, rows)
        else:
            _write_csv(path_or_buffer, rows)
        return len(rows)

    def csv_text(self, run: str, split: str, reader: str | None = None) -> str:
        """The export as a string (for a download button)."""
        buf = io.StringIO()
        self.export_csv(buf, run, split, reader)
        return buf.getvalue()


def _thresholds_text(thresholds: Mapping[str, Any] | None) -> str | None:
    """The stored form of a triplet dict: compact JSON with sorted keys (None stays None)."""
    if thresholds is None:
        return None
    try:
        return json.dumps(dict(thresholds), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"thresholds {thresholds!r} cannot be stored ({e})") from None


def _write_csv(f: IO[str], rows: Sequence[Verdict]) -> None:
    w = CsvWriter(f)  # full quoting and the formula guard
    w.writerow(EXPORT_COLUMNS)
    for r in rows:
        w.writerow([r.run, r.split, r.image_id, r.reader, r.category or "", r.verdict or "", r.note,
                    r.reviewer or "", r.updated, r.thresholds or ""])
