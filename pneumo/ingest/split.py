"""Seeded train/dev/test split of a manifest.

The blog shuffled the sorted file list with ``random.seed(2); random.shuffle(pairs)`` and
sliced 250, 40 and 40 batches of 32. Here the generator is a private
``random.Random(seed)`` (same sequence as the blog's, no global state), and the slicing is a
first-fit over shuffled groups, so the plain case is exactly the blog's slicing while
``stratify`` (same positive fraction everywhere) and ``group_by_patient`` (no patient in
two splits) reuse the same loop with extra capacity checks.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from pneumo.config import SPLITS, SplitConfig
from pneumo.errors import InputError



@dataclass(frozen=True)
class _Group:
    members: tuple[int, ...]
    n_pos: int

    @property
    def n_neg(self) -> int:
        return len(self.members) - self.n_pos


def split_counts(n: int, config: SplitConfig) -> tuple[int, int, int]:
    """Target sizes of train/dev/test for ``n`` samples.

    Exact mode (``config.batches``): ``batches * batch_size`` each, an error naming the
    shortfall when ``n`` is too small. Proportional mode: largest-remainder rounding of
    ``config.proportions`` so the three sizes add up to ``n``.
    """
    if config.batches is not None:
        if len(config.batches) != 3 or any(b < 0 for b in config.batches):
            raise InputError(f"split batches must be three non-negative integers, got {config.batches}")
        if config.batch_size < 1:
            raise InputError(f"batch size must be positive, got {config.batch_size}")
        counts = tuple(int(b) * config.batch_size for b in config.batches)
        need = sum(counts)
        if need > n:
            raise InputError(
                f"split batches {','.join(map(str, config.batches))} x {config.batch_size} need "
                f"{need} pairs, but only {n} are available ({need - n} short)"
            )
        return counts  # type: ignore[return-value]
    props = [float(p) for p in config.proportions]
    if len(props) != 3 or any(p < 0 or math.isnan(p) for p in props) or sum(props) <= 0:
        raise InputError(f"split proportions must be three non-negative numbers, not all 0: {config.proportions}")
    return _largest_remainder(n, props)


def _largest_remainder(total: int, weights: Sequence[float]) -> tuple[int, int, int]:
    s = sum(weights)
    raw = [total * w / s if s else 0.0 for w in weights]
    base = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[: total - sum(base)]:
        base[i] += 1
    return tuple(base)  # type: ignore[return-value]


def split_samples(
    patients: Sequence[str],
    config: SplitConfig,
    positives: Sequence[bool] | None = None,
) -> dict[str, list[int]]:
    """Assign sample indices to ``train``/``dev``/``test``.

    ``patients``: one grouping key per sample (only used with ``group_by_patient``).
    ``positives``: one flag per sample, required with ``stratify``. Samples left over in
    exact mode are not used. Deterministic for a given seed and input order.
    """
    n = len(patients)
    if n == 0:
        raise InputError("nothing to split: the source has no image/mask pairs")
    if config.stratify and positives is None:
        raise InputError("stratify needs the positive flag of every sample")
    if positives is not None and len(positives) != n:
        raise ValueError("positives and patients differ in length")
    pos = [bool(p) for p in positives] if positives is not None else [False] * n
    targets = split_counts(n, config)
    exact = config.batches is not None

    if config.group_by_patient:
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(patients):
            by_key.setdefault(key, []).append(i)
        groups = [_Group(tuple(m), sum(pos[i] for i in m)) for m in by_key.values()]
    else:
        groups = [_Group((i,), int(pos[i])) for i in range(n)]
    random.Random(config.seed).shuffle(groups)

    if config.stratify:
        n_pos = sum(pos)
        used = sum(targets)
        pos_targets = _largest_remainder(round(used * n_pos / n), targets) if used else (0, 0, 0)
    else:
        pos_targets = None

    assigned: list[list[int]] = [[], [], []]
    filled = [0, 0, 0]
    filled_pos = [0, 0, 0]
    leftovers: list[_Group] = []
    for g in groups:
        for s in range(3):
            if filled[s] + len(g.members) > targets[s]:
                continue
            if pos_targets is not None and (
                filled_pos[s] + g.n_pos > pos_targets[s]
                or (filled[s] - filled_pos[s]) + g.n_neg > targets[s] - pos_targets[s]
            ):
                continue
            assigned[s].extend(g.members)
            filled[s] += len(g.members)
            filled_pos[s] += g.n_pos
            break
        else:
            leftovers.append(g)

    if not exact:
        # Proportional mode uses every sample: groups that fit nowhere exactly go to the
        # split furthest below its target, so the proportions stay as close as possible.
        for g in leftovers:
            s = min(range(3), key=lambda k: (filled[k] / targets[k]) if targets[k] else math.inf)
            if not targets[s]:
                s = 0
            assigned[s].extend(g.members)
            filled[s] += len(g.members)
    else:
        short = [f"{name} {filled[s]}/{targets[s]}" for s, name in enumerate(SPLITS) if filled[s] < targets[s]]
        if short:
            why = "patient groups" if config.group_by_patient else "positive/negative samples"
            raise InputError(
                f"cannot fill the exact split with whole {why}: {', '.join(short)}; "
                "use proportions instead of --split-batches, or more data"
            )
    return {name: assigned[s] for s, name in enumerate(SPLITS)}
