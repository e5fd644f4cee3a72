"""Overlapping offset pages (`kommo_dagster.kommo.walks.overlap`): which page the walk asks for
next, and what it does when the range changes between two pages, against an in-memory list
ordered by id whose changes the test makes at chosen requests. The walk against the sandbox is
tested in test_tasks.py and test_walks.py."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from kommo_dagster.kommo.errors import KommoConsistencyError, KommoResponseError
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.kommo.walks.overlap import STEP_BACK_SLACK, OverlapWalk, page_at

LIMIT = 250


def test_the_next_page_overlaps_the_last_and_reaches_past_it():
    for end in [*range(1, 3000), 250 * 249, 10**6, 250 * 249 * 248 * 247]:
        page, size = page_at(end, limit=LIMIT)
        offset = (page - 1) * size
        assert offset <= end - 1, f"it starts on or before the last row read ({end})"
        assert offset + size > end, f"it reaches further ({end})"
        # No choice reaches further, and the page stays large.
        best = max((end - 1) // s * s + s for s in range(1, LIMIT + 1))
        assert offset + size == best and size >= LIMIT // 2, end


def test_a_long_walk_costs_few_more_pages_than_plain_pages():
    end, pages = LIMIT, 1
    while end < 10_000:
        page, size = page_at(end, limit=LIMIT)
        end, pages = page * size, pages + 1
    assert pages <= 10_000 // LIMIT + 3, pages


def test_a_step_back_asks_for_an_overlap_of_at_least_need():
    for end, need in [(500, 2), (500, 40), (747, 300), (1000, 999)]:
        page, size = page_at(end, limit=LIMIT, need=need)
        assert (page - 1) * size <= end - need
    assert page_at(500, limit=LIMIT, need=500) == (1, LIMIT), "back to the first page"


def test_a_page_that_cannot_overlap_and_reach_further_is_refused():
    # Pages of one or two rows: from row 2 on, no page 1 or 2 rows long starts at or before
    # row 1 (counted from 0) and ends past row 2.
    with pytest.raises(ValueError, match="no page of at most 2 rows overlaps offset 2"):
        page_at(2, limit=2)


# --- the walk against a list that changes between pages -----------------------------------------


class _IdOrdered:
    """Tasks ordered by id, filtered on updated_at, paged at any limit like Kommo;
    ``before(n)`` runs before the n-th request (from 1) and may change ``tasks``."""

    def __init__(self, ids: list[int], before: Callable[[int], None] = lambda n: None) -> None:
        self.tasks = {i: 100 for i in ids}
        self.before = before
        self.requests = 0
        self.asked: list[tuple[int, int]] = []

    def get(self, path: str, params: list[tuple[str, object]]) -> Response:
        self.requests += 1
        self.before(self.requests)
        q = dict(params)
        lo, hi = q["filter[updated_at][from]"], q["filter[updated_at][to]"]
        limit, page = int(q["limit"]), int(q["page"])
        self.asked.append((page, limit))
        rows = [{"id": i, "updated_at": t} for i, t in sorted(self.tasks.items()) if lo <= t <= hi]
        served = rows[(page - 1) * limit : page * limit]
        if not served:
            return Response(body=None, server_time=None)
        links = {"next": {"href": "more"}} if len(rows) > page * limit else {}
        body = {"_embedded": {"tasks": served}, "_links": links}
        return Response(body=orjson.dumps(body), server_time=None)


def _walk(server: _IdOrdered) -> tuple[OverlapWalk, list[int]]:
    """Run a walk of updated_at in [0, 1000] to its end; the walk and the ids it yielded."""
    walk = OverlapWalk(
        stream=get_stream("tasks"),
        transport=server,  # type: ignore[arg-type]
        lo=0,
        hi=1000,
        kind="pages",
        order=(("order[id]", "asc"),),
    )
    got: list[int] = []
    while (job := walk.next_job()) is not None:
        got += [r["id"] for r in walk.on_result(job, job.run())]
    return walk, got


def test_an_unchanged_range_is_read_in_pages_that_each_overlap_the_last():
    server = _IdOrdered(list(range(1, 1001)))
    walk, got = _walk(server)
    assert set(got) == set(range(1, 1001)) and walk.pages.step_backs == 0
    assert server.asked == [(1, 250), (2, 249), (3, 248), (4, 247), (5, 246)]
    ends = [p * s for p, s in server.asked]
    offsets = [(p - 1) * s for p, s in server.asked]
    assert all(o < e for o, e in zip(offsets[1:], ends, strict=False)), "each overlaps the last"
    assert len(got) - 1000 == sum(e - o for o, e in zip(offsets[1:], ends, strict=False))
    # Never split: a walk taking over later pages could not overlap this one's.
    assert walk.split() is None


def test_a_departure_below_the_next_page_makes_it_step_back_and_lose_none():
    # Two tasks of the first page leave before the second request: the second page, one row
    # of overlap, now starts a row above the first page's last task (250). The walk asks
    # again with four rows of overlap, which also take in a third task leaving meanwhile.
    server = _IdOrdered(list(range(1, 1001)))

    def before(n: int) -> None:
        if n == 2:
            del server.tasks[3], server.tasks[4]
        if n == 3:
            server.tasks[7] = 5000  # leaves the range to a later updated_at

    server.before = before
    walk, got = _walk(server)
    assert server.asked[:3] == [(1, 250), (2, 249), (2, 246)]
    assert walk.pages.step_backs == 1
    assert set(range(1, 1001)) - {3, 4, 7} <= set(got)


def test_a_page_that_comes_back_empty_past_the_first_steps_back():
    # 300 tasks: the second page asks for rows 249 on; 60 of the first leave before it.
    server = _IdOrdered(list(range(1, 301)))

    def before(n: int) -> None:
        if n == 2:
            for i in range(1, 61):
                del server.tasks[i]

    server.before = before
    walk, got = _walk(server)
    # Rows 249 and 246 on are gone, rows 234 on hold tasks 295 on; row 186 holds task 247.
    assert server.asked == [(1, 250), (2, 249), (2, 246), (2, 234), (2, 186)]
    assert walk.pages.step_backs == 3 and set(range(61, 301)) <= set(got)


def test_an_arrival_below_the_next_page_repeats_rows_and_loses_none():
    server = _IdOrdered(list(range(10, 1010)))

    def before(n: int) -> None:
        if n == 2:
            server.tasks[1] = 100

    server.before = before
    walk, got = _walk(server)
    assert walk.pages.step_backs == 0 and set(range(10, 1010)) <= set(got)


def test_a_range_that_keeps_leaving_below_the_pages_fails_clearly():
    server = _IdOrdered(list(range(1, 5001)))

    def before(n: int) -> None:
        # Before every request the lowest tasks still there leave, more each time.
        for i in sorted(server.tasks)[: 10 * n]:
            del server.tasks[i]

    server.before = before
    with pytest.raises(KommoConsistencyError, match="kept leaving the range"):
        _walk(server)
    # Two pages joined (the first, and the first again after four steps back), and one step
    # back more than those two and the slack allow.
    assert server.requests == 2 + (2 + STEP_BACK_SLACK + 1)


def test_a_server_that_does_not_honour_the_limit_fails_clearly():
    server = _IdOrdered(list(range(1, 1001)))
    send = server.get

    def get(path: str, params: list[tuple[str, object]]) -> Response:
        # Like Kommo given a limit it does not accept: its default of 50 rows.
        return send(path, [(k, 50 if k == "limit" else v) for k, v in params])

    server.get = get  # type: ignore[method-assign]
    with pytest.raises(
        KommoResponseError, match=r"served 50 tasks updated between .* on a page of limit 250"
    ):
        _walk(server)


def test_a_page_not_ordered_by_id_fails_clearly():
    server = _IdOrdered([1, 2, 3])
    send = server.get

    def get(path: str, params: list[tuple[str, object]]) -> Response:
        resp = send(path, params)
        body = orjson.loads(resp.body or b"{}")
        body["_embedded"]["tasks"].reverse()
        return Response(body=orjson.dumps(body), server_time=None)

    server.get = get  # type: ignore[method-assign]
    with pytest.raises(KommoResponseError, match="not ordered by id"):
        _walk(server)
