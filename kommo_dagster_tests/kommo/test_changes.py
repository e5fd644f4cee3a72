"""The change poll's reading of the events list: what the sensor's cursor is made of."""

from __future__ import annotations

import pytest

from kommo_dagster.kommo.changes import ChangeCursor, poll_changes
from kommo_dagster.kommo.errors import KommoResponseError


class _Fake:
    """A client answering each GET with the next body."""

    def __init__(self, answers: list) -> None:
        self.answers = answers

    def get(self, path, params=(), *, what=None):
        return self.answers.pop(0)


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
        poll_changes(_Fake([body]), ChangeCursor(since=0))


def test_events_newer_than_the_cursor_move_it_to_their_second():
    old, new = {"id": "a", "created_at": 5}, {"id": "b", "created_at": 9, "entity_type": "lead"}
    changes = poll_changes(_Fake([_page(new, old)]), ChangeCursor(since=5, seen=frozenset("a")))
    assert changes.events == [new]
    assert changes.cursor == ChangeCursor(since=9, seen=frozenset({"b"}))
    assert changes.streams == {"events", "leads"}
    assert poll_changes(_Fake([{"_embedded": []}]), ChangeCursor(since=5)).events == []
