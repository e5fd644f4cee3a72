"""The one reading of a list page's shape (`kommo.pages.page_of`), as its two callers see it:
the same odd bodies through the walks' `records_of` and the change poll give the same records,
the same next page, or the same error."""

from __future__ import annotations

import re

import orjson
import pytest

from kommo_dagster.kommo.changes import ChangeCursor, poll_changes
from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.kommo.walks.base import records_of
from kommo_dagster_tests.kommo.conftest import Answering

EVENT = {"id": "a", "created_at": 5}
NEXT = {"next": {"href": "more"}}


def no_list(value: object) -> str:
    return "^" + re.escape(f"Kommo's events response has no list at _embedded.events: {value!r}")


# body; (ids, has_next) or the error both callers raise.
SHAPES = [
    ({}, ([], False)),
    ({"_embedded": None}, ([], False)),
    ({"_embedded": None, "_links": NEXT}, ([], False)),
    ({"_embedded": []}, ([], False)),  # PHP's empty array
    ({"_embedded": {}}, ([], False)),
    ({"_embedded": {}, "_links": NEXT}, ([], True)),
    ({"_embedded": {"events": None}}, ([], False)),
    ({"_embedded": ""}, no_list("")),
    ({"_embedded": 0}, no_list(0)),
    ({"_embedded": "x"}, no_list("x")),
    ({"_embedded": [EVENT]}, no_list([EVENT])),
    ({"_embedded": {"events": {"id": 1}}}, no_list({"id": 1})),
    ({"_embedded": {"events": "x"}}, no_list("x")),
    ({"_embedded": {"events": []}, "_links": NEXT}, ([], True)),
    ({"_embedded": {"events": [EVENT]}}, (["a"], False)),
    ({"_embedded": {"events": [EVENT]}, "_links": NEXT}, (["a"], True)),
    ({"_embedded": {"events": [EVENT]}, "_links": {"next": None}}, (["a"], False)),
    ({"_embedded": {"events": [EVENT]}, "_links": []}, (["a"], False)),
    ({"_embedded": {"events": []}, "_links": "x"}, ([], False)),
    # A page of records whose _links is no object may have a next page nobody can tell of.
    (
        {"_embedded": {"events": [EVENT]}, "_links": "x"},
        "^Kommo's events response has no object at _links: 'x'$",
    ),
]


def _walks(body: dict) -> tuple[list, bool]:
    records, has_next = records_of(
        get_stream("events"), Response(body=orjson.dumps(body), server_time=None)
    )
    return [r["id"] for r in records], has_next


def _poll(body: dict) -> tuple[list, bool]:
    # A next page, when asked for, is a 204: a second request tells the poll saw one.
    changes = poll_changes(Answering([body, None]), ChangeCursor(since=0))
    return [e["id"] for e in changes.events], changes.requests == 2


@pytest.mark.parametrize(("body", "expected"), SHAPES, ids=[repr(s[0]) for s in SHAPES])
def test_both_callers_read_an_odd_page_alike(body, expected):
    for read in (_walks, _poll):
        if isinstance(expected, str):
            with pytest.raises(KommoResponseError, match=expected):
                read(body)
        elif read is _poll:
            # The poll stops at a page without events, whatever it announces.
            ids, has_next = expected
            assert read(body) == (ids, has_next and bool(ids))
        else:
            assert read(body) == expected
