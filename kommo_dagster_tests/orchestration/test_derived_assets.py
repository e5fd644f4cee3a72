"""The derived assets' definitions: keys, partitions, lineage, schemas, jobs; and a view's
rebuild, which happens whole or not at all."""

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.derived import declaration
from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, DERIVED_TABLES
from kommo_dagster.orchestration.jobs import FULL_TABLES_JOB, INCREMENTAL_JOB
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.sql import table_exists
from kommo_dagster.warehouse.tables import Refresh, RefreshContext, Table
from kommo_dagster_tests.derived.tables import insert
from kommo_dagster_tests.wiring import Warehouse


def _defs(tmp_path: Path, **overrides) -> dg.Definitions:
    settings = Settings(
        start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb", **overrides
    )
    return build_definitions(settings)


@pytest.mark.parametrize("full_table", [False, True])
def test_derived_tables_are_partitioned_like_their_parent_and_downstream_of_it(
    tmp_path: Path, full_table: bool
):
    overrides = {"full_table_streams": ("leads",)} if full_table else {}
    defs = _defs(tmp_path, **overrides)
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
    defs = _defs(tmp_path)
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


def test_only_the_selected_streams_get_derived_assets(tmp_path: Path):
    defs = _defs(tmp_path, streams=("pipelines", "statuses", "contacts"))
    keys = {a.key.path[-1] for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)}
    assert keys == {
        "pipelines",
        "statuses",
        "contacts",
        "contact_custom_field_values",
        "contacts_wide",
        "contact_companies",  # a link table, read from the contacts pages
    }


# --- a view's rebuild is one transaction ------------------------------------------------------


def _priced(ctx: RefreshContext) -> None:
    ctx.con.execute(
        f"CREATE OR REPLACE VIEW {ctx.schema}.priced_leads AS "
        f"SELECT id, price FROM {ctx.schema}.leads WHERE price IS NOT NULL"
    )


def _total_of_a_missing_table(ctx: RefreshContext) -> None:
    ctx.con.execute(
        f"CREATE OR REPLACE VIEW {ctx.schema}.priced_total AS "
        f"SELECT sum(price) AS total FROM {ctx.schema}.no_such_table"
    )


def _total_losing_the_connection(ctx: RefreshContext) -> None:
    # A broken connection: the ROLLBACK that follows this error fails as well.
    ctx.con.close()
    raise ConnectionError("priced_total: the warehouse connection was lost")


PRICED = Table(
    name="priced_leads",
    kind="view",
    description="The leads with a price.",
    inputs=("leads",),
    refresh=_priced,
)


@pytest.mark.parametrize(
    ("follower", "error"),
    [
        (_total_of_a_missing_table, "no_such_table does not exist"),
        (_total_losing_the_connection, "the warehouse connection was lost"),
    ],
)
def test_a_failed_view_rebuild_reports_its_own_error_and_leaves_the_view_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, follower: Refresh, error: str
):
    total = Table(
        name="priced_total",
        kind="view",
        description="The sum of the leads' prices.",
        inputs=("priced_leads",),
        refresh=follower,
    )
    monkeypatch.setattr(declaration, "DECLARATIONS", (*declaration.DECLARATIONS, PRICED, total))
    defs = _defs(tmp_path, streams=("pipelines", "statuses", "leads"))
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        insert(con, "leads", [{"id": 1, "updated_at": 100, "price": 70}])
        con.execute("CREATE VIEW kommo.priced_leads AS SELECT 1 AS older_definition")
    view = defs.resolve_assets_def(dg.AssetKey(["kommo", "priced_leads"]))

    result = dg.materialize([view], raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    # What the step raised is the refresh's own error, not one of the ROLLBACK after it.
    raised = failure.step_failure_data.error.cause
    assert raised is not None and error in raised.message, failure.step_failure_data.error
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        assert con.execute("FROM kommo.priced_leads").fetchall() == [(1,)]
        assert [c[0] for c in con.execute("DESCRIBE kommo.priced_leads").fetchall()] == [
            "older_definition"
        ]
        assert not table_exists(con, schema="kommo", table="priced_total")


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


# --- a view over a table not written yet ------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "first"),
    [
        ("lead_stage_durations", "kommo/lead_status_changes"),
        ("response_time_by_manager", "kommo/chat_response_times"),
    ],
)
def test_a_view_over_a_table_not_written_yet_says_what_to_materialize_first(
    tmp_path: Path, view: str, first: str
):
    defs = _defs(tmp_path)
    asset = defs.resolve_assets_def(dg.AssetKey(["kommo", view]))

    result = dg.materialize([asset], raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    raised = failure.step_failure_data.error.cause
    assert raised is not None, failure.step_failure_data.error
    # Only what the view cannot make itself: it creates the stream tables it reads empty.
    assert f"materialize {first} first" in raised.message, raised.message


# --- what a table reads besides its rows --------------------------------------------------------


@pytest.mark.parametrize("name", ["manager_activity_daily", "response_time_by_manager"])
def test_what_counts_days_in_the_accounts_time_zone_depends_on_the_account(
    tmp_path: Path, name: str
):
    """Their days are the account's (its ``timezone``, read from kommo.account when they are
    written): the account's asset is upstream of them when it is selected."""
    account = dg.AssetKey(["kommo", "account"])
    defs = _defs(tmp_path)
    assert account in defs.resolve_assets_def(dg.AssetKey(["kommo", name])).dependency_keys
    without = _defs(tmp_path, streams=("events", "leads", "contacts"))
    asset = without.resolve_assets_def(dg.AssetKey(["kommo", name]))
    assert account not in asset.dependency_keys and asset.dependency_keys
