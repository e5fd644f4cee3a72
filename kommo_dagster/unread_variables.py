"""The ``KOMMO_`` variables a code location does not read, and why, warned about at load.

A misspelt or misplaced setting is otherwise silent and leaves its default in force: a
``KOMMO_REQUEST_PER_SECOND=3`` meant to slow the account down leaves the budget at 7, and a
``KOMMO_BR_DUCKDB_PATH`` leaves every account writing the shared file. Such a variable is not a
malformed value of a setting, and another tool of the same team may own a ``KOMMO_`` name, so it
is a warning naming the variable and what to set instead, not a failed load.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping

from kommo_dagster.kommo import config as client
from kommo_dagster.settings import ENV_ACCOUNTS, SETTINGS, Location

# Read by scripts/bootstrap.sh (the virtual environment's folder), not by the code location.
SCRIPT_VARIABLES = frozenset({"KOMMO_VENV"})


class UnreadVariableWarning(UserWarning):
    """A ``KOMMO_`` variable set in the environment that no setting of the code location reads."""


# Each setting's scope, by its variable's suffix.
_SCOPE = {s.variable: s.scope for s in SETTINGS}


def _accounts(location: Location) -> list[str]:
    """The names of ``KOMMO_ACCOUNTS``; none for the single unnamed account."""
    return [a.account for a in location.accounts if a.account is not None]


def read_variables(location: Location) -> frozenset[str]:
    """Every variable the location's settings would read, set or not."""
    names = {ENV_ACCOUNTS, *SCRIPT_VARIABLES}
    accounts = _accounts(location)
    for s in SETTINGS:
        if not accounts or s.scope in ("account", "shared"):
            names.add(s.env)
        if s.scope in ("own", "account"):
            names.update(f"{client.ENV_PREFIX}{a.upper()}_{s.variable}" for a in accounts)
    return frozenset(names)


def _account_and_setting(name: str) -> tuple[str, str] | None:
    """``(account, VARIABLE)`` of a name shaped ``KOMMO_<ACCOUNT>_<VARIABLE>``, if it is."""
    # Longest first: ``KOMMO_BR_FULL_TABLE_STREAMS`` is FULL_TABLE_STREAMS, not STREAMS.
    rest = name.removeprefix(client.ENV_PREFIX)
    for s in sorted(SETTINGS, key=lambda s: -len(s.variable)):
        tail = f"_{s.variable}"
        if rest.endswith(tail) and len(rest) > len(tail):
            return rest.removesuffix(tail).lower(), s.variable
    return None


def _why(name: str, location: Location, read: frozenset[str]) -> str:
    """What a variable nothing reads was probably meant for, and what to set instead."""
    configured = _accounts(location)
    variable = name.removeprefix(client.ENV_PREFIX)
    if configured and _SCOPE.get(variable) == "own":
        return f"with {ENV_ACCOUNTS} each account reads its own KOMMO_<ACCOUNT>_{variable}"
    split = _account_and_setting(name)
    if split is not None:
        account, variable = split
        if _SCOPE[variable] == "single" and configured:
            # KOMMO_SCHEMA would fail the load: each account's schema follows its name.
            return f"with {ENV_ACCOUNTS} no {variable} applies: each account's follows its name"
        if _SCOPE[variable] in ("shared", "single"):
            return f"{variable} is one setting for every account: set KOMMO_{variable}"
        if account not in configured:
            listed = ", ".join(configured) if configured else "not set"
            return f"account {account!r} is not in {ENV_ACCOUNTS} ({listed})"
    close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.8)
    if close:
        return f"did you mean {close[0]}?"
    return "no setting of kommo-dagster has this name (see the README's settings table)"


def unread_variables(
    location: Location, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``{variable: why}`` for each ``KOMMO_`` variable set that ``location`` does not read."""
    env = client.environment(environ)
    read = read_variables(location)
    unread = sorted(n for n in env if n.startswith(client.ENV_PREFIX) and n not in read)
    return {name: _why(name, location, read) for name in unread}


def warn_unread_variables(location: Location, environ: Mapping[str, str] | None = None) -> None:
    """One warning per variable set that no setting reads (its value is never shown: it may be
    a token)."""
    for name, why in unread_variables(location, environ).items():
        warnings.warn(
            f"{name} is set but not read by kommo-dagster: {why}",
            UnreadVariableWarning,
            stacklevel=2,
        )


__all__ = [
    "SCRIPT_VARIABLES",
    "UnreadVariableWarning",
    "read_variables",
    "unread_variables",
    "warn_unread_variables",
]
