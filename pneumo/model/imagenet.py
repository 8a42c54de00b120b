"""Where Keras keeps the VGG16 ImageNet weights, and whether the file there is the real one.

TensorFlow-free, so the app can say whether pretrained training will work (and where the file
goes) without importing Keras; :mod:`pneumo.model.networks` uses the same functions to load it.

Keras caches ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` in
``$KERAS_HOME/models/`` (default ``~/.keras/models/``; ``/tmp/.keras/models/`` when that home
is not writable) and checks its md5 before use, so a partial download or another file never
passes for ImageNet weights. The same check is made here.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from pneumo.config import IMAGENET_NOTOP_FILE

__all__ = [
    "IMAGENET_NOTOP_FILE",
    "IMAGENET_NOTOP_URL",
    "IMAGENET_NOTOP_MD5",
    "keras_home",
    "imagenet_cache_path",
    "imagenet_cache_problem",
    "imagenet_weights_available",
    "imagenet_fix",
]

# keras.applications.vgg16's WEIGHTS_PATH_NO_TOP and the file_hash it passes to get_file.
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      + IMAGENET_NOTOP_FILE)
IMAGENET_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"


def keras_home() -> Path:
    """Keras' home folder as ``keras.src.backend.config`` sets it, read from the environment now.

    ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras`` when ``~`` is not writable).
    Read now rather than from Keras (which reads it once, at import) so a changed environment
    counts, and so the app need not import Keras.
    """
    env = os.environ.get("KERAS_HOME")
    if env:
        return Path(env).expanduser()
    base = Path("~").expanduser()
    return (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"


def _candidates() -> list[Path]:
    """Where the no-top file may be cached, in the order ``keras.utils.get_file`` uses."""
    home = keras_home()
    out = [home / "models" / IMAGENET_NOTOP_FILE]
    if not os.access(home, os.W_OK):  # get_file's fallback for a home it cannot write
        out.append(Path("/tmp/.keras/models") / IMAGENET_NOTOP_FILE)
    return out


def imagenet_cache_path() -> Path:
    """The cached VGG16 ImageNet no-top weights file: the existing one, else where it belongs.

    ``$KERAS_HOME/models/`` (default ``~/.keras/models/``) + :data:`IMAGENET_NOTOP_FILE`.
    """
    candidates = _candidates()
    return next((p for p in candidates if p.is_file()), candidates[0])


@functools.lru_cache(maxsize=8)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    """md5 of a file; size and mtime in the key so a replaced file is hashed again."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_cache_problem(path: str | os.PathLike | None = None) -> str | None:
    """None when ``path`` (default :func:`imagenet_cache_path`) is Keras' ImageNet no-top file.

    Otherwise what is wrong, naming the path: not there, unreadable, or another file (md5
    differs: a partial download, or weights that are not Keras' ImageNet ones).
    """
    path = Path(path) if path is not None else imagenet_cache_path()
    try:
        st = path.stat()
        if not path.is_file():
            return f"{path} is not a file"
        got = _md5(str(path), st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        return f"{path} is not there"
    except OSError as e:
        return f"{path} cannot be read ({e.strerror or e})"
    if got != IMAGENET_NOTOP_MD5:
        return (f"{path} is not Keras' VGG16 ImageNet no-top weights file (md5 {got}, expected "
                f"{IMAGENET_NOTOP_MD5}: a partial download or another file)")
    return None


def imagenet_weights_available() -> bool:
    """Whether the genuine ImageNet weights are cached, so pretrained training needs no download."""
    return imagenet_cache_problem() is None


def imagenet_fix(path: str | os.PathLike | None = None) -> str:
    """How to get the weights onto this machine, as a sentence naming where the file goes."""
    path = Path(path) if path is not None else imagenet_cache_path()
    return (f"Download {IMAGENET_NOTOP_URL} (on any machine with internet access) and put it at "
            f"{path} (set KERAS_HOME to use another folder; the file goes in its models/ "
            f"subfolder), or train without ImageNet weights (encoder weights none).")
