"""`CrowdedSecond`: the steps of reading one second by id, page by page, without a server (the
walks against the sandbox are in test_walks.py)."""

from __future__ import annotations

import orjson
import pytest

from kommo_dagster.kommo.decoding import typed_records_of
from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.kommo.walks.crowded import CrowdedSecond

SECOND = 1_793_491_199
LEADS = get_stream("leads")


def rows(ids: range | list[int], second: int = SECOND) -> list[dict]:
    return [{"id": i, "updated_at": second} for i in ids]


def crowd(ids: set[int] | None = None, *, limit: int = 3) -> CrowdedSecond:
    return CrowdedSecond(stream=LEADS, second=SECOND, ids=ids or set(), limit=limit)


def page(crowded: CrowdedSecond) -> dict:
    return dict(crowded.query())


def test_a_short_first_page_held_the_whole_second():
    crowded = crowd()
    assert page(crowded) == {
        "filter[updated_at][from]": SECOND,
        "filter[updated_at][to]": SECOND,
        "order[id]": "asc",
        "limit": 3,
        "page": 1,
    }
    assert crowded.advance(rows([1, 2]), has_next=False) == "done"


def test_first_pages_from_both_ends_that_overlap_hold_every_record():
    crowded = crowd()
    page(crowded)
    assert crowded.advance(rows([1, 2, 3]), has_next=True) == "more"
    assert page(crowded) == {**page(crowd()), "order[id]": "desc"}
    assert crowded.advance(rows([5, 4, 3]), has_next=True) == "done"


def test_a_short_descending_page_held_the_whole_second():
    """Records left the second between the two first pages: what is left fits one page."""
    crowded = crowd()
    page(crowded)
    crowded.advance(rows([1, 2, 3]), has_next=True)
    page(crowded)
    assert crowded.advance(rows([9, 8]), has_next=False) == "done"


def test_a_second_of_over_two_pages_is_paged_in_overlapping_pages_up_to_the_descending_one():
    crowded = crowd(limit=4)
    page(crowded)
    crowded.advance(rows([1, 2, 3, 4]), has_next=True)
    page(crowded)
    assert crowded.advance(rows([40, 30, 20, 15]), has_next=True) == "more"
    # Each page starts on or before the last row read (offset (page - 1) * limit) and reaches
    # furthest: offsets 3, 4, 6 and 8 after 4, 6, 8 and 9 rows.
    asked = []
    for ids in ([4, 5, 6], [5, 6, 7, 8], [7, 8, 9]):
        asked.append((page(crowded)["page"], page(crowded)["limit"]))
        assert crowded.advance(rows(ids), has_next=True) == "more"
    assert asked == [(2, 3), (2, 4), (3, 3)]
    assert page(crowded) == {**page(crowd(limit=4)), "limit": 4, "page": 3}
    # A page reaching the descending page's lowest id ends the second: every record that
    # stayed with an id up to it was on an overlapping page, the rest on the descending one.
    assert crowded.advance(rows([9, 12, 14, 15]), has_next=True) == "done"


def test_an_offset_page_that_starts_past_the_last_id_read_steps_back():
    """A record left the second below the next offset: the page after starts one record too
    late, which its lowest id shows; the next page reaches further back instead of going on."""
    crowded = crowd()
    page(crowded)
    crowded.advance(rows([1, 2, 3]), has_next=True)
    page(crowded)
    crowded.advance(rows([30, 20, 10]), has_next=True)
    first = page(crowded)
    assert (first["page"], first["limit"]) == (2, 2), "offset 2: the last row read and one more"
    # Record 2 left: the page that should start at 3 starts at 4.
    assert crowded.advance(rows([4, 5]), has_next=True) == "more"
    again = page(crowded)
    assert (again["page"], again["limit"]) == (1, 3), "back over four times the rows it missed"
    assert crowded.pages.step_backs == 1


def test_records_already_yielded_are_dropped_and_the_rest_counted_as_yielded():
    crowded = crowd({2})
    assert crowded.new_records(rows([1, 2, 3])) == rows([1, 3])
    assert crowded.ids == {1, 2, 3}
    assert crowded.new_records(rows([1, 3])) == []


def test_a_record_of_another_second_is_refused():
    crowded = crowd()
    outside = f"leads record outside the requested second {SECOND}: "
    with pytest.raises(KommoResponseError, match=f"{outside}record 1 has updated_at {SECOND - 1}$"):
        crowded.new_records(rows([1], SECOND - 1))
    assert crowded.ids == set()
    # A record without the cursor says so rather than showing None as its value.
    with pytest.raises(KommoResponseError, match=f"{outside}record 2 has no updated_at$"):
        crowded.new_records([{"id": 2}])


def test_a_typed_record_of_another_second_is_refused_naming_it():
    """The tables' walks hand in typed records (`typed_records_of`), which are no mappings:
    the refusal names the record and its value for them too, not a bare KeyError."""
    body = {"_embedded": {"leads": [{"id": 1, "updated_at": SECOND - 1}]}, "_links": {}}
    resp = Response(body=orjson.dumps(body), server_time=None)
    records, _ = typed_records_of(LEADS, resp)
    assert not isinstance(records[0], dict)
    outside = f"leads record outside the requested second {SECOND}: "
    with pytest.raises(KommoResponseError, match=f"{outside}record 1 has updated_at {SECOND - 1}$"):
        crowd().new_records(records)
