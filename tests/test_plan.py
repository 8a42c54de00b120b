"""pneumo.plan: a TrainConfig checked against the files it names (TensorFlow-free), the warm
start's config, and the pack fingerprint a run recorded."""
from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_test_pack
from pneumo.config import PRESETS, TrainConfig
from pneumo.errors import InputError
from pneumo.plan import RunPlan, plan_run

ROOT = Path(__file__).resolve().parents[1]


def _write_list(path: Path, ids: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "source", "category"])
        w.writerows([i, "", "label doubtful"] for i in ids)
    return path


def test_plan_imports_no_tensorflow(tiny_pack, tmp_path):
    """The CLI, the app and jobs validate a config without paying for (or needing) TensorFlow."""
    lst = _write_list(tmp_path / "l.csv", ["train-0001"])
    code = ("import sys; from pneumo.config import TrainConfig; from pneumo.plan import plan_run; "
            f"info = plan_run(TrainConfig(pack={str(tiny_pack)!r}, encoder_weights=None, exclude={str(lst)!r})); "
            "assert info.train == 47, info; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("change, message", [
    (dict(variant="vgg19"), "variant 'vgg19' is unknown"),
    (dict(loss="focal"), "loss 'focal' is unknown"),
    (dict(epochs=0), "epochs = 0"),
    (dict(batch_size=True), "batch_size = True"),
    (dict(lr=float("inf")), "lr = inf"),
    (dict(fine_tune_epochs=2, fine_tune_lr=0), "fine_tune_lr = 0"),
    (dict(freeze_encoder="yes"), "freeze_encoder = 'yes'"),
    (dict(xla=1), "xla = 1"),
    (dict(width=0.5), "width 0.5 applies to variant 'unet-bn' only"),
    (dict(positive_fraction=1.5), "positive_fraction = 1.5"),
    (dict(lr_schedule="step"), "lr_schedule 'step' is unknown"),
    (dict(init_from="/nonexistent/run"), "init_from /nonexistent/run: no best.keras"),
    (dict(exclude="/nonexistent/list.csv"), "/nonexistent/list.csv: exclusion list not found"),
    (dict(exclude=3), "exclude = 3"),
    (dict(pack=""), "no pack file given"),
])
def test_check_names_the_bad_option(tiny_pack, change, message):
    cfg = TrainConfig(**{"pack": str(tiny_pack), "encoder_weights": None, **change})
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        plan_run(cfg)


def test_presets_pass_check_with_a_pack(tiny_pack):
    for name, p in PRESETS.items():
        weights = None if p.encoder_weights == "imagenet" else p.encoder_weights  # no download in tests
        info = plan_run(dataclasses.replace(p, pack=str(tiny_pack), encoder_weights=weights))
        assert info.size == 64, name


def test_check_counts_after_exclusion(tiny_pack, tmp_path):
    lst = _write_list(tmp_path / "l.csv", ["train-0000", "train-0003", "dev-0002", "test-0001", "gone"])
    info = plan_run(TrainConfig(pack=str(tiny_pack), encoder_weights=None, batch_size=8, exclude=str(lst)))
    # 48 - 2 train (6 steps of 8), 16 - 1 dev (2 batches); test and unknown ids change nothing
    assert dataclasses.replace(info, exclusion=None) == RunPlan(size=64, train=46, dev=15, steps=6,
                                                                validation_steps=2, dev_batches=2)
    assert info.exclusion.ids == {"train": ["train-0000", "train-0003"], "dev": ["dev-0002"]}
    assert info.exclusion.test_kept == ["test-0001"] and info.exclusion.unknown == ["gone"]


def test_check_refuses_a_list_that_empties_a_split(tmp_path):
    pack = write_test_pack(tmp_path / "p.h5", counts=(4, 2, 2), size=32)
    lst = _write_list(tmp_path / "l.csv", ["dev-0000", "dev-0001"])
    with pytest.raises(InputError, match="lists every image of the dev split"):
        plan_run(TrainConfig(pack=str(pack), encoder_weights=None, exclude=str(lst)))
