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
| ``KOMMO_STREAMS`` | all | comma-separated streams the code location defines |
| ``KOMMO_SCHEMA`` | ``kommo`` | DuckDB schema of the tables and views |
| ``KOMMO_FULL_TABLE_STREAMS`` | none | incremental streams to sync as full tables instead |
| ``KOMMO_HISTORY_RETENTION_DAYS`` | ``30`` | days of snapshots kept in ``<stream>_history`` |
| ``KOMMO_SCHEDULES_DEFAULT_ON`` | ``false`` | schedules and the change sensor start running |
| ``KOMMO_SENSOR_INTERVAL_SECONDS`` | ``300`` | least seconds between two polls of the sensor |

``KOMMO_DUCKDB_PATH`` may also name a MotherDuck database (``md:my_db``): it is kept as written,
and the lock file that serialises writers on one machine is skipped (MotherDuck serialises them).

Several accounts (``KOMMO_ACCOUNTS``, see `kommo_dagster.accounts`) each get a `Settings` with
``account`` set: ``KOMMO_<ACCOUNT>_START_DATE``, ``_STREAMS``, ``_FULL_TABLE_STREAMS``,
``_SCHEDULES_DEFAULT_ON`` and ``_SENSOR_INTERVAL_SECONDS`` override the unprefixed variables
for that account, and its schema is ``kommo_<account>``. The warehouse settings (path, lock,
memory, staging, history) are shared by all accounts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.warehouse import catalog_name, is_file_database

DEFAULT_START_DATE = date(2024, 1, 1)
DEFAULT_DUCKDB_PATH = Path("data") / "kommo_crm.duckdb"
DEFAULT_SCHEMA = "kommo"
DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0
DEFAULT_MEMORY_LIMIT = "512MB"
DEFAULT_HISTORY_RETENTION_DAYS = 30
DEFAULT_SENSOR_INTERVAL_SECONDS = 300
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The settings an account may override with KOMMO_<ACCOUNT>_<NAME>; the rest are shared.
ACCOUNT_SETTINGS = (
    "START_DATE",
    "STREAMS",
    "FULL_TABLE_STREAMS",
    "SCHEDULES_DEFAULT_ON",
    "SENSOR_INTERVAL_SECONDS",
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A ``KOMMO_*`` variable holds a value the code location cannot use."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The code location's settings, validated.

    ``duckdb_path`` is absolute: runs launched from the UI may start in another working
    directory than the process that loaded the code location, and they must write the same file.
    """

    # The account these settings are for, when the code location serves several
    # (``KOMMO_ACCOUNTS``); None for the single account of a code location without it.
    account: str | None = None
    start_date: date = DEFAULT_START_DATE
    duckdb_path: Path | str = DEFAULT_DUCKDB_PATH
    schema: str = DEFAULT_SCHEMA
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    staging_dir: Path | None = None
    # Which streams the code location defines (declaration order), and which of the incremental
    # ones are synced as unpartitioned full tables instead.
    streams: tuple[str, ...] = tuple(STREAMS)
    full_table_streams: tuple[str, ...] = ()
    history_retention_days: int = DEFAULT_HISTORY_RETENTION_DAYS
    schedules_default_on: bool = False
    sensor_interval_seconds: int = DEFAULT_SENSOR_INTERVAL_SECONDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "duckdb_path", database_path(self.duckdb_path))
        if not _IDENTIFIER.fullmatch(self.schema):
            raise SettingsError(
                f"KOMMO_SCHEMA must be a plain SQL identifier (letters, digits, _), "
                f"got {self.schema!r}"
            )
        check_database_name(self.duckdb_path, schema=self.schema)
        object.__setattr__(self, "streams", _check_streams(self.streams))
        object.__setattr__(
            self, "full_table_streams", _check_full_table(self.full_table_streams, self.streams)
        )
        if self.history_retention_days < 0:
            raise SettingsError(
                f"KOMMO_HISTORY_RETENTION_DAYS must be 0 or more, got {self.history_retention_days}"
            )
        if self.sensor_interval_seconds < 1:
            raise SettingsError(
                f"KOMMO_SENSOR_INTERVAL_SECONDS must be at least 1, "
                f"got {self.sensor_interval_seconds}"
            )

    def is_partitioned(self, stream: str) -> bool:
        """Whether ``stream`` is synced as daily partitions (incremental, not switched)."""
        return STREAMS[stream].is_incremental and stream not in self.full_table_streams

    @property
    def partitioned_streams(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if self.is_partitioned(s))

    @property
    def unpartitioned_streams(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if not self.is_partitioned(s))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, account: str | None = None
    ) -> Settings:
        """The settings from ``KOMMO_*`` variables; with ``account``, its own
        ``KOMMO_<ACCOUNT>_*`` variables first (`ACCOUNT_SETTINGS`) and schema ``kommo_<account>``.
        """
        env = os.environ if environ is None else environ

        def var(name: str) -> str:
            return account_variable(env, name, account=account)

        staging = _get(env, "KOMMO_STAGING_DIR")
        schema = _get(env, "KOMMO_SCHEMA") or DEFAULT_SCHEMA
        if account is not None:
            if _get(env, "KOMMO_SCHEMA") is not None:
                raise SettingsError(
                    "KOMMO_SCHEMA does not apply with KOMMO_ACCOUNTS: each account writes its "
                    "own schema kommo_<account>. Unset KOMMO_SCHEMA."
                )
            schema = f"{DEFAULT_SCHEMA}_{account}"
        return cls(
            account=account,
            start_date=_parse_date(env, var("START_DATE"), DEFAULT_START_DATE),
            duckdb_path=_get(env, "KOMMO_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH,
            lock_timeout=_parse_seconds(
                env, "KOMMO_DUCKDB_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_SECONDS
            ),
            memory_limit=_get(env, "KOMMO_DUCKDB_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT,
            staging_dir=Path(staging).expanduser().absolute() if staging else None,
            streams=_parse_names(env, var("STREAMS"), default=tuple(STREAMS)),
            schema=schema,
            full_table_streams=_parse_names(env, var("FULL_TABLE_STREAMS"), default=()),
            history_retention_days=_parse_int(
                env, "KOMMO_HISTORY_RETENTION_DAYS", DEFAULT_HISTORY_RETENTION_DAYS, minimum=0
            ),
            schedules_default_on=_parse_bool(env, var("SCHEDULES_DEFAULT_ON"), False),
            sensor_interval_seconds=_parse_int(
                env, var("SENSOR_INTERVAL_SECONDS"), DEFAULT_SENSOR_INTERVAL_SECONDS, minimum=1
            ),
        )


def account_variable(env: Mapping[str, str], name: str, *, account: str | None) -> str:
    """The variable that sets ``name`` (``START_DATE``...): ``KOMMO_<ACCOUNT>_<NAME>`` when the
    account has it, else the shared ``KOMMO_<NAME>``. Errors then name the variable really read.
    """
    if account is not None:
        own = f"KOMMO_{account.upper()}_{name}"
        if _get(env, own) is not None:
            return own
    return f"KOMMO_{name}"


def database_path(database: str | Path) -> Path | str:
    """A local file as an absolute path (runs may start in another directory); a MotherDuck
    or in-memory database as written."""
    if not is_file_database(database):
        return str(database)
    return Path(database).expanduser().absolute()


def check_database_name(path: str | Path, *, schema: str) -> None:
    """Refuse a DuckDB file whose name equals the schema.

    DuckDB names the catalog of an attached file after the file's stem, so ``kommo.duckdb``
    holding schema ``kommo`` makes ``kommo.leads`` ambiguous (catalog ``kommo`` or schema
    ``kommo``?) and every statement fails with "Ambiguous reference".
    """
    stem = catalog_name(path)
    if stem.lower() == schema.lower():
        raise SettingsError(
            f"KOMMO_DUCKDB_PATH points at {str(path)!r}: DuckDB names the catalog after the file "
            f"({stem!r}), which collides with the schema {schema!r} and makes every query fail "
            f"with 'Ambiguous reference'. Use another file name, e.g. data/kommo_crm.duckdb."
        )


def _check_streams(streams: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        raise SettingsError(
            f"KOMMO_STREAMS names unknown streams {unknown}; known: {', '.join(STREAMS)}"
        )
    if not streams:
        raise SettingsError("KOMMO_STREAMS selects no stream")
    chosen = set(streams)
    for name in chosen:
        parent = STREAMS[name].parent
        if parent and parent not in chosen:
            raise SettingsError(
                f"KOMMO_STREAMS selects {name} without {parent}: {name} is read once per "
                f"id in the {parent} table, so add {parent}"
            )
    return tuple(s for s in STREAMS if s in chosen)  # declaration order, no repeats


def _check_full_table(names: tuple[str, ...] | list[str], streams: tuple[str, ...]) -> tuple:
    for name in names:
        if name not in STREAMS:
            raise SettingsError(
                f"KOMMO_FULL_TABLE_STREAMS names an unknown stream {name!r}; "
                f"known: {', '.join(STREAMS)}"
            )
        if not STREAMS[name].is_incremental:
            raise SettingsError(
                f"KOMMO_FULL_TABLE_STREAMS names {name}, which is always a full table; "
                f"only incremental streams can be switched"
            )
        if name not in streams:
            raise SettingsError(
                f"KOMMO_FULL_TABLE_STREAMS names {name}, which KOMMO_STREAMS does not select"
            )
    return tuple(s for s in STREAMS if s in set(names))


def _parse_names(env: Mapping[str, str], name: str, *, default: tuple[str, ...]) -> tuple[str, ...]:
    value = _get(env, name)
    if value is None:
        return default
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


def _parse_int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    value = _get(env, name)
    if value is None:
        return default
    if not re.fullmatch(r"\d+", value) or int(value) < minimum:
        raise SettingsError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def _parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _get(env, name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


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
    "DEFAULT_HISTORY_RETENTION_DAYS",
    "DEFAULT_SCHEMA",
    "DEFAULT_SENSOR_INTERVAL_SECONDS",
    "DEFAULT_START_DATE",
    "Settings",
    "SettingsError",
    "account_variable",
    "check_database_name",
    "database_path",
]
