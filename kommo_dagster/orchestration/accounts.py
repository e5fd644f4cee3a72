"""Several Kommo accounts in one code location: their settings, resources and Dagster names.

``KOMMO_ACCOUNTS=acc1,acc2`` names the accounts (`kommo_dagster.settings.Location`). Each reads
its own ``KOMMO_<ACCOUNT>_*`` variables: the token, subdomain and base URL with no fallback (a
token is never shared, and each account is its own host), the others falling back to the
unprefixed variable (`kommo_dagster.settings.SETTINGS` says which is which).

An account's assets are ``kommo/<account>/<stream>`` in group ``kommo_<account>``, its tables
``kommo_<account>.<stream>``, its jobs, schedules, sensor and checks ``kommo_<account>_*``, its
resource key ``kommo_<account>`` and its concurrency pool ``kommo_<account>``. Without
``KOMMO_ACCOUNTS`` the one account keeps the names it always had (``kommo/<stream>``, schema
``kommo``, ``kommo_incremental_job``...) and pool ``kommo``. `AccountScope` is the one place
these names are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.settings import DEFAULT_SCHEMA, Location, Settings, parse_account_names

KEY_PREFIX = "kommo"


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

    def qualify(self, name: str) -> str:
        """The account's version of a ``kommo_*`` definition name: ``kommo_incremental_job``
        stays as it is for the single account and is ``kommo_acc1_incremental_job`` for acc1."""
        if self.name is None:
            return name
        return f"{KEY_PREFIX}_{self.name}_{name.removeprefix(f'{KEY_PREFIX}_')}"

    @property
    def whose(self) -> str:
        """What a job's, schedule's or sensor's description adds to name its account, so that
        the accounts' definitions are told apart in the UI; nothing for the single account."""
        return "" if self.name is None else f" of account {self.name}"

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


def accounts_of(location: Location) -> list[Account]:
    """Each account of ``location`` with the resource that reaches it."""
    return [
        Account(settings, KommoResource.for_account(settings)) for settings in location.accounts
    ]


def accounts_from_env(environ: Mapping[str, str] | None = None) -> list[Account]:
    """The accounts of the code location: one per ``KOMMO_ACCOUNTS`` name, or the single
    account of the unprefixed variables when ``KOMMO_ACCOUNTS`` is unset."""
    return accounts_of(Location.from_env(environ))


__all__ = ["Account", "AccountScope", "accounts_from_env", "accounts_of", "parse_account_names"]
