"""The table registry: every relation declared once, and what a write rebuilds, in order."""

from __future__ import annotations

import duckdb
import pytest

from kommo_dagster.derived.declaration import DECLARATIONS, DERIVED_TABLES
from kommo_dagster.derived.write import ensure_table
from kommo_dagster.kommo.streams import STREAMS, Column, Reference
from kommo_dagster.warehouse import registry
from kommo_dagster.warehouse.registry import TABLES, get_table, refresh_after_write, refreshed_after
from kommo_dagster.warehouse.tables import (
    Partitioning,
    RefreshContext,
    Table,
    WritePlan,
    refresh_order,
)


def _names(written: str) -> list[str]:
    return [t.name for t in refreshed_after(written)]


def test_every_stream_and_derived_relation_is_declared_once():
    for name, stream in STREAMS.items():
        table = TABLES[name]
        assert table.kind == "stream" and table.columns == stream.columns
        assert table.key == stream.key
        assert (table.partitioning is not None) == stream.is_incremental
        assert f"{name}_history" in TABLES and f"kommo_all.{name}" in TABLES
    for table in DECLARATIONS:
        assert TABLES[table.name] is table
    assert set(DERIVED_TABLES) <= set(TABLES)


@pytest.mark.parametrize(
    ("written", "rebuilt"),
    [
        (
            "leads",
            [
                "leads_current",
                "leads_history",
                "kommo_all.leads",
                # read from the leads pages, written with them
                *("lead_contacts", "lead_companies", "lead_products", "lead_sources"),
                "kommo_all.leads_current",
                *("kommo_all.lead_contacts", "kommo_all.lead_companies"),
                *("kommo_all.lead_products", "kommo_all.lead_sources"),
            ],
        ),
        (
            # the links that the day's link events name, re-read with the events
            "events",
            [
                *("events_current", "events_history", "kommo_all.events"),
                *("lead_contacts", "lead_companies", "contact_companies", "lead_products"),
                "kommo_all.events_current",
                *("kommo_all.lead_contacts", "kommo_all.lead_companies"),
                *("kommo_all.contact_companies", "kommo_all.lead_products"),
            ],
        ),
        ("lead_contacts", ["kommo_all.lead_contacts"]),
        (
            "lead_custom_fields",
            ["lead_custom_fields_history", "kommo_all.lead_custom_fields", "leads_wide"],
        ),
        ("lead_custom_field_values", ["leads_wide"]),
        ("lead_status_changes", ["lead_stage_durations", "pipeline_funnel"]),
        ("pipelines", ["pipelines_history", "kommo_all.pipelines"]),
        (
            "chat_response_times",
            [
                "response_time_by_manager",
                "kommo_all.chat_response_times",
                "kommo_all.response_time_by_manager",
            ],
        ),
        ("calls", ["kommo_all.calls"]),
    ],
)
def test_a_write_rebuilds_what_follows_it_after_what_it_reads(written: str, rebuilt: list[str]):
    assert _names(written) == rebuilt


def test_the_order_follows_the_inputs_not_the_declaration_order():
    def view(name: str, *inputs: str) -> Table:
        return Table(name=name, kind="view", description=name, inputs=inputs, refresh=print)

    tables = {
        "b": view("b", "a"),  # declared first, reads a
        "a": view("a", "t"),
        "c": view("c", "t", "b"),
        "t": Table(name="t", kind="stream", description="t"),
    }
    assert [t.name for t in refresh_order(tables, "t")] == ["a", "b", "c"]
    tables["a"] = view("a", "t", "c")
    with pytest.raises(RuntimeError, match="read each other"):
        refresh_order(tables, "t")


def test_a_declaration_missing_its_build_is_refused():
    with pytest.raises(ValueError, match="declares select and partitioning"):
        Table(name="x", kind="derived", description="x", partitioning=Partitioning("c", "y"))
    with pytest.raises(ValueError, match="declares select, not plan"):
        Table(
            name="x",
            kind="derived",
            description="x",
            partitioning=Partitioning("c", "y"),
            plan=lambda ctx: WritePlan(select_sql="SELECT 1"),
        )
    with pytest.raises(ValueError, match="declares refresh"):
        Table(name="x", kind="view", description="x", inputs=("y",))
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        get_table("nope")


@pytest.mark.parametrize("field", ["inputs", "also_reads"])
def test_a_relation_reading_an_undeclared_one_is_refused(field: str):
    view = Table(
        name="typo_view",
        kind="view",
        description="x",
        refresh=lambda ctx: None,
        **{field: ("acount",)},
    )
    with pytest.raises(RuntimeError, match=r"typo_view reads undeclared relations \['acount'\]"):
        registry._build(tuple(STREAMS.values()), (*DECLARATIONS, view))


def test_a_link_table_declares_its_checks_and_references():
    lead_contacts = get_table("lead_contacts")
    assert lead_contacts.checks == ("no_duplicate_keys", "one_main_contact")
    assert [r.check_name for r in lead_contacts.references] == [
        "lead_id_in_leads",
        "contact_id_in_contacts",
    ]
    assert get_table("lead_sources").checks == ("no_duplicate_keys",)
    column = Column(name="a_id", type="integer", description="a", source=("a_id",), is_json=False)
    with pytest.raises(ValueError, match=r"reference columns \['b_id'\] are not among"):
        Table(
            name="x",
            kind="link",
            description="x",
            columns=(column,),
            references=(Reference(columns=("b_id",), stream="b"),),
        )


def test_refresh_after_write_runs_in_the_callers_transaction():
    con = duckdb.connect()
    ensure_table(con, DERIVED_TABLES["lead_status_changes"], schema="kommo")
    views = "SELECT view_name FROM duckdb_views() WHERE schema_name = 'kommo'"
    con.execute("BEGIN TRANSACTION")
    results = refresh_after_write(con, "lead_status_changes", schema="kommo")
    assert list(results) == ["lead_stage_durations", "pipeline_funnel"]
    # made inside the transaction...
    made = {name for (name,) in con.execute(views).fetchall()}
    assert {"lead_stage_durations", "pipeline_funnel"} <= made
    con.execute("ROLLBACK")  # ...so when the caller's write fails, nothing of the refresh stays
    assert con.execute(views).fetchall() == []
    ctx = RefreshContext(con=con, schema="kommo")
    get_table("lead_stage_durations").refresh(ctx)  # type: ignore[misc]
    assert con.execute("SELECT count(*) FROM kommo.lead_stage_durations").fetchone() == (0,)
