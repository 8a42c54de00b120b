"""The table of the review file and its migrations (used by :mod:`pneumo.store.verdicts` only).

Versions (``PRAGMA user_version``): 0, the first release (key run, split, image_id; no
reader); 2, readers (key run, split, image_id, reader); 3, ``thresholds`` (the triplet a
verdict's category was computed under). Opening an older file for writing migrates it in one
write transaction; a read-only store reads it through a TEMP view in the current layout.
"""
from __future__ import annotations

import sqlite3
from typing import Mapping, Sequence

SCHEMA_VERSION = 3

_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {name} (
    run TEXT NOT NULL,
    split TEXT NOT NULL,
    image_id TEXT NOT NULL,
    reader TEXT NOT NULL DEFAULT '{unnamed}',
    verdict TEXT,
    note TEXT NOT NULL DEFAULT '',
    category TEXT,
    reviewer TEXT,
    updated TEXT NOT NULL,
    thresholds TEXT,
    PRIMARY KEY (run, split, image_id, reader)
)
"""

# a column a hand-made or damaged first-release file lacks becomes its default
_LEGACY_FILL = {"verdict": "NULL", "note": "''", "category": "NULL", "reviewer": "NULL", "updated": "''"}


def table_sql(name: str, unnamed: str) -> str:
    """``CREATE TABLE IF NOT EXISTS name`` in the current layout (``unnamed``: the default reader)."""
    return _TABLE_SQL.format(name=name, unnamed=unnamed.replace("'", "''"))


def columns(con: sqlite3.Connection, table: str) -> list[str]:
    """The column names of ``table`` ([] when it does not exist)."""
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})").fetchall()]


def _legacy_source(old: list[str]) -> str:
    """The columns after ``reader`` of a first-release table, as SQL; DatabaseError when a key is missing."""
    if c := next((k for k in ("run", "split", "image_id") if k not in old), None):
        raise sqlite3.DatabaseError(f"the verdicts table has no {c} column")
    return ", ".join(c if c in old else _LEGACY_FILL[c] for c in _LEGACY_FILL)


def legacy_view(old: list[str], unnamed: str) -> str | None:
    """For a read-only store: None for the current layout; else a TEMP view named ``verdicts``
    (it shadows the file's table) showing an older table (first release: no reader, every row
    read as ``unnamed``'s; second: no thresholds) in the current layout."""
    if not old:
        raise sqlite3.DatabaseError("no verdicts table")
    if "reader" in old:
        if "thresholds" in old:
            return None
        return "CREATE TEMP VIEW verdicts AS SELECT *, NULL AS thresholds FROM main.verdicts"
    cols = ", ".join(f"{c} AS {n}" for c, n in zip(_legacy_source(old).split(", "), _LEGACY_FILL))
    reader = unnamed.replace("'", "''")
    return (f"CREATE TEMP VIEW verdicts AS SELECT run, split, image_id, '{reader}' AS reader, {cols}, "
            "NULL AS thresholds FROM main.verdicts")


def fill_categories(con: sqlite3.Connection, vocabulary: Mapping[str, Sequence[str]]) -> None:
    """Rows saved without a category get the one their verdict belongs to, where only one
    category of ``vocabulary`` has that verdict ("model wrong" is an FP verdict; "agree" could be
    TP or TN, so it stays without)."""
    verdicts = dict.fromkeys(v for vs in vocabulary.values() for v in vs)
    for verdict in verdicts:
        owners = [c for c, vs in vocabulary.items() if verdict in vs]
        if len(owners) == 1:
            con.execute("UPDATE verdicts SET category = ? WHERE category IS NULL AND verdict = ?", (owners[0], verdict))


def _in_transaction(con: sqlite3.Connection, work) -> None:
    con.execute("BEGIN IMMEDIATE")
    try:
        work()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def add_thresholds(con: sqlite3.Connection, vocabulary: Mapping[str, Sequence[str]]) -> None:
    """Version 2 (readers, no thresholds) -> 3: the ``thresholds`` column (NULL: not recorded)
    and the categories their verdicts imply filled in (:func:`fill_categories`), in one write
    transaction; a concurrent opener waits, then finds the column and does nothing."""

    def work() -> None:
        if "thresholds" not in columns(con, "verdicts"):
            con.execute("ALTER TABLE verdicts ADD COLUMN thresholds TEXT")
            fill_categories(con, vocabulary)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    _in_transaction(con, work)


def migrate(con: sqlite3.Connection, vocabulary: Mapping[str, Sequence[str]], unnamed: str) -> None:
    """First release (key run, split, image_id; no reader) -> the current layout, every row
    going to the reader ``unnamed``.

    One write transaction: a concurrent opener waits on the lock, then sees the reader column
    and does nothing. Every row is copied (rows holding nothing included: they are skipped on
    reading, never lost); the copy's row count is checked before the old table is dropped,
    and any failure rolls everything back, leaving the file as it was.
    """

    def work() -> None:
        old = columns(con, "verdicts")
        if not old or "reader" in old:
            return
        con.execute("DROP TABLE IF EXISTS verdicts_migrating")
        con.execute(table_sql("verdicts_migrating", unnamed))
        con.execute(
            "INSERT INTO verdicts_migrating (run, split, image_id, reader, verdict, note, category, reviewer, updated) "
            f"SELECT run, split, image_id, ?, {_legacy_source(old)} FROM verdicts", (unnamed,))
        before = con.execute("SELECT count(*) FROM verdicts").fetchone()[0]
        after = con.execute("SELECT count(*) FROM verdicts_migrating").fetchone()[0]
        if before != after:
            raise sqlite3.DatabaseError(f"migration copied {after} of {before} rows; nothing changed")
        con.execute("DROP TABLE verdicts")
        con.execute("ALTER TABLE verdicts_migrating RENAME TO verdicts")
        fill_categories(con, vocabulary)
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    _in_transaction(con, work)
