"""The conversation and activity tables end to end: the sandbox over HTTP, real runs, a real
DuckDB file, compared with rows computed from the sandbox's own records
(`kommo_dagster.sandbox.activity_truth`), never with the project's SQL.

The events and notes arrive in two halves of the month, and the tables are rebuilt after each:
after the first half they equal the truth of what was extracted by then (runs answered after the
boundary are still open), after the second the truth of the whole month (those runs have their
reply). Re-running a partition and the tables changes nothing.
"""

import statistics
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest

from kommo_dagster.derived.activity import NOTE_STREAMS
from kommo_dagster.derived.declaration import ACTIVITY_TABLES
from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.sandbox.activity_truth import activity_rows, call_rows, response_rows
from kommo_dagster_tests.derived.test_end_to_end import Warehouse as DerivedWarehouse
from kommo_dagster_tests.wiring import materialize_streams

FIRST_HALF, SECOND_HALF = ("2026-10-01", "2026-10-15"), ("2026-10-16", "2026-10-31")
BOUNDARY = int(datetime(2026, 10, 16, tzinfo=UTC).timestamp())
NOTES = tuple(NOTE_STREAMS)  # every note table the calls read
PARENTS = ("events", "lead_status_changes", *NOTES)
TABLES = tuple(ACTIVITY_TABLES)
ACTIVITY = (*TABLES, "response_time_by_manager")


class Warehouse(DerivedWarehouse):
    def run(self, names, **kw) -> dg.ExecuteInProcessResult:
        return materialize_streams(self.defs, self.instance, names, with_checks=True, **kw)

    def rows(self, table: str) -> list[dict[str, Any]]:
        key = ", ".join(ACTIVITY_TABLES[table].key)
        with duckdb.connect(str(self.db), read_only=True) as con:
            cursor = con.execute(f"SELECT * FROM kommo.{table} ORDER BY {key}")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def _sorted(rows: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in ACTIVITY_TABLES[table].key))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Iterator[Warehouse]:
    with KommoSandbox(SandboxConfig(seed=1, leads=300)) as sandbox:
        wh = Warehouse(sandbox, tmp_path_factory.mktemp("activity"))
        wh.run(["account", "users", "pipelines", "statuses"])
        wh.run(["leads", "contacts", *PARENTS], partition_range=FIRST_HALF)
        wh.first = wh.run(ACTIVITY)
        wh.first_half = {t: wh.rows(t) for t in TABLES}
        wh.run(["leads", "contacts", *PARENTS], partition_range=SECOND_HALF)
        wh.second = wh.run(ACTIVITY)
        yield wh


def _events(wh: Warehouse, *, before: int | None = None) -> list[dict[str, Any]]:
    events = wh.sandbox.account.records("events")
    return [e for e in events if before is None or e["created_at"] < before]


def test_first_half_equals_the_truth_of_what_was_extracted(warehouse):
    expected = response_rows(_events(warehouse, before=BOUNDARY))
    assert len(expected) > 50
    assert warehouse.first_half["chat_response_times"] == expected
    calls = [r for r in call_rows(warehouse.sandbox.account) if _updated(warehouse, r) < BOUNDARY]
    assert warehouse.first_half["calls"] == _sorted(calls, "calls")


def _updated(wh: Warehouse, call: dict[str, Any]) -> int:
    table = f"{call['entity_type']}_notes"
    (note,) = [n for n in wh.sandbox.account.records(table) if n["id"] == call["note_id"]]
    return note["updated_at"]


def test_a_run_answered_after_the_boundary_gets_its_reply(warehouse):
    full = {r["first_message_id"]: r for r in response_rows(_events(warehouse))}
    across = [
        r for r in full.values() if r["first_message_at"] < BOUNDARY <= (r["replied_at"] or 0)
    ]
    assert across, "the sandbox should answer some run across the boundary"
    first = {r["first_message_id"]: r for r in warehouse.first_half["chat_response_times"]}
    for run in across:
        assert first[run["first_message_id"]]["replied_at"] is None
    assert warehouse.rows("chat_response_times") == sorted(
        full.values(), key=lambda r: r["first_message_id"]
    )


def test_calls_and_activity_equal_the_truth_of_the_month(warehouse):
    account = warehouse.sandbox.account
    calls, activity = call_rows(account), activity_rows(account)
    assert len(calls) > 50 and len(activity) > 100
    assert warehouse.rows("calls") == calls
    assert warehouse.rows("manager_activity_daily") == activity
    assert any(r["median_response_seconds"] is not None for r in activity)
    assert any(r["leads_won"] for r in activity) and any(r["user_id"] == 0 for r in activity)


def test_bad_input_is_kept_or_skipped_and_counted(warehouse):
    by_key = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in warehouse.second.get_asset_materialization_events()
    }
    chats = by_key["chat_response_times"]
    assert chats["kommo/messages_without_message_id"].value == 1
    assert chats["kommo/messages_on_unknown_entity_types"].value == 1
    assert chats["kommo/time_zone"].value == "America/Sao_Paulo"
    notes = [
        n["params"]
        for t in NOTES
        for n in warehouse.sandbox.account.records(t)
        if n["note_type"] in ("call_in", "call_out")
    ]
    text = [p for p in notes if isinstance(p.get("duration"), str) and not p["duration"].isdigit()]
    assert text and by_key["calls"]["kommo/durations_not_a_number"].value == len(text)
    assert by_key["calls"]["kommo/durations_absent"].value == sum(
        "duration" not in p for p in notes
    )
    for table in TABLES:
        rows = warehouse.query(f"SELECT count(*) FROM kommo.{table}")[0][0]
        assert by_key[table]["dagster/row_count"].value == rows
        schema = by_key[table]["dagster/column_schema"].value
        assert [c.name for c in schema.columns] == list(ACTIVITY_TABLES[table].column_names)
        assert all(c.description for c in schema.columns)


def test_reruns_leave_no_duplicates_and_the_checks_pass(warehouse):
    before = {t: warehouse.rows(t) for t in TABLES}
    warehouse.run(list(PARENTS), partition="2026-10-15")
    result = warehouse.run(ACTIVITY)
    for table in TABLES:
        assert warehouse.rows(table) == before[table], table
    checks = {(c.asset_key.path[-1], c.check_name): c for c in result.get_asset_check_evaluations()}
    assert {name for _, name in checks} == {
        "contract_columns",
        "no_duplicate_keys",
        "no_negative_response_seconds",
        "unanswered_over_24_hours",
    }
    waiting = checks["chat_response_times", "unanswered_over_24_hours"]
    unanswered = [r for r in before["chat_response_times"] if r["replied_at"] is None]
    assert not waiting.passed and waiting.severity == dg.AssetCheckSeverity.WARN
    assert waiting.metadata["unanswered_runs_over_24_hours"].value == len(unanswered)
    oldest = min(unanswered, key=lambda r: r["first_message_at"])
    assert waiting.metadata["oldest_first_message_id"].value == oldest["first_message_id"]
    others = [c for k, c in checks.items() if k[1] != "unanswered_over_24_hours"]
    assert all(c.passed for c in others), [c.description for c in others if not c.passed]


def test_response_view_per_manager_and_week(warehouse):
    account = warehouse.sandbox.account
    responsible = {
        (entity, r["id"]): r["responsible_user_id"]
        for entity, stream in (("lead", "leads"), ("contact", "contacts"))
        for r in account.records(stream)
        if not r.get("is_deleted")
    }
    zone = ZoneInfo(warehouse.query("SELECT timezone FROM kommo.account")[0][0])
    groups: dict[tuple[int | None, date], tuple[list[int], list[str]]] = {}
    for r in warehouse.rows("chat_response_times"):
        day = datetime.fromtimestamp(r["first_message_at"], UTC).astimezone(zone)
        week = date.fromisocalendar(*day.isocalendar()[:2], 1)
        user = r["replied_by"]
        if r["replied_at"] is None:
            user = responsible.get((r["entity_type"], r["entity_id"]))
        replies, waiting = groups.setdefault((user, week), ([], []))
        (waiting if r["replied_at"] is None else replies).append(r["response_seconds"])
    expected = sorted(
        (
            user,
            week,
            len(s),
            float(statistics.median(s)) if s else None,
            sum(x <= 300 for x in s) / len(s) if s else None,
            len(waiting),
        )
        for (user, week), (s, waiting) in groups.items()
    )
    got = warehouse.query(
        "SELECT user_id, week, replies, median_response_seconds, share_within_5_min, "
        "unanswered_runs FROM kommo.response_time_by_manager"
    )
    assert sorted(got, key=lambda r: (r[0] is None, r)) == sorted(
        expected, key=lambda r: (r[0] is None, r)
    )
    assert any(r[5] and r[0] is not None for r in got)  # unanswered runs have their manager


def test_the_funnel_converts_plausibly(warehouse):
    warehouse.run(["lead_stage_durations", "pipeline_funnel"])
    conversions = [
        r[0]
        for r in warehouse.query(
            "SELECT conversion_to_next FROM kommo.pipeline_funnel "
            "WHERE conversion_to_next IS NOT NULL AND leads_entered >= 5"
        )
    ]
    assert len(conversions) >= 8
    assert statistics.median(conversions) >= 0.3
    assert all(0 <= c <= 1 for c in conversions)
