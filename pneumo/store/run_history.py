"""A run's epoch table (``RunFolder.history``, one row per finished epoch): its columns, its
text, and the one reader that tells sound rows from damaged lines.

Part of the run folder's format (:mod:`pneumo.store.run` names the file and is what others
call: ``RunWriter.append_history``, ``load_history``, ``read_history``). A line is damaged when
it does not have one value per column, a cell is not of its column's type, or its epoch does
not follow the previous row's (rows are epochs 1, 2, ... in order: a row from another run or a
repeated one is damage, not data). Damaged lines are left out and named by line number; they
never count as epochs or give a best validation loss.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from pneumo._io import csv_text

__all__ = ["HISTORY_COLUMNS", "STAGES", "format_row", "history_text", "sound_rows", "best_row"]

HISTORY_COLUMNS = ("epoch", "stage", "loss", "dice", "iou", "val_loss", "val_dice", "val_iou", "lr", "seconds")
STAGES = ("train", "fine-tune")
_MAX_NAMED = 8  # damaged line numbers named in the message; the rest are counted


def format_row(row: dict) -> dict[str, str]:
    """One epoch's values as the table's cells (floats to 8 significant digits, None empty)."""
    return {k: f"{v:.8g}" if isinstance(v, float) else "" if v is None else str(v) for k, v in row.items()}


def history_text(rows: list[dict]) -> str:
    """The whole table as CSV text: the header :data:`HISTORY_COLUMNS`, then ``rows`` (cells
    as :func:`format_row` gives them; other keys ignored)."""
    # pneumo's one CSV writer; numbers as text, no user text: no formula guard (-0.5 stays a number)
    return csv_text([HISTORY_COLUMNS, *([r.get(c, "") for c in HISTORY_COLUMNS] for r in rows)], guard=False)


def _parse_cell(key: str, value: str) -> Any:
    """A cell as its column's type; ValueError saying why it is not one."""
    if key == "stage":
        if value not in STAGES + ("",):
            raise ValueError(f"stage {value[:20]!r} is not one of {', '.join(STAGES)}")
        return value
    if value.strip() == "":
        if key == "epoch":
            raise ValueError("no epoch")
        return None  # a metric the epoch did not compute (e.g. no validation)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{key} {value[:20]!r} is not a number") from None
    if key == "epoch":
        if not number.is_integer():
            raise ValueError(f"epoch {value[:20]!r} is not a whole number")
        return int(number)
    return number


def _lines(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[tuple[int, str]], str | None]:
    """``(line number, raw row)`` of each line with one value per column, the other lines as
    ``(line number, what is wrong)``, and what is wrong with the whole file (None if it reads)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return [], [], None
    except UnicodeDecodeError:
        return [], [], f"{path.name}: not valid UTF-8 text"
    except OSError as e:
        return [], [], f"{path.name}: unreadable ({e.strerror or type(e).__name__})"
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, bad = [], []
    try:
        header = next(reader, None)
        if header is None:
            return [], [], None
        if "epoch" not in header or len(set(header)) != len(header):
            return [], [], f"{path.name}: damaged (its first line is not the column names {','.join(HISTORY_COLUMNS)})"
        for values in reader:
            if not values:
                continue  # a blank line carries nothing
            if len(values) != len(header):
                bad.append((reader.line_num, f"{len(values)} values for {len(header)} columns"))
            else:
                rows.append((reader.line_num, dict(zip(header, values))))
    except csv.Error as e:
        return [], [], f"{path.name}: not valid CSV ({e})"
    return rows, bad, None


def _damage_note(name: str, bad: list[tuple[int, str]]) -> str | None:
    if not bad:
        return None
    lines = ", ".join(str(n) for n, _ in bad[:_MAX_NAMED])
    more = f" and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    return (f"{name}: damaged line{'s' if len(bad) > 1 else ''} {lines}{more} left out "
            f"(line {bad[0][0]}: {bad[0][1]})")


def sound_rows(path: Path) -> tuple[list[tuple[dict[str, str], dict]], str | None]:
    """The sound rows of the table at ``path`` as ``(raw cells, parsed)`` (``epoch`` int,
    ``stage`` str, the rest float or None), and what is damaged (None when nothing): the whole
    file (not UTF-8, not CSV, unreadable, no header), or the lines left out, by number. An
    absent file is ``([], None)``. Never raises."""
    lines, bad, problem = _lines(path)
    sound: list[tuple[dict[str, str], dict]] = []
    for number, raw in lines:
        try:
            parsed = {k: _parse_cell(k, v) for k, v in raw.items() if k in HISTORY_COLUMNS}
        except ValueError as e:
            bad.append((number, str(e)))
            continue
        if parsed["epoch"] != len(sound) + 1:
            bad.append((number, f"epoch {parsed['epoch']} where {len(sound) + 1} comes next"))
            continue
        sound.append((raw, parsed))
    return sound, problem or _damage_note(path.name, sorted(bad))


def best_row(rows: list[dict]) -> dict | None:
    """The history row with the lowest finite ``val_loss`` (the epoch ``best.keras`` holds)."""
    scored = [r for r in rows if isinstance(r.get("val_loss"), float) and math.isfinite(r["val_loss"])]
    return min(scored, key=lambda r: r["val_loss"]) if scored else None
