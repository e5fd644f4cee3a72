"""The link tables against the sandbox: equal to its ground truth after a window's runs, taken
from the leads and contacts walks without a request of their own, and kept current."""

from __future__ import annotations

import dataclasses
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import FULL_TABLE_STREAMS, get_stream
from kommo_dagster.kommo.walks.base import records_of
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.sandbox.links import READINGS, SOURCES, expected_link_rows
from kommo_dagster.settings import Settings
from kommo_dagster_tests.wiring import Warehouse, materialize_streams, sandbox_kommo

MONTH = ("2026-10-01", "2026-10-31")
PARENTS = ("leads", "contacts", "companies")


def link_rows(wh: Warehouse, table: str) -> list[tuple]:
    key = ", ".join(LINK_TABLES[table].key)
    return wh.sql(f"SELECT * FROM kommo.{table} ORDER BY {key}")


def truth(sandbox: KommoSandbox, table: str) -> list[tuple]:
    return [tuple(r.values()) for r in expected_link_rows(sandbox.account, table)]


@pytest.fixture(scope="module")
def sandbox(unlimited_sandbox: KommoSandbox) -> KommoSandbox:
    return unlimited_sandbox


@pytest.fixture(scope="module")
def loaded(sandbox: KommoSandbox, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    wh = Warehouse(sandbox, tmp_path_factory.mktemp("links"))
    wh.run(FULL_TABLE_STREAMS)
    sandbox.reset_stats()
    wh.result = wh.run([*PARENTS, *LINK_TABLES], partition_range=MONTH)
    wh.stats = sandbox.stats()
    return wh


@pytest.mark.parametrize("table", list(LINK_TABLES))
def test_link_tables_equal_the_ground_truth(loaded: Warehouse, table: str):
    expected = truth(loaded.sandbox, table)
    assert expected, f"the sandbox should have {table} rows"
    assert link_rows(loaded, table) == expected


@pytest.mark.parametrize("table", list(LINK_TABLES))
def test_link_tables_have_their_declared_columns(loaded: Warehouse, table: str):
    got = loaded.sql(
        "SELECT column_name, data_type FROM duckdb_columns() "
        f"WHERE schema_name = 'kommo' AND table_name = '{table}' ORDER BY column_index"
    )
    assert got == [(c.name, c.duckdb_type) for c in LINK_TABLES[table].columns]


def test_link_assets_record_rows_and_checks_pass(loaded: Warehouse):
    for table in LINK_TABLES:
        mats = [
            e.materialization
            for e in loaded.result.get_asset_materialization_events()
            if e.materialization.asset_key == dg.AssetKey(["kommo", table])
        ]
        assert mats, table
        total = mats[-1].metadata["kommo/table_row_count"].value
        assert total == len(truth(loaded.sandbox, table))
    checks = materialize_streams(
        loaded.defs, loaded.instance, list(LINK_TABLES), partition_range=MONTH, with_checks=True
    )
    results = checks.get_asset_check_evaluations()
    assert results and all(r.passed for r in results), [
        (r.check_name, r.description) for r in results if not r.passed
    ]


def test_no_request_beyond_the_walks(loaded: Warehouse):
    paths = loaded.stats["by_path"]
    assert not [p for p in paths if p.endswith("/links")]
    assert set(paths) <= {get_stream(p).path for p in PARENTS}


def test_leads_walk_makes_no_more_requests_than_without_the_embeds(sandbox: KommoSandbox, tmp_path):
    kommo = sandbox_kommo(sandbox, tmp_path, max_workers=1)
    leads = get_stream("leads")
    plain = dataclasses.replace(
        leads,
        with_=tuple(w for w in leads.with_ if w not in ("contacts", "catalog_elements", "source")),
    )
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    counts = []
    for spec in (plain, leads):
        sandbox.reset_stats()
        with kommo.get_client() as client:
            rows = sum(len(p) for p in client._pages(spec, start, end, None, decode=records_of))
        counts.append((rows, sandbox.stats()["requests"]))
    assert counts[0] == counts[1]
    assert counts[0][0] > 250, counts  # more than a page of leads: a cost to compare


def test_a_removed_link_disappears_when_its_parent_is_read_again(sandbox_factory, tmp_path: Path):
    sb = sandbox_factory(seed=2, leads=200, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    wh.run(["leads", "lead_contacts"], partition_range=MONTH)
    assert link_rows(wh, "lead_contacts") == truth(sb, "lead_contacts")
    book = sb.account.links
    lead_id = next(
        lead
        for lead, contacts in book.contacts.items()
        if contacts
        and sb.account.tables["leads"].state[sb.account.tables["leads"].row_of[lead]] == 0
    )
    with sb.account.lock:
        book.contacts[lead_id] = []
    wh.run(["leads", "lead_contacts"], partition_range=MONTH)
    rows = link_rows(wh, "lead_contacts")
    assert not [r for r in rows if r[0] == lead_id]
    assert rows == truth(sb, "lead_contacts")


@pytest.mark.parametrize("reading", READINGS, ids=["-".join(r) for r in READINGS])
def test_todays_runs_restore_links_changed_without_updated_at(
    sandbox_factory, tmp_path: Path, reading: tuple[str, str, str]
):
    sb = sandbox_factory(seed=4, leads=200, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    partitioned = [*PARENTS, "events", *LINK_TABLES]
    wh.run(partitioned, partition_range=MONTH)
    now = int(time.time())
    stamps = {s: {r["id"]: r["updated_at"] for r in sb.records(s)} for s in ("leads", "contacts")}
    changed = [
        sb.account.links.relink(reading=reading, ts=now, rng=random.Random(k)) for k in range(3)
    ]
    # No updated_at moved: only the events name the lead and the contact each relink changed.
    for lead_id, contact_id in changed:
        for stream, record_id in (("leads", lead_id), ("contacts", contact_id)):
            [record] = [r for r in sb.records(stream) if r["id"] == record_id]
            assert record["updated_at"] == stamps[stream][record_id], (stream, record_id)
    stale = [t for t in LINK_TABLES if link_rows(wh, t) != truth(sb, t)]
    assert stale, "the relinks should change some link table"
    sb.reset_stats()
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    wh.run(partitioned, partition=today)
    for table in LINK_TABLES:
        assert link_rows(wh, table) == truth(sb, table), table
    paths = sb.stats()["by_path"]
    batched = {p: sum(c.values()) for p, c in paths.items() if p.endswith("/links")}
    # three relinks name at most a few dozen records: one request per entity, none per record
    assert batched and set(batched) <= {"/api/v4/leads/links", "/api/v4/contacts/links"}
    assert all(n == 1 for n in batched.values()), batched


def test_a_links_answer_that_is_not_json_fails_the_run_and_writes_nothing(
    sandbox_factory, tmp_path: Path
):
    sb = sandbox_factory(seed=4, leads=200, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    wh.run([*PARENTS, "events", *LINK_TABLES], partition_range=MONTH)
    before = {t: link_rows(wh, t) for t in LINK_TABLES}
    events_before = wh.sql("SELECT count(*) FROM kommo.events")
    now = int(time.time())
    sb.account.links.relink(reading=READINGS[0], ts=now, rng=random.Random(1))
    sb.inject_fault("200_html", path="/api/v4/leads/links")
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    sb.reset_stats()
    result = wh.run(["events"], partition=today, raise_on_error=False)
    assert not result.success
    # It failed mid-way: the events' pages had been read when the links' answer came.
    assert sb.stats()["by_path"]["/api/v4/events"]["200"] >= 1
    failure = str(result.get_step_failure_events()[0].event_specific_data.error)
    # the same text as any other page that is not the API's JSON (kommo/answers.py)
    assert "HTML page instead of JSON" in failure and "KOMMO_BASE_URL" in failure, failure
    # and it says what the failure wrote: nothing
    assert (
        f"kommo_crm.kommo.events was left as it was: nothing of this run's partitions {today} "
        "was written"
    ) in failure, failure
    assert {t: link_rows(wh, t) for t in LINK_TABLES} == before
    assert wh.sql("SELECT count(*) FROM kommo.events") == events_before


def _price(element: dict, price_id: int | None) -> float | None:
    """The element's price, read from its custom fields by hand (the test's own reading)."""
    fields = element.get("custom_fields_values") or []
    chosen = [f for f in fields if f["field_id"] == price_id] or [
        f for f in fields if f["field_type"] == "price"
    ]
    if not chosen:
        return None
    try:
        return float(chosen[0]["values"][0]["value"])
    except (TypeError, ValueError):
        return None


def _expected_enriched(sb: KommoSandbox) -> list[tuple]:
    acc = sb.account
    records = {s: {r["id"]: r for r in acc.records(s)} for s in ("leads", "contacts", "companies")}
    pipelines = {p["id"]: p for p in acc.records("pipelines")}
    statuses = {(s["pipeline_id"], s["id"]): s["name"] for s in acc.records("statuses")}
    elements = {(e["catalog_id"], e["id"]): e for e in acc.records("catalog_elements")}
    book = acc.links
    rows = []
    for lead in records["leads"].values():
        if lead["is_deleted"]:
            continue
        main = [c for c, is_main in book.contacts.get(lead["id"], ()) if is_main]
        companies = [c["id"] for c in lead["_embedded"]["companies"]]
        products = book.products.get(lead["id"], [])
        prices = [_price(elements[p.catalog_id, p.element_id], p.price_id) for p in products]
        amounts = [p.quantity * x for p, x in zip(products, prices, strict=True) if x is not None]
        contact = records["contacts"].get(main[0]) if main else None
        company = records["companies"].get(companies[0]) if companies else None
        source = lead.get("source_id")
        rows.append(
            (
                lead["id"],
                pipelines[lead["pipeline_id"]]["name"],
                statuses[lead["pipeline_id"], lead["status_id"]],
                main[0] if main else None,
                contact["name"] if contact and not contact["is_deleted"] else None,
                companies[0] if companies else None,
                company["name"] if company and not company["is_deleted"] else None,
                len(products),
                round(sum(amounts), 6) if amounts else None,
                SOURCES.get(source) if source is not None else None,
            )
        )
    return sorted(rows)


def test_leads_enriched_joins_names_links_and_amounts(loaded: Warehouse):
    loaded.run(["leads_enriched"])
    got = loaded.sql(
        "SELECT lead_id, pipeline_name, status_name, main_contact_id, main_contact_name, "
        "company_id, company_name, product_count, round(product_amount, 6), source_name "
        "FROM kommo.leads_enriched ORDER BY lead_id"
    )
    assert got == _expected_enriched(loaded.sandbox)
    assert any(r[8] for r in got) and any(r[3] for r in got) and any(r[9] for r in got)


def test_links_to_records_the_warehouse_lacks_are_kept_and_counted(sandbox_factory, tmp_path: Path):
    sb = sandbox_factory(seed=2, leads=200, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    wh.run(["contacts"], partition="2026-10-05")  # one day of contacts: most are missing
    wh.run(["leads", "lead_contacts"], partition_range=MONTH)
    assert link_rows(wh, "lead_contacts") == truth(sb, "lead_contacts")
    (dangling,) = wh.sql(
        "SELECT count(*) FROM kommo.lead_contacts AS l "
        "WHERE NOT EXISTS (SELECT 1 FROM kommo.contacts AS c WHERE c.id = l.contact_id)"
    )[0]
    assert dangling > 0
    result = materialize_streams(
        wh.defs, wh.instance, ["lead_contacts"], partition_range=MONTH, with_checks=True
    )
    (check,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "contact_id_in_contacts"
    ]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["dangling_rows"].value == dangling
    assert check.metadata["sample"].value


def test_leads_synced_as_a_full_table_replace_their_link_tables_whole(
    sandbox_factory, tmp_path: Path
):
    sb = sandbox_factory(seed=2, leads=200, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    settings = Settings(
        start_date=datetime(2026, 9, 1).date(),
        duckdb_path=wh.db,
        full_table_streams=("leads",),
    )
    wh.defs = build_definitions(settings, kommo=wh.kommo)
    wh.run(["leads", "lead_contacts", "lead_products"])
    assert link_rows(wh, "lead_contacts") == truth(sb, "lead_contacts") != []
    with sb.account.lock:
        for contacts in sb.account.links.contacts.values():
            contacts.clear()
    wh.run(["leads", "lead_contacts", "lead_products"])
    assert link_rows(wh, "lead_contacts") == [] == truth(sb, "lead_contacts")
    assert link_rows(wh, "lead_products") == truth(sb, "lead_products")
