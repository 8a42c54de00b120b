"""Shared fixtures: tiny packs written straight to the pack layout (docs/architecture.md)."""
from __future__ import annotations

import os

# Quiet TensorFlow, and keep tests on the CPU even where a GPU exists.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import json
from pathlib import Path

import h5py
import numpy as np
import pytest


def write_test_pack(
    path: Path,
    counts: tuple[int, int, int] = (48, 16, 16),
    size: int = 64,
    seed: int = 0,
    positive_every: int = 3,
) -> Path:
    """Write a minimal valid pack of bright disks on noise; every third sample has a dark lesion.

    Images `(N, S, S, 1) uint8`, masks 0/255; the lesion is darker than its surroundings,
    so a model can learn it. Written with h5py directly so it tests the layout, not pack.py.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format="pneumo-pack",
            format_version=1,
            size=size,
            seed=seed,
            split=json.dumps({"proportions": list(counts)}),
            source="test",
            created="2026-01-01T00:00:00+00:00",
            pneumo_version="test",
            report="{}",
        )
        k = 0
        for split, n in zip(("train", "dev", "test"), counts):
            X = np.zeros((n, size, size, 1), np.uint8)
            Y = np.zeros((n, size, size, 1), np.uint8)
            ids = []
            pos = 0
            for i in range(n):
                img = 120 + rng.normal(0, 12, (size, size))
                if k % positive_every == 0:
                    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                    r = rng.integers(size // 10, size // 5)
                    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                    img[m] -= 70
                    Y[i, ..., 0] = m * 255
                    pos += 1
                X[i, ..., 0] = np.clip(img, 0, 255).astype(np.uint8)
                ids.append(f"{split}-{i:04d}")
                k += 1
            f.create_dataset(f"X_{split}", data=X, chunks=(1, size, size, 1) if n else None)
            f.create_dataset(f"Y_{split}", data=Y, chunks=(1, size, size, 1) if n else None)
            f.create_dataset(f"ids_{split}", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            f.attrs[f"count_{split}"] = n
            f.attrs[f"positive_fraction_{split}"] = pos / n if n else 0.0
    return path


@pytest.fixture
def gate(tmp_path, monkeypatch) -> Path:
    """Fake trainers started in this test hold in state ``running`` until ``gate.touch()``:
    a test that must see a run running says when it may go on, instead of racing a clock."""
    path = tmp_path / "fake-trainer-gate"
    monkeypatch.setenv("PNEUMO_FAKE_GATE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_pack(tmp_path_factory) -> Path:
    """A 64 px pack with 48/16/16 samples, about a third positive. Do not modify it."""
    return write_test_pack(tmp_path_factory.mktemp("pack") / "tiny.h5")
