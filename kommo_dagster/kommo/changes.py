"""What changed in an account since a cursor, read from ``/api/v4/events``.

Kommo records an event for every change (``lead_status_changed``, ``contact_added``,
``task_deleted``...), with the entity's type and id. Polling the event list from a cursor is the
cheapest way to learn which streams need a refresh: a quiet account answers one request with a
204. Plain Python, used by the change sensor (`kommo_dagster.orchestration.sensors`).

The cursor is the newest ``created_at`` seen plus the ids of the events seen at that second.
The next poll asks ``filter[created_at][from]=<that second>`` (inclusive) and drops those ids, so
an event written later in the same second is still picked up, and none is counted twice. Events
come newest first and new ones enter at the top, so paging while events arrive can show an
event twice (deduplicated by id) but never skips one.

Kommo has no order for events (``order[...]`` is not among the list's parameters), so a poll
cannot read the oldest first and resume where it stopped. When Kommo still announces a next page
after ``max_pages`` (a sensor stopped for days on a busy account), the unread events are the
oldest ones, created between the cursor and the oldest event read. The poll then marks every UTC
day of that span for a refresh of every stream an event can touch, and says so
(`Changes.unread`): a refresh of those days' partitions reads their records whole, so no change
is lost, at the price of refreshing more than changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.errors import KommoContractError, KommoResponseError
from kommo_dagster.kommo.pages import page_of
from kommo_dagster.kommo.streams import STREAMS, get_stream

if TYPE_CHECKING:
    from kommo_dagster.kommo.client import KommoClient

EVENTS = "events"
# Kommo's singular entity types in events -> the stream holding that entity.
ENTITY_STREAMS: dict[str, str] = {
    s.event_entity: name for name, s in STREAMS.items() if s.event_entity is not None
}
# Every stream an event can ask to refresh: what a span of unread events may touch.
CHANGE_STREAMS = frozenset({EVENTS, *ENTITY_STREAMS.values()})
MAX_PAGES = 1_000


@dataclass(frozen=True)
class ChangeCursor:
    """Where the last poll stopped: the newest event second and the ids seen at it."""

    since: int
    seen: frozenset[str] = frozenset()

    def dumps(self) -> str:
        return json.dumps({"since": self.since, "seen": sorted(self.seen)}, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> ChangeCursor | None:
        """The cursor stored by `dumps`; None for no cursor. A malformed one raises ValueError."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(since=int(data["since"]), seen=frozenset(str(i) for i in data["seen"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable change cursor {text!r}: {exc}") from None


@dataclass(frozen=True)
class Changes:
    """The new events of one poll, and the cursor after them.

    ``unread`` is set when the poll stopped at its page cap with more events announced: the
    first and last UTC day of the span holding the events left unread, every one of which
    ``streams_by_day`` marks for every stream in `CHANGE_STREAMS`.
    """

    events: list[dict[str, Any]]
    cursor: ChangeCursor
    requests: int
    streams_by_day: dict[date, frozenset[str]] = field(default_factory=dict)
    unread: tuple[date, date] | None = None

    @property
    def capped(self) -> bool:
        return self.unread is not None

    @property
    def streams(self) -> frozenset[str]:
        return (
            frozenset().union(*self.streams_by_day.values()) if self.streams_by_day else frozenset()
        )


def streams_of(event: dict[str, Any]) -> set[str]:
    """The streams an event says need a refresh: always events, plus the entity's stream."""
    streams = {EVENTS}
    entity = ENTITY_STREAMS.get(str(event.get("entity_type") or ""))
    if entity is not None:
        streams.add(entity)
    return streams


def group_by_day(events: Iterable[dict[str, Any]]) -> dict[date, frozenset[str]]:
    """Affected streams per UTC day of the events' ``created_at`` (the partition they touch:
    a change at T moves the record's ``updated_at`` to T)."""
    days: dict[date, set[str]] = {}
    for event in events:
        days.setdefault(_day(int(event["created_at"])), set()).update(streams_of(event))
    return {day: frozenset(s) for day, s in sorted(days.items())}


def poll_changes(
    client: KommoClient, cursor: ChangeCursor, *, max_pages: int = MAX_PAGES
) -> Changes:
    """Every event created at or after ``cursor.since`` that the cursor has not seen.

    Costs one request when nothing happened (Kommo answers 204), one per page of 100 otherwise,
    at most ``max_pages``; past them the unread span is marked for refresh (see the module).
    """
    if max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, not {max_pages}")
    found, requests, capped = _read_pages(client, cursor, max_pages=max_pages)
    new = [e for i, e in found.items() if i not in cursor.seen]
    new.sort(key=lambda e: (int(e["created_at"]), str(e["id"])))
    by_day = group_by_day(new)
    unread = None
    if capped:
        # Newest first: what was not read was created at or before the oldest event read.
        oldest = min(int(e["created_at"]) for e in found.values())
        unread = (_day(cursor.since), _day(max(oldest, cursor.since)))
        by_day = _mark_days(by_day, *unread)
    return Changes(
        events=new,
        cursor=advance(cursor, found.values()),
        requests=requests,
        streams_by_day=by_day,
        unread=unread,
    )


def _read_pages(
    client: KommoClient, cursor: ChangeCursor, *, max_pages: int
) -> tuple[dict[str, dict[str, Any]], int, bool]:
    """The events by id from ``cursor.since``, the requests made, and whether Kommo still
    announced a next page after ``max_pages``."""
    spec = get_stream(EVENTS)
    found: dict[str, dict[str, Any]] = {}
    for page in range(1, max_pages + 1):
        body = client.get(
            spec.path,
            (
                ("filter[created_at][from]", cursor.since),
                ("limit", spec.page_size or 100),
                ("page", page),
            ),
            what="events since the change cursor",
        )
        if not body:
            return found, page, False
        listed, has_next = page_of(body, spec.list_key or EVENTS, name=EVENTS)
        records = _events_of(listed)
        for record in records:
            found.setdefault(str(record["id"]), record)
        if not records or not has_next:
            return found, page, False
    return found, max_pages, True


def _day(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, tz=UTC).date()


def _mark_days(
    by_day: dict[date, frozenset[str]], first: date, last: date
) -> dict[date, frozenset[str]]:
    """``by_day`` with every day from ``first`` to ``last`` marked for every change stream."""
    marked = dict(by_day)
    for n in range((last - first).days + 1):
        marked[first + timedelta(days=n)] = CHANGE_STREAMS
    return dict(sorted(marked.items()))


def _events_of(records: list[Any]) -> list[dict[str, Any]]:
    """The events of one page (read by `page_of`), each with the id and the integer
    ``created_at`` the cursor is made of; anything else raises naming the value, rather than as
    a bare KeyError."""
    for record in records:
        if not isinstance(record, dict) or record.get("id") is None:
            raise KommoResponseError(
                f"Kommo's events response holds an event without an id: {record!r:.200}"
            )
    return [_with_integer_second(r) for r in records]


def _with_integer_second(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with its ``created_at`` an int, converted by the events table's rule (a numeric
    string or an integral float is that integer), so the sensor reads what the asset writes."""
    value = event.get("created_at")
    if type(value) is int:
        return event
    # Here, not at the top: the definitions import this module, and `records` imports orjson,
    # one of the client's libraries that a run imports when its client starts.
    from kommo_dagster.kommo.records import typed_values

    try:
        [second] = typed_values(EVENTS, get_stream(EVENTS).column("created_at"), [value], [event])
    except KommoContractError:
        second = None
    if second is None:
        raise KommoResponseError(
            f"Kommo's event {event['id']!r} has a non-integer created_at: {value!r:.80}"
        )
    return {**event, "created_at": second}


def advance(cursor: ChangeCursor, events: Iterable[dict[str, Any]]) -> ChangeCursor:
    """The cursor after ``events``: their newest second, with every id seen at it."""
    events = list(events)
    if not events:
        return cursor
    newest = max(int(e["created_at"]) for e in events)
    if newest < cursor.since:
        return cursor
    at_newest = {str(e["id"]) for e in events if int(e["created_at"]) == newest}
    if newest == cursor.since:
        at_newest |= cursor.seen
    return ChangeCursor(since=newest, seen=frozenset(at_newest))


__all__ = [
    "CHANGE_STREAMS",
    "ENTITY_STREAMS",
    "MAX_PAGES",
    "ChangeCursor",
    "Changes",
    "advance",
    "group_by_day",
    "poll_changes",
    "streams_of",
]
