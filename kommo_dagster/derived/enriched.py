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

from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.sql import create_table_sql, quote, table_ref
from kommo_dagster.warehouse.tables import RefreshContext
from kommo_dagster.warehouse.views import current_view_name, ensure_current_view, has_current_view

VIEW = "leads_enriched"
STREAMS = ("leads", "contacts", "companies", "pipelines", "statuses", "catalog_elements")
LINKS = ("lead_contacts", "lead_companies", "lead_products", "lead_sources")
COLUMNS: dict[str, str] = {
    "lead_id": "Lead identifier",
    "lead_name": "Lead name",
    "price": "Lead budget",
    "pipeline_id": "Pipeline identifier",
    "pipeline_name": "Pipeline name",
    "status_id": "Stage identifier",
    "status_name": "Stage name",
    "main_contact_id": "The lead's main contact",
    "main_contact_name": "Name of the main contact",
    "company_id": "The lead's company",
    "company_name": "Name of the company",
    "product_count": "Products (catalog elements) linked to the lead",
    "product_amount": "Sum of quantity × the element's price over the lead's products",
    "source_id": "Source that brought the lead",
    "source_name": "Name of the source",
    "created_at": "When the lead was created (Unix seconds)",
    "closed_at": "When the lead was won or lost (Unix seconds)",
}


def _current(schema: str, stream: str) -> str:
    spec = get_stream(stream)
    name = current_view_name(spec) if has_current_view(spec) else stream
    return table_ref(schema, name)


def view_sql(*, schema: str) -> str:
    def t(name: str) -> str:
        return table_ref(schema, name)

    return f"""CREATE OR REPLACE VIEW {t(VIEW)} AS
WITH fields AS (
    SELECT e.catalog_id, e.id AS element_id, f->>'field_type' AS field_type,
        TRY_CAST(f->>'field_id' AS BIGINT) AS field_id,
        TRY_CAST(f->'values'->0->>'value' AS DOUBLE) AS value,
        row_number() OVER (PARTITION BY e.catalog_id, e.id ORDER BY f->>'field_id') AS n
    FROM {t("catalog_elements")} AS e,
        unnest(from_json(coalesce(e.custom_fields_values, '[]')::JSON, '["JSON"]')) AS u(f)
),
default_prices AS (
    SELECT catalog_id, element_id, arg_min(value, n) AS value
    FROM fields WHERE field_type = 'price' GROUP BY ALL
),
products AS (
    SELECT p.lead_id, count(*) AS product_count,
        sum(p.quantity * coalesce(chosen.value, d.value)) AS product_amount
    FROM {t("lead_products")} AS p
    LEFT JOIN fields AS chosen ON chosen.catalog_id = p.catalog_id
        AND chosen.element_id = p.element_id AND chosen.field_id = p.price_id
    LEFT JOIN default_prices AS d ON d.catalog_id = p.catalog_id AND d.element_id = p.element_id
    GROUP BY p.lead_id
),
main AS (
    SELECT lead_id, min(contact_id) AS contact_id FROM {t("lead_contacts")}
    WHERE is_main GROUP BY lead_id
),
company AS (SELECT lead_id, min(company_id) AS company_id FROM {t("lead_companies")} GROUP BY 1)
SELECT l.id AS lead_id, l.name AS lead_name, l.price, l.pipeline_id, pl.name AS pipeline_name,
    l.status_id, st.name AS status_name, main.contact_id AS main_contact_id,
    c.name AS main_contact_name, company.company_id, co.name AS company_name,
    coalesce(products.product_count, 0) AS product_count, products.product_amount,
    l.source_id, src.name AS source_name, l.created_at, l.closed_at
FROM {_current(schema, "leads")} AS l
LEFT JOIN {t("pipelines")} AS pl ON pl.id = l.pipeline_id
LEFT JOIN {t("statuses")} AS st ON st.pipeline_id = l.pipeline_id AND st.id = l.status_id
LEFT JOIN main ON main.lead_id = l.id
LEFT JOIN {_current(schema, "contacts")} AS c ON c.id = main.contact_id
LEFT JOIN company ON company.lead_id = l.id
LEFT JOIN {_current(schema, "companies")} AS co ON co.id = company.company_id
LEFT JOIN products ON products.lead_id = l.id
LEFT JOIN {t("lead_sources")} AS src ON src.id = l.source_id"""


def rebuild_enriched_view(con: duckdb.DuckDBPyConnection, *, schema: str) -> None:
    """(Re)create the view, creating the tables and current views it reads when missing."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    for name in STREAMS:
        stream = get_stream(name)
        con.execute(create_table_sql(stream, schema=schema))
        if has_current_view(stream):
            ensure_current_view(con, stream, schema=schema)
    for name in LINKS:
        con.execute(create_table_sql(LINK_TABLES[name], schema=schema))  # type: ignore[arg-type]
    con.execute(view_sql(schema=schema))


def refresh_enriched(ctx: RefreshContext) -> dict[str, str]:
    """The declaration's refresh: the view, and its columns' descriptions."""
    rebuild_enriched_view(ctx.con, schema=ctx.schema)
    return dict(COLUMNS)


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
