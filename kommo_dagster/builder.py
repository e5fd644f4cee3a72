"""The one builder of the code location's definitions, for one account or several.

Both ways of configuring the project end here: the environment (`kommo_dagster.definitions`,
``KOMMO_*`` variables) and the ``dg`` component (`kommo_dagster.component.KommoComponent`,
a ``defs.yaml``). Each turns its configuration into `Account` values (the account's definition
`Settings` and its `KommoResource`); `build_kommo_definitions` makes, per account, the assets,
checks, jobs, schedules and change sensor, and wires them to one DuckDB file.

Runs execute their steps one after another in the run's own process (`in_process_executor`).
Kommo's request budget (7/s per account) is the ceiling of every extraction, and one extraction
already keeps several requests in flight to use all of it; steps in parallel processes would only
share the same budget, pay a process start each, and queue for the DuckDB file. Accounts run side
by side as separate runs (their jobs), limited by each account's concurrency pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import dagster as dg

from kommo_dagster.accounts import Account
from kommo_dagster.assets import build_kommo_assets
from kommo_dagster.checks import build_kommo_checks
from kommo_dagster.derived.assets import build_derived_assets
from kommo_dagster.derived.checks import build_derived_checks
from kommo_dagster.io_manager import KommoDuckDBIOManager, KommoDuckDBResource
from kommo_dagster.jobs import build_jobs
from kommo_dagster.link_assets import build_link_assets, build_link_checks_all
from kommo_dagster.schedules import build_schedules
from kommo_dagster.sensors import build_change_sensor
from kommo_dagster.settings import DEFAULT_SCHEMA, Settings, SettingsError

# Settings of the warehouse, which every account of a code location shares.
WAREHOUSE_SETTINGS = (
    "duckdb_path",
    "lock_timeout",
    "memory_limit",
    "staging_dir",
    "history_retention_days",
)


def build_duckdb_resource(settings: Settings) -> KommoDuckDBResource:
    return KommoDuckDBResource(
        database=str(settings.duckdb_path),
        lock_timeout=settings.lock_timeout,
        connection_config={"memory_limit": settings.memory_limit},
    )


def build_kommo_definitions(accounts: Sequence[Account]) -> dg.Definitions:
    """The definitions of ``accounts``: one unnamed account (today's names), or named ones."""
    warehouse = _check_accounts(accounts)
    duckdb = build_duckdb_resource(warehouse)
    named = {a.settings.account: a.settings.schema for a in accounts if a.settings.account}
    definitions: dict[str, list] = {k: [] for k in ("assets", "checks", "jobs", "schedules")}
    sensors: list[dg.SensorDefinition] = []
    resources: dict[str, object] = {}
    for account in accounts:
        settings = account.settings
        jobs = build_jobs(settings)
        definitions["assets"] += build_kommo_assets(settings) + build_derived_assets(settings)
        definitions["assets"] += build_link_assets(settings)
        definitions["checks"] += build_kommo_checks(settings) + build_derived_checks(settings)
        definitions["checks"] += build_link_checks_all(settings)
        definitions["jobs"] += jobs.all()
        definitions["schedules"] += build_schedules(settings, jobs)
        sensor = build_change_sensor(settings, jobs)
        sensors += [sensor] if sensor is not None else []
        resources[account.scope.resource_key] = account.kommo
    return dg.Definitions(
        assets=definitions["assets"],
        asset_checks=definitions["checks"],
        jobs=definitions["jobs"],
        schedules=definitions["schedules"],
        sensors=sensors,
        resources=resources
        | {
            "io_manager": KommoDuckDBIOManager(
                duckdb=duckdb,
                schema_name=warehouse.schema if not named else DEFAULT_SCHEMA,
                account_schemas=named,
                history_retention_days=warehouse.history_retention_days,
            ),
            # The same file for your own assets and checks; connections take turns with ours.
            "duckdb": duckdb,
        },
        executor=dg.in_process_executor,
    )


def _check_accounts(accounts: Sequence[Account]) -> Settings:
    """The shared warehouse settings; refuses a mix of named and unnamed accounts, repeated
    names, and accounts that disagree on the warehouse."""
    if not accounts:
        raise SettingsError("no Kommo account is configured")
    names = [a.settings.account for a in accounts]
    if None in names and len(accounts) > 1:
        raise SettingsError("with several accounts every account needs a name")
    repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
    if repeated:
        raise SettingsError(f"accounts {', '.join(repeated)} are configured more than once")
    first = accounts[0].settings
    for account in accounts[1:]:
        for name in WAREHOUSE_SETTINGS:
            if getattr(account.settings, name) != getattr(first, name):
                raise SettingsError(
                    f"account {account.settings.account} has {name} "
                    f"{getattr(account.settings, name)!r}, account {first.account} "
                    f"{getattr(first, name)!r}: every account shares one warehouse"
                )
    return first


assert set(WAREHOUSE_SETTINGS) <= {f.name for f in fields(Settings)}

__all__ = ["WAREHOUSE_SETTINGS", "build_duckdb_resource", "build_kommo_definitions"]
