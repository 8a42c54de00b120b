"""``python -m pneumo``: one sub-command per stage.

Each sub-command lives in its own module under ``pneumo.cli`` with two functions:
``register(subparsers)`` (argparse only; must import nothing heavy) and
``run(args) -> int``, which imports the library lazily. So ``pneumo pack`` and
``pneumo info`` never import TensorFlow, and start-up stays fast.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from types import ModuleType
from typing import Sequence

from pneumo.cli import curate, demo_data, evaluate, info, pack, predict, quickstart, review, train

# The command table: sub-command name -> its module. Order here is the order of
# ``python -m pneumo --help``; each module's ``register`` adds the sub-parser of that name.
COMMANDS: dict[str, ModuleType] = {
    "quickstart": quickstart,
    "pack": pack,
    "demo-data": demo_data,
    "info": info,
    "train": train,
    "evaluate": evaluate,
    "predict": predict,
    "review": review,
    "curate": curate,
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser: one sub-parser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m pneumo",
        description="Pneumothorax segmentation on chest X-rays: pack, train, evaluate, review.",
    )
    from pneumo import __version__

    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; user errors print one line and return 2."""
    from pneumo.errors import PneumoError

    # TensorFlow's C++ start-up chatter (oneDNN notes, "no CUDA driver") buries the useful
    # lines; its Python-level errors still surface as exceptions. Users may override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PneumoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `python -m pneumo info x | head` must not print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # Not a bug but the machine (a read-only or foreign folder the checks before the work
        # could not foresee): one line naming the file, as for bad input.
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
