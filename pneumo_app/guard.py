"""What the app checks before it shows anything from the workspace.

A syntax error in ``.streamlit/config.toml`` makes Streamlit ignore the whole file and fall
back to its defaults: listen on every network interface, let the browser send usage
statistics, show full tracebacks (with server paths) and "Ask Google / Ask ChatGPT" links
that put them in a URL. So the app reads the settings it relies on from Streamlit itself
(:func:`streamlit.config.get_option`), whatever file they came from, and refuses to show data
when one does not hold, saying what to fix (:func:`setting_problems`). Serving on the network
stays possible: an address given on the command line (``--server.address 0.0.0.0``) or in
``STREAMLIT_SERVER_ADDRESS`` is the user's choice and is accepted.

The workspace is checked next (:func:`pneumo.settings.workspace_problem`): a setting naming a
file, not a folder, is one message instead of an error on every page.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from streamlit import config

#: The project's Streamlit settings file (beside ``streamlit_app.py``).
CONFIG_FILE = Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Where Streamlit says an option came from when it was given as `--server.address` or in the
# STREAMLIT_SERVER_ADDRESS environment variable (streamlit.config's own wording).
_CHOSEN_BY_USER = ("command-line argument or environment variable", "environment variable")
_SHORT_ERROR_DETAILS = ("type", "none", False, "false", "False")
_NO_ERROR_LINKS = (False, "false", "False")


def _is_loopback(address: Any) -> bool:
    return isinstance(address, str) and (address in LOOPBACK or address.startswith("127."))


def setting_problems() -> list[str]:
    """One sentence per Streamlit setting the app relies on that does not hold (empty when
    all do): ``server.address`` on this machine only (unless chosen on the command line),
    ``browser.gatherUsageStats`` off, ``client.showErrorDetails`` short (``"type"``),
    ``client.showErrorLinks`` off."""
    problems = []
    address = config.get_option("server.address")
    if not _is_loopback(address) and config.get_where_defined("server.address") not in _CHOSEN_BY_USER:
        shown = f"is {address!r}" if address else "is not set"
        problems.append(f"server.address {shown}, so the app would be reachable from other machines; set it to "
                        '"127.0.0.1" (to serve on the network, pass --server.address on the command line)')
    if config.get_option("browser.gatherUsageStats") is not False:
        problems.append("browser.gatherUsageStats is on, so the browser sends usage statistics out; set it to false")
    details = config.get_option("client.showErrorDetails")
    if details not in _SHORT_ERROR_DETAILS:
        problems.append(f"client.showErrorDetails is {details!r}, so errors show tracebacks with server paths; "
                        'set it to "type"')
    if config.get_option("client.showErrorLinks") not in _NO_ERROR_LINKS:
        problems.append("client.showErrorLinks is on, so error boxes link to Google and ChatGPT with the error in "
                        'the URL; set it to "false"')
    return problems


def config_file_problem(path: Path | None = None) -> str | None:
    """Why Streamlit would have ignored ``path`` (default :data:`CONFIG_FILE`: missing,
    unreadable, not valid TOML), or None."""
    path = CONFIG_FILE if path is None else path
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, UnicodeDecodeError) as e:
        return f"{path} cannot be read ({e})"
    except tomllib.TOMLDecodeError as e:
        return f"{path} is not valid TOML ({e}), so Streamlit ignored all of it"
    return None


def start_problem() -> list[str] | None:
    """What the app shows instead of any page when its settings do not hold: a heading, one
    line per problem and what to do (plain text, for the caller to escape), or None."""
    problems = setting_problems()
    if not problems:
        return None
    cause = config_file_problem()
    fix = (f"Likely cause: {cause}. Fix the file and restart the app." if cause else
           f"Set these in {CONFIG_FILE} (or on the command line) and restart the app.")
    return ["pneumo shows no data until Streamlit's settings hold what it relies on:", *problems, fix]
