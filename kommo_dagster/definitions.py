"""The code location: the Kommo assets, the Kommo resource and the DuckDB IO manager.

Load it with ``dagster dev -w workspace.yaml``, or run one asset with
``dagster asset materialize -m kommo_dagster.definitions --select kommo/leads --partition
2026-10-05`` (``--partition-range 2026-10-01...2026-10-31`` for a range, in one run).

Loading needs no credentials: the token, subdomain and base URL are `dagster.EnvVar` values read
when a run starts (a run without them fails at its start, naming the variable). The settings that
shape the definitions (``KOMMO_START_DATE``, ``KOMMO_DUCKDB_PATH``...) are read here, at load time;
see `kommo_dagster.settings` (``KOMMO_STREAMS``, ``KOMMO_SCHEMA`` and ``KOMMO_FULL_TABLE_STREAMS``
choose what is synced and where).

Keeping it fresh: the jobs (`kommo_dagster.jobs`), schedules (`kommo_dagster.schedules`), the
change sensor (`kommo_dagster.sensors`) and the data checks (`kommo_dagster.checks`) are built
from the same settings; schedules and the sensor start stopped unless
``KOMMO_SCHEDULES_DEFAULT_ON=true``.

Runs execute their steps one after another in the run's own process (`in_process_executor`).
Kommo's request budget (7/s per account) is the ceiling of every extraction, and one extraction
already keeps several requests in flight to use all of it; steps in parallel processes would only
share the same budget, pay a process start each, and queue for the DuckDB file.
"""

import dagster as dg

from kommo_dagster.assets import build_kommo_assets
from kommo_dagster.checks import build_kommo_checks
from kommo_dagster.io_manager import KommoDuckDBIOManager, KommoDuckDBResource
from kommo_dagster.jobs import build_jobs
from kommo_dagster.resources import KommoResource
from kommo_dagster.schedules import build_schedules
from kommo_dagster.sensors import build_change_sensor
from kommo_dagster.settings import Settings


def build_duckdb_resource(settings: Settings) -> KommoDuckDBResource:
    return KommoDuckDBResource(
        database=str(settings.duckdb_path),
        lock_timeout=settings.lock_timeout,
        connection_config={"memory_limit": settings.memory_limit},
    )


def build_definitions(
    settings: Settings | None = None, *, kommo: KommoResource | None = None
) -> dg.Definitions:
    """The code location's definitions for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    duckdb = build_duckdb_resource(settings)
    jobs = build_jobs(settings)
    sensor = build_change_sensor(settings, jobs)
    return dg.Definitions(
        assets=build_kommo_assets(settings),
        asset_checks=build_kommo_checks(settings),
        jobs=jobs.all(),
        schedules=build_schedules(settings, jobs),
        sensors=[sensor] if sensor is not None else [],
        resources={
            "kommo": kommo or KommoResource.from_env(),
            "io_manager": KommoDuckDBIOManager(
                duckdb=duckdb,
                schema_name=settings.schema,
                history_retention_days=settings.history_retention_days,
            ),
            # The same file for your own assets and checks; connections take turns with ours.
            "duckdb": duckdb,
        },
        executor=dg.in_process_executor,
    )


defs = build_definitions()
