"""The configuration of the code location: one model of an account, one of the location.

`Settings` is one account: where it lives and how its token is found, its request budget, what
is synced from when, its schedules, and the warehouse it writes. `Location` is the accounts of a
code location and the one warehouse they share. Both are plain Python and built the same way
from each source, by passing raw values with the name of where each came from:

* the environment (`Location.from_env`): ``KOMMO_*`` variables, and with ``KOMMO_ACCOUNTS`` each
  account's ``KOMMO_<ACCOUNT>_*`` ones (the variables are read through
  `kommo_dagster.kommo.config`, the one module that reads the environment);
* the ``dg`` component's ``defs.yaml`` (`kommo_dagster.component`);
* Python (``Settings(start_date=date(2026, 10, 1), ...)``).

`SETTINGS` declares every setting once: its field, its variable, whether an account may set its
own, its parser, its default and meaning (`kommo_dagster.stream_docs` renders the README's table
from it). A `Settings` validates every value when it is made, which is when the definitions
load; a bad value raises `SettingsError` naming the variable or ``defs.yaml`` field and the value
given. The parsers of values and `SettingsError` live in `kommo_dagster.setting_values`, the
checks of the DuckDB path in `kommo_dagster.duckdb_path`; the names of the accounts are checked
here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Literal

from kommo_dagster.duckdb_path import (
    check_database_file,
    check_database_name,
    check_no_database_token,
    parse_database_path,
)
from kommo_dagster.kommo import config as client
from kommo_dagster.kommo.errors import KommoConfigError
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.setting_values import (
    IDENTIFIER,
    SettingsError,
    client_check,
    invalid,
    memory_size,
    parse_bool,
    parse_date,
    parse_names,
    parse_optional_dir,
    parse_optional_text,
    parse_seconds,
    parse_text,
    parse_timezone,
    parse_variable,
    parse_writable_dir,
    whole_number,
)

DEFAULT_START_DATE = date(2024, 1, 1)
DEFAULT_DUCKDB_PATH = Path("data") / "kommo_crm.duckdb"
DEFAULT_SCHEMA = "kommo"
DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0
DEFAULT_MEMORY_LIMIT = "512MB"
DEFAULT_HISTORY_RETENTION_DAYS = 30
DEFAULT_SENSOR_INTERVAL_SECONDS = 300
DEFAULT_TIMEZONE = "UTC"
ENV_ACCOUNTS = client.ENV_ACCOUNTS

# own: each account's own variable, never shared (the token, the host); account: the account's
# variable, else the shared one; shared: one value for the code location; single: only
# without KOMMO_ACCOUNTS.
Scope = Literal["own", "account", "shared", "single"]


# The parsers of the settings that need their own bounds or checks.
# 100 years: the purge's cutoff (now - days) must stay a date, or every full-table write fails.
_RETENTION = whole_number(0, 36_500, "100 years")
# A day: the hourly schedule already re-runs today's partition, and Dagster's UI shows the
# interval as a 32-bit number (a larger one broke the sensor's page).
_SENSOR_INTERVAL = whole_number(1, 86_400, "a day")
_memory = memory_size(known=DEFAULT_MEMORY_LIMIT)
_rate = client_check(client.validate_requests_per_second)
_workers = client_check(client.validate_max_workers)
_cooldown = client_check(client.validate_ban_cooldown)


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: the `Settings` field, the variable ``KOMMO_<variable>``
    (``KOMMO_<ACCOUNT>_<variable>`` per account, unless ``scope`` is shared), its parser, the
    ``defs.yaml`` field (an account's, unless shared), the default and the meaning."""

    field: str
    variable: str
    scope: Scope
    # Raw value (text of a variable, YAML value, Python value) and where it came from -> value.
    parse: Callable[[object, str], Any]
    default: str
    meaning: str
    yaml: str = ""

    @property
    def yaml_field(self) -> str:
        return self.yaml or self.field

    @property
    def env(self) -> str:
        return f"{client.ENV_PREFIX}{self.variable}"

    @property
    def about(self) -> str:
        """The description of the resource's and the component's fields."""
        return f"{self.env}: {self.meaning}"


# fmt: off
SETTINGS = (
    Setting("token_variable", "API_TOKEN", "own", parse_variable, "required for runs",
            "long-lived token of a Kommo private integration; read when a run starts, never logged,"
            " printed or stored. In `defs.yaml` always a variable, "
            '`"{{ env.KOMMO_BR_API_TOKEN }}"`', yaml="api_token"),
    Setting("subdomain", "SUBDOMAIN", "own", parse_optional_text,
            "required unless `KOMMO_BASE_URL` is set",
            "`mycompany` for `https://mycompany.kommo.com` (a bare name)"),
    Setting("base_url", "BASE_URL", "own", parse_optional_text, "`https://{subdomain}.kommo.com`",
            "another host: an amoCRM account (`https://mycompany.amocrm.ru`) or the sandbox. Only "
            "`*.kommo.com`, `*.amocrm.ru`, `*.amocrm.com` and this machine (loopback) are accepted,"
            " so a typo never receives the token"),
    Setting("allow_any_host", "ALLOW_ANY_HOST", "account", parse_bool, "`false`",
            "`true` accepts any host in `KOMMO_BASE_URL` (a proxy in front of Kommo)"),
    Setting("requests_per_second", "REQUESTS_PER_SECOND", "account", _rate, "`7`",
            "request budget of the account, shared by every thread, process and run on the machine;"
            " at least 0.01, above 7 (Kommo's limit) only with "
            "`KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT`"),
    Setting("allow_requests_per_second_above_limit", "ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT",
            "account", parse_bool, "`false`",
            "`true` accepts a `KOMMO_REQUESTS_PER_SECOND` above 7: a sandbox, or an account whose "
            "limit Kommo raised. Otherwise such a budget fails the load, since Kommo blocks the IP "
            "of a client that keeps exceeding 7"),
    Setting("max_workers", "MAX_WORKERS", "account", _workers, "`4`",
            "requests one extraction keeps in flight (to reach the budget when Kommo answers "
            "slowly)"),
    Setting("rate_limit_dir", "RATE_LIMIT_DIR", "account", parse_optional_dir,
            "`<temp dir>/kommo-dagster-rate-limit`",
            "where the shared request budget lives (one small file per account host), and the "
            "remembered IP block"),
    Setting("ban_cooldown_seconds", "BAN_COOLDOWN_SECONDS", "account", _cooldown, "`3600`",
            "after Kommo blocks this machine's IP (HTML 403), no client of the account on the "
            "machine sends a request for this long (at most 100 years), unless the block is "
            "cleared (see [Limits](#limits-and-why-they-matter))"),
    Setting("start_date", "START_DATE", "account", parse_date, "`2024-01-01`",
            "first daily partition (UTC) of the incremental streams "
            "([Partitions](#partitions-and-how-they-map-to-kommos-timestamps)); records with an "
            "earlier cursor are outside every partition. From `1970-01-01` through tomorrow in "
            "UTC (today in a zone ahead of UTC); a later date would define no partition, so it "
            "fails the load"),
    Setting("duckdb_path", "DUCKDB_PATH", "shared", parse_database_path, "`data/kommo_crm.duckdb`",
            "the DuckDB file (created with its folder; relative to the working directory, or in "
            "`defs.yaml` to the project root), or a MotherDuck database `md:<name>` (see [Scaling "
            "out](#scaling-out)). Not `kommo.duckdb`: DuckDB names the catalog after the file, and "
            "`kommo.leads` would become ambiguous"),
    Setting("lock_timeout", "DUCKDB_LOCK_TIMEOUT", "shared", parse_seconds, "`600`",
            "seconds a write waits for the database file (another run, or another program holding "
            "it open)"),
    Setting("memory_limit", "DUCKDB_MEMORY_LIMIT", "shared", _memory, "`512MB`",
            "DuckDB memory for staging an extraction; beyond it staging spills to disk"),
    Setting("staging_dir", "STAGING_DIR", "shared", parse_writable_dir, "the temp directory",
            "where staged rows spill"),
    Setting("streams", "STREAMS", "account", parse_names, "every stream",
            "comma-separated streams the code location defines, e.g. `leads,pipelines,statuses` (a "
            "stream read per parent needs its parent; the choices are listed in [Choosing what to "
            "sync](#choosing-what-to-sync))"),
    Setting("schema", "SCHEMA", "single", parse_text, "`kommo`",
            "DuckDB schema of the tables and views (with `KOMMO_ACCOUNTS` each account's is "
            "`kommo_<account>`)"),
    Setting("full_table_streams", "FULL_TABLE_STREAMS", "account", parse_names, "none",
            "incremental streams to sync as full tables instead of daily partitions"),
    Setting("history_retention_days", "HISTORY_RETENTION_DAYS", "shared", _RETENTION, "`30`",
            "days of snapshots kept in `<stream>_history` (at most 36500)"),
    Setting("timezone", "TIMEZONE", "shared", parse_timezone, "`UTC`",
            "time zone of the schedules' cron times (an IANA name, e.g. `America/Sao_Paulo`), so "
            "the morning runs follow the team's clock; partitions stay UTC days"),
    Setting("schedules_default_on", "SCHEDULES_DEFAULT_ON", "account", parse_bool, "`false`",
            "schedules and the change sensor start running instead of stopped", yaml="schedules"),
    Setting("sensor_interval_seconds", "SENSOR_INTERVAL_SECONDS", "account", _SENSOR_INTERVAL,
            "`300`", "least seconds between two polls of the change sensor (at most 86400)"),
)
# fmt: on
SETTING = {s.field: s for s in SETTINGS}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One account of the code location, validated when made.

    ``duckdb_path`` is absolute: runs launched from the UI may start in another working
    directory than the process that loaded the code location, and they must write the same file.
    ``sources`` names where each value came from (a variable, a ``defs.yaml`` field); errors use
    it, and a field it does not name (a value given in Python) is called by its own name.
    """

    # The account's name when the code location serves several (``KOMMO_ACCOUNTS``, the
    # component); None for the single account of a code location without it.
    account: str | None = None
    # The variable holding the token (read when a run starts, never stored here); default:
    # KOMMO_API_TOKEN, or KOMMO_<ACCOUNT>_API_TOKEN for a named account.
    token_variable: str = ""
    subdomain: str | None = None
    base_url: str | None = None
    allow_any_host: bool = False
    requests_per_second: float = client.DEFAULT_REQUESTS_PER_SECOND
    allow_requests_per_second_above_limit: bool = False
    max_workers: int = client.DEFAULT_MAX_WORKERS
    rate_limit_dir: Path | None = None
    ban_cooldown_seconds: float = client.DEFAULT_BAN_COOLDOWN_SECONDS
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
    timezone: str = DEFAULT_TIMEZONE
    schedules_default_on: bool = False
    sensor_interval_seconds: int = DEFAULT_SENSOR_INTERVAL_SECONDS
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.account is not None:
            check_account_name(self.account, source=self.label("account"))
        if not self.token_variable:
            token = f"{self.account.upper()}_API_TOKEN" if self.account else "API_TOKEN"
            object.__setattr__(self, "token_variable", client.ENV_PREFIX + token)
        # As given, for the messages: a rate above the limit, a list naming no stream.
        rate, streams = self.requests_per_second, self.streams
        try:
            for s in SETTINGS:
                object.__setattr__(
                    self, s.field, s.parse(getattr(self, s.field), self.label(s.field))
                )
            self._check_client(rate)
        except SettingsError:
            raise
        except KommoConfigError as exc:  # a client validator's message names its variable
            raise SettingsError(self._relabel(str(exc))) from None
        if not IDENTIFIER.fullmatch(self.schema):
            raise invalid(
                self.label("schema"), "a plain SQL identifier (letters, digits, _)", self.schema
            )
        path_label = self.label("duckdb_path")
        check_database_name(
            self.duckdb_path,
            schema=self.schema,
            label=path_label,
            schema_label=SETTING["schema"].env,
        )
        check_database_file(self.duckdb_path, label=path_label)
        check_no_database_token(self.duckdb_path, label=path_label)
        object.__setattr__(self, "streams", self._check_streams(given=streams))
        object.__setattr__(self, "full_table_streams", self._check_full_table())

    def label(self, name: str) -> str:
        """Where the value of field ``name`` came from: a variable, a ``defs.yaml`` field."""
        return self.sources.get(name, name)  # made in Python: the field's own name

    def _relabel(self, text: str) -> str:
        """A client validator's message with each variable replaced by where it came from."""
        labels = {SETTING[f].env: self.label(f) for f in SETTING}
        return re.sub(r"\bKOMMO_[A-Z_]*[A-Z]\b", lambda m: labels.get(m[0], m[0]), text)

    def _check_client(self, rate: object) -> None:
        client.validate_requests_per_second(
            rate,  # type: ignore[arg-type]
            allow_above_limit=self.allow_requests_per_second_above_limit,
        )
        if self.subdomain or self.base_url:
            client.base_url_for(
                subdomain=self.subdomain,
                base_url=self.base_url,
                allow_any_host=self.allow_any_host,
            )
        if self.rate_limit_dir is not None:
            client.rate_limit_dir_for(self.rate_limit_dir)

    def _check_streams(self, *, given: object) -> tuple[str, ...]:
        label, streams = self.label("streams"), self.streams
        unknown = [s for s in streams if s not in STREAMS]
        if unknown:
            raise SettingsError(
                f"{label} names unknown streams {unknown}; known: {', '.join(STREAMS)}"
            )
        if not streams:
            raise SettingsError(f"{label} selects no stream, got {given!r}")
        chosen = set(streams)
        for name in chosen:
            parent = STREAMS[name].parent
            if parent and parent not in chosen:
                raise SettingsError(
                    f"{label} selects {name} without {parent}: {name} is read once per "
                    f"id in the {parent} table, so add {parent}"
                )
        return tuple(s for s in STREAMS if s in chosen)  # declaration order, no repeats

    def _check_full_table(self) -> tuple[str, ...]:
        label = self.label("full_table_streams")
        for name in self.full_table_streams:
            if name not in STREAMS:
                raise SettingsError(
                    f"{label} names an unknown stream {name!r}; known: {', '.join(STREAMS)}"
                )
            if not STREAMS[name].is_incremental:
                raise SettingsError(
                    f"{label} names {name}, which is always a full table; "
                    f"only incremental streams can be switched"
                )
            if name not in self.streams:
                raise SettingsError(
                    f"{label} names {name}, which {self.label('streams')} does not select"
                )
        return tuple(s for s in STREAMS if s in set(self.full_table_streams))

    def is_partitioned(self, stream: str) -> bool:
        """Whether ``stream`` is synced as daily partitions (incremental, not switched)."""
        return STREAMS[stream].is_incremental and stream not in self.full_table_streams

    @property
    def partitioned_streams(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if self.is_partitioned(s))

    @property
    def unpartitioned_streams(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if not self.is_partitioned(s))

    @property
    def env_prefix(self) -> str:
        """The prefix of the account's own variables: ``KOMMO_`` or ``KOMMO_<ACCOUNT>_``."""
        return client.ENV_PREFIX + (f"{self.account.upper()}_" if self.account else "")

    def check_credentials(self, environ: Mapping[str, str] | None = None) -> None:
        """Fail unless the token is set, for an account that names its host. One that does not
        is not configured yet: it loads, to be browsed, and its runs fail at their start."""
        if not (self.subdomain or self.base_url):
            return
        token = client.environment(environ).get(self.token_variable)  # as set: spaces are errors
        if token is None or not token.strip():
            label = self.label("token_variable")
            unset = self.token_variable
            if label != unset:
                unset = f"{label} names {unset}, which"
            raise SettingsError(
                f"{unset} is not set (got no value): set it to the long-lived token of the "
                f"account{f' {self.account}' if self.account else ''}"
            )
        try:
            client.validate_token(token)
        except KommoConfigError as exc:
            raise SettingsError(self._relabel(str(exc))) from None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, account: str | None = None
    ) -> Settings:
        """The account from ``KOMMO_*`` variables; with ``account``, its own
        ``KOMMO_<ACCOUNT>_*`` variables first and schema ``kommo_<account>``."""
        env = client.environment(environ)
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for s in SETTINGS:
            name = sources[s.field] = _variable_of(env, s, account=account)
            raw = client.variable_value(env, name)
            if raw is not None and s.field != "token_variable":
                values[s.field] = raw
        values["token_variable"] = sources["token_variable"]
        if account is not None:
            if "schema" in values:
                raise SettingsError(
                    f"KOMMO_SCHEMA does not apply with {ENV_ACCOUNTS}: each account writes its "
                    f"own schema kommo_<account>. Unset KOMMO_SCHEMA, got {values['schema']!r}."
                )
            values["schema"] = f"{DEFAULT_SCHEMA}_{account}"
        return cls(account=account, sources=sources, **values)  # type: ignore[arg-type]


def _variable_of(env: Mapping[str, str], setting: Setting, *, account: str | None) -> str:
    if setting.scope in ("shared", "single"):
        return setting.env
    own = setting.scope == "own"
    return client.account_variable(env, setting.variable, account=account, fallback=not own)


@dataclass(frozen=True)
class Location:
    """The code location: its accounts (one unnamed, or named ones) and the warehouse they
    share (`WAREHOUSE_SETTINGS`: one DuckDB file, its lock, memory, staging and history)."""

    accounts: tuple[Settings, ...]

    def __post_init__(self) -> None:
        if not self.accounts:
            raise SettingsError("no Kommo account is configured")
        names = [a.account for a in self.accounts]
        if None in names and len(names) > 1:
            raise SettingsError("with several accounts every account needs a name")
        repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
        if repeated:
            raise SettingsError(f"accounts {', '.join(repeated)} are configured more than once")
        first = self.accounts[0]
        for account in self.accounts[1:]:
            for name in WAREHOUSE_SETTINGS:
                if getattr(account, name) != getattr(first, name):
                    raise SettingsError(
                        f"account {account.account} has {name} {getattr(account, name)!r}, "
                        f"account {first.account} {getattr(first, name)!r}: every account "
                        f"shares one warehouse"
                    )

    @property
    def warehouse(self) -> Settings:
        """The settings holding the shared warehouse (every account's agree)."""
        return self.accounts[0]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Location:
        """One account per ``KOMMO_ACCOUNTS`` name, or the single account of the unprefixed
        variables when ``KOMMO_ACCOUNTS`` is unset."""
        env = client.environment(environ)
        names = parse_account_names(env.get(ENV_ACCOUNTS))
        if not names:
            return cls((Settings.from_env(env),))
        return cls(tuple(Settings.from_env(env, account=name) for name in names))

    def check_credentials(self, environ: Mapping[str, str] | None = None) -> None:
        for account in self.accounts:
            account.check_credentials(environ)


# Settings of the warehouse, which every account of a code location shares.
WAREHOUSE_SETTINGS = tuple(s.field for s in SETTINGS if s.scope == "shared")


def check_account_name(name: str, *, source: str = ENV_ACCOUNTS) -> str:
    return client.check_account_name(name, source=source, error=SettingsError)


def parse_account_names(value: str | None, *, source: str = ENV_ACCOUNTS) -> tuple[str, ...]:
    """``"acc1, acc2"`` -> ``("acc1", "acc2")``; empty or unset -> ``()`` (one account)."""
    return client.parse_account_names(value, source=source, error=SettingsError)


assert set(SETTING) | {"account", "sources"} == {f.name for f in fields(Settings)}

__all__ = [
    "DEFAULT_DUCKDB_PATH",
    "DEFAULT_HISTORY_RETENTION_DAYS",
    "DEFAULT_SCHEMA",
    "DEFAULT_SENSOR_INTERVAL_SECONDS",
    "DEFAULT_START_DATE",
    "ENV_ACCOUNTS",
    "SETTINGS",
    "WAREHOUSE_SETTINGS",
    "Location",
    "Setting",
    "Settings",
    "check_account_name",
    "parse_account_names",
]
