"""Schedules and jobs: what each tick targets, and the weekly full sync as one run."""

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.definitions import build_definitions
from kommo_dagster.derived.declaration import ACTIVITY_TABLES, with_derived
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import FULL_TABLE_STREAMS, INCREMENTAL_STREAMS
from kommo_dagster.orchestration.accounts import accounts_from_env
from kommo_dagster.orchestration.jobs import FULL_SYNC_JOB, FULL_TABLES_JOB, INCREMENTAL_JOB
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.orchestration.schedules import (
    FINALIZE_SCHEDULE,
    FULL_SYNC_SCHEDULE,
    FULL_TABLES_SCHEDULE,
    OFFSET_METADATA,
    TODAY_SCHEDULE,
    stagger_offsets,
)
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.settings import Settings
from kommo_dagster_tests.wiring import named_accounts_definitions, sandbox_kommo

START = date(2026, 10, 1)
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _defs(tmp_path: Path, **settings) -> dg.Definitions:
    return build_definitions(
        Settings(start_date=START, duckdb_path=tmp_path / "crm.duckdb", **settings),
        kommo=KommoResource(api_token="t", base_url="http://127.0.0.1:9"),
    )


def _tick(defs: dg.Definitions, name: str, at: datetime) -> list[dg.RunRequest]:
    schedule = defs.get_repository_def().get_schedule_def(name)
    with dg.build_schedule_context(
        scheduled_execution_time=at, repository_def=defs.get_repository_def()
    ) as context:
        data = schedule.evaluate_tick(context)
    assert data.skip_message is None, data.skip_message
    return list(data.run_requests or [])


def _keys(defs: dg.Definitions, job: str) -> set[str]:
    return {k.path[-1] for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}


def test_jobs_split_the_streams_by_sync(tmp_path: Path):
    defs = _defs(tmp_path)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        INCREMENTAL_JOB,
        FULL_SYNC_JOB,
        FULL_TABLES_JOB,
    }
    # Derived and link tables run with their parents; the views and the tables rebuilt whole
    # (activity) with the full tables.
    partitioned = with_derived(set(INCREMENTAL_STREAMS)) | set(LINK_TABLES)
    assert _keys(defs, INCREMENTAL_JOB) == partitioned
    assert _keys(defs, FULL_SYNC_JOB) == partitioned
    views = {"leads_wide", "contacts_wide", "companies_wide", "lead_stage_durations"}
    views |= {"pipeline_funnel", "response_time_by_manager", "leads_enriched", *ACTIVITY_TABLES}
    assert _keys(defs, FULL_TABLES_JOB) == set(FULL_TABLE_STREAMS) | views


def test_schedules_target_their_jobs_in_utc_and_start_stopped(tmp_path: Path):
    repo = _defs(tmp_path).get_repository_def()
    expected = {
        TODAY_SCHEDULE: (INCREMENTAL_JOB, "10 * * * *"),
        FINALIZE_SCHEDULE: (INCREMENTAL_JOB, "30 0 * * *"),
        FULL_TABLES_SCHEDULE: (FULL_TABLES_JOB, "0 1 * * *"),
        FULL_SYNC_SCHEDULE: (FULL_SYNC_JOB, "0 3 * * 0"),
    }
    assert {s.name for s in repo.schedule_defs} == set(expected)
    for schedule in repo.schedule_defs:
        assert (schedule.job_name, schedule.cron_schedule) == expected[schedule.name]
        assert schedule.execution_timezone == "UTC"
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_schedules_run_in_the_location_time_zone_on_utc_partitions(tmp_path: Path):
    defs = _defs(tmp_path, timezone="America/Sao_Paulo")
    repo = defs.get_repository_def()
    assert {s.execution_timezone for s in repo.schedule_defs} == {"America/Sao_Paulo"}
    # 00:30 in Sao Paulo is 03:30 UTC: the partition is still the UTC day before the tick.
    at = datetime(2026, 11, 1, 3, 30, tzinfo=UTC)
    [request] = _tick(defs, FINALIZE_SCHEDULE, at)
    assert request.partition_key == "2026-10-31"
    # Its description says so, not "after midnight UTC".
    finalize = repo.get_schedule_def(FINALIZE_SCHEDULE)
    assert "whole UTC day's partition" in (finalize.description or "")
    assert "at 00:30 (America/Sao_Paulo)" in (finalize.description or "")


def test_schedules_can_start_running(tmp_path: Path):
    repo = _defs(tmp_path, schedules_default_on=True).get_repository_def()
    assert {s.default_status for s in repo.schedule_defs} == {dg.DefaultScheduleStatus.RUNNING}
    assert {s.default_status for s in repo.sensor_defs} == {dg.DefaultSensorStatus.RUNNING}


def test_the_hourly_schedule_refreshes_today(tmp_path: Path):
    defs = _defs(tmp_path)
    for at, key in [
        (datetime(2026, 10, 5, 0, 10, tzinfo=UTC), "2026-10-05"),
        (datetime(2026, 10, 5, 23, 10, tzinfo=UTC), "2026-10-05"),
    ]:
        [request] = _tick(defs, TODAY_SCHEDULE, at)
        assert request.partition_key == key
        assert request.asset_selection is None  # the whole job: every incremental stream
    # Each tick asks again, whatever happened to the previous run: a failure is retried.
    first = _tick(defs, TODAY_SCHEDULE, datetime(2026, 10, 5, 9, 10, tzinfo=UTC))[0]
    second = _tick(defs, TODAY_SCHEDULE, datetime(2026, 10, 5, 10, 10, tzinfo=UTC))[0]
    assert first.partition_key == second.partition_key
    assert first.run_key != second.run_key


def test_the_finalize_schedule_reruns_yesterday(tmp_path: Path):
    [request] = _tick(_defs(tmp_path), FINALIZE_SCHEDULE, datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    assert request.partition_key == "2026-10-31"


def _skip(defs: dg.Definitions, name: str, at: datetime) -> str:
    """The skip message of a tick that requests no run."""
    schedule = defs.get_repository_def().get_schedule_def(name)
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        data = schedule.evaluate_tick(context)
    assert not data.run_requests
    return data.skip_message or ""


def test_ticks_before_the_start_date_skip(tmp_path: Path):
    message = _skip(_defs(tmp_path), FINALIZE_SCHEDULE, datetime(2026, 10, 1, 0, 30, tzinfo=UTC))
    # Settings made in Python: the field's name.
    assert "2026-09-30 is before start_date 2026-10-01" in message


@pytest.mark.parametrize("name", [FINALIZE_SCHEDULE, FULL_SYNC_SCHEDULE])
def test_a_skip_before_the_start_date_names_the_variable_that_set_it(tmp_path: Path, name: str):
    """An account's own start date is its KOMMO_<ACCOUNT>_START_DATE: the skip names that one,
    not the unprefixed variable, which holds another date."""
    env = {
        "KOMMO_ACCOUNTS": "aa,bb",
        "KOMMO_START_DATE": "2026-09-01",
        "KOMMO_AA_START_DATE": "2026-12-01",
        "KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"),
    }
    for account in ("aa", "bb"):
        env[f"KOMMO_{account.upper()}_API_TOKEN"] = f"token-{account}"
        env[f"KOMMO_{account.upper()}_BASE_URL"] = f"https://{account}.kommo.com"
    defs = build_kommo_definitions(accounts_from_env(env))
    account_schedule = name.replace("kommo_", "kommo_aa_", 1)
    message = _skip(defs, account_schedule, datetime(2026, 11, 1, 3, 30, tzinfo=UTC))
    assert "is before KOMMO_AA_START_DATE 2026-12-01" in message


def test_the_full_tables_schedule_runs_its_job(tmp_path: Path):
    [request] = _tick(_defs(tmp_path), FULL_TABLES_SCHEDULE, datetime(2026, 10, 5, 1, tzinfo=UTC))
    assert request.partition_key is None


def test_the_full_sync_is_one_run_over_the_whole_range(tmp_path: Path):
    [request] = _tick(_defs(tmp_path), FULL_SYNC_SCHEDULE, datetime(2026, 10, 11, 3, tzinfo=UTC))
    assert request.partition_key is None
    assert request.tags[RANGE_START] == "2026-10-01"
    assert request.tags[RANGE_END] == "2026-10-11"


@pytest.mark.timeout(120)
def test_the_full_sync_request_executes_as_one_run(sandbox_factory, tmp_path: Path):
    """The schedule's request, launched as Dagster launches it: one run, every partition."""
    sandbox: KommoSandbox = sandbox_factory(
        leads=40, requests_per_second=None, start=date(2026, 10, 1), end=date(2026, 10, 6)
    )
    settings = Settings(start_date=START, duckdb_path=tmp_path / "crm.duckdb")
    defs = build_definitions(
        settings,
        kommo=sandbox_kommo(sandbox, tmp_path),
    )
    [request] = _tick(defs, FULL_SYNC_SCHEDULE, datetime(2026, 10, 5, 3, tzinfo=UTC))
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def(FULL_SYNC_JOB).execute_in_process(
        instance=instance, tags=request.tags
    )
    assert result.success
    runs = instance.get_runs()
    assert len(runs) == 1
    materialized = {
        (e.asset_key.path[-1], e.partition) for e in result.get_asset_materialization_events()
    }
    days = [f"2026-10-0{d}" for d in range(1, 6)]
    partitioned = with_derived(set(INCREMENTAL_STREAMS)) | set(LINK_TABLES)
    assert materialized == {(s, d) for s in partitioned for d in days}
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        (leads,) = con.execute("SELECT count(*) FROM kommo.leads").fetchone()
    assert leads == len(sandbox.expected_rows("leads"))


@pytest.mark.parametrize("n", [2, 6, 10])
def test_the_schedules_of_several_accounts_start_at_distinct_minutes(tmp_path: Path, n: int):
    defs = named_accounts_definitions(tmp_path, [f"acc{i}" for i in range(n)])
    schedules = defs.get_repository_def().schedule_defs
    for base, cron in [
        (TODAY_SCHEDULE, "10 * * * *"),
        (FULL_TABLES_SCHEDULE, "0 1 * * *"),
        (FINALIZE_SCHEDULE, "30 0 * * *"),
        (FULL_SYNC_SCHEDULE, "0 3 * * 0"),
    ]:
        suffix = base.removeprefix("kommo_")
        mine = {s.name: s for s in schedules if s.name.endswith(suffix)}
        assert len(mine) == n
        offsets = {s.metadata[OFFSET_METADATA].value for s in mine.values()}
        # Distinct, within the hour, and what the cron says.
        assert len(offsets) == n and max(offsets) < 30
        minute, rest = cron.split(" ", 1)
        for s in mine.values():
            offset = s.metadata[OFFSET_METADATA].value
            assert s.cron_schedule == f"{int(minute) + offset} {rest}"
            assert (f"Starts {offset} min after" in (s.description or "")) == (offset > 0)


def test_offsets_are_spread_over_the_half_hour_and_deterministic(tmp_path: Path):
    assert stagger_offsets(1) == [0]
    assert stagger_offsets(6) == [0, 5, 10, 15, 20, 25]
    assert stagger_offsets(10) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert len(set(stagger_offsets(30))) == 30
    # An account's minutes follow its place in KOMMO_ACCOUNTS, not its name's order.
    names = ["ru", "br", "mx"]
    schedules = named_accounts_definitions(tmp_path, names).get_repository_def().schedule_defs
    offsets = {
        name: {s.metadata[OFFSET_METADATA].value for s in schedules if f"_{name}_" in s.name}
        for name in names
    }
    assert offsets == {"ru": {0}, "br": {5}, "mx": {10}}


def test_one_account_keeps_its_times_with_offset_zero(tmp_path: Path):
    schedules = _defs(tmp_path).get_repository_def().schedule_defs
    offsets = {s.name: s.metadata[OFFSET_METADATA].value for s in schedules}
    names = (TODAY_SCHEDULE, FINALIZE_SCHEDULE, FULL_TABLES_SCHEDULE, FULL_SYNC_SCHEDULE)
    assert offsets == dict.fromkeys(names, 0)
