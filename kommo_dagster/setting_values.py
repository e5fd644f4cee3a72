"""The values a setting may hold: a parser per kind of value, and `SettingsError`.

Each parser takes a raw value (text from a variable, a YAML value, a Python value) and the name
of where it came from, and returns the typed value or fails naming both: one parser serves the
environment, ``defs.yaml`` and Python alike. `kommo_dagster.settings.SETTINGS` says which
setting each one reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from kommo_dagster.kommo import config as client
from kommo_dagster.kommo.errors import KommoConfigError

# A plain SQL identifier, which is also what an environment variable's name looks like.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SettingsError(KommoConfigError):
    """A setting holds a value the code location cannot use."""


def invalid(label: str, what: str, value: object) -> SettingsError:
    """The error for ``value`` from ``label``, which must be ``what``."""
    return SettingsError(f"{label} must be {what}, got {value!r}")


# Kommo's cursors are Unix seconds: a partition before the epoch holds nothing, and Dagster
# cannot build daily partitions from a year below 1000 (the load failed without the variable).
# No later floor: an account's oldest record is unknown here (Kommo began about 2010, imports
# may carry earlier dates), and an early start costs only partitions: 1970 loads as fast as
# 2024 (~0.8 s), listing its 20,800 partition keys takes 0.15 s.
EARLIEST_START_DATE = date(1970, 1, 1)


def latest_start_date(today: date | None = None) -> date:
    """The last first day a load accepts: tomorrow in UTC (``today`` is UTC's today by
    default). A later one defines no partition, so nothing would ever run (2062 for 2026); a
    day ahead still takes the local today of a zone ahead of UTC (Auckland's morning is UTC's
    evening before), whose partition opens within hours. A value that loads keeps loading:
    the bound only moves later."""
    return (today or datetime.now(UTC).date()) + timedelta(days=1)


def parse_date(value: object, label: str, *, today: date | None = None) -> date:
    """A first day: written YYYY-MM-DD, from 1970 through tomorrow (`latest_start_date`, of
    ``today``)."""
    if isinstance(value, datetime):  # a date to Python, but which hour, in what zone?
        raise invalid(label, "a date (not a datetime) written YYYY-MM-DD", value)
    if isinstance(value, date):
        day = value
    else:
        text = str(value).strip()
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise ValueError(text)
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid(label, "a date written YYYY-MM-DD", value) from None
    if day < EARLIEST_START_DATE:
        raise invalid(label, f"a date on or after {EARLIEST_START_DATE} (Unix time)", value)
    latest = latest_start_date(today)
    if day > latest:
        what = (
            f"a date on or before {latest} (tomorrow in UTC): a later first day defines no "
            "daily partition, so nothing would run; set the first day to extract"
        )
        raise invalid(label, what, value)
    return day


def parse_names(value: object, label: str) -> tuple[str, ...]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, Sequence) or not all(isinstance(p, str) for p in parts):
        raise invalid(label, "a list of stream names", value)
    return tuple(p.strip().lower() for p in parts if p.strip())


def whole_number(minimum: int, maximum: int, why: str) -> Callable[[object, str], int]:
    """A whole number in ``[minimum, maximum]``; ``why`` says what a larger one would break."""

    def parse(value: object, label: str) -> int:
        text = str(value).strip()
        # ASCII digits: \d would take other scripts' digits too, which int() reads as these.
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text) or int(text) < minimum:
            raise invalid(label, f"a whole number of at least {minimum}", value)
        if int(text) > maximum:
            raise invalid(label, f"a whole number of at most {maximum} ({why})", value)
        return int(text)

    return parse


def parse_seconds(value: object, label: str) -> float:
    # A number written plainly: float() alone would read "1_0" and other scripts' digits.
    text = str(value)
    plain = not isinstance(value, bool) and client.plain_number(text)
    seconds = float(text) if plain else -1.0
    if not 0 < seconds < float("inf"):
        raise invalid(label, "a positive number of seconds", value)
    return seconds


def parse_text(value: object, label: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(label, "a text", value)
    return value.strip()


MEMORY_SIZE = "a DuckDB memory size like 512MB, 2GiB or 80%"
_TOO_SMALL = "a memory size DuckDB can run a small query in"
# A sort of a few thousand short rows: what no statement of a run needs less memory than.
_SMALL_QUERY = "SELECT count(*) FROM (SELECT range, repeat('x', 10) FROM range(10000) ORDER BY 1)"


def memory_size(*, known: str) -> Callable[[object, str], str]:
    """A memory limit DuckDB reads and runs a query in: a bad one (``lots``, ``0MB``) would
    otherwise fail every run at its first connection or statement, long after the definitions
    loaded."""

    def parse(value: object, label: str) -> str:
        text = parse_text(value, label)
        # The default (known) needs no check: opening DuckDB would cost every load (and run)
        # ~20 ms.
        problem = None if text == known else _memory_problem(text)
        if problem:
            raise invalid(label, problem, value)
        return text

    return parse


@functools.cache
def _memory_problem(text: str) -> str | None:
    try:
        con = duckdb.connect(":memory:", config={"memory_limit": text})
    except duckdb.Error:
        return MEMORY_SIZE
    with con:
        try:
            con.execute(_SMALL_QUERY).fetchall()
        except duckdb.Error:  # out of memory
            return _TOO_SMALL
    return None


def parse_optional_text(value: object, label: str) -> str | None:
    return None if value is None or value == "" else parse_text(value, label)


def parse_optional_dir(value: object, label: str) -> Path | None:
    text = parse_optional_text(None if value is None else str(value), label)
    return Path(text).expanduser().absolute() if text else None


def parse_writable_dir(value: object, label: str) -> Path | None:
    """A folder this process can make and write in (or none): a file there would fail every
    run when it first stages rows, long after the definitions loaded."""
    path = parse_optional_dir(value, label)
    problem = None if path is None else client.directory_problem(path)
    if problem:
        raise SettingsError(f"{label} must be a directory, got {str(path)!r}: {problem}")
    return path


def parse_bool(value: object, label: str) -> bool:
    return client.parse_bool(value, name=label)  # type: ignore[arg-type]


def parse_timezone(value: object, label: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    text = str(value).strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(label, "an IANA time zone name", value) from None
    return text


def parse_variable(value: object, label: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise invalid(label, "the name of an environment variable", value)
    return value


def client_check(check: Callable[[Any], Any]) -> Callable[[object, str], Any]:
    """A client validator (`kommo_dagster.kommo.config`); `Settings` renames the variable its
    message names to where the value came from."""
    return lambda value, _label: check(value)
