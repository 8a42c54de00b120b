"""Exceptions that carry a message meant for the user.

The CLI prints a :class:`PneumoError` as one line (``error: ...``) and exits 2;
the app shows it with ``st.error``. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class PneumoError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class InputError(PneumoError, ValueError):
    """Bad user input: a file, folder, CSV row, option or config value.

    The message names the file (or row, or option) and the problem.
    """


class PackFormatError(InputError):
    """A file that is not a pneumo pack, or a damaged one."""
