"""The link tables' checks on tables written by hand: duplicates fail (error), a second main
contact and a dangling link warn, each with counts and examples."""

from __future__ import annotations

import duckdb

from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.orchestration.link_assets import (
    NO_DUPLICATE_KEYS,
    ONE_MAIN_CONTACT,
    evaluate_links,
)
from kommo_dagster.warehouse.link_write import ensure_link_table


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
    outcomes = evaluate_links(con, table, schema="kommo", streams={"leads", "contacts"})
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
    outcomes = evaluate_links(con, table, schema="kommo", streams={"leads"})
    assert set(outcomes) == {"contract_columns", NO_DUPLICATE_KEYS, "lead_id_in_leads"}
