"""The demo source: synthetic chest phantoms (:mod:`pneumo.ingest.phantom`), rendered when loaded."""
from __future__ import annotations

import numpy as np

from pneumo.errors import InputError
from pneumo.ingest import phantom
from pneumo.ingest.imageio import MAX_PIXELS, check_pixels
from pneumo.ingest.manifest import Manifest, Sample

__all__ = ["demo_source", "load_pair", "is_positive"]


def demo_source(count: int, size: int = 256, seed: int = 0) -> Manifest:
    """``count`` demo phantoms: ids ``phantom-00000``..., rendered at ``size`` on :func:`load_pair`.

    Deterministic in ``seed``; ``positive`` is known up front (``phantom.is_positive``).
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"--count: need a positive number of demo images, got {count!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"--size: need a positive image size, got {size!r}")
    samples = []
    for index in range(int(count)):
        phantom_seed = phantom.sample_seed(seed, index)
        sample_id = f"phantom-{index:05d}"
        samples.append(
            Sample(
                id=sample_id,
                patient=sample_id,
                kind="demo",
                phantom_seed=phantom_seed,
                size=int(size),
                positive=bool(phantom.is_positive(phantom_seed)),
            )
        )
    positives = sum(s.positive for s in samples)
    return Manifest(
        kind="demo",
        samples=samples,
        skipped=[],
        info={"samples": len(samples), "positive": positives, "negative": len(samples) - positives, "seed": seed},
    )


def load_pair(sample: Sample, max_pixels: int | None = MAX_PIXELS, dicom_window: str = "voi") -> tuple[np.ndarray, np.ndarray]:
    """Render the sample's phantom (see :func:`pneumo.ingest.sources.load_pair`)."""
    check_pixels(sample.id, sample.size, sample.size, max_pixels)
    return phantom.make_phantom(sample.phantom_seed, sample.size, positive=sample.positive)


def is_positive(sample: Sample, max_pixels: int | None = MAX_PIXELS) -> bool:
    """Whether the sample's phantom has a lesion (no rendering)."""
    return bool(phantom.is_positive(sample.phantom_seed))
