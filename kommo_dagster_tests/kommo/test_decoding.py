"""Typed page decoding: the same columns as the general rules, cheaper, and the general rules
whenever a page does not fit the contract's types."""

from __future__ import annotations

import re

import orjson
import pytest

from kommo_dagster.kommo import KommoContractError, KommoResponseError
from kommo_dagster.kommo.columns import arrow_schema, page_columns
from kommo_dagster.kommo.decoding import TypedRecord, page_type, typed_records_of
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, get_stream
from kommo_dagster.kommo.walks import records_of
from kommo_dagster_tests.kommo.conftest import END, START, expected
from kommo_dagster_tests.kommo.test_records import lead

pytestmark = pytest.mark.timeout(120)


def page(stream: str, records: list, *, next_page: bool = False) -> Response:
    links = {"self": {"href": "x"}, **({"next": {"href": "y"}} if next_page else {})}
    body = {"_page": 1, "_links": links, "_embedded": {get_stream(stream).list_key: records}}
    return Response(body=orjson.dumps(body), server_time=None, path="/api/v4/x")


def columns_of(stream: str, records: list) -> dict[str, list]:
    """`page_columns` with JSON values as text, as `to_columns` and the sandbox give them."""
    columns = page_columns(stream, records)
    for col in get_stream(stream).columns:
        if col.is_json:
            columns[col.name] = [v if v is None else v.decode() for v in columns[col.name]]
    return columns


def both_ways(stream: str, resp: Response) -> tuple[list, dict, dict]:
    typed, has_next = typed_records_of(get_stream(stream), resp)
    general, general_next = records_of(get_stream(stream), resp)
    assert has_next == general_next
    return typed, columns_of(stream, typed), to_columns(stream, general)


@pytest.fixture(scope="module")
def account():
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(SandboxConfig(seed=3, leads=300, requests_per_second=None)) as sb:
        yield sb


@pytest.mark.parametrize("stream", INCREMENTAL_STREAMS)
def test_iter_batches_is_exactly_what_the_api_holds(account, client_for, stream):
    client = client_for(account)
    tables = list(client.iter_batches(stream, start=START, end=END, rows=20))
    assert all(t.schema == arrow_schema(get_stream(stream)) for t in tables)
    assert all(t.num_rows >= 20 for t in tables[:-1])
    rows = sorted((tuple(r.values()) for t in tables for r in t.to_pylist()), key=repr)
    assert rows == expected(account, stream)


@pytest.mark.parametrize("stream", INCREMENTAL_STREAMS)
def test_sandbox_pages_decode_typed_and_equal_the_general_rules(account, client_for, stream):
    spec = get_stream(stream)
    resp = client_for(account)._transport.get(spec.path, [("limit", spec.page_size)])
    typed, fast, general = both_ways(stream, resp)
    assert typed and all(isinstance(r, TypedRecord) for r in typed)
    assert fast == general


def test_typed_records_answer_the_walks_lookups():
    (record,), _ = typed_records_of(get_stream("leads"), page("leads", [lead()]))
    assert record["id"] == 7 and record.get("updated_at") == 1_790_000_100
    assert record.get("no such key") is None and record.get("no such key", 1) == 1
    with pytest.raises(KeyError):
        record["no such key"]


def test_announced_next_page_and_empty_envelopes():
    assert typed_records_of(get_stream("leads"), page("leads", [lead()], next_page=True))[1]
    empty = Response(body=b'{"_links":{}}', server_time=None)
    assert typed_records_of(get_stream("leads"), empty) == ([], False)
    assert typed_records_of(get_stream("leads"), Response(body=None, server_time=None)) == (
        [],
        False,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"custom_fields_values": None, "_embedded": {"tags": []}},
        {"_embedded": None, "score": None},
        {"name": "", "price": 0, "is_deleted": True},
    ],
)
def test_typed_columns_equal_the_general_rules(changes):
    records = [lead(), lead(id=8, **changes)]
    typed, fast, general = both_ways("leads", page("leads", records))
    assert all(isinstance(r, TypedRecord) for r in typed)
    assert fast == general


def test_missing_keys_are_null_as_in_the_general_rules():
    rec = lead()
    del rec["source_id"], rec["_embedded"], rec["custom_fields_values"]
    typed, fast, general = both_ways("leads", page("leads", [rec]))
    assert isinstance(typed[0], TypedRecord) and fast == general
    assert fast["tags"] == [None] and fast["custom_fields_values"] == [None]


@pytest.mark.parametrize(
    "changes",
    [{"price": 1500.0}, {"score": "42"}, {"score": " 42 "}, {"_embedded": []}],
)
def test_pages_that_need_conversion_take_the_general_rules(changes):
    typed, fast, general = both_ways("leads", page("leads", [lead(), lead(id=8, **changes)]))
    assert not any(type(r) is page_type("leads").record for r in typed)
    assert fast == general


def test_json_columns_keep_the_text_kommo_sent_when_another_value_needs_conversion():
    """A numeric string in one lead must not re-serialize the page's JSON values: parsed, an
    integer past 64 bits becomes a float and a long decimal loses digits."""
    sent = (
        b'[{"values":[{"value":123456789012345678901234567890},{"value":0.10000000000000000555}]}]'
    )
    first = orjson.dumps(lead(custom_fields_values="sent")).replace(b'"sent"', sent)
    second = orjson.dumps(lead(id=8, score="42"))
    body = b'{"_embedded":{"leads":[' + first + b"," + second + b"]}}"
    typed, _ = typed_records_of(get_stream("leads"), Response(body=body, server_time=None))
    columns = page_columns("leads", typed)
    assert columns["custom_fields_values"][0] == sent
    assert columns["score"] == [None, 42]
    bad = Response(body=body.replace(b'"score":"42"', b'"score":"4_2"'), server_time=None)
    with pytest.raises(KommoContractError, match=r"leads\.score .* id 8: not an integral"):
        page_columns("leads", typed_records_of(get_stream("leads"), bad)[0])


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("price", 10.5, "not an integral number"),
        ("price", True, "a boolean is not an integer"),
        ("is_deleted", 1, "expected true, false or null"),
        ("name", 12, "expected a string"),
    ],
)
def test_values_that_break_the_contract_fail_with_the_general_message(field, value, why):
    resp = page("leads", [lead(), lead(id=8, **{field: value})])
    typed, _ = typed_records_of(get_stream("leads"), resp)
    with pytest.raises(KommoContractError, match=why) as err:
        columns_of("leads", typed)
    assert f"leads.{field}" in str(err.value) and "id 8" in str(err.value)


def test_task_results_follow_the_general_rules_inside_a_typed_page():
    base = {"id": 1, "updated_at": 5, "entity_type": "leads", "is_completed": True}
    records = [{**base, "result": []}, {**base, "id": 2, "result": {"text": "ok"}}]
    typed, fast, general = both_ways("tasks", page("tasks", records))
    assert all(isinstance(r, TypedRecord) for r in typed)
    assert fast == general and fast["result"] == [None, "ok"]
    bad = [{**base, "result": {"text": 5}}]
    with pytest.raises(KommoContractError, match=r"tasks\.result"):
        columns_of("tasks", typed_records_of(get_stream("tasks"), page("tasks", bad))[0])


def test_json_columns_keep_the_text_kommo_sent():
    body = orjson.dumps({"_embedded": {"leads": [lead()]}}).replace(
        b'"custom_fields_values":[', b'"custom_fields_values": [ '
    )
    resp = Response(body=body, server_time=None)
    typed, _ = typed_records_of(get_stream("leads"), resp)
    value = page_columns("leads", typed)["custom_fields_values"][0]
    assert value.startswith(b"[ {") and orjson.loads(value) == lead()["custom_fields_values"]


def test_a_lone_surrogate_names_its_record_path_and_value():
    """Valid JSON that no UTF-8 text can hold: the error says where, so the record can be
    corrected in Kommo, on the typed path as on the general one."""
    records = [lead(id=8), lead(id=9, name="NAME")]
    body = orjson.dumps({"_embedded": {"leads": records}}).replace(b"NAME", b"a\\ud800b")
    resp = Response(body=body, server_time=None, path="/api/v4/leads")
    where = "$._embedded.leads[1].name (record id 9): 'a\\ud800b'"
    with pytest.raises(KommoResponseError, match="lone UTF-16 surrogate") as err:
        typed_records_of(get_stream("leads"), resp)
    assert where in str(err.value) and "correct the value in Kommo" in str(err.value)
    plain = Response(body=b'{"_embedded": {"leads": [', server_time=None, path="/api/v4/leads")
    with pytest.raises(KommoResponseError, match="malformed JSON"):
        plain.data  # noqa: B018


def test_a_lone_surrogate_inside_an_embedded_object_names_the_record_not_the_object():
    tags = {"_embedded": {"tags": [{"id": 555, "name": "NAME"}]}}
    records = [lead(id=8), lead(id=9) | tags]
    body = orjson.dumps({"_embedded": {"leads": records}}).replace(b"NAME", b"a\\ud800b")
    resp = Response(body=body, server_time=None, path="/api/v4/leads")
    with pytest.raises(KommoResponseError) as err:
        resp.data  # noqa: B018
    assert "$._embedded.leads[1]._embedded.tags[0].name (record id 9)" in str(err.value)


def test_malformed_pages_fail_as_before():
    resp = Response(body=b'{"_embedded": {"leads": [', server_time=None, path="/api/v4/leads")
    with pytest.raises(KommoResponseError, match="malformed JSON"):
        typed_records_of(get_stream("leads"), resp)
    resp = page("leads", [lead(), ["not", "a", "record"]])
    with pytest.raises(KommoContractError, match="not a JSON object"):
        columns_of("leads", typed_records_of(get_stream("leads"), resp)[0])


@pytest.mark.parametrize(
    ("body", "shown"),
    [(b"[1, 2]", "list [1, 2]"), (b"null", "NoneType None"), (b'"ok"', "str 'ok'")],
)
def test_a_body_that_is_not_an_object_names_what_it_is(body, shown):
    resp = Response(body=body, server_time=None, path="/api/v4/leads")
    with pytest.raises(KommoResponseError, match=re.escape(f"not an object: {shown}")):
        records_of(get_stream("leads"), resp)


def test_a_body_that_is_not_an_object_shows_no_token():
    resp = Response(body=b'["tok-1"]', server_time=None, scrub=lambda t: t.replace("tok-1", "***"))
    with pytest.raises(KommoResponseError, match=r"not an object: list \['\*\*\*'\]"):
        resp.data  # noqa: B018
