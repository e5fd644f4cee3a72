"""The jobs the schedules and the sensor launch, built from the settings' stream selection.

* ``kommo_incremental_job``: the daily-partitioned streams; a run is one partition (or, with the
  range tags, one single-run backfill of a range).
* ``kommo_full_sync_job``: the same streams over their whole partition range in one run, the
  "additional full sync" that catches updates an incremental window missed.
* ``kommo_full_tables_job``: the unpartitioned streams (every full-table stream, and any
  incremental stream switched to a full-table sync); each run replaces their tables.

Each job also runs the link and derived tables (and, with the full tables, the views) built from
its streams, and its description says so. A job is absent when no selected stream falls in it.
With several accounts each account has its own three jobs, ``kommo_<account>_incremental_job``...
(`AccountScope.qualify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import dagster as dg

from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.derived_selection import derived_declarations
from kommo_dagster.orchestration.link_assets import link_keys
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.tables import VIEW_KINDS, Table
from kommo_dagster.warehouse.windows import PARTITION_FORMAT

if TYPE_CHECKING:  # what `dg.define_asset_job` returns; Dagster exports no public name for it
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

INCREMENTAL_JOB = "kommo_incremental_job"
FULL_SYNC_JOB = "kommo_full_sync_job"
FULL_TABLES_JOB = "kommo_full_tables_job"
# The tag each run of a named account carries; deploy/dagster.yaml's run queue keys on it.
ACCOUNT_TAG = "kommo/account"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class KommoJobs:
    incremental: UnresolvedAssetJobDefinition | None
    full_sync: UnresolvedAssetJobDefinition | None
    full_tables: UnresolvedAssetJobDefinition | None

    def all(self) -> list[UnresolvedAssetJobDefinition]:
        return [j for j in (self.incremental, self.full_sync, self.full_tables) if j is not None]


def build_jobs(settings: Settings, *, specs: AccountSpecs | None = None) -> KommoJobs:
    scope = AccountScope.of(settings)
    specs = specs or AccountSpecs(settings)
    # The derived tables run in the same run as their parent; the views and the tables
    # rebuilt whole (activity) with the full tables.
    derived_in = derived_declarations(settings, partitioned=True)
    links_in = link_keys(settings, partitioned=True, specs=specs)
    partitioned = [specs.key(s) for s in settings.partitioned_streams]
    partitioned += [specs.key(t.name) for t in derived_in] + links_in
    derived_out = derived_declarations(settings, partitioned=False)
    links_out = link_keys(settings, partitioned=False, specs=specs)
    unpartitioned = [specs.key(s) for s in settings.unpartitioned_streams]
    unpartitioned += [specs.key(t.name) for t in derived_out] + links_out
    tags = {} if scope.name is None else {ACCOUNT_TAG: scope.name}
    incremental = full_sync = full_tables = None
    if partitioned:
        built = _built_from_them(derived_in, links=links_in)
        incremental = dg.define_asset_job(
            scope.qualify(INCREMENTAL_JOB),
            selection=dg.AssetSelection.assets(*partitioned),
            description=(
                f"The incremental Kommo streams{scope.whose}{built and ' and ' + built}, one daily "
                "partition (UTC) per run."
            ),
            tags={"kommo/sync": "incremental"} | tags,
        )
        full_sync = dg.define_asset_job(
            scope.qualify(FULL_SYNC_JOB),
            selection=dg.AssetSelection.assets(*partitioned),
            description=(
                f"Re-extracts the whole partition range of every incremental stream{scope.whose} "
                f"in one run (a single-run backfill){built and ', rewriting ' + built}, catching "
                "updates an incremental window missed."
            ),
            tags={"kommo/sync": "full"} | tags,
        )
    if unpartitioned:
        built = _built_from_them(derived_out, links=links_out)
        full_tables = dg.define_asset_job(
            scope.qualify(FULL_TABLES_JOB),
            selection=dg.AssetSelection.assets(*unpartitioned),
            description=(
                f"The full-table Kommo streams{scope.whose}{built and ' and ' + built}; each run "
                "replaces their tables."
            ),
            tags={"kommo/sync": "full_table"} | tags,
        )
    return KommoJobs(incremental=incremental, full_sync=full_sync, full_tables=full_tables)


def _built_from_them(derived: list[Table], *, links: list[dg.AssetKey]) -> str:
    """What a job runs besides its streams, for its description ("" if nothing): the link and
    derived tables and views of its streams, which the UI lists among the job's assets."""
    if not derived and not links:
        return ""
    views = any(t.kind in VIEW_KINDS for t in derived)
    return f"the derived tables{' and views' if views else ''}"


def partition_key(day: date) -> str:
    return day.strftime(PARTITION_FORMAT)


def range_tags(first: date, last: date) -> dict[str, str]:
    """Tags that make one run cover the partitions ``first..last`` (inclusive)."""
    return {RANGE_START_TAG: partition_key(first), RANGE_END_TAG: partition_key(last)}


__all__ = [
    "ACCOUNT_TAG",
    "FULL_SYNC_JOB",
    "FULL_TABLES_JOB",
    "INCREMENTAL_JOB",
    "KommoJobs",
    "build_jobs",
    "partition_key",
    "range_tags",
]
