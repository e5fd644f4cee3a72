"""The IO manager inside real Dagster runs (ephemeral instance, real DuckDB file), fed by small
assets that stage synthetic contract rows, so it is tested apart from the API."""

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.orchestration.io_manager import KommoDuckDBIOManager, KommoDuckDBResource
from kommo_dagster.orchestration.partitions import build_daily_partitions
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.warehouse.errors import WarehouseError
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.failing_write import MISSING, FailingStagedRows
from kommo_dagster_tests.rows import synthetic_columns

PARTITIONS = build_daily_partitions(date(2026, 10, 1))
LEADS = get_stream("leads")
USERS = get_stream("users")


def _io_manager(path: Path) -> KommoDuckDBIOManager:
    return KommoDuckDBIOManager(duckdb=KommoDuckDBResource(database=str(path), lock_timeout=30))


def _leads_asset(rows_per_day: int = 3, first_id: int = 1, staged_cls=StagedRows):
    @dg.asset(
        key=["kommo", "leads"],
        partitions_def=PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def leads(context: dg.AssetExecutionContext) -> StagedRows:
        window = EpochWindow.from_time_window(context.partition_time_window)
        staged = staged_cls(LEADS, window=window)
        days = (window.end - window.start) // 86_400
        for day in range(days):
            staged.append(
                synthetic_columns(
                    LEADS,
                    rows_per_day,
                    cursor_start=window.start + day * 86_400,
                    step=3600,
                    first_id=first_id + 1000 * day,
                )
            )
        return staged

    return leads


def _table(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def _materialization(result: dg.ExecuteInProcessResult) -> dg.AssetMaterialization:
    [event] = result.get_asset_materialization_events()
    return event.materialization


def test_a_partition_lands_with_its_metadata(tmp_path: Path):
    db = tmp_path / "kommo_crm.duckdb"
    result = dg.materialize(
        [_leads_asset()], resources={"io_manager": _io_manager(db)}, partition_key="2026-10-05"
    )
    assert result.success
    metadata = _materialization(result).metadata
    assert metadata["dagster/row_count"].value == 3
    assert metadata["dagster/table_name"].value == "kommo_crm.kommo.leads"
    assert metadata["kommo/slice"].value == "2026-10-05"
    assert metadata["kommo/duplicate_rows_dropped"].value == 0
    schema = metadata["dagster/column_schema"].value
    assert [(c.name, c.type) for c in schema.columns] == [
        (c.name, c.duckdb_type) for c in LEADS.columns
    ]
    assert schema.columns[0].description == LEADS.columns[0].description
    assert _table(db, "SELECT count(*), min(updated_at) FROM kommo.leads") == [
        (
            3,
            EpochWindow.from_time_window(
                PARTITIONS.time_window_for_partition_key("2026-10-05")
            ).start,
        )
    ]


def test_a_single_run_range_and_a_partition_rerun_replace_their_slices(tmp_path: Path):
    db = tmp_path / "kommo_crm.duckdb"
    io = {"io_manager": _io_manager(db)}
    instance = dg.DagsterInstance.ephemeral()
    range_tags = {
        "dagster/asset_partition_range_start": "2026-10-01",
        "dagster/asset_partition_range_end": "2026-10-10",
    }
    result = dg.materialize([_leads_asset()], resources=io, instance=instance, tags=range_tags)
    assert result.success
    events = [e.materialization for e in result.get_asset_materialization_events()]
    assert [e.partition for e in events] == [f"2026-10-{d:02d}" for d in range(1, 11)]
    # one write for the whole range: the IO manager reports the slice on every partition
    assert {
        (e.metadata["kommo/slice"].value, e.metadata["dagster/row_count"].value) for e in events
    } == {("2026-10-01..2026-10-10", 30)}
    before = _table(db, "SELECT * FROM kommo.leads ORDER BY id")

    # a re-run of one day with other rows replaces that day only
    rerun = dg.materialize(
        [_leads_asset(rows_per_day=2, first_id=500)],
        resources=io,
        instance=instance,
        partition_key="2026-10-04",
    )
    assert rerun.success
    assert _materialization(rerun).metadata["kommo/replaced_rows"].value == 3
    after = _table(db, "SELECT * FROM kommo.leads ORDER BY id")
    day4 = EpochWindow.from_time_window(PARTITIONS.time_window_for_partition_key("2026-10-04"))
    cursor = LEADS.column_names.index("updated_at")
    assert [r for r in after if not day4.contains(r[cursor])] == [
        r for r in before if not day4.contains(r[cursor])
    ]
    assert sorted(r[0] for r in after if day4.contains(r[cursor])) == [500, 501]

    # the same range again restores exactly the first state
    again = dg.materialize([_leads_asset()], resources=io, instance=instance, tags=range_tags)
    assert again.success
    assert len(again.get_asset_materialization_events()) == 10
    assert _table(db, "SELECT * FROM kommo.leads ORDER BY id") == before


def test_dataframes_are_stored_and_loaded_with_nullable_types(tmp_path: Path):
    db = tmp_path / "kommo_crm.duckdb"
    frame = pd.DataFrame(synthetic_columns(USERS, 4))

    @dg.asset(key=["kommo", "users"])
    def users() -> pd.DataFrame:
        return frame[list(reversed(frame.columns))]  # column order does not matter

    @dg.asset(ins={"users": dg.AssetIn(key=["kommo", "users"])}, io_manager_key="mem")
    def user_count(users: pd.DataFrame) -> int:
        assert list(users.columns) == list(USERS.column_names)
        assert str(users["id"].dtype) == "Int64"
        return len(users)

    result = dg.materialize(
        [users, user_count],
        resources={"io_manager": _io_manager(db), "mem": dg.InMemoryIOManager()},
    )
    assert result.success
    assert result.output_for_node("user_count") == 4
    assert _table(db, "SELECT id, email FROM kommo.users ORDER BY id") == list(
        zip(frame["id"], frame["email"], strict=True)
    )


def test_a_run_whose_write_fails_leaves_the_partition_as_it_was(tmp_path: Path):
    db = tmp_path / "kommo_crm.duckdb"
    io = {"io_manager": _io_manager(db)}
    assert dg.materialize([_leads_asset()], resources=io, partition_key="2026-10-05").success
    before = _table(db, "SELECT * FROM kommo.leads ORDER BY id")
    failing = _leads_asset(rows_per_day=5, first_id=700, staged_cls=FailingStagedRows)
    result = dg.materialize(
        [failing], resources=io, partition_key="2026-10-05", raise_on_error=False
    )
    assert not result.success
    # Failed where the write meant to fail (after its DELETE), not for some earlier reason.
    [failure] = result.get_step_failure_events()
    assert MISSING in str(failure.step_failure_data.error), failure.step_failure_data.error
    assert _table(db, "SELECT * FROM kommo.leads ORDER BY id") == before


def test_rows_staged_for_another_window_are_refused(tmp_path: Path):
    db = tmp_path / "kommo_crm.duckdb"

    @dg.asset(key=["kommo", "leads"], partitions_def=PARTITIONS)
    def leads() -> StagedRows:
        return StagedRows(LEADS, window=EpochWindow(0, 86_400))

    with pytest.raises(
        WarehouseError, match="extracted for 1970-01-01 but the output is 2026-10-05"
    ):
        dg.materialize(
            [leads], resources={"io_manager": _io_manager(db)}, partition_key="2026-10-05"
        )


def _another_stream(window: EpochWindow) -> StagedRows:
    return StagedRows(get_stream("contacts"), window=window)


def _another_window(window: EpochWindow) -> StagedRows:
    return StagedRows(LEADS, window=EpochWindow(0, 86_400))


def _frame_without_columns(window: EpochWindow) -> pd.DataFrame:
    return pd.DataFrame(synthetic_columns(LEADS, 2, cursor_start=window.start)).drop(
        columns=["name"]
    )


def _frame_with_another_column(window: EpochWindow) -> pd.DataFrame:
    """A column the contract does not have would be dropped without a word: refused instead,
    as a batch with one is."""
    frame = pd.DataFrame(synthetic_columns(LEADS, 2, cursor_start=window.start))
    return frame.assign(my_flag=[1, 2])


@pytest.mark.parametrize(
    ("handed_over", "reason"),
    [
        (_another_stream, "kommo/leads got rows of contacts"),
        (_another_window, "extracted for 1970-01-01 but the output is 2026-10-05"),
        (_frame_without_columns, r"the DataFrame lacks columns \['name'\]"),
        (_frame_with_another_column, r"the DataFrame has columns the contract lacks \['my_flag'\]"),
    ],
)
def test_rows_refused_before_the_write_say_the_table_was_left_as_it_was(
    tmp_path: Path, handed_over, reason: str
):
    """Refused by the IO manager before `StagedRows.write` is called: the error says, like a
    write that rolled back, that nothing of the slice was written."""
    db = tmp_path / "kommo_crm.duckdb"
    io = {"io_manager": _io_manager(db)}
    assert dg.materialize([_leads_asset()], resources=io, partition_key="2026-10-05").success
    before = _table(db, "SELECT * FROM kommo.leads ORDER BY id")

    @dg.asset(key=["kommo", "leads"], partitions_def=PARTITIONS)
    def leads(context: dg.AssetExecutionContext) -> Any:  # StagedRows or a DataFrame
        return handed_over(EpochWindow.from_time_window(context.partition_time_window))

    with pytest.raises(WarehouseError, match=reason) as raised:
        dg.materialize([leads], resources=io, partition_key="2026-10-05")
    assert raised.value.__notes__ == [
        "kommo_crm.kommo.leads was left as it was: nothing of this run's partitions 2026-10-05 "
        "was written (a run writes its slice of a table in one transaction, once all of it is "
        "read)"
    ]
    assert _table(db, "SELECT * FROM kommo.leads ORDER BY id") == before


def test_a_frame_duckdb_refuses_leaves_no_staging_instance(tmp_path: Path, monkeypatch):
    """A DataFrame whose rows DuckDB refuses while they are staged (a string it cannot encode)
    fails the output; the staging instance it was going into is closed, its directory gone."""
    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))  # where staging instances spill
    db = tmp_path / "kommo_crm.duckdb"

    @dg.asset(key=["kommo", "leads"], partitions_def=PARTITIONS)
    def leads(context: dg.AssetExecutionContext) -> pd.DataFrame:
        window = EpochWindow.from_time_window(context.partition_time_window)
        columns = synthetic_columns(LEADS, 2, cursor_start=window.start)
        columns["name"] = ["fine", "lone surrogate \ud800"]
        return pd.DataFrame(columns)

    with pytest.raises(duckdb.InvalidInputException, match="surrogate"):
        dg.materialize(
            [leads], resources={"io_manager": _io_manager(db)}, partition_key="2026-10-05"
        )
    assert [p.name for p in staging.iterdir() if p.name.startswith("kommo-stage-")] == []


def test_a_database_named_like_the_schema_fails_the_run_with_the_reason(tmp_path: Path):
    @dg.asset(key=["kommo", "users"])
    def users() -> pd.DataFrame:
        return pd.DataFrame(synthetic_columns(USERS, 1))

    with pytest.raises(dg.DagsterResourceFunctionError) as failure:
        dg.materialize([users], resources={"io_manager": _io_manager(tmp_path / "kommo.duckdb")})
    # the guard's reason, not DuckDB's own "Ambiguous reference" from a query that ran
    reason = failure.value.__cause__
    assert isinstance(reason, SettingsError)
    assert "collides with the schema 'kommo'" in str(reason)
    assert not (tmp_path / "kommo.duckdb").exists()


def test_an_account_named_target_is_written_and_united(tmp_path: Path):
    """Schema kommo_target (account "target") through a run: nothing the write names itself
    may collide with it."""
    db = tmp_path / "kommo_crm.duckdb"
    io = KommoDuckDBIOManager(
        duckdb=KommoDuckDBResource(database=str(db), lock_timeout=30),
        schema_name="kommo_target",
        account_schemas={"target": "kommo_target"},
    )
    result = dg.materialize(
        [_leads_asset()], resources={"io_manager": io}, partition_key="2026-10-05"
    )
    assert result.success
    assert _table(db, "SELECT count(*) FROM kommo_target.leads") == [(3,)]
    assert _table(db, "SELECT DISTINCT account FROM kommo_all.leads") == [("target",)]


def test_repeated_versions_are_dropped_counted_and_logged(tmp_path: Path):
    db = tmp_path / "kommo_crm.duckdb"

    class Doubled(StagedRows):
        def append(self, columns):
            super().append(columns)
            super().append(columns)

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [_leads_asset(staged_cls=Doubled)],
        resources={"io_manager": _io_manager(db)},
        partition_key="2026-10-05",
        instance=instance,
    )
    assert result.success
    metadata = _materialization(result).metadata
    assert metadata["dagster/row_count"].value == 3
    assert metadata["kommo/duplicate_rows_dropped"].value == 3
    assert _table(db, "SELECT count(*), count(DISTINCT id) FROM kommo.leads") == [(3, 3)]
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("dropped 3 repeated rows (same id, updated_at)" in m for m in messages)


def test_an_asset_of_yours_returning_a_value_is_told_what_to_do(tmp_path: Path):
    """Your own asset in the code location writes through the ``duckdb`` resource; one that
    returns (None included, when not annotated) reaches the Kommo IO manager, which says how to
    keep it away instead of calling it an unknown Kommo stream."""

    @dg.asset
    def lead_report(duckdb: KommoDuckDBResource):  # unannotated: returns None to the IO manager
        with duckdb.get_connection() as con:
            con.execute("CREATE OR REPLACE TABLE report AS SELECT 1 AS n")

    db = tmp_path / "kommo_crm.duckdb"
    duckdb_resource = KommoDuckDBResource(database=str(db), lock_timeout=30)
    resources = {
        "io_manager": KommoDuckDBIOManager(duckdb=duckdb_resource),
        "duckdb": duckdb_resource,
    }
    result = dg.materialize([lead_report], resources=resources, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    cause = failure.step_failure_data.error.cause
    assert cause is not None
    assert "lead_report is not a Kommo stream" in cause.message, cause.message
    assert "dg.MaterializeResult" in cause.message and "io_manager_key" in cause.message

    @dg.asset(name="lead_report")
    def as_advised(duckdb: KommoDuckDBResource) -> dg.MaterializeResult:
        with duckdb.get_connection() as con:
            con.execute("CREATE OR REPLACE TABLE report AS SELECT 1 AS n")
        return dg.MaterializeResult()

    assert dg.materialize([as_advised], resources=resources).success
    assert _table(db, "SELECT n FROM report") == [(1,)]
