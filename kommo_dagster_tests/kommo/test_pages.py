"""The one reading of a list page's shape (`kommo.pages.page_of`), as its two callers see it:
the same odd bodies through the walks' `records_of` (strict) and the change poll (lenient)."""

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
WALKS_NO_LIST = "^Kommo's events response has no list at _embedded.events$"
POLL_NO_LIST = "^Kommo's events response has no list at _embedded.events: "

# body; the walks' (ids, has_next) or error; the poll's (ids, requests) or error.
SHAPES = [
    ({}, ([], False), ([], 1)),
    ({"_embedded": None}, ([], False), ([], 1)),
    ({"_embedded": None, "_links": NEXT}, ([], False), ([], 1)),
    ({"_embedded": {}}, ([], False), ([], 1)),
    ({"_embedded": {}, "_links": NEXT}, ([], True), ([], 1)),
    # Falsy or list-valued _embedded: the walks refuse it, the poll reads an empty page or the
    # list itself as the events.
    ({"_embedded": []}, WALKS_NO_LIST, ([], 1)),
    ({"_embedded": ""}, WALKS_NO_LIST, ([], 1)),
    ({"_embedded": 0}, WALKS_NO_LIST, ([], 1)),
    ({"_embedded": [EVENT]}, WALKS_NO_LIST, (["a"], 1)),
    ({"_embedded": "x"}, WALKS_NO_LIST, POLL_NO_LIST + re.escape("'x'")),
    # A null list: the walks refuse it, the poll reads an empty page.
    ({"_embedded": {"events": None}}, WALKS_NO_LIST, ([], 1)),
    ({"_embedded": {"events": {"id": 1}}}, WALKS_NO_LIST, POLL_NO_LIST + re.escape("{'id': 1}")),
    ({"_embedded": {"events": "x"}}, WALKS_NO_LIST, POLL_NO_LIST + re.escape("'x'")),
    ({"_embedded": {"events": []}, "_links": NEXT}, ([], True), ([], 1)),
    ({"_embedded": {"events": [EVENT]}}, (["a"], False), (["a"], 1)),
    ({"_embedded": {"events": [EVENT]}, "_links": NEXT}, (["a"], True), (["a"], 2)),
    ({"_embedded": {"events": [EVENT]}, "_links": {"next": None}}, (["a"], False), (["a"], 1)),
    ({"_embedded": {"events": [EVENT]}, "_links": []}, (["a"], False), (["a"], 1)),
    ({"_embedded": {"events": []}, "_links": "x"}, ([], False), ([], 1)),
    # A page of events whose _links is no object: the walks read no next page; the poll fails
    # (before page_of, with a bare AttributeError), since stopping could leave events unread.
    (
        {"_embedded": {"events": [EVENT]}, "_links": "x"},
        (["a"], False),
        "^Kommo's events response has no object at _links: 'x'$",
    ),
]


def _walks(body: dict) -> tuple[list, bool]:
    records, has_next = records_of(
        get_stream("events"), Response(body=orjson.dumps(body), server_time=None)
    )
    return [r["id"] for r in records], has_next


def _poll(body: dict) -> tuple[list, int]:
    # A next page, when asked for, is a 204: the poll's request count tells it was.
    changes = poll_changes(Answering([body, None]), ChangeCursor(since=0))
    return [e["id"] for e in changes.events], changes.requests


@pytest.mark.parametrize(("body", "walks", "poll"), SHAPES, ids=[repr(s[0]) for s in SHAPES])
def test_each_caller_reads_an_odd_page_as_it_did(body, walks, poll):
    for read, expected in ((_walks, walks), (_poll, poll)):
        if isinstance(expected, str):
            with pytest.raises(KommoResponseError, match=expected):
                read(body)
        else:
            assert read(body) == expected
