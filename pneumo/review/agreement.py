"""Agreement between readers: Cohen's kappa per pair of readers, per category and overall.

Pure numpy (no streamlit, no TensorFlow, no SQLite): the inputs are labels, or rows with
``image_id``, ``reader``, ``category`` and ``verdict`` attributes (:class:`pneumo.store.verdicts.Verdict`).

For two readers A and B who both judged n cases with labels from k categories, the k x k
table ``T[i, j]`` counts cases A labelled i and B labelled j. Then

- observed agreement ``p_o = trace(T) / n``,
- agreement expected by chance ``p_e = sum_i (row_i / n) * (col_i / n)``,
- Cohen's kappa ``(p_o - p_e) / (1 - p_e)``.

Degenerate cases (documented rule): with no case judged by both, ``observed``, ``expected``
and ``kappa`` are all None. When ``p_e == 1`` (both readers gave every case the same single
label), kappa is 0/0, undefined: ``kappa`` is None while ``observed`` (then 1.0) is reported.

Per category (the model's TP/FP/FN/TN), labels are the verdicts of that category's
vocabulary. Overall, a label is ``"<category>: <verdict>"``, since a reader chooses among the
options of the case's category ("agree" on a TP is not the same answer as "agree" on a TN).
A case's category is the one stored with the rows when both readers judged it under the same
category (each verdict belongs to the vocabulary of the category it was given under, so the
category under today's post-processing is not used); a case whose stored categories differ
counts only overall, under its verdicts.
Only rows with a verdict count: a note alone is not a judgement.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

CATEGORIES = ("FP", "FN", "TP", "TN")  # review order, as pneumo.store.verdicts.VERDICTS

__all__ = ["Agreement", "PairAgreement", "confusion", "kappa_from_table", "agreement", "pair_agreement",
           "reader_agreement", "agreement_rows", "CATEGORIES"]


@dataclass(frozen=True)
class Agreement:
    """Two readers on a set of cases both judged."""

    n: int                            # cases both judged
    observed: float | None            # share of those with the same label; None when n == 0
    expected: float | None            # chance agreement from each reader's label frequencies
    kappa: float | None               # Cohen's kappa; None when n == 0 or expected == 1
    disagree: tuple[str, ...] = ()    # case ids with different labels, sorted
    labels: tuple[str, ...] = ()      # the table's label order
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (K, K) int64, A rows, B columns


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of reader ``a`` with reader ``b`` (``a < b``): overall and per category."""

    a: str
    b: str
    overall: Agreement
    by_category: dict[str, Agreement]  # every key of CATEGORIES, n == 0 where none was shared


def confusion(labels_a: Sequence[str], labels_b: Sequence[str],
              labels: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The ``(K, K) int64`` table of reader A's labels (rows) against B's (columns) on the same
    cases (``labels_a[i]`` and ``labels_b[i]`` are one case), and its label order (``labels``,
    else the sorted union). A label missing from ``labels`` raises ``ValueError``."""
    if len(labels_a) != len(labels_b):
        raise ValueError(f"{len(labels_a)} labels for reader A but {len(labels_b)} for reader B")
    order = tuple(labels) if labels is not None else tuple(sorted(set(labels_a) | set(labels_b)))
    index = {lab: i for i, lab in enumerate(order)}
    missing = sorted((set(labels_a) | set(labels_b)) - set(index))
    if missing:
        raise ValueError(f"labels {missing} are not in the table's labels {list(order)}")
    table = np.zeros((len(order), len(order)), np.int64)
    if len(labels_a):
        ia = np.fromiter((index[x] for x in labels_a), np.int64, len(labels_a))
        ib = np.fromiter((index[x] for x in labels_b), np.int64, len(labels_b))
        np.add.at(table, (ia, ib), 1)
    return table, order


def kappa_from_table(table: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """``(observed, expected, kappa)`` of a square count table (module docstring for the rules:
    all None for an empty table, kappa None when expected agreement is 1)."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"a square table is needed, got shape {t.shape}")
    n = t.sum()
    if n <= 0:
        return None, None, None
    observed = float(np.trace(t) / n)
    expected = float(np.dot(t.sum(axis=1) / n, t.sum(axis=0) / n))
    # p_e reaches 1 only when both readers used one and the same label for every case; the
    # tolerance absorbs rounding of the products, never a real disagreement (>= 1/n^2).
    if expected >= 1.0 - 1e-12:
        return observed, expected, None
    return observed, expected, float((observed - expected) / (1.0 - expected))


def agreement(ids: Sequence[str], labels_a: Sequence[str], labels_b: Sequence[str]) -> Agreement:
    """Agreement of two readers on the cases ``ids`` (one label each per case)."""
    if not (len(ids) == len(labels_a) == len(labels_b)):
        raise ValueError(f"{len(ids)} ids, {len(labels_a)} and {len(labels_b)} labels: one each per case")
    table, order = confusion(labels_a, labels_b)
    observed, expected, kappa = kappa_from_table(table)
    disagree = tuple(sorted(str(i) for i, x, y in zip(ids, labels_a, labels_b) if x != y))
    return Agreement(len(ids), observed, expected, kappa, disagree, order, table)


def pair_agreement(a: Mapping[str, tuple[str | None, str]], b: Mapping[str, tuple[str | None, str]], *,
                   names: tuple[str, str] = ("a", "b")) -> PairAgreement:
    """Agreement of two readers given as ``{image_id: (category when judged, verdict)}``:
    overall (labels ``"<category>: <verdict>"``) and for each of :data:`CATEGORIES`."""
    shared = sorted(set(a) & set(b))
    cats = {i: a[i][0] if a[i][0] == b[i][0] else None for i in shared}

    def label(i: str, verdict: str) -> str:
        return f"{cats[i]}: {verdict}" if cats[i] else verdict

    overall = agreement(shared, [label(i, a[i][1]) for i in shared], [label(i, b[i][1]) for i in shared])
    by_category = {}
    for c in CATEGORIES:
        ids = [i for i in shared if cats[i] == c]
        by_category[c] = agreement(ids, [a[i][1] for i in ids], [b[i][1] for i in ids])
    return PairAgreement(names[0], names[1], overall, by_category)


def reader_agreement(rows: Iterable[Any]) -> list[PairAgreement]:
    """One :class:`PairAgreement` per pair of readers (sorted by names) from review rows
    (objects with ``image_id``, ``reader``, ``category``, ``verdict``; rows without a verdict
    are ignored). Fewer than two readers give an empty list."""
    by_reader: dict[str, dict[str, tuple[str | None, str]]] = {}
    for r in rows:
        if r.verdict:
            by_reader.setdefault(str(r.reader), {})[str(r.image_id)] = (r.category, str(r.verdict))
    return [pair_agreement(by_reader[x], by_reader[y], names=(x, y))
            for x, y in combinations(sorted(by_reader), 2)]


def agreement_rows(pairs: Sequence[PairAgreement]) -> list[dict[str, Any]]:
    """A flat table for display: per pair, one row ``overall`` then one per category with
    cases; keys ``reader_a, reader_b, category, n, observed, kappa, disagree`` (a count) and
    ``disagree_ids``."""
    out: list[dict[str, Any]] = []
    for p in pairs:
        parts = [("overall", p.overall)] + [(c, p.by_category[c]) for c in CATEGORIES if p.by_category[c].n]
        for name, ag in parts:
            out.append({"reader_a": p.a, "reader_b": p.b, "category": name, "n": ag.n, "observed": ag.observed,
                        "kappa": ag.kappa, "disagree": len(ag.disagree), "disagree_ids": list(ag.disagree)})
    return out
