"""pneumo.cli: the command table (pneumo.cli.COMMANDS) and the labels --help takes from pneumo.config."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo import cli
from pneumo import config as C

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_has_register_and_run():
    assert cli.COMMANDS, "no commands"
    for name, module in cli.COMMANDS.items():
        assert callable(getattr(module, "register", None)), f"{name}: {module.__name__} has no register()"
        assert callable(getattr(module, "run", None)), f"{name}: {module.__name__} has no run()"


def _runs(parser: argparse.ArgumentParser) -> set:
    """The ``func`` defaults a parser (or, for ``pack``, each of its source sub-parsers) sets."""
    if parser.get_default("func") is not None:
        return {parser.get_default("func")}
    return {f for sub in _subparsers(parser).values() for f in _runs(sub)}


def test_each_command_registers_its_name_and_runs_its_module():
    """The table's names and order are the parser's, and each sub-parser runs its own module's run()."""
    parsers = _subparsers(cli.build_parser())
    assert list(parsers) == list(cli.COMMANDS)
    for name, module in cli.COMMANDS.items():
        assert _runs(parsers[name]) == {module.run}, name


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "pneumo", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    commands = out.stdout.split("\n  COMMAND\n", 1)[1].split("\noptions:", 1)[0]
    listed = re.findall(r"^    (\S+)", commands, re.M)  # deeper lines are the help texts
    assert listed == list(cli.COMMANDS), out.stdout


@pytest.mark.parametrize("option, labels", [
    ("--variant", C.VARIANT_LABELS), ("--loss", C.LOSS_LABELS), ("--lr-schedule", C.LR_SCHEDULE_LABELS),
])
def test_train_help_shows_the_library_labels(monkeypatch, option, labels):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: no wrapping inside a label
    text = _subparsers(cli.build_parser())["train"].format_help()
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(f"{option} NAME")]
    for name, label in labels.items():
        assert (f"{name} = {label}" if label != name else name) in line, (name, line)
