"""Several Kommo accounts in one code location: their names, settings and Dagster namespaces.

``KOMMO_ACCOUNTS=acc1,acc2`` names the accounts. Each reads its own variables first:

* ``KOMMO_<ACCOUNT>_API_TOKEN``, ``_SUBDOMAIN``, ``_BASE_URL``: the account's own, with no
  fallback (a token is never shared, and each account is its own host);
* ``KOMMO_<ACCOUNT>_REQUESTS_PER_SECOND``, ``_MAX_WORKERS``, ``_RATE_LIMIT_DIR``: fall back to
  the unprefixed variable (each account host still gets its own budget of that size);
* ``KOMMO_<ACCOUNT>_START_DATE``, ``_STREAMS``, ``_FULL_TABLE_STREAMS``, ``_SCHEDULES_DEFAULT_ON``,
  ``_SENSOR_INTERVAL_SECONDS``: fall back to the unprefixed variable (`kommo_dagster.settings`).

An account's assets are ``kommo/<account>/<stream>`` in group ``kommo_<account>``, its tables
``kommo_<account>.<stream>``, its jobs, schedules, sensor and checks ``kommo_<account>_*``, its
resource key ``kommo_<account>`` and its concurrency pool ``kommo_<account>``. Without
``KOMMO_ACCOUNTS`` the one account keeps the names it always had (``kommo/<stream>``, schema
``kommo``, ``kommo_incremental_job``...) and pool ``kommo``. `AccountScope` is the one place
these names are made.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from kommo_dagster.all_accounts import ALL_ACCOUNTS_SCHEMA
from kommo_dagster.resources import KommoResource
from kommo_dagster.settings import DEFAULT_SCHEMA, Settings, SettingsError

ENV_ACCOUNTS = "KOMMO_ACCOUNTS"
KEY_PREFIX = "kommo"
ACCOUNT_NAME = re.compile(r"[a-z0-9_]+")
# The cross-account views' schema is kommo_all: an account named "all" would write into it.
_RESERVED = {ALL_ACCOUNTS_SCHEMA.removeprefix(f"{DEFAULT_SCHEMA}_")}


@dataclass(frozen=True)
class AccountScope:
    """The Dagster and DuckDB names of one account's definitions.

    ``name`` is None for the single account of a code location without ``KOMMO_ACCOUNTS``,
    whose names are the ones the project always had.
    """

    name: str | None
    schema: str = DEFAULT_SCHEMA

    @classmethod
    def of(cls, settings: Settings) -> AccountScope:
        return cls(settings.account, settings.schema)

    @property
    def key_prefix(self) -> list[str]:
        return [KEY_PREFIX] if self.name is None else [KEY_PREFIX, self.name]

    def asset_key(self, stream: str) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, stream])

    def label(self, stream: str) -> str:
        """How logs name a stream of this account: ``kommo/leads``, ``kommo/acc1/leads``."""
        return "/".join([*self.key_prefix, stream])

    def qualify(self, name: str) -> str:
        """The account's version of a ``kommo_*`` definition name: ``kommo_incremental_job``
        stays as it is for the single account and is ``kommo_acc1_incremental_job`` for acc1."""
        if self.name is None:
            return name
        return f"{KEY_PREFIX}_{self.name}_{name.removeprefix(f'{KEY_PREFIX}_')}"

    @property
    def group_name(self) -> str:
        return KEY_PREFIX if self.name is None else f"{KEY_PREFIX}_{self.name}"

    @property
    def pool(self) -> str:
        """The concurrency pool of the account's extractions (one per account)."""
        return self.group_name

    @property
    def resource_key(self) -> str:
        """The key of the account's `KommoResource`."""
        return self.group_name


@dataclass(frozen=True)
class Account:
    """One account's definition settings and the resource that reaches it."""

    settings: Settings
    kommo: KommoResource

    @property
    def scope(self) -> AccountScope:
        return AccountScope.of(self.settings)


def check_account_name(name: str, *, source: str = ENV_ACCOUNTS) -> str:
    if not ACCOUNT_NAME.fullmatch(name):
        raise SettingsError(
            f"{source} names an account {name!r}: account names are lower-case letters, digits "
            f"and _ (they become schema kommo_<name> and asset keys kommo/<name>/<stream>)"
        )
    if name in _RESERVED:
        raise SettingsError(
            f"{source} names an account {name!r}, but schema {ALL_ACCOUNTS_SCHEMA} holds the "
            f"views over all accounts; choose another name"
        )
    return name


def parse_account_names(value: str | None, *, source: str = ENV_ACCOUNTS) -> tuple[str, ...]:
    """``"acc1, acc2"`` -> ``("acc1", "acc2")``; empty or unset -> ``()`` (one account)."""
    if value is None or not value.strip():
        return ()
    names = [part.strip() for part in value.split(",")]
    if any(not n for n in names):
        raise SettingsError(f"{source} has an empty name in {value!r}")
    for name in names:
        check_account_name(name, source=source)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SettingsError(f"{source} names {', '.join(repeated)} more than once")
    return tuple(names)


def accounts_from_env(environ: Mapping[str, str] | None = None) -> list[Account]:
    """The accounts of the code location: one per ``KOMMO_ACCOUNTS`` name, or the single
    account of the unprefixed variables when ``KOMMO_ACCOUNTS`` is unset."""
    env = os.environ if environ is None else environ
    names = parse_account_names(env.get(ENV_ACCOUNTS))
    if not names:
        return [Account(Settings.from_env(env), KommoResource.from_env(env))]
    return [
        Account(
            Settings.from_env(env, account=name),
            KommoResource.from_env(env, account=name),
        )
        for name in names
    ]


__all__ = [
    "ENV_ACCOUNTS",
    "Account",
    "AccountScope",
    "accounts_from_env",
    "check_account_name",
    "parse_account_names",
]
