"""Config files: a config dataclass as JSON (a run's config file, ``train --config FILE``).

:mod:`pneumo.config` turns configs into dicts and back without touching files; this writes and
reads them (atomically; errors name the file). The run folder names its own config file
(:attr:`pneumo.store.run.RunFolder.config`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pneumo._io import atomic_write_json
from pneumo.config import from_dict, to_dict
from pneumo.errors import InputError

T = TypeVar("T")

__all__ = ["save_config", "load_config"]


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config dataclass to ``path`` as JSON, atomically."""
    atomic_write_json(path, to_dict(cfg))


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config dataclass written by :func:`save_config`; errors name the file.

    Unknown keys are refused (:func:`pneumo.config.from_dict`); missing keys take defaults, so an
    older file still loads.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    return from_dict(cls, data, where=str(path))
