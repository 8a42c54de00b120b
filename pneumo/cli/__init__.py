"""``python -m pneumo``: one sub-command per stage.

Each sub-command lives in its own module under ``pneumo.cli`` with two functions:
``register(subparsers)`` (argparse only; must import nothing heavy) and
``run(args) -> int``, which imports the library lazily. So ``pneumo pack`` and
``pneumo info`` never import TensorFlow, and start-up stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# Order here is the order of ``python -m pneumo --help``.
_COMMAND_MODULES = ("quickstart", "pack", "demo_data", "info", "train", "evaluate", "predict", "review", "curate")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-command modules that do not exist yet are skipped)."""
    parser = argparse.ArgumentParser(
        prog="python -m pneumo",
        description="Pneumothorax segmentation on chest X-rays: pack, train, evaluate, review.",
    )
    from pneumo import __version__

    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pneumo.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pneumo.cli.{name}":
                continue
            raise
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
