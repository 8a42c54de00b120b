"""Split: the blog's seeded slicing, exact batch counts, stratification, patient grouping."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pneumo.config import SplitConfig
from pneumo.errors import InputError
from pneumo.ingest.split import split_counts, split_samples
from pneumo.store.pack import PackInfo


def test_counts_from_proportions_add_up():
    assert split_counts(330, SplitConfig()) == (250, 40, 40)
    for n in (1, 7, 10, 101, 999):
        c = split_counts(n, SplitConfig())
        assert sum(c) == n
    assert split_counts(10, SplitConfig(proportions=(1, 1, 0))) == (5, 5, 0)


def test_exact_batches_and_shortfall_message():
    cfg = SplitConfig(batches=(250, 40, 40), batch_size=32)
    assert split_counts(10560, cfg) == (8000, 1280, 1280)
    with pytest.raises(InputError, match="need 10560 pairs, but only 10000 are available \\(560 short\\)"):
        split_counts(10000, cfg)


def test_plain_split_is_the_blogs_shuffle_and_slice():
    n = 12000
    ids = [f"img{i:05d}" for i in range(n)]
    cfg = SplitConfig(batches=(250, 40, 40), batch_size=32, seed=2)
    parts = split_samples(ids, cfg)

    # The blog: random.seed(2); random.shuffle(pairs); slice 8000/1280/1280.
    state = random.getstate()
    random.seed(2)
    blog = list(range(n))
    random.shuffle(blog)
    random.setstate(state)
    assert parts["train"] == blog[:8000]
    assert parts["dev"] == blog[8000:9280]
    assert parts["test"] == blog[9280:10560]


def test_split_does_not_touch_global_random_state():
    state = random.getstate()
    np_state = np.random.get_state()
    split_samples([str(i) for i in range(100)], SplitConfig(seed=5, stratify=True), [i % 4 == 0 for i in range(100)])
    assert random.getstate() == state
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_seed_changes_the_split_and_is_repeatable():
    ids = [str(i) for i in range(200)]
    a = split_samples(ids, SplitConfig(seed=1))
    b = split_samples(ids, SplitConfig(seed=1))
    c = split_samples(ids, SplitConfig(seed=2))
    assert a == b
    assert a != c
    all_idx = sorted(a["train"] + a["dev"] + a["test"])
    assert all_idx == list(range(200))


def test_stratify_gives_equal_positive_fractions():
    rng = np.random.default_rng(0)
    n = 1000
    pos = list(rng.random(n) < 0.22)
    parts = split_samples([str(i) for i in range(n)], SplitConfig(seed=3, stratify=True), pos)
    fracs = {k: np.mean([pos[i] for i in v]) for k, v in parts.items()}
    total = np.mean(pos)
    for k, f in fracs.items():
        assert abs(f - total) < 0.01, (k, f, total)
    # without stratify the small splits wander further (this seed shows it)
    plain = split_samples([str(i) for i in range(n)], SplitConfig(seed=3), pos)
    spread = max(abs(np.mean([pos[i] for i in v]) - total) for v in plain.values())
    assert spread > max(abs(f - total) for f in fracs.values())


def test_stratify_exact_counts():
    n = 400
    pos = [i % 5 == 0 for i in range(n)]
    parts = split_samples([str(i) for i in range(n)], SplitConfig(batches=(8, 2, 2), batch_size=16, stratify=True), pos)
    assert [len(parts[k]) for k in ("train", "dev", "test")] == [128, 32, 32]
    for v in parts.values():
        assert sum(pos[i] for i in v) / len(v) == pytest.approx(0.2, abs=0.02)


def test_group_by_patient_keeps_patients_together():
    rng = np.random.default_rng(1)
    patients = [f"p{rng.integers(0, 120)}" for _ in range(500)]
    parts = split_samples(patients, SplitConfig(seed=4, group_by_patient=True))
    seen = {}
    for split, idx in parts.items():
        for i in idx:
            assert seen.setdefault(patients[i], split) == split
    assert sorted(sum(parts.values(), [])) == list(range(500))
    # proportions stay close to 250/40/40 (about 76/12/12 %)
    assert abs(len(parts["train"]) / 500 - 250 / 330) < 0.05


def test_group_by_patient_with_stratify_and_exact_counts_error():
    patients = ["a"] * 50 + ["b"] * 50
    with pytest.raises(InputError, match="cannot fill the exact split with whole patient groups"):
        split_samples(patients, SplitConfig(batches=(1, 1, 1), batch_size=10, group_by_patient=True))


def test_stratify_requires_positive_flags_and_empty_source_errors():
    with pytest.raises(InputError, match="positive flag"):
        split_samples(["a", "b"], SplitConfig(stratify=True))
    with pytest.raises(InputError, match="no image/mask pairs"):
        split_samples([], SplitConfig())
    with pytest.raises(InputError, match="proportions"):
        split_counts(10, SplitConfig(proportions=(0, 0, 0)))


def test_report_has_the_blogs_line():
    text = PackInfo(Path("p.h5"), 256, {"train": 8000, "dev": 1280, "test": 1280},
                    {"train": 0.22075, "dev": 0.22734375, "test": 0.2296875}).format_report()
    assert "Train:0.22075, dev:0.22734375, test:0.2296875" in text
    assert "8000" in text and "22.73%" in text
