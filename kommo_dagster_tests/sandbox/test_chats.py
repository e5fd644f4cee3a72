"""Chat conversations and stage walks: the shapes the activity tables and the funnel rely on."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.activity_truth import conversations, response_rows
from kommo_dagster.sandbox.chats import INCOMING, OUTGOING, UNKNOWN_ENTITY_TYPE
from kommo_dagster.sandbox.timeline import DAY

START, END = date(2026, 10, 1), date(2026, 11, 1)


@pytest.fixture(scope="module")
def account() -> Account:
    return Account(seed=3, leads=400, start=START, end=END, base_url="http://x")


@pytest.fixture(scope="module")
def events(account) -> list[dict]:
    return account.records("events")


def test_messages_carry_a_message_id_except_the_one_wrong_on_purpose(events):
    messages = [e for e in events if e["type"] in (INCOMING, OUTGOING)]
    without = [e for e in messages if not e["value_after"]]
    assert len(without) == 1 and without[0]["type"] == INCOMING
    ids = [e["value_after"][0]["message"]["id"] for e in messages if e["value_after"]]
    assert len(set(ids)) == len(ids) and all(len(i) == 36 for i in ids)
    assert [e["entity_type"] for e in messages].count(UNKNOWN_ENTITY_TYPE) == 1
    assert all(START.isoformat() <= _day(e["created_at"]) < END.isoformat() for e in messages)


def _day(ts: int) -> str:
    """The UTC day of ``ts``: the window's days are UTC, whatever the machine's zone."""
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def test_conversations_hold_every_case_the_tables_must_handle(events, account):
    chats = conversations(events)
    kinds = Counter(entity_type for entity_type, _ in chats)
    assert kinds["lead"] > 50 and kinds["contact"] > 5
    runs = response_rows(events)
    sizes = Counter(r["incoming_messages"] for r in runs)
    assert {1, 2, 3} <= set(sizes)
    replied = [r for r in runs if r["replied_at"] is not None]
    assert any(r["replied_by"] == 0 for r in replied)  # bots
    assert len({r["replied_by"] for r in replied}) > 5  # managers
    assert any(r["replied_at"] is None for r in runs)
    seconds = [r["response_seconds"] for r in replied]
    assert min(seconds) < 120 and max(seconds) > DAY
    firsts = [m[0]["type"] for m in chats.values()]
    assert OUTGOING in firsts  # a manager writes first
    follow_ups = sum(
        1 for m in chats.values() for a, b in pairwise(m) if a["type"] == b["type"] == OUTGOING
    )
    assert follow_ups > 10


def test_leads_walk_their_pipeline_in_sort_order(events, account):
    leads = {r["id"]: r for r in account.records("leads")}
    sorts = {(s["pipeline_id"], s["id"]): s["sort"] for s in account.records("statuses")}
    moves: dict[int, list[dict]] = {}
    for e in sorted(events, key=lambda e: (e["created_at"], e["id"])):
        if e["type"] == "lead_status_changed":
            moves.setdefault(e["entity_id"], []).append(e)

    def stage(value: list) -> tuple[int, int]:
        return value[0]["lead_status"]["pipeline_id"], value[0]["lead_status"]["id"]

    walked = 0
    for lead_id, changes in moves.items():
        lead = leads[lead_id]
        assert stage(changes[-1]["value_after"]) == (lead["pipeline_id"], lead["status_id"])
        if len(changes) > 1:
            walked += 1
            for a, b in pairwise(changes):
                assert stage(a["value_after"]) == stage(b["value_before"])
                assert sorts[stage(a["value_after"])] < sorts[stage(b["value_after"])]
    assert walked > len(leads) / 3
