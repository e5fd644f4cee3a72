"""The link tables' checks on tables written by hand: duplicates fail (error), a second main
contact and a dangling link warn, each with counts and examples; and their definitions: the
names, blocking, dependencies, severities and op names they have always had. The link assets
against the sandbox: row counts per partition, and the observations the events' write logs on
those whose rows it rewrote (links changed without ``updated_at``), with the rows rewritten and
the table's total as the sandbox's ground truth has them; none when nothing was rewritten or
the write failed; on the keys the definitions declare."""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.orchestration.data_checks import Outcome
from kommo_dagster.orchestration.derived_checks import (
    NO_DUPLICATE_KEYS,
    ONE_MAIN_CONTACT,
    evaluate_table,
)
from kommo_dagster.orchestration.io_manager import KommoDuckDBResource
from kommo_dagster.orchestration.link_assets import build_link_checks
from kommo_dagster.orchestration.translator import KommoTranslator, KommoTranslatorData
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.sandbox.links import expected_link_rows
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.link_write import ensure_link_table
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster_tests.wiring import (
    Warehouse,
    local_definitions,
    materialize_streams,
    named_accounts_definitions,
    sandbox_kommo,
)


def test_duplicates_a_second_main_contact_and_dangling_links_are_reported():
    con = duckdb.connect()
    table = LINK_TABLES["lead_contacts"]
    ensure_link_table(con, table, schema="kommo")
    con.execute("CREATE TABLE kommo.leads (id BIGINT)")
    con.execute("CREATE TABLE kommo.contacts (id BIGINT)")
    con.execute("INSERT INTO kommo.leads VALUES (1), (2)")
    con.execute("INSERT INTO kommo.contacts VALUES (10), (11)")
    con.execute(
        "INSERT INTO kommo.lead_contacts VALUES "
        "(1, 10, true), (1, 11, true), (2, 10, false), (2, 10, false), (2, 99, false)"
    )
    outcomes = evaluate_table(
        con, get_table(table.name), schema="kommo", streams={"leads", "contacts"}
    )
    assert outcomes["contract_columns"].passed
    duplicates = outcomes[NO_DUPLICATE_KEYS]
    assert not duplicates.passed and duplicates.metadata["duplicate_keys"] == 1
    assert duplicates.metadata["sample"] == ["(2, 10)"]
    main = outcomes[ONE_MAIN_CONTACT]
    assert not main.passed and main.metadata["sample"] == ["lead_id=1: 2"]
    assert outcomes["lead_id_in_leads"].passed
    dangling = outcomes["contact_id_in_contacts"]
    assert not dangling.passed and dangling.metadata["dangling_rows"] == 1
    assert dangling.metadata["sample"] == ["contact_id=99"]


def test_references_to_unselected_streams_are_not_checked():
    con = duckdb.connect()
    table = LINK_TABLES["lead_products"]
    ensure_link_table(con, table, schema="kommo")
    outcomes = evaluate_table(con, get_table(table.name), schema="kommo", streams={"leads"})
    assert set(outcomes) == {"contract_columns", NO_DUPLICATE_KEYS, "lead_id_in_leads"}


def test_without_the_table_the_contract_check_says_so_and_the_others_are_not_run():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA kommo")
    outcomes = evaluate_table(con, get_table("lead_contacts"), schema="kommo")
    missing = "kommo.lead_contacts does not exist"
    assert outcomes.pop("contract_columns") == Outcome(False, missing, {})
    assert set(outcomes) == {
        NO_DUPLICATE_KEYS,
        "lead_id_in_leads",
        "contact_id_in_contacts",
        ONE_MAIN_CONTACT,
    }
    assert all(o == Outcome(False, f"not evaluated: {missing}", {}) for o in outcomes.values())


ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
# Every link table's checks as they were when the link tables had a check builder of their own:
# (blocking, the streams it also depends on, the severity of its result) by check name.
CONTRACT = {"contract_columns": (True, (), ERROR), NO_DUPLICATE_KEYS: (False, (), ERROR)}
LINK_CHECKS = {
    "lead_contacts": CONTRACT
    | {
        "lead_id_in_leads": (False, ("leads",), WARN),
        "contact_id_in_contacts": (False, ("contacts",), WARN),
        ONE_MAIN_CONTACT: (False, (), WARN),
    },
    "lead_companies": CONTRACT
    | {
        "lead_id_in_leads": (False, ("leads",), WARN),
        "company_id_in_companies": (False, ("companies",), WARN),
    },
    "contact_companies": CONTRACT
    | {
        "contact_id_in_contacts": (False, ("contacts",), WARN),
        "company_id_in_companies": (False, ("companies",), WARN),
    },
    "lead_products": CONTRACT
    | {
        "lead_id_in_leads": (False, ("leads",), WARN),
        "element_id_in_catalog_elements": (False, ("catalog_elements",), WARN),
    },
    "lead_sources": CONTRACT,
}


def _declared(settings: Settings) -> dict[tuple[str, str], dict[str, tuple]]:
    """Each link check definition's specs, by op name and asset key, with the severity of its
    results when run on a warehouse without the table (every check fails, with its severity).
    Dependencies are named by asset key, the account's prefix included."""
    duckdb_resource = KommoDuckDBResource(database=str(settings.duckdb_path))
    found: dict[tuple[str, str], dict[str, tuple]] = {}
    for checks in build_link_checks(settings):
        context = dg.build_asset_check_context(resources={"duckdb": duckdb_resource})
        severity = {r.check_name: r.severity for r in checks(context)}
        (asset,) = {s.asset_key.to_user_string() for s in checks.check_specs}
        found[(checks.node_def.name, asset)] = {
            s.name: (
                s.blocking,
                tuple(d.asset_key.to_user_string() for d in s.additional_deps),
                severity[s.name],
            )
            for s in checks.check_specs
        }
    return found


def _expected(prefix: str, tables: dict[str, dict[str, tuple]]) -> dict:
    qualified = prefix.replace("/", "_")
    return {
        (f"{qualified}_{t}_checks", f"{prefix}/{t}"): {
            name: (blocking, tuple(f"{prefix}/{d}" for d in deps), severity)
            for name, (blocking, deps, severity) in checks.items()
        }
        for t, checks in tables.items()
    }


def test_the_link_checks_keep_their_names_blocking_dependencies_and_severities(tmp_path: Path):
    settings = Settings.from_env({"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb")})
    assert _declared(settings) == _expected("kommo", LINK_CHECKS)


def test_an_account_qualifies_the_ops_and_checks_only_its_selected_references(tmp_path: Path):
    env = {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"), "KOMMO_RU_STREAMS": "leads"}
    settings = Settings.from_env(env, account="ru")
    unselected = {"contact_id_in_contacts", "company_id_in_companies"}
    unselected.add("element_id_in_catalog_elements")
    selected = {
        t: {n: c for n, c in checks.items() if n not in unselected}
        for t, checks in LINK_CHECKS.items()
        if t != "contact_companies"  # its parent, contacts, is not selected
    }
    assert _declared(settings) == _expected("kommo/ru", selected)


def test_a_ranges_row_count_per_partition_is_that_days_slice(sandbox: KommoSandbox, tmp_path: Path):
    """Each partition of a range run reports the rows of its own day's parents, what a run of
    that partition alone reports, not the whole range's."""
    warehouse = Warehouse(sandbox, tmp_path)
    links = ["lead_contacts", "lead_sources"]  # by parent; and by source id, not by day
    result = warehouse.run(["leads", *links], partition_range=("2026-10-01", "2026-10-10"))
    counts = {
        (e.materialization.asset_key.path[-1], e.materialization.partition): (
            e.materialization.metadata["dagster/row_count"].value
        )
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] in links
    }
    assert len(counts) == 20
    expected = {}
    for _, key in counts:
        start = int(datetime.strptime(key or "", "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
        [(expected["lead_contacts", key],)] = warehouse.sql(
            "SELECT count(*) FROM kommo.lead_contacts WHERE lead_id IN (SELECT id FROM "
            f"kommo.leads WHERE updated_at >= {start} AND updated_at < {start + 86_400})"
        )
        [(expected["lead_sources", key],)] = warehouse.sql(
            "SELECT count(*) FROM kommo.lead_sources"
        )
    assert counts == expected
    days = {v for (name, _), v in expected.items() if name == "lead_contacts"}
    assert len(days) > 1  # the days differ: the check can tell them apart
    alone = warehouse.run(links, partition="2026-10-03")
    for event in alone.get_asset_materialization_events():
        name = event.materialization.asset_key.path[-1]
        assert (
            event.materialization.metadata["dagster/row_count"].value
            == (counts[name, "2026-10-03"])
        )


MONTH = ("2026-10-01", "2026-10-31")
PARTITIONED = ["leads", "contacts", "companies", "events", *LINK_TABLES]
# Typed events on the lead's side: the leads they name are exactly the leads relinked.
READING = ("typed", "lead", "before")
LEAD_TABLES = ("lead_contacts", "lead_companies", "lead_products")
# Every link table a /links answer holds; lead_sources is not re-read by the events.
REWRITTEN = {*LEAD_TABLES, "contact_companies"}


def _observations(wh: Warehouse, table: str) -> list[dg.AssetObservation]:
    records = wh.instance.fetch_observations(dg.AssetKey(["kommo", table]), limit=100).records
    return [r.asset_observation for r in records if r.asset_observation is not None]


def _observed(wh: Warehouse) -> dict[str, list[dg.AssetObservation]]:
    return {t: obs for t in LINK_TABLES if (obs := _observations(wh, t))}


def _materializations(wh: Warehouse, table: str) -> int:
    key = dg.AssetKey(["kommo", table])
    return len(wh.instance.fetch_materializations(key, limit=1000).records)


def _rows(wh: Warehouse, table: str) -> list[tuple]:
    return wh.sql(f"SELECT * FROM kommo.{table} ORDER BY ALL")


def _truth(sb: KommoSandbox, table: str) -> list[dict]:
    return expected_link_rows(sb.account, table)


def _loaded(sandbox_factory, tmp_path: Path) -> tuple[KommoSandbox, Warehouse]:
    sb = sandbox_factory(seed=4, leads=200, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    wh.run(PARTITIONED, partition_range=MONTH)
    return sb, wh


def _relink(sb: KommoSandbox, now: int) -> set[int]:
    """Three relinks; the ids of the leads they changed."""
    changed = [
        sb.account.links.relink(reading=READING, ts=now, rng=random.Random(k)) for k in range(3)
    ]
    return {lead for lead, _contact in changed}


def _day(now: int) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def test_the_events_write_observes_each_link_asset_it_rewrote(sandbox_factory, tmp_path: Path):
    sb, wh = _loaded(sandbox_factory, tmp_path)
    now = int(time.time())
    leads = _relink(sb, now)
    materialized = {t: _materializations(wh, t) for t in LINK_TABLES}
    result = wh.run(["events"], partition=_day(now))

    observed = _observed(wh)
    assert set(observed) == REWRITTEN
    for table, [observation] in observed.items():
        total = len(_truth(sb, table))
        metadata = observation.metadata
        assert metadata["kommo/table_row_count"].value == total, table
        assert wh.sql(f"SELECT count(*) FROM kommo.{table}") == [(total,)]
        assert metadata["dagster/table_name"].value == f"kommo_crm.kommo.{table}"
        assert metadata["kommo/rewritten_by"].value == dg.AssetKey(["kommo", "events"])
        assert metadata["kommo/rewritten_by_slice"].value == _day(now)
        assert observation.description is not None
        assert f"kommo/events {_day(now)} in run {result.run_id[:8]}" in observation.description
        assert observation.partition is None
    for table in LEAD_TABLES:
        # the rows of the relinked leads, as the sandbox's book holds them
        expected = sum(1 for row in _truth(sb, table) if row["lead_id"] in leads)
        assert expected, table
        got = observed[table][0].metadata["kommo/link_rows_rewritten"].value
        assert got == expected, table
    # an observation, not a materialization: nothing downstream is started by it
    assert {t: _materializations(wh, t) for t in LINK_TABLES} == materialized


def test_nothing_is_observed_without_a_rewrite_or_after_a_failed_write(
    sandbox_factory, tmp_path: Path
):
    sb, wh = _loaded(sandbox_factory, tmp_path)
    # the month's events hold no link event: its write rewrote no link row
    assert _observed(wh) == {}
    now = int(time.time())
    assert wh.run(["events"], partition=_day(now)).success
    assert _observed(wh) == {}

    _relink(sb, now)
    # lead_products, written after lead_contacts and lead_companies, no longer fits the
    # contract: the write fails in its transaction after rewriting the first two
    with duckdb.connect(str(wh.db)) as con:
        con.execute("ALTER TABLE kommo.lead_products ADD COLUMN note VARCHAR")
    before = {t: _rows(wh, t) for t in LINK_TABLES}
    failed = wh.run(["events"], partition=_day(now), raise_on_error=False)
    assert not failed.success
    failure = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "kommo.lead_products has columns" in failure, failure
    assert {t: _rows(wh, t) for t in LINK_TABLES} == before
    assert _observed(wh) == {}


class _Crm(KommoTranslator):
    def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(key=spec.key.with_prefix("crm"))


def _declared_link_assets(defs: dg.Definitions, events: dg.AssetKey) -> dict[str, dg.AssetKey]:
    metadata = defs.resolve_assets_def(events).metadata_by_key[events]
    prefix = "kommo/link_asset/"
    return {k.removeprefix(prefix): v.value for k, v in metadata.items() if k.startswith(prefix)}


def test_the_events_asset_declares_the_link_keys_a_translator_and_an_account_give(
    tmp_path: Path,
):
    settings = Settings.from_env({"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb")})
    renamed = build_definitions(settings, translator=_Crm())
    assert _declared_link_assets(renamed, dg.AssetKey(["crm", "kommo", "events"])) == {
        t: dg.AssetKey(["crm", "kommo", t]) for t in REWRITTEN
    }
    accounts = named_accounts_definitions(tmp_path, ["ru", "br"])
    assert _declared_link_assets(accounts, dg.AssetKey(["kommo", "br", "events"])) == {
        t: dg.AssetKey(["kommo", "br", t]) for t in REWRITTEN
    }


def test_the_events_rewrite_only_the_link_tables_of_selected_streams(
    sandbox_factory, tmp_path: Path
):
    """With leads selected but not contacts, the events re-read the relinked leads' links
    only: a contact_companies table of the few contacts the events name would pass for the
    whole one, with no asset, check or description in Dagster."""
    sb = sandbox_factory(seed=4, leads=200, requests_per_second=None)
    now = int(time.time())
    _relink(sb, now)
    kommo = sandbox_kommo(sb, tmp_path)
    defs = local_definitions(tmp_path, streams=("leads", "events"), kommo=kommo)
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_streams(defs, instance, ["events"], partition=_day(now))
    assert set(sb.stats()["by_path"]) == {"/api/v4/events", "/api/v4/leads/links"}
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables & set(LINK_TABLES) == set(LEAD_TABLES)


def test_a_link_materialization_records_the_table_s_columns(sandbox: KommoSandbox, tmp_path: Path):
    """As the streams', derived tables' and views' do: a column schema change check compares
    the ``dagster/column_schema`` of materializations, not the definition's."""
    warehouse = Warehouse(sandbox, tmp_path)
    links = [t for t in LINK_TABLES if LINK_TABLES[t].parent == "leads"]
    result = warehouse.run(["leads", *links], partition="2026-10-03")
    schemas = {
        e.materialization.asset_key.path[-1]: e.materialization.metadata["dagster/column_schema"]
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] in links
    }
    assert set(schemas) == set(links)
    for name, value in schemas.items():
        columns = [(c.name, c.type) for c in value.value.columns]
        assert columns == [(c.name, c.duckdb_type) for c in LINK_TABLES[name].columns], name
        assert all(c.description for c in value.value.columns), name


def test_a_link_run_logs_what_it_recorded(sandbox: KommoSandbox, tmp_path: Path):
    """As every other asset's step does, a link table's says in the run log what its table
    holds: the rows of the range's parents (its partitions' row counts) and the table's; the
    table's alone for one kept by key (``lead_sources``)."""
    warehouse = Warehouse(sandbox, tmp_path)
    links = [t for t in LINK_TABLES if LINK_TABLES[t].parent == "leads"]
    result = warehouse.run(["leads", *links], partition_range=("2026-10-01", "2026-10-31"))
    rows = dict.fromkeys(links, 0)
    totals, names = {}, {}
    for event in result.get_asset_materialization_events():
        name, metadata = event.materialization.asset_key.path[-1], event.materialization.metadata
        if name in links:
            rows[name] += metadata["dagster/row_count"].value
            totals[name] = metadata["kommo/table_row_count"].value
            names[name] = metadata["dagster/table_name"].value
    assert all(totals.values())
    logs = warehouse.instance.all_logs(result.run_id)
    for name in links:
        [line] = [
            r.user_message
            for r in logs
            if r.dagster_event is None
            and r.step_key == f"kommo__{name}"
            and r.level == logging.INFO
        ]
        head = f"{names[name]} 2026-10-01..2026-10-31: "
        if LINK_TABLES[name].replace == "key":  # kept by key: a slice has no rows of its own
            assert line == f"{head}{totals[name]} rows in the table"
        else:
            assert (
                line == f"{head}{rows[name]} rows of the leads of its slice, {totals[name]} in all"
            )


@pytest.mark.parametrize("events", [True, False])
def test_a_link_description_names_the_events_run_only_where_it_writes_the_table(
    tmp_path: Path, events: bool
):
    """The events run rewrites the links its link events name, but not ``lead_sources`` (kept
    by source id), and only when the events stream is selected: a description saying otherwise
    promises links changed without ``updated_at`` that never come."""
    streams = ("leads", "contacts", "pipelines", "statuses", *(("events",) if events else ()))
    defs = local_definitions(tmp_path, streams=streams)
    repo = defs.get_repository_def()
    for name in LINK_TABLES:
        description = repo.asset_graph.get(dg.AssetKey(["kommo", name])).description or ""
        relinked = events and "events" in get_table(name).refresh_on
        assert ("by the events run" in description) == relinked, (name, description)
        unselected = not events and "events" in get_table(name).refresh_on
        assert ("events stream is not selected" in description) == unselected, (name, description)
