"""pneumo.model.imagenet: where Keras caches the VGG16 ImageNet weights, and the md5 check (no TensorFlow)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from pneumo.model import imagenet
from pneumo.config import IMAGENET_NOTOP_FILE


def test_cache_path_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert imagenet.keras_home() == tmp_path
    assert imagenet.imagenet_cache_path() == tmp_path / "models" / IMAGENET_NOTOP_FILE
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert imagenet.imagenet_cache_path() == tmp_path / "home" / ".keras" / "models" / IMAGENET_NOTOP_FILE


def test_keras_reads_the_same_home(tmp_path):
    """The path here is where Keras itself caches: same KERAS_HOME rule (checked in a fresh process)."""
    code = ("import keras.src.backend.config as c, pneumo.model.imagenet as i, sys; "
            "sys.exit(0 if str(i.keras_home()) == c.keras_home() else 1)")
    env = {"KERAS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[1],
                          capture_output=True).returncode == 0


def test_missing_and_wrong_files_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "models" / IMAGENET_NOTOP_FILE
    assert imagenet.imagenet_cache_problem() == f"{path} is not there"
    assert not imagenet.imagenet_weights_available()
    path.parent.mkdir()
    path.write_bytes(b"\x89HDF half a download")
    problem = imagenet.imagenet_cache_problem()
    assert str(path) in problem and "md5" in problem and imagenet.IMAGENET_NOTOP_MD5 in problem
    assert not imagenet.imagenet_weights_available()
    fix = imagenet.imagenet_fix()
    assert imagenet.IMAGENET_NOTOP_URL in fix and str(path) in fix


def test_the_right_md5_is_available_and_a_replaced_file_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "models" / IMAGENET_NOTOP_FILE
    path.parent.mkdir()
    path.write_bytes(b"stand-in weights")
    monkeypatch.setattr(imagenet, "IMAGENET_NOTOP_MD5", hashlib.md5(b"stand-in weights").hexdigest())
    assert imagenet.imagenet_weights_available()
    path.write_bytes(b"other bytes, other size")
    assert not imagenet.imagenet_weights_available()


def test_a_folder_in_place_of_the_file_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "models" / IMAGENET_NOTOP_FILE
    path.mkdir(parents=True)  # a folder where the file should be
    assert "is not a file" in imagenet.imagenet_cache_problem(path)


def test_imports_without_tensorflow():
    code = "import sys, pneumo.model.imagenet; sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
