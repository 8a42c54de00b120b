"""The pack a run trained on: its fingerprint in ``RUN/pack.json``, checked before reuse.

A pack replaced or rewritten under a run (same name, other images) would silently mix two
datasets: resuming would retrain on the new one, evaluation would score the model on images
it was not split on. So the trainer records ``{"path", "size", "mtime", "ids_sha256",
"recorded"}`` and :func:`check_pack` refuses a pack that differs, naming what changed, unless
the caller allows it (``--allow-changed-pack``). No TensorFlow.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pneumo._io import atomic_write_json, load_json, now_iso
from pneumo.errors import InputError

__all__ = ["PACK_RECORD", "pack_fingerprint", "record_pack", "check_pack"]

PACK_RECORD = "pack.json"


def pack_fingerprint(pack: str | os.PathLike) -> dict:
    """``{"path", "size", "mtime", "ids_sha256"}`` of a pack: its byte size, modification time
    and a digest of its ids, split by split. Raises :class:`InputError` if it cannot be read."""
    import h5py

    path = Path(pack)
    try:
        st = path.stat()
        digest = hashlib.sha256()
        with h5py.File(path, "r") as f:
            for split in ("train", "dev", "test"):
                digest.update(f"\0{split}\0".encode())
                if f"ids_{split}" in f:
                    for v in f[f"ids_{split}"][()]:
                        digest.update((v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).encode())
                        digest.update(b"\n")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the pack to fingerprint it ({e})") from None
    return {"path": str(path), "size": st.st_size, "mtime": st.st_mtime, "ids_sha256": digest.hexdigest()}


def record_pack(run_dir: Path, fingerprint: dict) -> None:
    """Write ``RUN/pack.json`` (the fingerprint checked by resume and evaluation)."""
    atomic_write_json(run_dir / PACK_RECORD, {**fingerprint, "recorded": now_iso()})


def _changes(old: dict, new: dict) -> list[str]:
    out = []
    if old.get("size") != new["size"]:
        out.append(f"size {old.get('size')} -> {new['size']} bytes")
    if not isinstance(old.get("mtime"), (int, float)) or abs(old["mtime"] - new["mtime"]) > 1e-3:
        out.append("modification time")
    if old.get("ids_sha256") != new["ids_sha256"]:
        out.append("image ids")
    return out


def check_pack(run_dir: str | os.PathLike, pack: str | os.PathLike, *, allow_changed: bool = False) -> dict:
    """Compare ``pack`` with the fingerprint recorded in ``RUN/pack.json``; return the new one.

    Raises :class:`InputError` naming what changed (size, modification time, ids) unless
    ``allow_changed``. A run without a record (older runs) passes; a damaged record fails.
    """
    run_dir = Path(run_dir)
    new = pack_fingerprint(pack)
    old, problem = load_json(run_dir / PACK_RECORD)
    if problem == "missing":
        return new
    if not isinstance(old, dict):
        if allow_changed:
            return new
        raise InputError(f"{run_dir / PACK_RECORD}: damaged ({problem or 'not an object'}); pass "
                         f"--allow-changed-pack to use pack {pack} anyway")
    changed = _changes(old, new)
    if changed and not allow_changed:
        raise InputError(f"pack {pack} changed since run {run_dir.name} trained on it ({', '.join(changed)}); "
                         f"pass --allow-changed-pack to use it anyway")
    return new
