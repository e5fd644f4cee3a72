"""The derived assets' definitions: keys, partitions, lineage, schemas, jobs; a range's row
counts per partition; what a table reads besides its rows."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, DERIVED_TABLES
from kommo_dagster.orchestration.jobs import FULL_TABLES_JOB, INCREMENTAL_JOB
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster_tests.wiring import Warehouse, local_definitions


@pytest.mark.parametrize("full_table", [False, True])
def test_derived_tables_are_partitioned_like_their_parent_and_downstream_of_it(
    tmp_path: Path, full_table: bool
):
    overrides = {"full_table_streams": ("leads",)} if full_table else {}
    defs = local_definitions(tmp_path, **overrides)
    for table in DERIVED_TABLES.values():
        asset = defs.resolve_assets_def(dg.AssetKey(["kommo", table.name]))
        parent = defs.resolve_assets_def(dg.AssetKey(["kommo", table.parent]))
        assert asset.partitions_def == parent.partitions_def
        assert asset.dependency_keys == {parent.key}
        spec = next(iter(asset.specs))
        schema = spec.metadata["dagster/column_schema"]
        assert [(c.name, c.type, c.description) for c in schema.columns] == [
            (c.name, c.duckdb_type, c.description) for c in table.columns
        ]
        assert spec.metadata["dagster/table_name"] == f"crm.kommo.{table.name}"
        job = INCREMENTAL_JOB if asset.partitions_def is not None else FULL_TABLES_JOB
        assert asset.key in defs.resolve_job_def(job).asset_layer.executable_asset_keys
    values = defs.resolve_assets_def(dg.AssetKey(["kommo", "lead_custom_field_values"]))
    assert (values.partitions_def is None) == full_table


def test_views_are_assets_downstream_of_what_they_read(tmp_path: Path):
    defs = local_definitions(tmp_path)
    for entity in CUSTOM_FIELD_ENTITIES:
        view = defs.resolve_assets_def(dg.AssetKey(["kommo", entity.wide_view]))
        assert {
            dg.AssetKey(["kommo", entity.values]),
            dg.AssetKey(["kommo", entity.stream]),
        } <= view.dependency_keys
    funnel = defs.resolve_assets_def(dg.AssetKey(["kommo", "pipeline_funnel"]))
    assert dg.AssetKey(["kommo", "lead_status_changes"]) in funnel.dependency_keys
    checks = {key.name for c in defs.asset_checks or [] for key in c.check_keys}
    assert {"no_duplicate_keys", "field_ids_defined", "no_negative_durations"} <= checks


# --- per-partition row counts of a range --------------------------------------------------------


@pytest.fixture
def clock_ahead_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone nine hours ahead of UTC, as on a machine in Tokyo."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_ranges_row_count_per_partition_is_the_utc_days_whatever_the_local_zone(
    sandbox: KommoSandbox, tmp_path: Path, clock_ahead_of_utc: None
):
    warehouse = Warehouse(sandbox, tmp_path)
    table = DERIVED_TABLES["lead_custom_field_values"]
    result = warehouse.run(["leads", table.name], partition_range=("2026-10-01", "2026-10-10"))
    events = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == table.name
    ]
    assert len(events) == 10
    for event in events:
        start = datetime.strptime(event.partition or "", "%Y-%m-%d").replace(tzinfo=UTC)
        [(count,)] = warehouse.sql(
            f"SELECT count(*) FROM kommo.{table.name} WHERE {table.cursor} >= "
            f"{int(start.timestamp())} AND {table.cursor} < {int(start.timestamp()) + 86_400}"
        )
        assert event.metadata["dagster/row_count"].value == count, event.partition
    [(total,)] = warehouse.sql(f"SELECT count(*) FROM kommo.{table.name}")
    assert total > 0
    assert sum(e.metadata["dagster/row_count"].value for e in events) == total


# --- what a table reads besides its rows --------------------------------------------------------


@pytest.mark.parametrize("name", ["manager_activity_daily", "response_time_by_manager"])
def test_what_counts_days_in_the_accounts_time_zone_depends_on_the_account(
    tmp_path: Path, name: str
):
    """Their days are the account's (its ``timezone``, read from kommo.account when they are
    written): the account's asset is upstream of them when it is selected."""
    account = dg.AssetKey(["kommo", "account"])
    defs = local_definitions(tmp_path)
    assert account in defs.resolve_assets_def(dg.AssetKey(["kommo", name])).dependency_keys
    without = local_definitions(tmp_path, streams=("events", "leads", "contacts"))
    asset = without.resolve_assets_def(dg.AssetKey(["kommo", name]))
    assert account not in asset.dependency_keys and asset.dependency_keys
