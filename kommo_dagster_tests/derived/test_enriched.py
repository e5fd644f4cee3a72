"""``leads_enriched`` on real DuckDB tables: a product's price, read by hand from the element's
custom fields, against the view."""

from __future__ import annotations

import json

import duckdb

from kommo_dagster.derived.enriched import rebuild_enriched_view
from kommo_dagster_tests.derived.tables import SCHEMA, insert

# Elements whose price fields are not in the order of their ids, as text or as numbers.
ELEMENTS = {
    3: [
        {"field_id": 20, "field_type": "price", "values": [{"value": 100}]},
        {"field_id": 100, "field_type": "price", "values": [{"value": 999}]},
    ],
    4: [
        {"field_id": 7, "field_type": "text", "values": [{"value": "SKU-1"}]},
        # no field 9: DuckDB's cast read 8.6 as 9
        {"field_id": 8.6, "field_type": "numeric", "values": [{"value": 1e6}]},
        {"field_id": 10, "field_type": "price", "values": [{"value": "12.5"}]},
        {"field_id": 9, "field_type": "price", "values": [{"value": 40}]},
    ],
    # A field listed twice: its first entry counts, as in the long tables.
    5: [
        {"field_id": 30, "field_type": "price", "values": [{"value": 8}]},
        {"field_id": 30, "field_type": "price", "values": [{"value": 1000}]},
    ],
}
# (lead, element, quantity, chosen price field)
PRODUCTS = [(1, 3, 2, None), (1, 4, 1, None), (2, 4, 3, 9), (2, 3, 1, 404), (3, 5, 2, 30)]


def _price(fields: list[dict], price_id: int | None) -> float:
    """The chosen price field, else the element's first field of type price, as listed."""
    chosen = [f for f in fields if price_id is not None and f.get("field_id") == price_id]
    chosen = chosen or [f for f in fields if f["field_type"] == "price"]
    return float(chosen[0]["values"][0]["value"])


def test_a_product_is_priced_by_the_chosen_field_else_the_first_price_field():
    con = duckdb.connect()
    leads = [{"id": lead, "updated_at": 10, "created_at": 1} for lead in (1, 2, 3)]
    insert(con, "leads", leads)
    elements = [
        {"id": e, "catalog_id": 5, "custom_fields_values": json.dumps(f)}
        for e, f in ELEMENTS.items()
    ]
    insert(con, "catalog_elements", elements)
    rebuild_enriched_view(con, schema=SCHEMA)
    con.executemany(
        f"INSERT INTO {SCHEMA}.lead_products VALUES (?, 5, ?, ?, ?)",
        [list(p) for p in PRODUCTS],
    )
    expected: dict[int, float] = {}
    for lead, element, quantity, price_id in PRODUCTS:
        amount = quantity * _price(ELEMENTS[element], price_id)
        expected[lead] = expected.get(lead, 0.0) + amount
    got = con.execute(
        f"SELECT lead_id, product_count, product_amount FROM {SCHEMA}.leads_enriched ORDER BY 1"
    ).fetchall()
    assert got == [(1, 2, expected[1]), (2, 2, expected[2]), (3, 1, expected[3])]
    assert expected == {1: 212.5, 2: 220.0, 3: 16.0}  # the first price fields, not the lowest ids


def test_fields_without_an_integer_id_are_not_taken_for_one_field():
    """Only a field listed twice counts once: entries whose ids are no integer (NULL) are
    different fields, so a price field after such a text field still prices the product."""
    con = duckdb.connect()
    insert(con, "leads", [{"id": 1, "updated_at": 10, "created_at": 1}])
    fields = [
        {"field_id": "SKU", "field_type": "text", "values": [{"value": "SKU-1"}]},
        {"field_type": "price", "values": [{"value": 70}]},  # no id at all
    ]
    element = {"id": 6, "catalog_id": 5, "custom_fields_values": json.dumps(fields)}
    insert(con, "catalog_elements", [element])
    rebuild_enriched_view(con, schema=SCHEMA)
    con.execute(f"INSERT INTO {SCHEMA}.lead_products VALUES (1, 5, 6, 2, NULL)")
    got = con.execute(
        f"SELECT product_count, product_amount FROM {SCHEMA}.leads_enriched WHERE lead_id = 1"
    ).fetchall()
    assert got == [(1, 2 * _price(fields, None))] == [(1, 140.0)]
