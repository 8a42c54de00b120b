"""Where packs and runs live: one setting, the workspace folder.

``PNEUMO_WORKSPACE`` (default: the current directory) holds ``data/`` (packs) and
``runs/`` (training runs). ``PNEUMO_DATA_DIR`` and ``PNEUMO_RUNS_DIR`` override each.
"""
from __future__ import annotations

import os
from pathlib import Path

DEMO_PACK_NAME = "demo.h5"


def workspace() -> Path:
    """The workspace folder (``$PNEUMO_WORKSPACE`` or the current directory)."""
    return Path(os.environ.get("PNEUMO_WORKSPACE", ".")).expanduser()


def data_dir() -> Path:
    """Folder of HDF5 packs (``$PNEUMO_DATA_DIR`` or ``<workspace>/data``)."""
    env = os.environ.get("PNEUMO_DATA_DIR")
    return Path(env).expanduser() if env else workspace() / "data"


def runs_dir() -> Path:
    """Folder of training runs (``$PNEUMO_RUNS_DIR`` or ``<workspace>/runs``)."""
    env = os.environ.get("PNEUMO_RUNS_DIR")
    return Path(env).expanduser() if env else workspace() / "runs"


def demo_pack_path() -> Path:
    """Where the app keeps the demo pack it creates on first launch."""
    return data_dir() / DEMO_PACK_NAME
