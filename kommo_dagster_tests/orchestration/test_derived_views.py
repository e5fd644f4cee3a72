"""A view's asset: its rebuild happens whole or not at all, and a rebuild over a table not
written yet says what to materialize first."""

import logging
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.derived import declaration
from kommo_dagster.warehouse.sql import table_exists
from kommo_dagster.warehouse.tables import Refresh, RefreshContext, Table
from kommo_dagster_tests.derived.tables import insert
from kommo_dagster_tests.wiring import local_definitions

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
    defs = local_definitions(tmp_path, streams=("pipelines", "statuses", "leads"))
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
    defs = local_definitions(tmp_path)
    asset = defs.resolve_assets_def(dg.AssetKey(["kommo", view]))

    result = dg.materialize([asset], raise_on_error=False)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    raised = failure.step_failure_data.error.cause
    assert raised is not None, failure.step_failure_data.error
    # Only what the view cannot make itself: it creates the stream tables it reads empty.
    assert f"materialize {first} first" in raised.message, raised.message


def test_a_view_over_streams_not_written_yet_is_built_and_warns_what_to_materialize_first(
    tmp_path: Path,
):
    """The rebuild creates the streams it reads empty and succeeds: the warning is all that
    tells an empty view from an empty account."""
    defs = local_definitions(tmp_path)
    asset = defs.resolve_assets_def(dg.AssetKey(["kommo", "leads_wide"]))

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([asset], instance=instance)
        logs = instance.all_logs(result.run_id)

    warnings = [r.user_message for r in logs if r.level == logging.WARNING]
    [warning] = [m for m in warnings if m.startswith("kommo.leads_wide was rebuilt over")]
    assert "kommo.leads," in warning and "created empty as no run had written them" in warning
    assert "materialize kommo/leads and" in warning and "then this asset again" in warning


# --- what a rebuild logs ----------------------------------------------------------------------


def test_a_view_s_rebuild_logs_its_rows_and_columns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """As every other asset's step does, a view's says in the run log what it rebuilt: the
    rows and columns its materialization records."""
    monkeypatch.setattr(declaration, "DECLARATIONS", (*declaration.DECLARATIONS, PRICED))
    defs = local_definitions(tmp_path, streams=("pipelines", "statuses", "leads"))
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        insert(
            con, "leads", [{"id": 1, "updated_at": 100, "price": 70}, {"id": 2, "updated_at": 100}]
        )
    view = defs.resolve_assets_def(dg.AssetKey(["kommo", "priced_leads"]))

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([view], instance=instance)
        logs = instance.all_logs(result.run_id)

    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["dagster/row_count"].value == 1
    info = [r.user_message for r in logs if r.dagster_event is None and r.level == logging.INFO]
    name = event.materialization.metadata["dagster/table_name"].value
    assert name.endswith(".kommo.priced_leads")
    assert info == [f"{name} view rebuilt over kommo.leads: 1 rows, 2 columns"]
