"""Link rows from the parent's pages, typed or dicts, and the link events' readings."""

from __future__ import annotations

import random
import re

import orjson
import pyarrow as pa
import pytest

from kommo_dagster.kommo import link_decoding
from kommo_dagster.kommo.decoding import typed_records_of
from kommo_dagster.kommo.errors import KommoContractError, KommoResponseError
from kommo_dagster.kommo.link_rows import FLUSH_ROWS, LinkRows
from kommo_dagster.kommo.links import LINK_TABLES, VERSION
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.relinks import LinkEvents, links_of
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster_tests.kommo.conftest import Answering

LEADS = [
    {
        "id": 1,
        "updated_at": 10,
        "is_deleted": False,
        "_embedded": {
            "tags": [],
            "companies": [{"id": 40}],
            "contacts": [{"id": 30, "is_main": True}, {"id": 31, "is_main": False}],
            "catalog_elements": [
                {"id": 7, "metadata": {"quantity": 1.5, "catalog_id": 8, "price_id": 9}},
                {"id": 6, "metadata": {"quantity": 2, "catalog_id": 8}},
            ],
            "source": {"id": 5, "name": "Site"},
        },
    },
    {"id": 2, "updated_at": 11, "is_deleted": True, "_embedded": {"contacts": [{"id": 32}]}},
    {"id": 3, "updated_at": 12, "is_deleted": False, "_embedded": {"tags": []}},
]


def _rows(links: LinkRows) -> dict[str, list[dict]]:
    return {name: t.drop([VERSION]).to_pylist() for name, t in links.tables().items()}


def _typed(records: list[dict]) -> list:
    body = orjson.dumps({"_embedded": {"leads": records}})
    resp = Response(body=body, server_time=None, path="/api/v4/leads")
    typed, _ = typed_records_of(get_stream("leads"), resp)
    return typed


def test_typed_and_dict_pages_give_the_same_rows_and_deleted_records_none():
    from_dicts, from_typed = LinkRows("leads"), LinkRows("leads")
    from_dicts.add(LEADS)
    from_typed.add(_typed(LEADS))
    assert _rows(from_dicts) == _rows(from_typed)
    rows = _rows(from_dicts)
    assert rows["lead_contacts"] == [
        {"lead_id": 1, "contact_id": 30, "is_main": True},
        {"lead_id": 1, "contact_id": 31, "is_main": False},
    ]
    assert rows["lead_products"][0] == {
        "lead_id": 1,
        "catalog_id": 8,
        "element_id": 7,
        "quantity": 1.5,
        "price_id": 9,
    }
    assert rows["lead_products"][1]["price_id"] is None
    assert rows["lead_companies"] == [{"lead_id": 1, "company_id": 40}]
    assert rows["lead_sources"] == [{"id": 5, "name": "Site"}]
    # every parent read has its links replaced, the deleted and the link-less too
    assert sorted(from_dicts.parent_ids) == [1, 2, 3]


def test_an_embedded_value_unlike_kommos_names_the_record():
    """Whether it is found in the page (dicts) or in the batch Arrow parses (typed pages),
    before any row is handed over."""
    bad = [{"id": 9, "updated_at": 1, "_embedded": {"contacts": [{"id": "thirty"}]}}]
    for records in (bad, _typed(bad)):
        links = LinkRows("leads")
        with pytest.raises(KommoContractError, match=r"leads 9: _embedded.contacts"):
            links.add(records)
            links.tables()


def test_a_parent_id_its_table_converts_keeps_its_links():
    """A lead whose id comes as a numeric string is written as that integer to leads; its
    links are kept under the same id, not dropped (nor its old links left in place)."""
    lead = {"id": "123", "updated_at": 10, "is_deleted": False}
    lead["_embedded"] = {"contacts": [{"id": 30, "is_main": True}], "companies": [{"id": 40}]}
    assert to_columns("leads", [lead])["id"] == [123]
    for records in ([lead], _typed([lead])):
        links = LinkRows("leads")
        links.add(records)
        assert links.parent_ids == [123]
        rows = _rows(links)
        assert rows["lead_contacts"] == [{"lead_id": 123, "contact_id": 30, "is_main": True}]
        assert rows["lead_companies"] == [{"lead_id": 123, "company_id": 40}]


def test_a_parent_id_no_integer_column_takes_names_its_value():
    lead = {"id": "12abc", "updated_at": 10, "_embedded": {"contacts": [{"id": 30}]}}
    for records in ([lead], _typed([lead])):
        with pytest.raises(KommoContractError, match=r"leads\.id .*'12abc'"):
            LinkRows("leads").add(records)


def _random_leads(n: int, seed: int) -> list[dict]:
    """Leads with every shape of embedded value Kommo sends: lists empty or absent, metadata
    partial or absent, quantities whole or fractional, a source or none, fields we do not read."""
    rng = random.Random(seed)
    leads = []
    for i in range(1, n + 1):
        embedded: dict = {"tags": [{"id": 1, "name": "x"}]} if rng.random() < 0.3 else {}
        if rng.random() < 0.8:
            embedded["contacts"] = [
                {"id": rng.randrange(1, 10**12), "is_main": rng.choice([True, False, None])}
                for _ in range(rng.randrange(0, 4))
            ]
        if rng.random() < 0.5:
            embedded["companies"] = [{"id": rng.randrange(1, 10**6), "_links": {}}]
        if rng.random() < 0.4:
            embedded["catalog_elements"] = [
                {"id": rng.randrange(1, 1000)}
                | ({"metadata": {"quantity": rng.choice([1, 2.5]), "catalog_id": 8}} if k else {})
                for k in range(rng.randrange(0, 3))
            ]
        if rng.random() < 0.5:
            embedded["source"] = {"id": rng.randrange(1, 20), "name": rng.choice(["Site", None])}
        deleted = rng.random() < 0.1
        leads.append({"id": i, "updated_at": i % 97, "is_deleted": deleted, "_embedded": embedded})
    return leads


def test_batches_parsed_by_arrow_give_the_rows_of_the_dict_path(monkeypatch):
    """Typed pages wait for Arrow, which parses many at once (beyond a batch here); dict pages
    take the msgspec path at once. The same leads give the same rows both ways."""
    leads = _random_leads(FLUSH_ROWS + 2_500, seed=7)
    from_dicts, from_typed = LinkRows("leads"), LinkRows("leads")
    pages = [leads[start : start + 250] for start in range(0, len(leads), 250)]
    for page in pages:
        from_dicts.add(page)
    dict_tables = from_dicts.tables()
    # The typed pages never reach msgspec's path: every row is Arrow's.
    monkeypatch.setattr(link_decoding, "decode_page", None)
    for page in pages:
        from_typed.add(_typed(page))
    typed_tables = from_typed.tables()
    assert typed_tables.keys() == dict_tables.keys()
    for name, table in typed_tables.items():
        assert table.schema == dict_tables[name].schema
        assert table.num_rows > 0
        assert sorted(table.to_pylist(), key=repr) == sorted(
            dict_tables[name].to_pylist(), key=repr
        )
    heads = from_typed.parent_heads()
    assert sorted(set(heads.column("id").to_pylist())) == list(range(1, len(leads) + 1))
    assert heads.to_pylist() == from_dicts.parent_heads().to_pylist()
    assert heads.column("is_deleted").to_pylist() == [lead["is_deleted"] for lead in leads]


@pytest.mark.parametrize(
    "contacts",
    [[None], [{"is_main": True}], [{"id": None}], [{"id": 1.5}], [{"id": 1, "is_main": 1}]],
)
def test_a_value_arrow_would_take_but_kommo_never_sends_names_the_record(contacts):
    records = [
        {"id": 8, "updated_at": 1, "_embedded": {"contacts": [{"id": 1}]}},
        {"id": 9, "updated_at": 1, "_embedded": {"contacts": contacts}},
    ]
    links = LinkRows("leads")
    links.add(_typed(records))
    with pytest.raises(KommoContractError, match=r"leads 9: _embedded.contacts"):
        links.tables()


@pytest.mark.parametrize(
    ("embed", "value"),
    [
        ("contacts", [None]),
        ("companies", [{"_links": {}}]),
        ("catalog_elements", [{"id": None}]),
        ("source", {"name": "Site"}),
    ],
)
def test_a_refused_value_of_any_embedded_list_names_the_record(embed, value):
    """Whichever list Arrow refuses in a batch, the msgspec path reads that list alone and names
    the record; the others stay Arrow's."""
    records = [
        {"id": 8, "updated_at": 1, "_embedded": {"contacts": [{"id": 1}], "source": {"id": 2}}},
        {"id": 9, "updated_at": 1, "_embedded": {embed: value}},
    ]
    links = LinkRows("leads")
    links.add(_typed(records))
    with pytest.raises(KommoContractError, match=rf"leads 9: _embedded.{embed}"):
        links.tables()


@pytest.mark.parametrize(
    ("embed", "value"),
    [
        ("contacts", [{"id": 2**63}]),
        ("companies", [{"id": 2**64 - 1}]),
        ("catalog_elements", [{"id": 7, "metadata": {"price_id": 2**63}}]),
        ("source", {"id": 2**63}),
    ],
)
def test_an_id_past_int64_names_the_record_on_both_paths(embed, value):
    records = [
        {"id": 8, "updated_at": 1, "_embedded": {"contacts": [{"id": 1}], "source": {"id": 2}}},
        {"id": 9, "updated_at": 1, "_embedded": {embed: value}},
    ]
    for page in (records, _typed(records)):
        links = LinkRows("leads")
        with pytest.raises(KommoContractError, match=rf"leads 9: _embedded.{embed}"):
            links.add(page)
            links.tables()


def test_line_breaks_inside_an_embedded_value_are_whitespace():
    pretty = orjson.dumps(LEADS[:1], option=orjson.OPT_INDENT_2)
    body = b'{"_embedded": {"leads": ' + pretty + b"}}"
    resp = Response(body=body, server_time=None, path="/api/v4/leads")
    typed, _ = typed_records_of(get_stream("leads"), resp)
    from_pretty, from_dicts = LinkRows("leads"), LinkRows("leads")
    from_pretty.add(typed)
    from_dicts.add(LEADS[:1])
    assert _rows(from_pretty) == _rows(from_dicts)


def _events(rows: list[tuple]) -> pa.Table:
    names = ["type", "entity_type", "entity_id", "value_after", "value_before"]
    columns = list(zip(*rows, strict=True))
    return pa.table({n: list(c) for n, c in zip(names, columns, strict=True)})


def test_every_link_event_reading_names_both_records():
    def link(kind: str, type_: str, rid: int) -> str:
        return orjson.dumps([{kind: {"entity": {"type": type_, "id": rid}}}]).decode()

    batch = _events(
        [
            ("entity_linked", "lead", 1, link("link", "contact", 30), "[]"),
            ("contact_unlinked", "lead", 2, "[]", link("link", "contact", 31)),
            ("lead_unlinked", "contact", 32, link("unlink", "lead", 3), "[]"),
            ("entity_unlinked", "company", 40, link("unlink", "contact", 33), "[]"),
            ("lead_status_changed", "lead", 99, "[]", "[]"),
        ]
    )
    events = LinkEvents()
    assert events.summary() == "no link events in the window, so no links to re-read"
    events.add(batch)
    assert events.named["leads"] == {1, 2, 3}
    assert events.named["contacts"] == {30, 31, 32, 33}
    assert events.named["companies"] == {40}
    assert events.summary() == (
        "4 link events name 3 leads, 4 contacts, 1 companies; their links re-read"
    )


def test_a_links_answer_without_its_list_is_a_clear_error():
    with pytest.raises(KommoResponseError, match=r"leads/links response has no list"):
        links_of(Answering([{"_embedded": {"links": {"oops": 1}}}]), "leads", [1])
    assert links_of(Answering([None]), "leads", [1]) == []


@pytest.mark.parametrize("meta", [["x"], "main", 5])
@pytest.mark.parametrize("to", ["contacts", "catalog_elements"])
def test_a_links_metadata_that_is_no_object_names_the_record_and_value(to, meta):
    rows = LinkRows("leads", tables=[t for t in LINK_TABLES.values() if t.parent == "leads"])
    item = {"entity_id": 1, "to_entity_id": 2, "to_entity_type": to, "metadata": meta}
    shown = re.escape(f"leads/links of 1: metadata {meta!r} is not an object")
    with pytest.raises(KommoContractError, match=shown):
        rows.add_links([1], [item])


def test_links_of_many_records_are_read_in_batches():
    events = LinkEvents()
    events.named["leads"] = set(range(1, 121))
    fake = Answering([None, None, None])
    events.refresh(fake)
    sizes = [sum(1 for k, _ in params if k == "filter[entity_id][]") for _, params in fake.calls]
    assert sizes == [50, 50, 20]
