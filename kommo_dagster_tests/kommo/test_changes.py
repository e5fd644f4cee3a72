"""The change poll's reading of the events list: what the sensor's cursor is made of."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest

from kommo_dagster.kommo.changes import CHANGE_STREAMS, ChangeCursor, poll_changes, streams_of
from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.sandbox import ChurnConfig, KommoSandbox
from kommo_dagster_tests.kommo.conftest import Answering


def _page(*events: object) -> dict:
    return {"_embedded": {"events": list(events)}}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_page({"type": "lead_added", "created_at": 5}), r"without an id: \{'type': 'lead_added'"),
        (_page({"id": None, "created_at": 5}), r"without an id: \{'id': None"),
        (_page("x"), r"without an id: 'x'"),
        (
            _page({"id": "01a", "created_at": None}),
            r"event '01a' has a non-integer created_at: None",
        ),
        (_page({"id": "01a", "created_at": "soon"}), r"non-integer created_at: 'soon'"),
        ({"_embedded": {"events": {"id": 1}}}, r"no list at _embedded.events: \{'id': 1\}"),
    ],
)
def test_an_event_the_cursor_cannot_be_made_of_names_its_value(body, named):
    with pytest.raises(KommoResponseError, match=named):
        poll_changes(Answering([body]), ChangeCursor(since=0))


def test_events_newer_than_the_cursor_move_it_to_their_second():
    old, new = {"id": "a", "created_at": 5}, {"id": "b", "created_at": 9, "entity_type": "lead"}
    changes = poll_changes(Answering([_page(new, old)]), ChangeCursor(since=5, seen=frozenset("a")))
    assert changes.events == [new]
    assert changes.cursor == ChangeCursor(since=9, seen=frozenset({"b"}))
    assert changes.streams == {"events", "leads"}
    assert poll_changes(Answering([{"_embedded": []}]), ChangeCursor(since=5)).events == []


def _linked(*events: object) -> dict:
    return _page(*events) | {"_links": {"next": {"href": "more"}}}


def test_a_poll_stopped_at_its_cap_marks_every_day_it_left_unread():
    newest = {"id": "n", "created_at": 3 * DAY + 50, "entity_type": "task"}
    oldest_read = {"id": "o", "created_at": 2 * DAY + 10, "entity_type": "lead"}
    client = Answering(
        [_linked(newest), _linked(oldest_read), _linked({"id": "x", "created_at": 0})]
    )
    changes = poll_changes(client, ChangeCursor(since=5), max_pages=2)
    assert changes.requests == 2 and client.answers  # the third page is never asked for
    assert changes.capped
    # Unread events lie between the cursor and the oldest event read: days 0 to 2.
    assert changes.unread == (_date(0), _date(2 * DAY))
    assert changes.streams_by_day == {
        _date(0): CHANGE_STREAMS,
        _date(DAY): CHANGE_STREAMS,
        _date(2 * DAY): CHANGE_STREAMS,
        _date(3 * DAY): frozenset({"events", "tasks"}),
    }
    assert changes.cursor == ChangeCursor(since=3 * DAY + 50, seen=frozenset({"n"}))
    # A poll that reaches the last page within its cap is not capped.
    assert not poll_changes(Answering([_linked(newest), _page()]), ChangeCursor(since=5)).capped
    with pytest.raises(ValueError, match="max_pages must be at least 1"):
        poll_changes(Answering([]), ChangeCursor(since=5), max_pages=0)


def test_capped_polls_over_the_sandbox_lose_no_change(sandbox_factory, client_for):
    """Successive polls reading one page each: every event of the account since the first
    cursor is either read by a poll or lies on a day a capped poll marked for every stream."""
    today = datetime.now(UTC).date()
    sandbox = sandbox_factory(
        leads=30, requests_per_second=None, start=today - timedelta(days=3), end=today
    )
    history = sandbox.records("events")
    cursor = ChangeCursor(since=min(e["created_at"] for e in history))
    polls = []
    client = client_for(sandbox)
    for burst in (0, 8, 0):  # history, then a burst of changes, then quiet
        _churn(sandbox, seconds=burst)
        polls.append(poll_changes(client, cursor, max_pages=1))
        cursor = polls[-1].cursor
    assert [p.capped for p in polls] == [True, True, False]
    read = [e["id"] for p in polls for e in p.events]
    assert len(read) == len(set(read))  # none is reported twice
    marked: dict[date, set[str]] = {}
    for poll in polls:
        for day, streams in poll.streams_by_day.items():
            marked.setdefault(day, set()).update(streams)
    truth = sandbox.records("events")
    assert len(truth) > len(history) + 100  # the burst alone is more than a page
    for event in truth:
        day = _date(event["created_at"])
        assert streams_of(event) <= marked.get(day, set()), event
        assert event["id"] in read or any(
            p.unread and p.unread[0] <= day <= p.unread[1] for p in polls
        ), event
    # Some events were left unread, and the cursor still ends on the newest one.
    assert len(read) < len(truth)
    assert cursor.since == max(e["created_at"] for e in truth)


DAY = 86_400


def _churn(sandbox: KommoSandbox, *, seconds: int) -> None:
    """One churn step (20 events) in each of ``seconds`` successive seconds from now."""
    now = int(time.time())
    for second in range(seconds):
        sandbox.update_config(churn=ChurnConfig(clock=lambda s=now + second: s))
        sandbox.churn_step()


def _date(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, tz=UTC).date()


@pytest.mark.parametrize("written", ["9", 9.0])
def test_an_event_whose_created_at_its_table_converts_moves_the_cursor(written):
    """The events table writes a numeric string or an integral float as that integer, and the
    poll read them so before it checked its events: it still does, rather than failing every
    tick of the sensor on an event its own asset writes."""
    event = {"id": "a", "created_at": written, "entity_type": "lead"}
    assert to_columns("events", [event])["created_at"] == [9]
    changes = poll_changes(Answering([_page(event)]), ChangeCursor(since=5))
    assert changes.cursor == ChangeCursor(since=9, seen=frozenset({"a"}))
    assert [e["created_at"] for e in changes.events] == [9]
    assert changes.streams == {"events", "leads"}
