"""Choosing what to sync: streams, schema and sync type, from KOMMO_* variables."""

from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.orchestration.jobs import FULL_SYNC_JOB, FULL_TABLES_JOB, INCREMENTAL_JOB
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.tables import VIEW_KINDS
from kommo_dagster_tests.wiring import sandbox_kommo


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"), **values}


def test_defaults_keep_every_stream_in_schema_kommo(tmp_path: Path):
    settings = Settings.from_env(_env(tmp_path))
    assert settings.streams == tuple(STREAMS)
    assert settings.schema == "kommo"
    assert settings.full_table_streams == ()
    assert settings.history_retention_days == 30
    assert settings.schedules_default_on is False
    assert settings.sensor_interval_seconds == 300


def test_values_from_the_environment(tmp_path: Path):
    settings = Settings.from_env(
        _env(
            tmp_path,
            KOMMO_STREAMS=" statuses, Leads,pipelines ",
            KOMMO_SCHEMA="sales",
            KOMMO_FULL_TABLE_STREAMS="leads",
            KOMMO_HISTORY_RETENTION_DAYS="7",
            KOMMO_SCHEDULES_DEFAULT_ON="true",
            KOMMO_SENSOR_INTERVAL_SECONDS="60",
        )
    )
    assert settings.streams == ("leads", "pipelines", "statuses")  # declaration order
    assert settings.schema == "sales"
    assert settings.full_table_streams == ("leads",)
    assert settings.partitioned_streams == ()
    assert settings.history_retention_days == 7
    assert settings.schedules_default_on is True
    assert settings.sensor_interval_seconds == 60


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"KOMMO_STREAMS": "leads,deals"}, "unknown streams \\['deals'\\]"),
        ({"KOMMO_STREAMS": "statuses"}, "statuses without pipelines"),
        ({"KOMMO_STREAMS": "catalog_elements"}, "catalog_elements without catalogs"),
        ({"KOMMO_STREAMS": " , "}, "KOMMO_STREAMS selects no stream, got ','"),
        ({"KOMMO_SCHEMA": "crm; drop"}, "KOMMO_SCHEMA must be a plain SQL identifier"),
        ({"KOMMO_FULL_TABLE_STREAMS": "users"}, "users, which is always a full table"),
        (
            {"KOMMO_STREAMS": "leads", "KOMMO_FULL_TABLE_STREAMS": "tasks"},
            "tasks, which KOMMO_STREAMS does not select",
        ),
        ({"KOMMO_HISTORY_RETENTION_DAYS": "-1"}, "KOMMO_HISTORY_RETENTION_DAYS must be"),
        ({"KOMMO_SENSOR_INTERVAL_SECONDS": "0"}, "KOMMO_SENSOR_INTERVAL_SECONDS must be"),
        ({"KOMMO_SCHEDULES_DEFAULT_ON": "maybe"}, "KOMMO_SCHEDULES_DEFAULT_ON must be true"),
    ],
)
def test_invalid_choices_name_the_variable(tmp_path: Path, values: dict, message: str):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(_env(tmp_path, **values))


def test_a_selection_builds_only_its_assets_jobs_and_checks(tmp_path: Path):
    settings = Settings.from_env(
        _env(tmp_path, KOMMO_STREAMS="leads,tasks,pipelines,statuses", KOMMO_SCHEMA="sales")
    )
    defs = build_definitions(settings, kommo=KommoResource(api_token="t", base_url="http://x"))
    assert [a.key.path[-1] for a in defs.assets or []] == [
        "leads",
        "pipelines",
        "statuses",
        "tasks",
        # derived from leads, without a request
        "lead_custom_field_values",
        "leads_wide",
        # read from the leads pages (contacts' companies only with contacts)
        "lead_contacts",
        "lead_companies",
        "lead_products",
        "lead_sources",
    ]
    checked = {s.asset_key.path[-1] for c in defs.asset_checks or [] for s in c.check_specs}
    assert checked == {
        "leads",
        "pipelines",
        "statuses",
        "tasks",
        "lead_custom_field_values",
        *("lead_contacts", "lead_companies", "lead_products", "lead_sources"),
    }
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        INCREMENTAL_JOB,
        FULL_SYNC_JOB,
        FULL_TABLES_JOB,
    }
    assert defs.resources["io_manager"].schema_name == "sales"
    dg.Definitions.validate_loadable(defs)


def test_an_incremental_stream_switched_to_full_table_is_unpartitioned(tmp_path: Path):
    settings = Settings.from_env(
        _env(tmp_path, KOMMO_STREAMS="contacts,pipelines", KOMMO_FULL_TABLE_STREAMS="contacts")
    )
    defs = build_definitions(settings, kommo=KommoResource(api_token="t", base_url="http://x"))
    assets = {a.key.path[-1]: a for a in defs.assets or []}
    assert assets["contacts"].partitions_def is None
    repo = defs.get_repository_def()
    # no partitioned stream left: no incremental or full-sync job, and no schedule for them
    assert {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")} == {FULL_TABLES_JOB}
    assert {s.name for s in repo.schedule_defs} == {"kommo_full_tables_schedule"}


@pytest.mark.timeout(120)
def test_a_full_table_sync_replaces_the_table_in_the_chosen_schema(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(leads=20, requests_per_second=None)
    settings = Settings(
        start_date=date(2026, 10, 1),
        duckdb_path=tmp_path / "crm.duckdb",
        schema="sales",
        streams=("contacts",),
        full_table_streams=("contacts",),
    )
    defs = build_definitions(
        settings,
        kommo=sandbox_kommo(sandbox, tmp_path),
    )
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):
        result = dg.materialize(
            list(defs.assets or []), resources=defs.resources, instance=instance
        )
        assert result.success
    expected = sandbox.expected_rows("contacts")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM sales.contacts").fetchone() == (len(expected),)
        live = [r for r in expected if not r["is_deleted"]]
        assert con.execute("SELECT count(*) FROM sales.contacts_current").fetchone() == (len(live),)
        [(snapshots,)] = con.execute(
            "SELECT count(DISTINCT snapshot_at) FROM sales.contacts_history"
        ).fetchall()
        assert snapshots == 2


@pytest.mark.parametrize("streams", ["", "leads,tasks,pipelines,statuses", "users,task_types"])
def test_a_job_s_description_says_it_runs_what_is_built_from_its_streams(
    tmp_path: Path, streams: str
):
    """A job runs the link and derived tables and views of its streams with them: its
    description in the UI says so, views only where it rebuilds some."""
    values = {"KOMMO_STREAMS": streams} if streams else {}
    settings = Settings.from_env(_env(tmp_path, **values))
    defs = build_definitions(settings, kommo=KommoResource(api_token="t", base_url="http://x"))
    repo = defs.get_repository_def()
    jobs = [j for j in repo.get_all_jobs() if j.name.startswith("kommo_")]
    assert jobs
    for job in jobs:
        names = {k.path[-1] for k in job.asset_layer.executable_asset_keys}
        built = names - set(STREAMS)
        views = {n for n in built if get_table(n).kind in VIEW_KINDS}
        description = job.description or ""
        assert ("derived tables" in description) == bool(built), (job.name, description)
        assert ("views" in description) == bool(views), (job.name, description)
