"""The change sensor against the sandbox: ticks built with `build_sensor_context`, real HTTP."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.derived.declaration import with_derived
from kommo_dagster.kommo.changes import CHANGE_STREAMS, ChangeCursor, advance
from kommo_dagster.kommo.errors import KommoPaymentRequiredError, KommoResponseError
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.orchestration.jobs import FULL_TABLES_JOB, INCREMENTAL_JOB, build_jobs
from kommo_dagster.orchestration.sensors import CHANGE_SENSOR, build_change_sensor
from kommo_dagster.sandbox import ChurnConfig, KommoSandbox
from kommo_dagster.settings import Settings
from kommo_dagster_tests.wiring import sandbox_kommo

pytestmark = pytest.mark.timeout(120)


class Watch:
    def __init__(
        self, sandbox: KommoSandbox, directory: Path, *, max_pages: int | None = None, **settings
    ) -> None:
        self.sandbox = sandbox
        self.kommo = sandbox_kommo(sandbox, directory)
        config = Settings(
            start_date=date(2026, 10, 1), duckdb_path=directory / "crm.duckdb", **settings
        )
        self.defs = build_definitions(config, kommo=self.kommo)
        self.sensor = self.defs.get_repository_def().get_sensor_def(CHANGE_SENSOR)
        if max_pages is not None:  # the same sensor, reading fewer pages per tick
            sensor = build_change_sensor(config, build_jobs(config), max_pages=max_pages)
            assert sensor is not None and sensor.name == self.sensor.name
            self.sensor = sensor
        self.instance = dg.DagsterInstance.ephemeral()

    def tick(self, cursor: str | None) -> tuple[dg.SensorResult, int]:
        """The tick's result and the requests it cost the account."""
        before = self.sandbox.stats()["requests"]
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            resources={"kommo": self.kommo},
            repository_def=self.defs.get_repository_def(),
        ) as context:
            result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        return result, self.sandbox.stats()["requests"] - before


def _selection(request: dg.RunRequest) -> set[str]:
    return {k.path[-1] for k in request.asset_selection or []}


def _followed(streams: set[str]) -> set[str]:
    """``streams`` with their derived tables and their link tables."""
    derived = with_derived(streams)
    return derived | {t.name for t in LINK_TABLES.values() if t.parent in derived}


@pytest.fixture
def sandbox(sandbox_factory) -> KommoSandbox:
    # Data in the past, so the churn clock is now and changes land in today's partition.
    today = datetime.now(UTC).date()
    return sandbox_factory(
        leads=30, requests_per_second=None, start=today - timedelta(days=3), end=today
    )


def test_the_sensor_polls_every_few_minutes_and_starts_stopped(sandbox, tmp_path: Path):
    watch = Watch(sandbox, tmp_path, sensor_interval_seconds=120)
    assert watch.sensor.minimum_interval_seconds == 120
    assert watch.sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert {t.job_name for t in watch.sensor.targets} == {INCREMENTAL_JOB, FULL_TABLES_JOB}
    # It runs the partition of each UTC day its events fall on, not only today's.
    assert "partition of each UTC day the new events fall on" in (watch.sensor.description or "")


def test_quiet_ticks_cost_one_request_and_changes_trigger_exactly_their_streams(
    sandbox, tmp_path: Path
):
    watch = Watch(sandbox, tmp_path)
    # First tick: starts watching now, asks nothing.
    result, requests = watch.tick(None)
    assert requests == 0 and not result.run_requests
    cursor = result.cursor
    assert ChangeCursor.loads(cursor) is not None

    result, requests = watch.tick(cursor)
    assert requests == 1
    assert not result.run_requests
    cursor = result.cursor

    # One lead changes: leads and events, today's partition, one request.
    sandbox.update_config(churn=ChurnConfig(streams=("leads",), updates=1, creates=0, deletes=0))
    sandbox.churn_step()
    result, requests = watch.tick(cursor)
    assert requests == 1
    [request] = result.run_requests
    today = datetime.now(UTC).date().isoformat()
    assert request.job_name == INCREMENTAL_JOB
    assert request.partition_key == today
    # and their derived and link tables
    assert _selection(request) == _followed({"leads", "events"})
    changed = result.cursor

    # The same tick evaluated again asks for the same run (same run key): idempotent.
    again, _ = watch.tick(cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]

    # Nothing since: quiet again, the events already seen are not counted twice.
    result, requests = watch.tick(changed)
    assert requests == 1 and not result.run_requests
    cursor = result.cursor

    # A task is deleted and a company added: exactly those streams.
    sandbox.update_config(churn=ChurnConfig(streams=("tasks",), updates=0, creates=0, deletes=1))
    sandbox.churn_step()
    sandbox.update_config(
        churn=ChurnConfig(streams=("companies",), updates=0, creates=1, deletes=0)
    )
    sandbox.churn_step()
    result, requests = watch.tick(cursor)
    assert requests == 1
    [request] = result.run_requests
    assert _selection(request) == _followed({"tasks", "companies", "events"})


def test_a_stream_switched_to_full_table_is_refreshed_by_the_full_tables_job(
    sandbox, tmp_path: Path
):
    watch = Watch(
        sandbox,
        tmp_path,
        streams=("contacts", "events", "pipelines"),
        full_table_streams=("contacts",),
    )
    cursor = watch.tick(None)[0].cursor
    sandbox.update_config(
        churn=ChurnConfig(streams=("contacts", "leads"), updates=1, creates=0, deletes=0)
    )
    sandbox.churn_step()
    result, _ = watch.tick(cursor)
    by_job = {r.job_name: r for r in result.run_requests}
    assert set(by_job) == {INCREMENTAL_JOB, FULL_TABLES_JOB}
    assert _selection(by_job[INCREMENTAL_JOB]) == with_derived({"events"})  # leads: not selected
    assert _selection(by_job[FULL_TABLES_JOB]) == _followed({"contacts"})
    assert by_job[FULL_TABLES_JOB].partition_key is None


def test_a_failing_poll_fails_the_tick_and_keeps_the_cursor(sandbox, tmp_path: Path):
    watch = Watch(sandbox, tmp_path)
    cursor = watch.tick(None)[0].cursor
    sandbox.update_config(unpaid=True)
    with pytest.raises(KommoPaymentRequiredError):
        watch.tick(cursor)
    sandbox.update_config(unpaid=False)
    result, requests = watch.tick(cursor)  # the next tick, from the same cursor
    assert requests == 1 and not result.run_requests


def test_a_tick_stopped_at_its_page_cap_refreshes_the_days_it_left_unread_and_says_so(
    sandbox, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    """Three days of history (over 200 events) from a cursor at the oldest, one page a tick."""
    watch = Watch(sandbox, tmp_path, max_pages=1)
    history = sandbox.records("events")
    cursor = ChangeCursor(since=min(e["created_at"] for e in history))
    capfd.readouterr()
    result, requests = watch.tick(cursor.dumps())
    logged = capfd.readouterr().err  # the tick's log (Dagster's handler writes to stderr)
    assert requests == 1
    days = {_day(e["created_at"]) for e in history}
    # Every day holding an event is refreshed, the unread ones for every change stream.
    by_day = {date.fromisoformat(r.partition_key or ""): r for r in result.run_requests}
    assert set(by_day) == days
    first, *_ = sorted(days)
    assert _selection(by_day[first]) == _followed(set(CHANGE_STREAMS))
    [capped] = {r.tags.get("kommo/capped") for r in result.run_requests}
    assert capped is not None and capped.startswith(f"{first.isoformat()}/")
    assert "WARNING - Kommo still announced more events after 1 pages" in logged
    assert f"events from {capped.replace('/', ' to ')} (UTC) were not all read" in logged
    assert "backfill those days" in logged
    # The next tick goes on from the newest event: nothing new, not capped, one request.
    result, requests = watch.tick(result.cursor)
    assert requests == 1 and not result.run_requests
    assert "still announced" not in capfd.readouterr().err


def test_a_capped_tick_with_nothing_to_run_says_it_was_capped(sandbox, tmp_path: Path):
    watch = Watch(sandbox, tmp_path, max_pages=1, streams=("pipelines", "users"))
    history = sandbox.records("events")
    cursor = ChangeCursor(since=min(e["created_at"] for e in history))
    result, _ = watch.tick(cursor.dumps())
    assert not result.run_requests
    assert result.skip_reason is not None
    assert "Kommo still announced more events after 1 pages" in str(result.skip_reason)


def _day(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, tz=UTC).date()


def test_the_cursor_keeps_the_ids_seen_in_its_last_second():
    start = ChangeCursor(since=100)
    events = [{"id": "a", "created_at": 100}, {"id": "b", "created_at": 105}]
    after = advance(start, events)
    assert after == ChangeCursor(since=105, seen=frozenset({"b"}))
    later = advance(after, [{"id": "b", "created_at": 105}, {"id": "c", "created_at": 105}])
    assert later == ChangeCursor(since=105, seen=frozenset({"b", "c"}))
    assert ChangeCursor.loads(later.dumps()) == later
    with pytest.raises(ValueError, match="unreadable change cursor"):
        ChangeCursor.loads("{not json")


def _left_behind(defs: dg.Definitions, request: dg.RunRequest) -> set[str]:
    """Assets of the request's job that read an asset the run refreshes but are not in it."""
    chosen = set(request.asset_selection or [])
    job = defs.resolve_job_def(request.job_name or "")
    return {
        key.path[-1]
        for key in job.asset_layer.selected_asset_keys - chosen
        if defs.resolve_assets_def(key).dependency_keys & chosen
    }


@pytest.mark.parametrize("full_table", [False, True])
def test_a_changed_stream_is_refreshed_with_everything_its_job_runs_after_it(
    sandbox, tmp_path: Path, full_table: bool
):
    """The link tables are written with their parent's rows and their assets run in the same
    runs (their freshness, their per-partition row counts); the sensor's runs too."""
    switched = {"full_table_streams": ("leads",)} if full_table else {}
    watch = Watch(sandbox, tmp_path, **switched)
    cursor = watch.tick(None)[0].cursor
    sandbox.update_config(churn=ChurnConfig(streams=("leads",), updates=1, creates=0, deletes=0))
    sandbox.churn_step()
    result, _ = watch.tick(cursor)
    by_job = {r.job_name: r for r in result.run_requests}
    request = by_job[FULL_TABLES_JOB if full_table else INCREMENTAL_JOB]
    assert {"leads", *(t.name for t in LINK_TABLES.values() if t.parent == "leads")} <= (
        _selection(request)
    )
    # The incremental job holds only what runs with its parent (the views and the tables
    # rebuilt whole run with the full tables): none of it may be left behind.
    assert not _left_behind(watch.defs, by_job[INCREMENTAL_JOB])


def test_a_tick_failing_on_an_event_that_quotes_the_token_masks_it(sandbox, tmp_path: Path):
    """The poll's checks quote what Kommo answered, which may hold the token it was sent: the
    tick's error masks it like the client's own errors."""
    watch = Watch(sandbox, tmp_path)
    cursor = watch.tick(None)[0].cursor
    sandbox.update_config(churn=ChurnConfig(streams=("leads",), updates=1, creates=0, deletes=0))
    sandbox.churn_step()
    table = sandbox.account.tables["events"]
    row = max(range(len(table)), key=lambda r: table.record(r)["created_at"])
    event = table.record(row)
    del event["id"]
    table.replace(row, {"text": sandbox.token, **event})
    with pytest.raises(KommoResponseError, match="without an id") as raised:
        watch.tick(cursor)
    assert sandbox.token not in str(raised.value) and "'text': '***'" in str(raised.value)
