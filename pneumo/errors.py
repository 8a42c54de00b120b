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


def user_message(e: BaseException) -> str:
    """One line for a status file or log: a :class:`PneumoError`'s own message, else
    ``Type: first line`` (at most 500 characters), "interrupted" for Ctrl-C."""
    if isinstance(e, PneumoError):
        return str(e)
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:500]}" if text else type(e).__name__
