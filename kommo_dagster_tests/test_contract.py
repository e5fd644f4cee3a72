"""The packaged contract files are the shared ones, and the stream declaration follows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kommo_dagster.contract import PACKAGED_FILES, contract_streams, load_contract
from kommo_dagster.kommo import unsorted
from kommo_dagster.kommo.streams import (
    DERIVED_TABLES,
    STREAMS,
    Reference,
    build_streams,
    get_stream,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.mark.parametrize("file", PACKAGED_FILES)
def test_packaged_contract_is_the_shared_one(file: str):
    shared = SHARED / file
    if not shared.exists():
        pytest.skip(f"no shared {file} beside this clone")
    assert load_contract(file) == json.loads(shared.read_text(encoding="utf-8"))


# The contract's tables, then the incoming leads declared in its format (kommo/unsorted.py).
CONTRACT = {**contract_streams(), **unsorted.CONTRACT}


def test_every_extracted_contract_table_is_declared_in_contract_order():
    extracted = [n for n, spec in CONTRACT.items() if "derived_from" not in spec]
    assert list(STREAMS) == extracted
    for name, stream in STREAMS.items():
        spec = CONTRACT[name]
        assert stream.sync == spec["sync"]
        assert stream.cursor == spec["cursor"]
        assert [(c.name, c.type) for c in stream.columns] == [
            (c["name"], c["type"]) for c in spec["columns"]
        ]


def test_derived_tables_are_not_streams():
    derived = [n for n, spec in contract_streams().items() if spec.get("derived_from")]
    assert derived and list(DERIVED_TABLES) == derived
    assert not set(derived) & set(STREAMS)


@pytest.mark.parametrize("name", list(STREAMS))
def test_json_columns_are_the_ones_the_contract_calls_json(name):
    stream = STREAMS[name]
    described_json = {c["name"] for c in CONTRACT[name]["columns"] if "(JSON)" in c["description"]}
    assert {c.name for c in stream.columns if c.is_json} == described_json


@pytest.mark.parametrize("name", list(STREAMS))
def test_page_sizes_are_within_kommos_maxima(name):
    stream = STREAMS[name]
    if stream.paging == "single":
        assert stream.page_size is None
    elif stream.name == "events":
        assert stream.page_size == 100  # Kommo answers 50 rows to limit=250 on events
    elif stream.list_key == "custom_fields":
        assert stream.page_size == 50  # Kommo serves 50 definitions a page at most
    elif stream.paging != "per_parent" or stream.page_size is not None:
        assert stream.page_size == 250


@pytest.mark.parametrize("name", list(STREAMS))
def test_references_name_declared_tables_and_columns(name):
    stream = STREAMS[name]
    for ref in stream.all_references:
        target = get_stream(ref.stream)
        assert set(ref.columns) <= set(stream.column_names)
        assert set(ref.keys) <= set(target.column_names)


def test_the_references_the_tables_rely_on():
    def refs(name: str) -> set[tuple[tuple[str, ...], str, tuple[str, ...]]]:
        return {(r.columns, r.stream, r.keys) for r in get_stream(name).all_references}

    assert refs("leads") >= {
        (("loss_reason_id",), "loss_reasons", ("id",)),
        (("pipeline_id", "status_id"), "statuses", ("pipeline_id", "id")),
    }
    assert refs("tasks") == {(("task_type_id",), "task_types", ("id",))}
    assert refs("statuses") == {(("pipeline_id",), "pipelines", ("id",))}
    assert refs("catalog_elements") == {(("catalog_id",), "catalogs", ("id",))}
    for notes, entity in (
        ("lead_notes", "leads"),
        ("contact_notes", "contacts"),
        ("company_notes", "companies"),
    ):
        assert refs(notes) == {(("entity_id",), entity, ("id",))}


def test_a_declaration_naming_an_unknown_table_is_refused():
    contract = {"widgets": {**contract_streams()["loss_reasons"]}}
    endpoint = dict(
        path="/api/v4/widgets",
        list_key="widgets",
        page_size=250,
        references=(Reference(columns=("id",), stream="gadgets"),),
    )
    with pytest.raises(RuntimeError, match="widgets: reference"):
        build_streams(contract, {"widgets": endpoint})
    with pytest.raises(RuntimeError, match="differ from the declared endpoints"):
        build_streams(contract, {})
