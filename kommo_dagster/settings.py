"""Settings of the code location that are not the Kommo client's, read from ``KOMMO_*`` variables.

The client's own variables (token, subdomain, base URL, requests per second) belong to
`kommo_dagster.resources.KommoResource`, which resolves them when a run starts. The ones here shape
the definitions themselves (the first partition, where the DuckDB file lives), so they are read
when the code location loads; an invalid value fails the load with the variable's name in the
message rather than failing every run later.

| variable | default | meaning |
|---|---|---|
| ``KOMMO_START_DATE`` | ``2024-01-01`` | first daily partition (UTC) of the incremental streams |
| ``KOMMO_DUCKDB_PATH`` | ``data/kommo_crm.duckdb`` | the DuckDB file (relative: to the cwd) |
| ``KOMMO_DUCKDB_LOCK_TIMEOUT`` | ``600`` | seconds a write waits for the file before failing |
| ``KOMMO_DUCKDB_MEMORY_LIMIT`` | ``512MB`` | DuckDB's memory limit for the writes |
| ``KOMMO_STAGING_DIR`` | the system's temporary directory | where large extractions spill |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_START_DATE = date(2024, 1, 1)
DEFAULT_DUCKDB_PATH = Path("data") / "kommo_crm.duckdb"
DEFAULT_SCHEMA = "kommo"
DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0
DEFAULT_MEMORY_LIMIT = "512MB"


class SettingsError(ValueError):
    """A ``KOMMO_*`` variable holds a value the code location cannot use."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The code location's settings, validated.

    ``duckdb_path`` is absolute: runs launched from the UI may start in another working
    directory than the process that loaded the code location, and they must write the same file.
    """

    start_date: date = DEFAULT_START_DATE
    duckdb_path: Path = DEFAULT_DUCKDB_PATH
    schema: str = DEFAULT_SCHEMA
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    staging_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "duckdb_path", Path(self.duckdb_path).expanduser().absolute())
        check_database_name(self.duckdb_path, schema=self.schema)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        staging = _get(env, "KOMMO_STAGING_DIR")
        return cls(
            start_date=_parse_date(env, "KOMMO_START_DATE", DEFAULT_START_DATE),
            duckdb_path=Path(_get(env, "KOMMO_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH),
            lock_timeout=_parse_seconds(
                env, "KOMMO_DUCKDB_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_SECONDS
            ),
            memory_limit=_get(env, "KOMMO_DUCKDB_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT,
            staging_dir=Path(staging).expanduser().absolute() if staging else None,
        )


def check_database_name(path: str | Path, *, schema: str) -> None:
    """Refuse a DuckDB file whose name equals the schema.

    DuckDB names the catalog of an attached file after the file's stem, so ``kommo.duckdb``
    holding schema ``kommo`` makes ``kommo.leads`` ambiguous (catalog ``kommo`` or schema
    ``kommo``?) and every statement fails with "Ambiguous reference".
    """
    stem = Path(path).stem
    if stem.lower() == schema.lower():
        raise SettingsError(
            f"KOMMO_DUCKDB_PATH points at {str(path)!r}: DuckDB names the catalog after the file "
            f"({stem!r}), which collides with the schema {schema!r} and makes every query fail "
            f"with 'Ambiguous reference'. Use another file name, e.g. data/kommo_crm.duckdb."
        )


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _parse_date(env: Mapping[str, str], name: str, default: date) -> date:
    value = _get(env, name)
    if value is None:
        return default
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise SettingsError(f"{name} must be a date written YYYY-MM-DD, got {value!r}") from None


def _parse_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = _get(env, name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise SettingsError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


__all__ = [
    "DEFAULT_DUCKDB_PATH",
    "DEFAULT_SCHEMA",
    "DEFAULT_START_DATE",
    "Settings",
    "SettingsError",
    "check_database_name",
]
