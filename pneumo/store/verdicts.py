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
import csv
import io
import os
import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from pneumo._io import atomic_path, csv_cell, now_iso
from pneumo.errors import InputError

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
EXPORT_COLUMNS = ("run", "split", "image_id", "reader", "category", "verdict", "note", "reviewer", "updated")

_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {name} (
    run TEXT NOT NULL,
    split TEXT NOT NULL,
    image_id TEXT NOT NULL,
    reader TEXT NOT NULL DEFAULT '""" + UNNAMED_READER + """',
    verdict TEXT,
    note TEXT NOT NULL DEFAULT '',
    category TEXT,
    reviewer TEXT,
    updated TEXT NOT NULL,
    PRIMARY KEY (run, split, image_id, reader)
)
"""
_SCHEMA_VERSION = 2  # PRAGMA user_version: 0 = first release (no reader), 2 = readers
# Rows an older version left with neither verdict nor note (fast Next clicks saved them)
# are not reviews: every read skips them.
_HOLDS_SOMETHING = "(verdict IS NOT NULL OR note != '')"
_KEY = "run=? AND split=? AND image_id=? AND reader=?"
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


class NoteConflict(InputError):
    """A note changed elsewhere (another tab) since it was loaded; ``stored`` is the newer one."""

    def __init__(self, image_id: str, stored: str):
        super().__init__(f"the note on {image_id} was changed elsewhere since you loaded it")
        self.image_id = image_id
        self.stored = stored


class VerdictStore:
    """Verdicts in a SQLite file (``RUN/reviews.sqlite``), keyed by
    ``(run, split, image_id, reader)``; a first-release file is migrated on opening.

    ``read_only=True`` (export, progress, merging other machines' files): the file must exist
    and is never changed (no table, no WAL switch, no migration: a first-release file is read
    as it is, every row under :data:`UNNAMED_READER`); the writing methods then fail. SQLite
    may still leave empty ``-wal``/``-shm`` files beside a WAL-mode file it reads."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 10.0, *, read_only: bool = False):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self.read_only = read_only
        self._legacy_view: str | None = None  # read-only first-release file: a temp view adds the reader
        if read_only and not self.path.is_file():
            raise InputError(f"{self.path}: review file not found")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Switching to WAL and migrating need the write lock; SQLite answers "locked" at once
        # (its busy handler is skipped to avoid deadlocks) when another opener holds it, e.g.
        # two tabs opening a first-release file together, so the whole set-up is retried.
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                self._set_up()
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
        with self._connect() as con:
            if self.read_only:
                self._legacy_view = _legacy_view(_columns(con, "verdicts"))
                return
            con.execute("PRAGMA journal_mode=WAL")
            if _columns(con, "verdicts") and "reader" not in _columns(con, "verdicts"):
                _migrate(con)
            con.execute(_TABLE_SQL.format(name="verdicts"))

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike) -> "VerdictStore":
        """The store of a run folder: ``RUN/reviews.sqlite``."""
        return cls(Path(run_dir) / DB_NAME)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            con = sqlite3.connect(self.path.absolute().as_uri() + "?mode=ro", uri=True,
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

    def set_verdict(self, run: str, split: str, image_id: str, verdict: str | None, *,
                    category: str | None = None, note: str | None = None, reader: str = UNNAMED_READER,
                    reviewer: str | None = None) -> Verdict | None:
        """Insert or update ``reader``'s verdict on a case (and note, when given), committed at once.

        ``verdict`` must belong to ``category``'s vocabulary (:data:`VERDICTS`); ``None`` keeps
        the stored verdict. ``note=None`` keeps the stored note. ``reader`` is checked by
        :func:`check_reader`. Returns the stored row, or None when the case holds neither
        verdict nor note for this reader (then no row is kept).
        """
        self._check(verdict, category)
        reader = check_reader(reader)
        key = (str(run), str(split), str(image_id), reader)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(
                """INSERT INTO verdicts (run, split, image_id, reader, verdict, note, category, reviewer, updated)
                   VALUES (?, ?, ?, ?, ?, COALESCE(?, ''), ?, ?, ?)
                   ON CONFLICT (run, split, image_id, reader) DO UPDATE SET
                     verdict = COALESCE(excluded.verdict, verdict),
                     note = COALESCE(?, note),
                     category = COALESCE(excluded.category, category),
                     reviewer = COALESCE(excluded.reviewer, reviewer),
                     updated = excluded.updated""",
                (*key, verdict, note, category, reviewer, now_iso(), note),
            )
            con.execute(f"DELETE FROM verdicts WHERE {_KEY} AND NOT {_HOLDS_SOMETHING}", key)
            con.execute("COMMIT")
        return self.get(run, split, image_id, reader=reader)

    def set_note(self, run: str, split: str, image_id: str, note: str, *, category: str | None = None,
                 reader: str = UNNAMED_READER, reviewer: str | None = None,
                 expected: str | None = None) -> Verdict | None:
        """Save ``reader``'s free-text note on a case, keeping their verdict; an empty note on a
        case without a verdict removes the row.

        With ``expected`` (the note as it was when the reader loaded it), the save is refused
        with :class:`NoteConflict` if the stored note has changed since (another tab of the
        same reader saved one): nothing is overwritten unseen. Check and write are one
        transaction. Other readers' notes are separate rows and never conflict.
        """
        self._check(None, category)
        reader = check_reader(reader)
        key = (str(run), str(split), str(image_id), reader)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(f"SELECT note FROM verdicts WHERE {_KEY}", key).fetchone()
                stored = row[0] if row else ""
                if expected is not None and stored != expected and stored != note:
                    raise NoteConflict(str(image_id), stored)
                con.execute(
                    """INSERT INTO verdicts (run, split, image_id, reader, verdict, note, category, reviewer, updated)
                       VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)
                       ON CONFLICT (run, split, image_id, reader) DO UPDATE SET
                         note = excluded.note,
                         category = COALESCE(excluded.category, category),
                         reviewer = COALESCE(excluded.reviewer, reviewer),
                         updated = excluded.updated""",
                    (*key, str(note), category, reviewer, now_iso()),
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
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute(f"UPDATE verdicts SET verdict = NULL, updated = ? WHERE {_KEY}", (now_iso(), *key))
            con.execute(f"DELETE FROM verdicts WHERE {_KEY} AND NOT {_HOLDS_SOMETHING}", key)
            con.execute("COMMIT")
        return self.get(run, split, image_id, reader=key[3])

    def clear(self, run: str, split: str, image_id: str, *, reader: str = UNNAMED_READER) -> None:
        """Remove ``reader``'s verdict and note on a case (other readers' rows stay)."""
        key = (str(run), str(split), str(image_id), check_reader(reader))
        with self._connect() as con:
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
                   reader: str | None = None) -> int:
        """Write the reviews of a run and split by ``reader`` (None: every reader) as CSV
        (columns :data:`EXPORT_COLUMNS`, reader included; text cells neutralised against
        spreadsheet formulas); returns the row count. A path is written atomically; a text
        buffer is written in place."""
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


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})").fetchall()]


# a column a hand-made or damaged first-release file lacks becomes its default
_LEGACY_FILL = {"verdict": "NULL", "note": "''", "category": "NULL", "reviewer": "NULL", "updated": "''"}


def _legacy_source(old: list[str]) -> str:
    """The columns after ``reader`` of a first-release table, as SQL; DatabaseError when a key is missing."""
    if c := next((k for k in ("run", "split", "image_id") if k not in old), None):
        raise sqlite3.DatabaseError(f"the verdicts table has no {c} column")
    return ", ".join(c if c in old else _LEGACY_FILL[c] for c in _LEGACY_FILL)


def _legacy_view(old: list[str]) -> str | None:
    """For a read-only store: None for the current layout; else a TEMP view named ``verdicts``
    (it shadows the file's table) showing a first-release table in the current layout."""
    if not old:
        raise sqlite3.DatabaseError("no verdicts table")
    if "reader" in old:
        return None
    cols = ", ".join(f"{c} AS {n}" for c, n in zip(_legacy_source(old).split(", "), _LEGACY_FILL))
    return (f"CREATE TEMP VIEW verdicts AS SELECT run, split, image_id, '{UNNAMED_READER}' AS reader, {cols} "
            "FROM main.verdicts")


def _migrate(con: sqlite3.Connection) -> None:
    """First-release ``verdicts`` (key run, split, image_id; no reader) -> keyed by reader too.

    One write transaction: a concurrent opener waits on the lock, then sees the reader column
    and does nothing. Every row is copied (rows holding nothing included: they are skipped on
    reading, never lost); the copy's row count is checked before the old table is dropped,
    and any failure rolls everything back, leaving the file as it was.
    """
    con.execute("BEGIN IMMEDIATE")
    try:
        old = _columns(con, "verdicts")
        if old and "reader" not in old:
            con.execute("DROP TABLE IF EXISTS verdicts_migrating")
            con.execute(_TABLE_SQL.format(name="verdicts_migrating"))
            source = _legacy_source(old)
            con.execute(
                "INSERT INTO verdicts_migrating (run, split, image_id, reader, verdict, note, category, reviewer, updated) "
                f"SELECT run, split, image_id, ?, {source} FROM verdicts", (UNNAMED_READER,))
            before = con.execute("SELECT count(*) FROM verdicts").fetchone()[0]
            after = con.execute("SELECT count(*) FROM verdicts_migrating").fetchone()[0]
            if before != after:
                raise sqlite3.DatabaseError(f"migration copied {after} of {before} rows; nothing changed")
            con.execute("DROP TABLE verdicts")
            con.execute("ALTER TABLE verdicts_migrating RENAME TO verdicts")
            con.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _write_csv(f: IO[str], rows: Sequence[Verdict]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    for r in rows:
        cells: list[Any] = [r.run, r.split, r.image_id, r.reader, r.category or "", r.verdict or "", r.note,
                            r.reviewer or "", r.updated]
        w.writerow([csv_cell(c) for c in cells])
