"""pneumo.train.distribute: strategies and the Keras multi-worker workarounds, isolated and checked.

``test_keras_still_has_what_the_workarounds_patch`` is the canary for a Keras upgrade: it fails
naming the installed Keras version when the private names the patches need are gone.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")
from pneumo.train import distribute  # noqa: E402
from pneumo.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_keras_still_has_what_the_workarounds_patch():
    try:
        distribute.check_keras_internals()
    except distribute.KerasInternalsChanged as e:
        pytest.fail(f"Keras {keras.__version__} broke pneumo.train.distribute's multi-worker workarounds: {e}")


def test_a_missing_private_name_fails_loudly_with_the_keras_version(monkeypatch):
    monkeypatch.setattr(keras.Model, "_symbolic_build", None)  # inherited: shadow it, as if removed
    with pytest.raises(distribute.KerasInternalsChanged, match=re.escape(f"Keras {keras.__version__}")) as e:
        distribute.check_keras_internals()
    assert "keras.Model._symbolic_build" in str(e.value)
    from keras.src.backend.tensorflow import trainer

    monkeypatch.delattr(trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(distribute.KerasInternalsChanged, match="_collective_all_reduce_multi_worker"):
        distribute.check_keras_internals()


@pytest.mark.parametrize("tf_config, role", [
    (None, (1, True)),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, (2, True)),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, (2, False)),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, (2, False)),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, (2, True)),
])
def test_cluster_role_from_tf_config(monkeypatch, tf_config, role):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.cluster_role() == role


def test_bad_tf_config_is_input_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG is not valid JSON"):
        distribute.cluster_role()


def test_no_private_keras_or_streamlit_import_outside_the_compatibility_module():
    offenders = []
    for path in [*ROOT.glob("pneumo/**/*.py"), *ROOT.glob("pneumo_app/**/*.py"), *ROOT.glob("*.py")]:
        if path.name == "distribute.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import)\s+(keras\.src|streamlit\.runtime)\b|\bPagesManager\.", text, re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
