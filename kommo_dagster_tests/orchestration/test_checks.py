"""Data checks: each passes on a good table and fails on a deliberately broken one."""

from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, STREAMS, get_stream
from kommo_dagster.orchestration.checks import (
    CURRENT_IDS_UNIQUE,
    NO_DUPLICATE_VERSIONS,
    NO_NULL_IDS,
    build_kommo_checks,
    check_names,
    evaluate,
)
from kommo_dagster.orchestration.data_checks import CONTRACT_COLUMNS
from kommo_dagster.orchestration.freshness import INCREMENTAL_FAIL, INCREMENTAL_WARN
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.sql import column_definitions
from kommo_dagster.warehouse.views import ensure_current_view
from kommo_dagster_tests.derived.tables import insert
from kommo_dagster_tests.wiring import local_definitions, sandbox_kommo

DAY = 86_400
OCT_5 = 1_790_000_000 - 1_790_000_000 % DAY  # a UTC midnight


def _table(con: duckdb.DuckDBPyConnection, stream: str, rows: list[dict]) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS kommo")
    con.execute(
        f"CREATE OR REPLACE TABLE kommo.{stream} ({column_definitions(get_stream(stream))})"
    )
    names = STREAMS[stream].column_names
    for row in rows:
        con.execute(
            f"INSERT INTO kommo.{stream} VALUES ({', '.join('?' * len(names))})",
            [row.get(n) for n in names],
        )
    if get_stream(stream).is_incremental:
        ensure_current_view(con, get_stream(stream), schema="kommo")


def _outcomes(con: duckdb.DuckDBPyConnection, stream: str) -> dict[str, bool]:
    return {n: o.passed for n, o in evaluate(con, get_stream(stream), schema="kommo").items()}


LEADS = [
    {"id": 1, "updated_at": OCT_5 + 10, "is_deleted": False},
    {"id": 1, "updated_at": OCT_5 + 20, "is_deleted": False},
    {"id": 2, "updated_at": OCT_5 + 10, "is_deleted": False},
]


def test_checks_are_derived_from_the_declaration():
    assert check_names(get_stream("leads")) == [
        CONTRACT_COLUMNS,
        NO_NULL_IDS,
        NO_DUPLICATE_VERSIONS,
        CURRENT_IDS_UNIQUE,
        "pipeline_id_in_pipelines",
        "status_id_in_statuses",
        "loss_reason_id_in_loss_reasons",
    ]
    statuses = get_stream("statuses")
    assert check_names(statuses) == [CONTRACT_COLUMNS, NO_NULL_IDS, "pipeline_id_in_pipelines"]
    assert check_names(get_stream("users")) == [CONTRACT_COLUMNS, NO_NULL_IDS]
    # a reference to a table that is not selected has no check
    assert check_names(get_stream("tasks"), streams=("tasks",))[-1] == CURRENT_IDS_UNIQUE
    assert check_names(get_stream("tasks"))[-1] == "task_type_id_in_task_types"


def test_every_check_passes_on_good_tables():
    con = duckdb.connect()
    _table(con, "leads", LEADS)
    _table(con, "pipelines", [{"id": 10}, {"id": 11}])
    _table(con, "statuses", [{"id": 142, "pipeline_id": 10}, {"id": 142, "pipeline_id": 11}])
    _table(con, "loss_reasons", [{"id": 7}])
    for stream in ("leads", "pipelines", "statuses", "loss_reasons"):
        # every declared check ran, and each passed
        expected = dict.fromkeys(check_names(get_stream(stream)), True)
        assert _outcomes(con, stream) == expected, stream


def test_a_duplicate_version_fails_and_names_its_partition():
    con = duckdb.connect()
    _table(con, "leads", [*LEADS, LEADS[1]])
    outcomes = evaluate(con, get_stream("leads"), schema="kommo")
    assert not outcomes[NO_DUPLICATE_VERSIONS].passed
    assert outcomes[NO_DUPLICATE_VERSIONS].metadata["partitions_with_duplicates"] == ["2026-09-21"]
    assert outcomes[NO_NULL_IDS].passed and outcomes[CONTRACT_COLUMNS].passed


def test_a_null_id_fails():
    con = duckdb.connect()
    _table(con, "leads", [*LEADS, {"id": None, "updated_at": OCT_5}])
    assert _outcomes(con, "leads")[NO_NULL_IDS] is False


def test_a_duplicate_id_in_a_current_view_fails():
    con = duckdb.connect()
    _table(con, "events", [{"id": "a", "created_at": 1}, {"id": "b", "created_at": 2}])
    assert _outcomes(con, "events")[CURRENT_IDS_UNIQUE] is True
    # a view broken by hand (the one the IO manager makes cannot repeat an id)
    con.execute("CREATE OR REPLACE VIEW kommo.events_current AS SELECT * FROM kommo.events")
    con.execute("INSERT INTO kommo.events (id, created_at) VALUES ('a', 3)")
    outcomes = evaluate(con, get_stream("events"), schema="kommo")
    assert not outcomes[CURRENT_IDS_UNIQUE].passed
    assert outcomes[CURRENT_IDS_UNIQUE].metadata["sample"] == ["a"]


def test_an_orphan_status_fails():
    con = duckdb.connect()
    _table(con, "pipelines", [{"id": 10}])
    _table(con, "statuses", [{"id": 142, "pipeline_id": 10}, {"id": 142, "pipeline_id": 99}])
    outcome = evaluate(con, get_stream("statuses"), schema="kommo")["pipeline_id_in_pipelines"]
    assert not outcome.passed
    assert outcome.metadata == {
        "dangling_rows": 1,
        "dangling_keys": 1,
        "sample": ["pipeline_id=99"],
    }


def test_dangling_references_are_counted_and_sampled():
    con = duckdb.connect()
    _table(con, "pipelines", [{"id": 10}, {"id": 11}])
    _table(con, "statuses", [{"id": 142, "pipeline_id": 10}, {"id": 5, "pipeline_id": 10}])
    _table(con, "loss_reasons", [{"id": 7}])
    lead = {"updated_at": OCT_5, "pipeline_id": 10, "status_id": 142, "is_deleted": False}
    _table(
        con,
        "leads",
        [
            {**lead, "id": 1, "loss_reason_id": 7},
            {**lead, "id": 2, "loss_reason_id": 8},
            {**lead, "id": 3, "loss_reason_id": 8},
            {**lead, "id": 4, "loss_reason_id": None},
            # status 5 exists, but in pipeline 10: a status is (pipeline_id, id)
            {**lead, "id": 5, "pipeline_id": 11, "status_id": 5},
        ],
    )
    outcomes = evaluate(con, get_stream("leads"), schema="kommo")
    loss = outcomes["loss_reason_id_in_loss_reasons"]
    assert not loss.passed
    assert loss.metadata == {"dangling_rows": 2, "dangling_keys": 1, "sample": ["loss_reason_id=8"]}
    status = outcomes["status_id_in_statuses"]
    assert not status.passed and status.metadata["sample"] == ["pipeline_id=11, status_id=5"]
    assert outcomes["pipeline_id_in_pipelines"].passed
    assert loss.description == "2 rows of leads point to no row of loss_reasons.(id)"


@pytest.mark.parametrize(
    "ddl",
    [
        "ALTER TABLE kommo.leads ALTER price TYPE DOUBLE",
        "ALTER TABLE kommo.leads DROP COLUMN score",
        "ALTER TABLE kommo.leads ADD COLUMN extra VARCHAR",
        "DROP VIEW kommo.leads_current; DROP TABLE kommo.leads",
    ],
)
def test_a_table_unlike_the_contract_fails(ddl: str):
    con = duckdb.connect()
    _table(con, "leads", LEADS)
    con.execute(ddl)
    outcomes = evaluate(con, get_stream("leads"), schema="kommo")
    assert list(outcomes) == check_names(get_stream("leads"))
    assert not outcomes[CONTRACT_COLUMNS].passed
    # the other checks do not run on such a table, and say why
    assert all(
        not o.passed and "not evaluated" in o.description
        for o in outcomes.values()
        if o is not outcomes[CONTRACT_COLUMNS]
    )


def test_the_contract_check_blocks_and_every_stream_has_its_checks(tmp_path: Path):
    settings = Settings(start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb")
    checks = build_kommo_checks(settings)
    specs = {(s.asset_key.path[-1], s.name): s for c in checks for s in c.check_specs}
    for stream in STREAMS:
        for name in check_names(get_stream(stream)):
            assert (stream, name) in specs
            assert specs[(stream, name)].blocking == (name == CONTRACT_COLUMNS)


def test_incremental_assets_have_a_time_window_freshness_policy(tmp_path: Path):
    defs = build_definitions(
        Settings(start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb")
    )
    policies = {
        spec.key.path[-1]: spec.freshness_policy
        for asset in defs.assets or []
        for spec in asset.specs
        if spec.key.path[-1] in INCREMENTAL_STREAMS
    }
    policy = dg.FreshnessPolicy.time_window(
        fail_window=INCREMENTAL_FAIL, warn_window=INCREMENTAL_WARN
    )
    assert policies == dict.fromkeys(INCREMENTAL_STREAMS, policy)


@pytest.mark.timeout(120)
def test_checks_run_in_dagster_and_fail_on_a_broken_table(sandbox_factory, tmp_path: Path):
    sandbox = sandbox_factory(leads=20, requests_per_second=None)
    settings = Settings(start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb")
    defs = build_definitions(
        settings,
        kommo=sandbox_kommo(sandbox, tmp_path),
    )
    everything = [*(defs.assets or []), *(defs.asset_checks or [])]
    instance = dg.DagsterInstance.ephemeral()
    keys = [dg.AssetKey(["kommo", s]) for s in ("pipelines", "statuses")]
    result = dg.materialize(everything, selection=keys, resources=defs.resources, instance=instance)
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.path[-1], e.check_name) for e in evaluations} == {
        ("pipelines", CONTRACT_COLUMNS),
        ("pipelines", NO_NULL_IDS),
        ("statuses", CONTRACT_COLUMNS),
        ("statuses", NO_NULL_IDS),
        ("statuses", "pipeline_id_in_pipelines"),
    }
    assert all(e.passed for e in evaluations)

    # Break the pipelines table, then run the checks alone: the orphan check fails.
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("DELETE FROM kommo.pipelines WHERE id = (SELECT min(id) FROM kommo.pipelines)")
    result = dg.materialize(
        everything,
        selection=dg.AssetSelection.checks_for_assets(*keys),
        resources=defs.resources,
        instance=instance,
    )
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["pipeline_id_in_pipelines"]
    # a dangling reference warns: a record may point to something deleted since
    assert failed[0].severity == dg.AssetCheckSeverity.WARN


def test_a_reference_to_a_table_not_written_yet_says_what_to_materialize_first(tmp_path: Path):
    """Leads written, pipelines and statuses not yet: their reference checks say which assets
    to materialize, as the assets' own errors do, not only that a table is missing."""
    defs = local_definitions(tmp_path, streams=("pipelines", "statuses", "leads"))
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        insert(con, "leads", [{"id": 1, "updated_at": 100, "pipeline_id": 5, "status_id": 7}])
    result = dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        selection=dg.AssetSelection.checks_for_assets(dg.AssetKey(["kommo", "leads"])),
        resources=defs.resources,
        raise_on_error=False,
    )
    said = {e.check_name: e.description for e in result.get_asset_check_evaluations()}
    assert said["contract_columns"] == "23 columns as in the contract"
    for check, stream in [
        ("pipeline_id_in_pipelines", "pipelines"),
        ("status_id_in_statuses", "statuses"),
    ]:
        assert said[check] == f"kommo.{stream} does not exist yet: materialize kommo/{stream} first"
