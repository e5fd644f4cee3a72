"""The derived assets end to end: the sandbox over HTTP, real runs, a real DuckDB file.

The module extracts the sandbox's month once (full tables, then leads, contacts, companies and
events with their derived tables as one single-run range) and compares the long tables, the wide
views, the status changes, the stays and the funnel with values computed here from the
sandbox's own records, for every custom-field type it generates (two lead fields share a name,
one is used by no record).
"""

import statistics
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, STATUS_CHANGES
from kommo_dagster.derived.wide import FieldDefinition, assign_columns
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.settings import Settings
from kommo_dagster_tests.derived.reference import long_rows, status_change, stays, value_text
from kommo_dagster_tests.wiring import materialize_streams, sandbox_kommo

MONTH = ("2026-10-01", "2026-10-31")
PARENTS = ("leads", "contacts", "companies", "events")
DERIVED = (*(e.values for e in CUSTOM_FIELD_ENTITIES), STATUS_CHANGES)
VIEWS = (
    *tuple(e.wide_view for e in CUSTOM_FIELD_ENTITIES),
    "lead_stage_durations",
    "pipeline_funnel",
)


class Warehouse:
    def __init__(self, sandbox: KommoSandbox, directory: Path) -> None:
        self.sandbox = sandbox
        self.db = directory / "kommo_crm.duckdb"
        self.settings = Settings(start_date=date(2026, 9, 1), duckdb_path=self.db)
        self.defs = build_definitions(self.settings, kommo=sandbox_kommo(sandbox, directory))
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self, names, *, partition_range=None, partition=None, raise_on_error=True):
        return materialize_streams(
            self.defs,
            self.instance,
            names,
            partition=partition,
            partition_range=partition_range,
            raise_on_error=raise_on_error,
            with_checks=True,
        )

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Iterator[Warehouse]:
    with KommoSandbox(SandboxConfig(seed=1, leads=300)) as sandbox:
        wh = Warehouse(sandbox, tmp_path_factory.mktemp("derived"))
        wh.run(["pipelines", "statuses", *(e.definitions for e in CUSTOM_FIELD_ENTITIES)])
        wh.run([*PARENTS, *DERIVED], partition_range=MONTH)
        wh.views = wh.run(VIEWS)
        yield wh


def _records(wh: Warehouse, stream: str) -> list[dict[str, Any]]:
    return wh.sandbox.account.records(stream)


@pytest.mark.parametrize("entity", CUSTOM_FIELD_ENTITIES, ids=lambda e: e.stream)
def test_long_tables_hold_every_value_of_every_type(warehouse, entity):
    got = warehouse.query(f"FROM kommo.{entity.values} ORDER BY ALL")
    expected = [
        row
        for r in _records(warehouse, entity.stream)
        for row in long_rows(r["id"], r["updated_at"], r["custom_fields_values"])
    ]
    assert got == sorted(expected)
    defined = {f["type"] for f in warehouse.sandbox.account.catalog.custom_fields[entity.stream]}
    assert {r[5] for r in got} == defined  # every generated field type is in the table


def _typed(field_type: str, values: list) -> Any:
    texts = [value_text(v["value"]) for v in values]
    if field_type in ("multiselect", "multitext"):
        return texts
    first = texts[0]
    if field_type in ("numeric", "price", "monetary"):
        return float(first)
    if field_type == "checkbox":
        return first == "true"
    if field_type in ("date", "date_time", "birthday"):
        return datetime.fromtimestamp(int(first), UTC)
    return first


@pytest.mark.parametrize("entity", CUSTOM_FIELD_ENTITIES, ids=lambda e: e.stream)
def test_wide_views_have_a_typed_column_per_definition(warehouse, entity):
    stream = get_stream(entity.stream)
    served = warehouse.sandbox.account.catalog.collections
    catalog = served[get_stream(entity.definitions).path].items
    # in Kommo's sort order
    fields = [
        FieldDefinition(f["id"], f["name"], f["code"], f["type"])
        for f in sorted(catalog, key=lambda f: (f["sort"], f["id"]))
    ]
    columns = {
        c.field.id: c.name for c in assign_columns(fields, stream_columns=stream.column_names)
    }
    names = [columns[f.id] for f in fields]
    with duckdb.connect(str(warehouse.db), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM kommo.{entity.wide_view}")
        header = [d[0] for d in cursor.description]
        rows = {row[0]: dict(zip(header, row, strict=True)) for row in cursor.fetchall()}
    assert header == [*stream.column_names, *names]
    live = [r for r in _records(warehouse, entity.stream) if not r.get("is_deleted")]
    assert set(rows) == {r["id"] for r in live}
    for record in live:
        by_field = {f["field_id"]: f for f in record["custom_fields_values"] or []}
        expected = {
            columns[f.id]: _typed(f.type, by_field[f.id]["values"]) if f.id in by_field else None
            for f in fields
        }
        assert {n: rows[record["id"]][n] for n in names} == expected, record["id"]
    used = {f["field_id"] for r in live for f in r["custom_fields_values"] or []}
    unused = [columns[f.id] for f in fields if f.id not in used]
    assert all(row[name] is None for row in rows.values() for name in unused)
    if entity.stream == "leads":
        assert unused  # fields no record fills still have their column
        notes = [columns[f.id] for f in fields if f.name == "Notes"]
        assert notes == ["notes_900013", "notes_900019"]


def _changes(wh: Warehouse) -> list[tuple]:
    return [status_change(e) for e in _records(wh, "events") if e["type"] == "lead_status_changed"]


def test_status_changes_durations_and_funnel_match_the_events(warehouse):
    changes = _changes(warehouse)
    assert changes and warehouse.query("FROM kommo.lead_status_changes ORDER BY ALL") == sorted(
        changes
    )
    leads = {r["id"]: r for r in _records(warehouse, "leads")}
    live = {i for i, r in leads.items() if not r["is_deleted"]}
    # DuckDB's ORDER BY ALL: NULLs last
    expected = sorted(stays(changes, leads, live), key=lambda r: [(v is None, v or 0) for v in r])
    assert warehouse.query("FROM kommo.lead_stage_durations ORDER BY ALL") == expected
    funnel = warehouse.query(
        "SELECT pipeline_id, status_id, leads_entered, leads_in_stage, median_seconds_in_stage, "
        "p90_seconds_in_stage FROM kommo.pipeline_funnel"
    )
    statuses = {(s["pipeline_id"], s["id"]) for s in _records(warehouse, "statuses")}
    assert {(r[0], r[1]) for r in funnel} == statuses
    for pipeline_id, status_id, entered, now, median, p90 in funnel:
        mine = [s for s in expected if (s[1], s[2]) == (pipeline_id, status_id)]
        done = [s[5] for s in mine if s[5] is not None]
        assert entered == len({s[0] for s in mine})
        assert now == sum(
            1
            for i in live
            if (leads[i]["pipeline_id"], leads[i]["status_id"]) == (pipeline_id, status_id)
        )
        assert median == (statistics.median(done) if done else None)
        assert p90 == pytest.approx(float(np.percentile(done, 90)) if done else None)


def test_reruns_and_backfills_leave_no_duplicates(warehouse):
    before = {t: warehouse.query(f"FROM kommo.{t} ORDER BY ALL") for t in DERIVED}
    requests = warehouse.sandbox.stats()["requests"]
    warehouse.run(DERIVED, partition="2026-10-15")
    warehouse.run(DERIVED, partition_range=("2026-10-10", "2026-10-20"))
    warehouse.run(VIEWS)
    assert warehouse.sandbox.stats()["requests"] == requests  # computed without asking Kommo
    for table in DERIVED:
        assert warehouse.query(f"FROM kommo.{table} ORDER BY ALL") == before[table], table
    checks = warehouse.run(DERIVED, partition="2026-10-15").get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "contract_columns",
        "no_duplicate_keys",
        "field_ids_defined",
    }
    assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]


def test_a_failed_write_leaves_the_previous_rows(warehouse):
    values = CUSTOM_FIELD_ENTITIES[0].values
    before = warehouse.query(f"FROM kommo.{values} ORDER BY ALL")
    with duckdb.connect(str(warehouse.db)) as con:
        # The view cannot be rebuilt over a table of its name: the write's last step fails.
        con.execute("DROP VIEW kommo.leads_wide")
        con.execute("CREATE TABLE kommo.leads_wide (x INTEGER)")
        con.execute(f"DELETE FROM kommo.{values}")
        con.execute(f"INSERT INTO kommo.{values} SELECT * FROM (VALUES {_sentinel()})")
    sentinel = warehouse.query(f"FROM kommo.{values}")
    result = warehouse.run([values], partition_range=MONTH, raise_on_error=False)
    assert not result.success
    # It failed at the last step, the view over a table of its name, after the rows went in.
    [failure] = result.get_step_failure_events()
    raised = failure.step_failure_data.error.cause
    assert raised is not None and '"leads_wide" is of type Table' in raised.message, raised
    assert warehouse.query(f"FROM kommo.{values}") == sentinel
    with duckdb.connect(str(warehouse.db)) as con:
        con.execute("DROP TABLE kommo.leads_wide")
    warehouse.run([values], partition_range=MONTH)
    assert warehouse.query(f"FROM kommo.{values} ORDER BY ALL") == before


def _sentinel() -> str:
    return "(1, 1790900000, 1, 'x', NULL, 'text', 0, 'previous', NULL, NULL)"


def test_view_assets_record_their_columns_with_descriptions(warehouse):
    by_key = {
        e.asset_key.path[-1]: e.materialization.metadata
        for e in warehouse.views.get_asset_materialization_events()
    }
    assert sorted(by_key) == sorted(VIEWS)
    for view in VIEWS:
        schema = by_key[view]["dagster/column_schema"].value
        names = [c[0] for c in warehouse.query(f"DESCRIBE kommo.{view}")]
        assert [c.name for c in schema.columns] == names
        assert all(c.description for c in schema.columns), view
        rows = warehouse.query(f"SELECT count(*) FROM kommo.{view}")[0][0]
        assert by_key[view]["dagster/row_count"].value == rows
    wide = {
        c.name: c.description for c in by_key["leads_wide"]["dagster/column_schema"].value.columns
    }
    assert "utm_source" in wide["utm_source"] and "tracking_data" in wide["utm_source"]
