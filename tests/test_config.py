"""pneumo.config: values only (vocabularies, labels, presets, paths, dict round trips); checking a
config against its files is pneumo.plan's (tests/test_plan.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pneumo import config as C
from pneumo.config import TrainConfig, check_registry, check_width, normalise_train_paths
from pneumo.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_check_options_checks_values_without_reading_a_file(tmp_path):
    missing = str(tmp_path / "nowhere.h5")  # never opened: values only
    assert C.check_options(TrainConfig(pack=missing, encoder_weights=None)) == TrainConfig(pack=missing, encoder_weights=None)
    with pytest.raises(InputError, match="variant 'vgg19' is unknown"):
        C.check_options(TrainConfig(pack=missing, variant="vgg19"))
    with pytest.raises(InputError, match="exclude = 3: must be a path or null"):
        C.check_options(TrainConfig(pack=missing, exclude=3))


def test_check_width_lives_in_config_and_model_reexports_it():
    assert check_width("unet-bn", 0.25) == 0.25
    with pytest.raises(InputError, match="fit VGG16 at width 1 only"):
        check_width("unet-bn", 0.5, "imagenet")
    pytest.importorskip("keras")
    from pneumo.model import networks as model

    assert model.check_width is check_width


def test_exclude_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = normalise_train_paths(TrainConfig(pack="p.h5", exclude="lists/../relabel.csv"))
    assert cfg.exclude == str(tmp_path / "relabel.csv")
    assert normalise_train_paths(TrainConfig(exclude="  ")).exclude is None
    assert normalise_train_paths(TrainConfig()).exclude is None


# --------------------------------------------------------------------------- vocabularies, labels, registries
@pytest.mark.parametrize("labels, vocabulary", [
    (C.VARIANT_LABELS, C.VARIANTS), (C.LOSS_LABELS, C.LOSSES), (C.LR_SCHEDULE_LABELS, C.LR_SCHEDULES),
])
def test_labels_are_defined_once_for_exactly_the_vocabulary(labels, vocabulary):
    assert tuple(labels) == vocabulary  # same names, same order (menus and --help list them so)
    assert all(isinstance(v, str) and v.strip() for v in labels.values())


def test_check_registry_names_the_difference():
    check_registry("R", {"a": 1, "b": 2}, ("a", "b"))  # equal: silent
    with pytest.raises(RuntimeError, match=r"^R does not match its vocabulary \(a, b, c\): missing 'c'$"):
        check_registry("R", ["a", "b"], ("a", "b", "c"))
    with pytest.raises(RuntimeError, match=r"missing 'b'; not in the vocabulary 'x', 'y'$"):
        check_registry("R", ["a", "x", "y"], ("a", "b"))
    with pytest.raises(RuntimeError, match=r"order b, a instead of a, b$"):
        check_registry("R", ["b", "a"], ("a", "b"))


def test_a_label_table_out_of_step_stops_the_import():
    """The labels are checked when pneumo.config is imported, not when a menu first needs one."""
    code = ("import pathlib, sys; src = pathlib.Path(sys.argv[1]).read_text(); "
            "src = src.replace('LOSSES = (\"bce\", ', 'LOSSES = (\"focal\", \"bce\", ', 1); "
            "exec(compile(src, 'config.py', 'exec'), {'__name__': 'patched_config'})")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "pneumo" / "config.py")], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0
    assert "pneumo.config.LOSS_LABELS does not match its vocabulary" in out.stderr and "missing 'focal'" in out.stderr
