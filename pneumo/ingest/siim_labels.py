"""The SIIM-ACR label CSV: ``ImageId, EncodedPixels`` rows (stage 1 ``train-rle.csv`` or
stage 2 ``stage_2_train.csv``), validated and grouped by image (used by :func:`pneumo.ingest.siim.siim_source`)."""
from __future__ import annotations

import csv
from pathlib import Path

from pneumo.errors import InputError
from pneumo.ingest.rle import detect_format, rle_runs

__all__ = ["read_labels"]


def read_labels(labels_csv: Path, rle_format: str = "auto") -> tuple[dict[str, list[tuple[int, str, int]]], int, str]:
    """ImageId -> [(line number, RLE, end of its last run)], the number of rows, and the RLE format.

    Validates each RLE's numbers (not yet against the image size, which needs the header).
    ``rle_format`` "auto" detects relative or absolute starts from all rows (``rle.detect_format``).
    """
    if rle_format not in ("auto", "relative", "absolute"):
        raise InputError(f"--rle-format must be auto, relative or absolute, got {rle_format!r}")
    if not labels_csv.exists():
        raise InputError(f"{labels_csv}: label CSV not found")
    if not labels_csv.is_file():
        raise InputError(f"{labels_csv}: label CSV is not a file")
    labels: dict[str, list[tuple[int, str, int]]] = {}
    raw: list[tuple[str, int, str]] = []
    count = 0
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            columns = [c.strip() for c in header] if header else []
            if "ImageId" not in columns or "EncodedPixels" not in columns:
                raise InputError(
                    f"{labels_csv}: expected the columns ImageId and EncodedPixels "
                    f"(SIIM train-rle.csv or stage_2_train.csv), found {columns or 'no header'}"
                )
            id_col, rle_col = columns.index("ImageId"), columns.index("EncodedPixels")
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) != len(columns):
                    raise InputError(
                        f"{labels_csv}: line {line}: expected {len(columns)} fields, found {len(row)}"
                    )
                image_id, rle = row[id_col].strip(), row[rle_col].strip()
                if not image_id:
                    raise InputError(f"{labels_csv}: line {line}: empty ImageId")
                raw.append((image_id, line, rle))
    except InputError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{labels_csv}: cannot read label CSV ({type(e).__name__}: {e})") from None
    if rle_format == "auto":
        rle_format = detect_format(rle for _, _, rle in raw)
    relative = rle_format == "relative"
    for image_id, line, rle in raw:
        try:
            starts, lengths = rle_runs(rle, relative)
        except ValueError as e:
            raise InputError(f"{labels_csv}: line {line}: ImageId {image_id}: bad RLE: {e}") from None
        end = int((starts + lengths).max()) if len(starts) else 0
        labels.setdefault(image_id, []).append((line, rle, end))
        count += 1
    return labels, count, rle_format
