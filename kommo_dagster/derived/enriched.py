"""``leads_enriched``: one row per live lead with the names and links a deal report needs.

A view over ``leads_current`` joined to pipelines and statuses (names), the link tables (main
contact, company, products, source) and the records they point to. A product's amount is its
quantity times the element's price: the price field the lead chose (``price_id``), else the
element's first field of type ``price``; an element without a readable price adds no amount, and
a lead without products has ``product_count`` 0 and a NULL amount. Links to records the
warehouse lacks keep their ids, with NULL names (the link checks count them).

DuckDB resolves a view's tables when it is queried, so once created the view follows every write
of what it reads; its declaration (`kommo_dagster.derived.declaration`) (re)creates it,
creating the tables it reads empty when missing.
"""

from __future__ import annotations

import duckdb

from kommo_dagster.derived.json_values import json_integer
from kommo_dagster.derived.view_inputs import create_missing_inputs
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.sql import table_ref
from kommo_dagster.warehouse.tables import RefreshContext, ViewColumn, sql_text
from kommo_dagster.warehouse.views import current_view_name, has_current_view

SQL_PACKAGE = "kommo_dagster.derived.sql"
VIEW = "leads_enriched"
STREAMS = ("leads", "contacts", "companies", "pipelines", "statuses", "catalog_elements")
LINKS = ("lead_contacts", "lead_companies", "lead_products", "lead_sources")
COLUMNS: tuple[ViewColumn, ...] = (
    ViewColumn("lead_id", "BIGINT", "Lead identifier"),
    ViewColumn("lead_name", "VARCHAR", "Lead name"),
    ViewColumn("price", "BIGINT", "Lead budget"),
    ViewColumn("pipeline_id", "BIGINT", "Pipeline identifier"),
    ViewColumn("pipeline_name", "VARCHAR", "Pipeline name"),
    ViewColumn("status_id", "BIGINT", "Stage identifier"),
    ViewColumn("status_name", "VARCHAR", "Stage name"),
    ViewColumn("main_contact_id", "BIGINT", "The lead's main contact"),
    ViewColumn("main_contact_name", "VARCHAR", "Name of the main contact"),
    ViewColumn("company_id", "BIGINT", "The lead's company"),
    ViewColumn("company_name", "VARCHAR", "Name of the company"),
    ViewColumn("product_count", "BIGINT", "Products (catalog elements) linked to the lead"),
    ViewColumn(
        "product_amount", "DOUBLE", "Sum of quantity × the element's price over the lead's products"
    ),
    ViewColumn("source_id", "BIGINT", "Source that brought the lead"),
    ViewColumn("source_name", "VARCHAR", "Name of the source"),
    ViewColumn("created_at", "BIGINT", "When the lead was created (Unix seconds)"),
    ViewColumn("closed_at", "BIGINT", "When the lead was won or lost (Unix seconds)"),
)


def _current(schema: str, stream: str) -> str:
    spec = get_stream(stream)
    name = current_view_name(spec) if has_current_view(spec) else stream
    return table_ref(schema, name)


def view_sql(*, schema: str) -> str:
    return sql_text(SQL_PACKAGE, "leads_enriched.sql").format(
        view=table_ref(schema, VIEW),
        field_id=json_integer("field_json"),
        catalog_elements=table_ref(schema, "catalog_elements"),
        lead_products=table_ref(schema, "lead_products"),
        lead_contacts=table_ref(schema, "lead_contacts"),
        lead_companies=table_ref(schema, "lead_companies"),
        pipelines=table_ref(schema, "pipelines"),
        statuses=table_ref(schema, "statuses"),
        lead_sources=table_ref(schema, "lead_sources"),
        leads_live=_current(schema, "leads"),
        contacts_live=_current(schema, "contacts"),
        companies_live=_current(schema, "companies"),
    )


def rebuild_enriched_view(con: duckdb.DuckDBPyConnection, *, schema: str) -> None:
    """(Re)create the view, creating the tables and current views it reads when missing."""
    create_missing_inputs(con, inputs(), schema=schema)
    con.execute(view_sql(schema=schema))


def refresh_enriched(ctx: RefreshContext) -> dict[str, str]:
    """The declaration's refresh: the view, and its columns' descriptions."""
    rebuild_enriched_view(ctx.con, schema=ctx.schema)
    return {c.name: c.description for c in COLUMNS}


def inputs() -> tuple[str, ...]:
    """What the view reads, as the registry names them (a live stream: its current view)."""
    names = [current_view_name(s) if has_current_view(get_stream(s)) else s for s in STREAMS]
    return (*names, *LINKS)


__all__ = [
    "COLUMNS",
    "LINKS",
    "STREAMS",
    "VIEW",
    "inputs",
    "rebuild_enriched_view",
    "refresh_enriched",
    "view_sql",
]
