"""Ground truth of the conversation and activity tables, from the sandbox's own records.

Computed in plain Python from `Account.records` and the definitions in
``kommo_activity_streams.json``, never with the project's SQL, so a test comparing DuckDB with
these rows checks the SQL against an independent reading of the contract:

- a conversation is the message events of one (entity_type, entity_id) of a lead, contact or
  customer, in (created_at, id) order; a run starts at an incoming message that does not follow
  an incoming one and is answered by the next message when that is outgoing;
- a call's duration (status, responsible) is an integer when served as a JSON integer, a number
  with no fraction below 2**53, or a string of digits with a sign and white space around it
  (what str.strip() removes), within BIGINT; else NULL;
- days are dates in the account's time zone.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from kommo_dagster.contract import contract_columns
from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.chats import INCOMING, OUTGOING
from kommo_dagster.sandbox.notes import NOTE_TABLES

CHAT_ENTITY_TYPES = ("lead", "contact", "customer")
# Digits with a sign, padded with what str.strip() removes; the truth's own, not the client's.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_BIGINT = range(-(2**63), 2**63)
_CALL_TYPES = {"call_in": "in", "call_out": "out"}
_NOTE_ENTITY = {"lead_notes": "lead", "contact_notes": "contact", "company_notes": "company"}


def conversations(events: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Message events of leads, contacts and customers by conversation, in (created_at, id)
    order, each event once."""
    by_id = {e["id"]: e for e in events if e["type"] in (INCOMING, OUTGOING)}
    chats: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(by_id.values(), key=lambda e: (e["created_at"], e["id"])):
        if e["entity_type"] in CHAT_ENTITY_TYPES:
            chats[e["entity_type"], e["entity_id"]].append(e)
    return chats


def response_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat_response_times rows of these events, sorted by first_message_id."""
    rows: list[dict[str, Any]] = []
    for (entity_type, entity_id), messages in conversations(events).items():
        run: dict[str, Any] | None = None
        for m in messages:
            if m["type"] == INCOMING and run is None:
                run = {
                    "entity_type": entity_type,
                    "entity_id": entity_id,
                    "first_message_id": m["id"],
                    "first_message_at": m["created_at"],
                    "incoming_messages": 1,
                    "reply_event_id": None,
                    "replied_at": None,
                    "replied_by": None,
                    "response_seconds": None,
                    "last_message_at": m["created_at"],
                }
                rows.append(run)
            elif m["type"] == INCOMING and run is not None:
                run["incoming_messages"] += 1
                run["last_message_at"] = m["created_at"]
            elif run is not None:
                run["reply_event_id"] = m["id"]
                run["replied_at"] = m["created_at"]
                run["replied_by"] = m["created_by"]
                run["response_seconds"] = m["created_at"] - run["first_message_at"]
                run = None
    return sorted(rows, key=lambda r: r["first_message_id"])


def call_integer(value: Any) -> int | None:
    """A call param as the calls table's integer column reads it; NULL beyond BIGINT."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        try:
            value = int(value)
        except ValueError:  # past 4,300 digits, int()'s own limit: far past BIGINT
            return None
    elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return value if isinstance(value, int) and value in _BIGINT else None


def call_rows(account: Account) -> list[dict[str, Any]]:
    """The calls rows of the account's current notes, sorted by (entity_type, note_id)."""
    rows = []
    for table in NOTE_TABLES.values():
        for note in account.records(table):
            if note["note_type"] not in _CALL_TYPES:
                continue
            params = note["params"]
            rows.append(
                {
                    "entity_type": _NOTE_ENTITY[table],
                    "entity_id": note["entity_id"],
                    "note_id": note["id"],
                    "direction": _CALL_TYPES[note["note_type"]],
                    "created_at": note["created_at"],
                    "created_by": note["created_by"],
                    "responsible_user_id": note["responsible_user_id"],
                    "duration_seconds": call_integer(params.get("duration")),
                    "phone": params.get("phone"),
                    "source": params.get("source"),
                    "uniq": params.get("uniq"),
                    "link": params.get("link"),
                    "call_status": call_integer(params.get("call_status")),
                    "call_result": params.get("call_result"),
                    "call_responsible": call_integer(params.get("call_responsible")),
                }
            )
    return sorted(rows, key=lambda r: (r["entity_type"], r["note_id"]))


# Every column of the contract but the day, the user and the median is a count.
_COUNTS = tuple(
    c["name"]
    for c in contract_columns("manager_activity_daily")
    if c["name"] not in ("day", "user_id", "median_response_seconds")
)


def account_time_zone(account: Account) -> str:
    (body,) = account.records("account")
    return body["_embedded"]["datetime_settings"]["timezone"]


def activity_rows(account: Account) -> list[dict[str, Any]]:
    """The manager_activity_daily rows, sorted by (day, user_id)."""
    zone = ZoneInfo(account_time_zone(account))

    def day(ts: int) -> date:
        return datetime.fromtimestamp(ts, UTC).astimezone(zone).date()

    counts: dict[tuple[date, int], dict[str, Any]] = defaultdict(
        lambda: dict.fromkeys(_COUNTS, 0) | {"response_seconds": []}
    )
    events = {e["id"]: e for e in account.records("events")}.values()
    for e in events:
        if e["type"] == OUTGOING:
            counts[day(e["created_at"]), e["created_by"]]["messages_sent"] += 1
        elif e["type"] == "lead_status_changed":
            c = counts[day(e["created_at"]), e["created_by"]]
            c["stage_changes"] += 1
            after = (e["value_after"] or [{}])[0].get("lead_status", {}).get("id")
            c["leads_won"] += after == 142
            c["leads_lost"] += after == 143
    for r in response_rows(list(events)):
        if r["replied_at"] is not None:
            c = counts[day(r["replied_at"]), r["replied_by"]]
            c["replies"] += 1
            c["response_seconds"].append(r["response_seconds"])
    for call in call_rows(account):
        c = counts[day(call["created_at"]), call["created_by"]]
        c[f"calls_{call['direction']}"] += 1
        c["call_seconds"] += call["duration_seconds"] or 0
    rows = []
    for (d, user), c in sorted(counts.items()):
        seconds = c.pop("response_seconds")
        if any(c.values()):
            median = float(statistics.median(seconds)) if seconds else None
            rows.append({"day": d, "user_id": user, **c, "median_response_seconds": median})
    return rows


__all__ = [
    "account_time_zone",
    "activity_rows",
    "call_integer",
    "call_rows",
    "conversations",
    "response_rows",
]
