"""`CrowdedSecond`: the steps of reading one second by id, page by page, without a server (the
walks against the sandbox are in test_walks.py)."""

from __future__ import annotations

import pytest

from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.transport import Response
from kommo_dagster.kommo.walks.crowded import CrowdedSecond

SECOND = 1_793_491_199
ANSWER = Response(body=None, server_time=None)


def rows(ids: range | list[int], second: int = SECOND) -> list[dict]:
    return [{"id": i, "updated_at": second} for i in ids]


def page(crowded: CrowdedSecond) -> dict:
    return dict(crowded.query(cursor="updated_at", limit=3))


def test_a_short_first_page_held_the_whole_second():
    crowded = CrowdedSecond(second=SECOND, ids=set())
    assert page(crowded) == {
        "filter[updated_at][from]": SECOND,
        "filter[updated_at][to]": SECOND,
        "order[id]": "asc",
        "limit": 3,
        "page": 1,
    }
    assert crowded.advance([1, 2], full=False) == "done"


def test_first_pages_from_both_ends_that_overlap_hold_every_record():
    crowded = CrowdedSecond(second=SECOND, ids=set())
    assert crowded.advance([1, 2, 3], full=True) == "more"
    assert page(crowded)["order[id]"] == "desc" and page(crowded)["page"] == 1
    assert crowded.advance([5, 4, 3], full=True) == "done"
    assert crowded.walk_ids == {1, 2, 3, 4, 5}


def test_a_second_of_over_two_pages_is_offset_paged_up_to_the_descending_page_then_checked():
    crowded = CrowdedSecond(second=SECOND, ids=set())
    crowded.advance([1, 2, 3], full=True)
    assert crowded.advance([12, 11, 10], full=True) == "more"
    assert page(crowded)["order[id]"] == "asc" and page(crowded)["page"] == 2
    assert crowded.advance([4, 5, 6], full=True) == "more"
    assert page(crowded)["page"] == 3
    # This page reaches the descending page's lowest id: a departure may have shifted a record.
    assert crowded.advance([7, 8, 10], full=True) == "check"
    # So does a short offset page.
    crowded.restart()
    crowded.advance([1, 2, 3], full=True)
    crowded.advance([12, 11, 10], full=True)
    assert crowded.advance([4], full=False) == "check"


def test_records_already_yielded_are_dropped_and_the_rest_counted_as_yielded():
    crowded = CrowdedSecond(second=SECOND, ids={2})
    assert crowded.new_records(rows([1, 2, 3]), ANSWER, cursor="updated_at", stream="leads") == (
        rows([1, 3])
    )
    assert crowded.ids == {1, 2, 3} and crowded.since is not None
    assert crowded.new_records(rows([1, 3]), ANSWER, cursor="updated_at", stream="leads") == []


def test_a_record_of_another_second_is_refused():
    crowded = CrowdedSecond(second=SECOND, ids=set())
    with pytest.raises(KommoResponseError, match="leads record outside the requested second"):
        crowded.new_records(rows([1], SECOND - 1), ANSWER, cursor="updated_at", stream="leads")
    assert crowded.ids == set()


def test_a_new_walk_of_the_second_keeps_what_was_yielded_and_forgets_what_it_met():
    crowded = CrowdedSecond(second=SECOND, ids=set())
    crowded.new_records(rows([1, 2, 3]), ANSWER, cursor="updated_at", stream="leads")
    crowded.advance([1, 2, 3], full=True)
    started = crowded.started
    crowded.restart()
    assert crowded.ids == {1, 2, 3} and crowded.walk_ids == set()
    assert crowded.since is None and crowded.started >= started
    assert page(crowded)["order[id]"] == "asc" and page(crowded)["page"] == 1
