"""Every stream's asset end to end: a real Dagster instance, the sandbox over HTTP, a real DuckDB
file.

The module materializes the sandbox's whole window once (full tables, then the incremental
streams as one single-run range) and checks every table against the contract file and against
the sandbox's ground truth, messy records included. Re-runs, empty partitions, failures and the
request count of a range get their own, smaller runs.
"""

import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

import kommo_dagster.contract
from kommo_dagster.kommo import KommoClient, unsorted
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import (
    DERIVED_TABLES,
    FULL_TABLE_STREAMS,
    INCREMENTAL_STREAMS,
    STREAMS,
)
from kommo_dagster.sandbox import ChurnConfig, KommoSandbox
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.rows import canonical
from kommo_dagster_tests.wiring import Warehouse

CONTRACT = {
    file: json.loads((Path(kommo_dagster.contract.__file__).parent / file).read_text("utf-8"))
    for file in kommo_dagster.contract.CONTRACT_FILES
}
# Every table the contract files ask this client to extract (derived tables are built elsewhere),
# and the incoming leads, declared in their format in kommo/unsorted.py.
EXTRACTED = {
    name: spec
    for contract in [*CONTRACT.values(), {"streams": unsorted.CONTRACT}]
    for name, spec in contract["streams"].items()
    if "derived_from" not in spec
}
DUCKDB_TYPE = {"integer": "BIGINT", "string": "VARCHAR", "boolean": "BOOLEAN"}
MONTH = ("2026-10-01", "2026-10-31")  # the sandbox's data window, as partitions
OCTOBER = EpochWindow.from_datetimes(
    datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
)


@pytest.fixture(scope="module")
def sandbox(unlimited_sandbox: KommoSandbox) -> KommoSandbox:
    # No rate limit: the tests measure requests, not pace.
    return unlimited_sandbox


@pytest.fixture(scope="module")
def loaded(sandbox: KommoSandbox, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """The whole sandbox window materialized: full tables, then one range run."""
    wh = Warehouse(sandbox, tmp_path_factory.mktemp("loaded"))
    sandbox.reset_stats()
    wh.full_result = wh.run(FULL_TABLE_STREAMS)
    wh.range_result = wh.run(INCREMENTAL_STREAMS, partition_range=MONTH)
    wh.requests = sandbox.stats()["requests"]
    return wh


@pytest.fixture
def fresh(sandbox: KommoSandbox, tmp_path: Path) -> Warehouse:
    return Warehouse(sandbox, tmp_path)


@pytest.mark.parametrize("stream", list(EXTRACTED))
def test_every_table_has_the_contract_columns_in_order(loaded: Warehouse, stream: str):
    got = loaded.sql(
        "SELECT column_name, data_type FROM duckdb_columns() "
        f"WHERE schema_name = 'kommo' AND table_name = '{stream}' ORDER BY column_index"
    )
    expected = [(c["name"], DUCKDB_TYPE[c["type"]]) for c in EXTRACTED[stream]["columns"]]
    assert got == expected


def test_no_tables_beyond_the_contract(loaded: Warehouse):
    tables = loaded.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'kommo'")
    # plus one snapshot history per full-table stream (kommo_dagster.warehouse.views)
    history = [f"{s}_history" for s in FULL_TABLE_STREAMS]
    # the derived contract tables exist too (the wide views read them), empty until derived
    names = [t for (t,) in tables if t not in DERIVED_TABLES]
    # and the link tables, written with leads and contacts (kommo_dagster.kommo.links)
    assert sorted(names) == sorted([*EXTRACTED, *history, *LINK_TABLES])


@pytest.mark.parametrize("stream", list(STREAMS))
def test_rows_equal_the_sandbox_ground_truth(loaded: Warehouse, stream: str):
    expected = loaded.sandbox.expected_rows(stream)
    assert expected, "the sandbox account should have rows in every stream"
    assert canonical(stream, loaded.rows(stream)) == canonical(stream, expected)


def test_materializations_report_rows_table_and_schema(loaded: Warehouse):
    by_key: dict[str, list[dg.AssetMaterialization]] = {}
    for result in (loaded.full_result, loaded.range_result):
        for event in result.get_asset_materialization_events():
            m = event.materialization
            by_key.setdefault(m.asset_key.path[-1], []).append(m)
    assert sorted(by_key) == sorted(STREAMS)
    for stream, events in by_key.items():
        total = len(loaded.sandbox.expected_rows(stream))
        assert {e.metadata["dagster/table_name"].value for e in events} == {
            f"kommo_crm.kommo.{stream}"
        }
        schema = events[0].metadata["dagster/column_schema"].value
        assert [c.name for c in schema.columns] == list(STREAMS[stream].column_names)
        assert all(c.description for c in schema.columns)
        if stream in INCREMENTAL_STREAMS:
            # one event per day of the range; each day carries its own row count
            assert len(events) == 31
            assert sum(e.metadata["dagster/row_count"].value for e in events) == total
            assert {e.metadata["kommo/slice"].value for e in events} == {"2026-10-01..2026-10-31"}
        else:
            [event] = events
            assert event.metadata["dagster/row_count"].value == total
            assert event.metadata["kommo/requests"].value >= 1


def _minimum_requests(sandbox: KommoSandbox, stream: str) -> int:
    """Fewest requests that can list the window: ``max(1, ceil(rows / page size))`` per list
    (live and deleted), as the last page says there is no next one."""
    spec = STREAMS[stream]
    rows = sandbox.expected_rows(stream)
    lists = (
        [[r for r in rows if not r["is_deleted"]], [r for r in rows if r["is_deleted"]]]
        if spec.has_deleted_list
        else [rows]
    )
    assert spec.page_size
    return sum(max(1, math.ceil(len(rows_) / spec.page_size)) for rows_ in lists)


def test_a_range_costs_one_extraction_not_one_per_day(loaded: Warehouse, tmp_path: Path):
    range_requests = {
        m.materialization.asset_key.path[-1]: m.materialization.metadata["kommo/requests"].value
        for m in loaded.range_result.get_asset_materialization_events()
    }
    report = []
    for stream in INCREMENTAL_STREAMS:
        # the same client settings, called once for the whole window, outside Dagster
        with KommoClient(
            token=loaded.sandbox.token,
            base_url=loaded.sandbox.base_url,
            requests_per_second=1000.0,
            max_workers=1,
            rate_limit_dir=tmp_path,
        ) as client:
            for _ in client.iter_records(
                stream, start=OCTOBER.start_datetime, end=OCTOBER.end_datetime
            ):
                pass
            direct = client.stats().requests
        minimum = _minimum_requests(loaded.sandbox, stream)
        quiet_day = 2 if STREAMS[stream].has_deleted_list else 1
        report.append((stream, range_requests[stream], minimum, direct, 31 * quiet_day))
        assert range_requests[stream] == direct
        assert minimum <= range_requests[stream] < 31 * quiet_day
    print("stream, range requests, minimum, direct extraction, 31 quiet days:", report)
    full_table_requests = sum(
        m.materialization.metadata["kommo/requests"].value
        for m in loaded.full_result.get_asset_materialization_events()
    )
    # what the sandbox counted is what the assets reported: no request checks the account
    # before the first list (kommo_dagster.kommo.host), nothing else was asked
    assert loaded.requests == sum(r[1] for r in report) + full_table_requests


def _requests_by_path(sandbox: KommoSandbox) -> dict[str, dict[str, int]]:
    return {path: dict(counts) for path, counts in sandbox.stats()["by_path"].items()}


# One request per list, each answered 204: leads, contacts and companies have a deleted list too.
QUIET_LISTS = {
    STREAMS[s].path: {"204": 2 if STREAMS[s].has_deleted_list else 1} for s in INCREMENTAL_STREAMS
}


def test_a_quiet_range_costs_one_request_per_list(fresh: Warehouse):
    fresh.sandbox.reset_stats()
    result = fresh.run(INCREMENTAL_STREAMS, partition_range=("2026-09-01", "2026-09-30"))
    assert result.success
    assert _requests_by_path(fresh.sandbox) == QUIET_LISTS


def test_todays_quiet_partition_costs_exactly_one_request_per_list(fresh: Warehouse):
    """The hourly refresh of an account where nothing changed, as the schedule's job runs it:
    one run of every incremental stream, costing their lists and nothing else."""
    today = datetime.now(UTC).date().isoformat()
    fresh.sandbox.reset_stats()
    assert fresh.run(INCREMENTAL_STREAMS, partition=today).success
    assert _requests_by_path(fresh.sandbox) == QUIET_LISTS


def test_an_empty_partition_leaves_empty_contract_tables(fresh: Warehouse):
    result = fresh.run(INCREMENTAL_STREAMS, partition="2026-09-15")
    assert result.success
    for stream in INCREMENTAL_STREAMS:
        assert fresh.rows(stream) == []
        columns = fresh.sql(
            "SELECT column_name, data_type FROM duckdb_columns() "
            f"WHERE schema_name = 'kommo' AND table_name = '{stream}' ORDER BY column_index"
        )
        assert columns == [(c.name, c.duckdb_type) for c in STREAMS[stream].columns]
    counts = {
        e.materialization.metadata["dagster/row_count"].value
        for e in result.get_asset_materialization_events()
    }
    assert counts == {0}


def _day(key: str) -> EpochWindow:
    start = datetime.fromisoformat(key).replace(tzinfo=UTC)
    return EpochWindow(int(start.timestamp()), int(start.timestamp()) + 86_400)


def test_reruns_replace_exactly_their_slice(fresh: Warehouse):
    assert fresh.run(["leads"], partition_range=MONTH).success
    truth = canonical("leads", fresh.sandbox.expected_rows("leads"))
    assert canonical("leads", fresh.rows("leads")) == truth

    busy, quiet = _day("2026-10-16"), _day("2026-10-10")
    with duckdb.connect(str(fresh.db)) as con:
        # damage one day we re-run and one we do not, and add a stray row to the first
        con.execute(
            "UPDATE kommo.leads SET name = 'damaged' WHERE updated_at >= ? AND updated_at < ?",
            [busy.start, busy.end],
        )
        con.execute(
            "UPDATE kommo.leads SET name = 'kept' WHERE updated_at >= ? AND updated_at < ?",
            [quiet.start, quiet.end],
        )
        con.execute("INSERT INTO kommo.leads (id, updated_at) VALUES (1, ?)", [busy.start + 5])
        untouched_before = con.execute(
            "SELECT count(*) FROM kommo.leads WHERE updated_at < ? OR updated_at >= ?",
            [busy.start, busy.end],
        ).fetchone()

    rerun = fresh.run(["leads"], partition="2026-10-16")
    assert rerun.success
    in_busy = f"WHERE updated_at >= {busy.start} AND updated_at < {busy.end}"
    assert canonical("leads", fresh.rows("leads", in_busy)) == canonical(
        "leads", [r for r in fresh.sandbox.expected_rows("leads") if busy.contains(r["updated_at"])]
    )
    assert fresh.sql(
        f"SELECT count(*) FROM kommo.leads WHERE updated_at < {busy.start} "
        f"OR updated_at >= {busy.end}"
    ) == [untouched_before]
    assert fresh.sql(
        f"SELECT DISTINCT name FROM kommo.leads WHERE updated_at >= {quiet.start} "
        f"AND updated_at < {quiet.end}"
    ) == [("kept",)]

    # a range re-run over the untouched day restores it, and twice is the same as once
    assert fresh.run(["leads"], partition_range=("2026-10-01", "2026-10-15")).success
    assert fresh.run(["leads"], partition_range=MONTH).success
    assert fresh.run(["leads"], partition_range=MONTH).success
    assert canonical("leads", fresh.rows("leads")) == truth


def test_statuses_cover_every_pipeline_in_the_table(fresh: Warehouse):
    assert fresh.run(["pipelines", "statuses"]).success
    for stream in ("pipelines", "statuses"):  # the tables hold the account's rows, not none
        expected = fresh.sandbox.expected_rows(stream)
        assert expected and canonical(stream, fresh.rows(stream)) == canonical(stream, expected)
    orphans = fresh.sql(
        "SELECT count(*) FROM kommo.statuses s ANTI JOIN kommo.pipelines p ON s.pipeline_id = p.id"
    )
    assert orphans == [(0,)]
    covered = fresh.sql("SELECT count(DISTINCT pipeline_id) FROM kommo.statuses")
    assert covered == fresh.sql("SELECT count(*) FROM kommo.pipelines")
    # a status is identified by (pipeline_id, id): won/lost (142, 143) repeat across pipelines
    assert fresh.sql("SELECT count(*) = count(DISTINCT (pipeline_id, id)) FROM kommo.statuses") == [
        (True,)
    ]


def test_statuses_without_a_pipelines_table_say_what_to_do(fresh: Warehouse):
    result = fresh.run(["statuses"], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "materialize kommo/pipelines first" in str(failure.step_failure_data.error)


def test_a_failed_run_leaves_the_table_as_it_was(sandbox_factory, tmp_path: Path):
    sandbox = sandbox_factory(seed=1, leads=300, requests_per_second=None)
    wh = Warehouse(sandbox, tmp_path)
    assert wh.run(["leads"], partition_range=MONTH).success
    assert wh.run(["users"]).success
    before_leads, before_users = wh.rows("leads"), wh.rows("users")

    sandbox.update_config(unpaid=True)  # every request now answers 402
    sandbox.reset_stats()
    failed = wh.run(["leads"], partition_range=MONTH, raise_on_error=False)
    assert not failed.success
    failed_full = wh.run(["users"], raise_on_error=False)
    assert not failed_full.success
    # Each run failed at the first request of its lists (leads: live and deleted), unretried.
    seen = _requests_by_path(sandbox)
    assert seen.keys() == {"/api/v4/leads", "/api/v4/users"}
    assert seen["/api/v4/leads"].keys() == {"402"} and seen["/api/v4/leads"]["402"] <= 2
    assert seen["/api/v4/users"] == {"402": 1}
    errors = [
        str(e.event_specific_data.error)
        for r in (failed, failed_full)
        for e in r.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    assert len(errors) == 2 and all("402" in e and "paid period" in e for e in errors)
    # Each failure says what it wrote of its slice: nothing.
    assert (
        "kommo_crm.kommo.leads was left as it was: nothing of this run's partitions "
        "2026-10-01..2026-10-31 was written (a run writes its slice of a table in one "
        "transaction, once all of it is read)"
    ) in errors[0]
    assert "kommo_crm.kommo.users was left as it was: nothing of this run's full table" in errors[1]
    assert wh.rows("leads") == before_leads
    assert wh.rows("users") == before_users


def test_progress_and_a_summary_line_are_logged(loaded: Warehouse):
    messages = [
        e.message
        for e in loaded.instance.all_logs(loaded.range_result.run_id)
        if e.user_message and "kommo/leads" in e.user_message
    ]
    assert any("progress:" in m for m in messages)
    assert any(
        "2026-10-01..2026-10-31: 300 rows -> kommo_crm.kommo.leads" in m and "requests" in m
        for m in messages
    )


def test_the_row_count_per_day_matches_the_table(loaded: Warehouse):
    events = [
        e.materialization
        for e in loaded.range_result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == "events"
    ]
    for event in events:
        day = _day(event.partition or "")
        [(count,)] = loaded.sql(
            f"SELECT count(*) FROM kommo.events WHERE created_at >= {day.start} "
            f"AND created_at < {day.end}"
        )
        assert event.metadata["dagster/row_count"].value == count
    assert sum(e.metadata["dagster/row_count"].value for e in events) == len(
        loaded.sandbox.expected_rows("events")
    )


def test_todays_unfinished_partition_can_be_materialized(fresh: Warehouse):
    leads = next(a for a in fresh.defs.assets or [] if a.key.path[-1] == "leads")
    today = leads.partitions_def.get_last_partition_key()
    now = datetime.now(UTC)
    assert today in {now.date().isoformat(), (now - timedelta(minutes=1)).date().isoformat()}
    result = fresh.run(INCREMENTAL_STREAMS, partition=today)
    assert result.success
    windows = {
        e.materialization.metadata["kommo/window_end"].value
        for e in result.get_asset_materialization_events()
    }
    # the window runs to the end of the day, which has not come yet
    assert windows == {_day(today).end}


def test_notes_extracted_while_they_change_are_neither_lost_nor_doubled(
    sandbox_factory, tmp_path: Path
):
    sandbox = sandbox_factory(seed=1, leads=300, requests_per_second=None)
    wh = Warehouse(sandbox, tmp_path)
    before = {(r["id"], r["updated_at"]) for r in sandbox.records("lead_notes")}
    # After every request: notes edited (they leave October for now), added and deleted.
    churn = ChurnConfig(every_requests=1, updates=5, creates=2, deletes=1, streams=("lead_notes",))
    sandbox.update_config(churn=churn)
    assert wh.run(["lead_notes"], partition_range=MONTH).success
    sandbox.update_config(churn=None)
    assert sandbox.stats()["churn_steps"] >= 3, "the notes changed while they were paged"

    rows = wh.rows("lead_notes")
    versions = Counter((r["id"], r["updated_at"]) for r in rows)
    assert max(versions.values()) == 1, "no (id, updated_at) twice"
    truth = {(r["id"], r["updated_at"]): r for r in sandbox.expected_rows("lead_notes")}
    stayed = before & set(truth)
    assert len(stayed) < len(before), "some notes left the window while it was paged"
    got = {(r["id"], r["updated_at"]): r for r in rows}
    assert stayed <= set(got), f"{len(stayed - set(got))} notes lost"
    # column for column, the notes that stayed are what the sandbox serves
    assert canonical("lead_notes", [got[k] for k in stayed]) == canonical(
        "lead_notes", [truth[k] for k in stayed]
    )
