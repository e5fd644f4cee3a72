"""The activity tables' SQL on small hand-made tables: the edge cases one by one, each compared
with the plain-Python reading of the definitions (`kommo_dagster.sandbox.activity_truth`)."""

import json
from datetime import date

import duckdb
import pytest

from kommo_dagster.derived import calls, chats
from kommo_dagster.derived.activity import account_time_zone
from kommo_dagster.derived.declaration import ACTIVITY_TABLES
from kommo_dagster.derived.manager_activity import activity_select_sql
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.sandbox.activity_truth import call_integer, response_rows
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.sql import create_table_sql
from kommo_dagster.warehouse.tables import RefreshContext
from kommo_dagster.warehouse.views import ensure_current_view

IN, OUT = chats.INCOMING, chats.OUTGOING


def _event(id_: str, type_: str, at: int, *, by: int = 0, entity=("lead", 1), after=None):
    value = [{"message": {"id": f"m-{id_}"}}] if after is None else after
    return {
        "id": id_,
        "type": type_,
        "entity_type": entity[0],
        "entity_id": entity[1],
        "created_by": by,
        "created_at": at,
        "value_after": value,
    }


@pytest.fixture
def con():
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA kommo")
        for name in ("events", "lead_notes", "account"):
            con.execute(create_table_sql(get_stream(name), schema="kommo"))
        yield con


def _load_events(con, events: list[dict]) -> None:
    for e in events:
        after = e["value_after"]
        text = after if isinstance(after, str) else json.dumps(after)
        con.execute(
            "INSERT INTO kommo.events (id, type, entity_id, entity_type, created_by, created_at, "
            "value_after, value_before) VALUES (?, ?, ?, ?, ?, ?, ?, '[]')",
            [
                e["id"],
                e["type"],
                e["entity_id"],
                e["entity_type"],
                e["created_by"],
                e["created_at"],
                text,
            ],
        )


def _runs(con) -> list[dict]:
    cursor = con.execute(
        f"SELECT * FROM ({chats.response_times_select_sql(schema='kommo')}) "
        f"ORDER BY first_message_id"
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def test_runs_replies_follow_ups_ties_and_bad_input(con):
    events = [
        _event("a1", OUT, 100, by=7),  # a manager writes first: no run
        _event("a2", IN, 200),
        _event("a3", IN, 205, after=[]),  # no message id: still a message of the run
        _event("a4", OUT, 260, by=7),  # the reply
        _event("a5", OUT, 300, by=7),  # a follow-up: no run
        _event("a6", IN, 400),
        _event("a7", OUT, 400, by=0),  # same second: (created_at, id) order, a bot's reply
        _event("a8", IN, 900),  # unanswered
        _event("b1", IN, 150, entity=("contact", 1)),  # another conversation, same id
        _event("b2", OUT, 151, by=3, entity=("contact", 1)),
        _event("c1", IN, 100, entity=("talk", 1)),  # an entity type no one knows: skipped
        _event("d1", IN, 100, entity=("customer", 5), after="not json"),
    ]
    _load_events(con, events)
    _load_events(con, events[1:2])  # an event stored twice counts once
    truth = response_rows([e for e in events if e["entity_type"] != "talk"])
    assert _runs(con) == truth
    assert [(r["first_message_id"], r["response_seconds"]) for r in truth] == [
        ("a2", 60),
        ("a6", 0),
        ("a8", None),
        ("b1", 1),
        ("d1", None),
    ]
    counts = con.execute(chats.input_counts_sql(schema="kommo")).fetchone()
    assert counts == (12, 2, 1, 1)  # messages, without an id (a3, d1), on talk, stored twice


def test_call_params_become_typed_columns(con):
    notes = [
        (1, "call_in", {"duration": 65, "phone": "+55", "call_status": 4, "call_result": "ok"}),
        (2, "call_out", {"duration": "1:05", "source": "Zadarma", "uniq": "u", "link": ""}),
        (3, "call_out", {"duration": "42", "call_status": "7", "call_responsible": "12"}),
        (4, "call_in", {}),
        (5, "call_in", "not json"),
        (6, "common", {"text": "not a call"}),
    ]
    for id_, note_type, params in notes:
        text = params if isinstance(params, str) else json.dumps(params)
        con.execute(
            "INSERT INTO kommo.lead_notes (id, entity_id, note_type, params, created_by, "
            "created_at, updated_at) VALUES (?, 10, ?, ?, 3, 1000, 1000)",
            [id_, note_type, text],
        )
    streams = {"lead_notes": "lead"}
    got = con.execute(
        f"SELECT note_id, direction, duration_seconds, phone, source, uniq, link, call_status, "
        f"call_result, call_responsible "
        f"FROM ({calls.calls_select_sql(schema='kommo', streams=streams)}) ORDER BY 1"
    ).fetchall()
    assert got == [
        (1, "in", 65, "+55", None, None, None, 4, "ok", None),
        (2, "out", None, None, "Zadarma", "u", "", None, None, None),
        (3, "out", 42, None, None, None, None, 7, None, 12),
        (4, "in", None, None, None, None, None, None, None, None),
        (5, "in", None, None, None, None, None, None, None, None),
    ]
    counts = con.execute(calls.input_counts_sql(schema="kommo", streams=streams)).fetchone()
    assert counts == (5, 1, 1, 1)  # calls, params not JSON, "1:05", no duration


# A call param as JSON text and the integer the calls table reads from it: the extracted tables'
# rule (`json_values.json_integer`), the same for duration, call_status and call_responsible.
ODD_CALL_INTEGERS = [
    ("12", 12),
    ("-12", -12),
    ("12.0", 12),  # a number with no fraction
    ("1e3", 1000),  # a JSON number, not text
    ("12.5", None),
    ('"12"', 12),
    ('" 12 "', 12),
    ('"+12"', 12),
    ('"\\u00a012\\u3000"', 12),  # Unicode's white space, as str.strip() takes it
    ('"\\u000b12"', 12),  # the vertical tab, which RE2's \\s is not
    ('"\\u200b12"', None),  # a zero-width space is no white space
    ('"-12"', -12),
    ('"1e3"', None),  # text with an exponent is no integer
    ('"12abc"', None),
    ('"1:05"', None),
    ('""', None),
    ("true", None),
    ("null", None),
    ('{"s": 12}', None),
    ("9223372036854775807", 2**63 - 1),
    ('"9223372036854775807"', 2**63 - 1),  # 19 digits as text
    ("9223372036854775808", None),  # beyond BIGINT
    ('"9223372036854775808"', None),
    ('"' + "9" * 5000 + '"', None),  # past int()'s own limit of digits
    ('"-00000000000000000000000001"', -1),  # leading zeros: still a BIGINT
    ("9007199254740991.0", 2**53 - 1),
    ("9007199254740992.0", None),  # a float this large may have lost digits
]


@pytest.mark.parametrize(("served", "expected"), ODD_CALL_INTEGERS)
def test_call_integers_follow_the_extracted_tables_rule(con, served, expected):
    keys = ("duration", "call_status", "call_responsible")
    params = "{" + ", ".join(f'"{k}": {served}' for k in keys) + "}"
    con.execute(
        "INSERT INTO kommo.lead_notes (id, entity_id, note_type, params, created_by, created_at, "
        "updated_at) VALUES (1, 10, 'call_in', ?, 3, 1000, 1000)",
        [params],
    )
    streams = {"lead_notes": "lead"}
    got = con.execute(
        f"SELECT duration_seconds, call_status, call_responsible "
        f"FROM ({calls.calls_select_sql(schema='kommo', streams=streams)})"
    ).fetchall()
    assert got == [(expected, expected, expected)]
    # The sandbox's ground truth reads the param the same way.
    assert call_integer(json.loads(served)) == expected
    counts = con.execute(calls.input_counts_sql(schema="kommo", streams=streams)).fetchone()
    assert counts == (1, 0, int(expected is None), 0)


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        ("America/Sao_Paulo", ("America/Sao_Paulo", None)),
        (
            "Mars/Olympus",
            ("UTC", "kommo.account has timezone 'Mars/Olympus', which DuckDB does not know"),
        ),
        (None, ("UTC", "kommo.account holds no timezone")),
    ],
)
def test_the_account_time_zone_or_utc_with_the_reason(con, timezone, expected):
    con.execute("INSERT INTO kommo.account (id, timezone) VALUES (1, ?)", [timezone])
    assert account_time_zone(con, schema="kommo") == expected


def test_kommo_all_unites_the_accounts_that_have_the_table(con):
    for schema, rows in (("kommo_br", 2), ("kommo_ru", 1)):
        con.execute(f"CREATE SCHEMA {schema}")
        con.execute(f"CREATE TABLE {schema}.calls AS SELECT range AS note_id FROM range({rows})")
    accounts = {"br": "kommo_br", "ru": "kommo_ru", "mx": "kommo_mx"}
    for name in ("calls", "chat_response_times"):
        ctx = RefreshContext(con=con, schema="kommo", account_schemas=accounts)
        get_table(f"kommo_all.{name}").refresh(ctx)  # type: ignore[misc]
    assert con.execute(
        "SELECT account, count(*) FROM kommo_all.calls GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("br", 2), ("ru", 1)]
    assert not con.execute(
        "SELECT * FROM duckdb_views() WHERE view_name = 'chat_response_times'"
    ).fetchall()


def test_a_table_an_older_version_made_is_rebuilt_with_todays_columns(con):
    table = ACTIVITY_TABLES["chat_response_times"]
    _load_events(con, [_event("a1", IN, 100), _event("a2", OUT, 160, by=7)])
    con.execute("CREATE TABLE kommo.chat_response_times (first_message_id VARCHAR)")
    con.execute("INSERT INTO kommo.chat_response_times VALUES ('old')")
    con.execute("CREATE VIEW kommo.over_it AS SELECT * FROM kommo.chat_response_times")
    result = replace_slice(
        con,
        table,
        schema="kommo",
        window=None,
        select_sql=chats.response_times_select_sql(schema="kommo"),
        recreate=True,
    )
    assert (result.rows, result.table_rows) == (1, 1)
    assert [c[0] for c in result.columns] == list(table.column_names)
    assert con.execute(
        "SELECT first_message_id, response_seconds FROM kommo.over_it"
    ).fetchall() == [("a1", 60)]


def test_a_reply_by_no_known_user_is_not_credited_to_the_responsible_one(con):
    """The view's user is who replied; only an unanswered run falls to the lead's responsible
    user. A reply whose created_by is absent stays with no user."""
    leads = get_stream("leads")
    con.execute(create_table_sql(leads, schema="kommo"))
    con.execute("INSERT INTO kommo.leads (id, updated_at, responsible_user_id) VALUES (1, 5, 42)")
    ensure_current_view(con, leads, schema="kommo")
    events = [_event("a1", IN, 100), _event("a2", OUT, 160), _event("a3", IN, 900)]
    events[1]["created_by"] = None  # answered, by no one Kommo names
    _load_events(con, events)
    select = chats.response_times_select_sql(schema="kommo")
    replace_slice(
        con, ACTIVITY_TABLES["chat_response_times"], schema="kommo", window=None, select_sql=select
    )
    con.execute(chats.response_view_sql(schema="kommo", time_zone="UTC", present={"leads_current"}))
    got = con.execute(
        "SELECT user_id, replies, unanswered_runs FROM kommo.response_time_by_manager "
        "ORDER BY user_id NULLS FIRST"
    ).fetchall()
    assert got == [(None, 1, 0), (42, 0, 1)]


@pytest.mark.parametrize("present", [{"events"}, {"calls"}, {"events", "calls"}])
def test_manager_activity_counts_the_inputs_there_are_and_zero_for_the_others(con, present):
    """A code location without notes (or without chats) defines manager_activity_daily over
    the inputs it has: each missing one counts zero, and none fails the write."""
    _load_events(con, [_event("a1", OUT, 86_400 + 60, by=7), _event("a2", IN, 86_400 + 90)])
    con.execute(create_table_sql(ACTIVITY_TABLES["calls"], schema="kommo"))
    con.execute(
        "INSERT INTO kommo.calls (entity_type, entity_id, note_id, direction, created_at, "
        "created_by, duration_seconds) VALUES ('lead', 1, 5, 'in', 86400 + 120, 7, 30)"
    )
    cursor = con.execute(activity_select_sql(schema="kommo", time_zone="UTC", present=present))
    names = [d[0] for d in cursor.description]
    got = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    counts = [
        c.name for c in ACTIVITY_TABLES["manager_activity_daily"].columns if c.type == "integer"
    ]
    expected = dict.fromkeys(counts, 0) | {"median_response_seconds": None}
    expected |= {"day": date(1970, 1, 2), "user_id": 7}
    if "events" in present:
        expected["messages_sent"] = 1
    if "calls" in present:
        expected |= {"calls_in": 1, "call_seconds": 30}
    assert got == [expected]
