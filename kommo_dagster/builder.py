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

import dagster as dg

from kommo_dagster.orchestration.accounts import Account
from kommo_dagster.orchestration.assets import build_kommo_assets
from kommo_dagster.orchestration.checks import build_kommo_checks
from kommo_dagster.orchestration.derived_assets import build_derived_assets
from kommo_dagster.orchestration.derived_checks import build_derived_checks
from kommo_dagster.orchestration.io_manager import KommoDuckDBIOManager, KommoDuckDBResource
from kommo_dagster.orchestration.jobs import build_jobs
from kommo_dagster.orchestration.link_assets import build_link_assets, build_link_checks
from kommo_dagster.orchestration.schedules import build_schedules, stagger_offsets
from kommo_dagster.orchestration.sensors import build_change_sensor
from kommo_dagster.orchestration.translator import AccountSpecs, KommoTranslator
from kommo_dagster.settings import DEFAULT_SCHEMA, Location, Settings


def build_duckdb_resource(settings: Settings) -> KommoDuckDBResource:
    return KommoDuckDBResource(
        database=str(settings.duckdb_path),
        lock_timeout=settings.lock_timeout,
        connection_config={"memory_limit": settings.memory_limit},
    )


def build_kommo_definitions(
    accounts: Sequence[Account], *, translator: KommoTranslator | None = None
) -> dg.Definitions:
    """The definitions of ``accounts``: one unnamed account (today's names), or named ones;
    ``translator`` gives the assets' specs (keys, groups, owners, tags, kinds, descriptions)."""
    # One warehouse for all: refuses a mix of named and unnamed accounts, repeated names, and
    # accounts that disagree on the warehouse.
    warehouse = Location(tuple(a.settings for a in accounts)).warehouse
    duckdb = build_duckdb_resource(warehouse)
    named = {a.settings.account: a.settings.schema for a in accounts if a.settings.account}
    definitions: dict[str, list] = {k: [] for k in ("assets", "checks", "jobs", "schedules")}
    sensors: list[dg.SensorDefinition] = []
    resources: dict[str, object] = {}
    offsets = stagger_offsets(len(accounts))
    for account, offset in zip(accounts, offsets, strict=True):
        settings = account.settings
        specs = AccountSpecs(settings, translator)
        jobs = build_jobs(settings, specs=specs)
        definitions["assets"] += build_kommo_assets(settings, specs=specs)
        definitions["assets"] += build_derived_assets(settings, specs=specs, account_schemas=named)
        definitions["checks"] += build_kommo_checks(settings, specs=specs)
        definitions["checks"] += build_derived_checks(settings, specs=specs)
        definitions["assets"] += build_link_assets(settings, specs=specs)
        definitions["checks"] += build_link_checks(settings, specs=specs)
        definitions["jobs"] += jobs.all()
        definitions["schedules"] += build_schedules(settings, jobs, offset_minutes=offset)
        sensor = build_change_sensor(settings, jobs, specs=specs)
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


__all__ = ["build_duckdb_resource", "build_kommo_definitions"]
