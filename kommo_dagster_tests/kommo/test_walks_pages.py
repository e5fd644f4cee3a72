"""The bookkeeping of offset-paged walks (`kommo_dagster.kommo.walks.pages`): how a query's pages
are shared between walks, and what a newest-first walk learns from the rows it meets. The walks
themselves are tested against the sandbox in test_walks.py and test_client.py, but for a window
that settles while it is walked, which takes a server clock the test sets."""

from __future__ import annotations

import orjson
import pytest

from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.kommo.walks.base import Walk
from kommo_dagster.kommo.walks.pages import SETTLED, PagesWalk, QueryPages, RowsMet


def test_a_split_by_page_hands_over_the_second_half_of_the_pages_left():
    pages = QueryPages(lo=0, hi=99, page=3)
    pages.shown.pages = 40
    # Page 3 is in flight and stays; the density promises 20 more pages, of which the guess
    # counts on half: pages 4..13, and the second half of them goes.
    handed = pages.hand_over(inflight=True, pages_left=20.0)
    assert handed is not None
    assert (handed.lo, handed.hi, handed.page, handed.last) == (0, 99, 9, None)
    assert pages.last == 8 and handed.shown is pages.shown
    # Its own last page is known to exist now: the next split halves pages 3..8 exactly.
    assert pages.left(100.0) == 6.0
    again = pages.hand_over(inflight=False, pages_left=pages.left(100.0))
    assert again is not None and (again.page, again.last) == (6, 8)
    assert pages.last == 5


def test_the_guess_of_the_last_page_is_held_to_twice_the_pages_shown():
    pages = QueryPages(lo=0, hi=99)
    pages.show(has_next=True)
    assert pages.shown.pages == 2
    # A density promising a hundred pages hands over no page past the fourth.
    assert pages.last_to_share(2, 100.0) == 4
    handed = pages.hand_over(inflight=True, pages_left=100.0)
    assert handed is not None and (handed.page, handed.last, pages.last) == (3, None, 2)


def test_no_page_is_handed_over_when_none_is_left_to_share():
    pages = QueryPages(lo=0, hi=99, page=5, last=5)
    pages.shown.pages = 5
    assert pages.hand_over(inflight=True, pages_left=10.0) is None
    assert pages.last == 5, "nothing changed"
    assert not pages.advance() and pages.page == 5


def test_walks_of_one_query_count_the_pages_it_has_shown_together():
    pages = QueryPages(lo=0, hi=99, page=1)
    pages.shown.pages = 10
    handed = pages.hand_over(inflight=False, pages_left=8.0)
    assert handed is not None and handed.page == 3
    assert pages.advance() and pages.page == 2
    assert not pages.advance(), "page 2 is its last"
    handed.show(has_next=True)
    assert pages.shown.pages == 10, "a later page than shown raises it, an earlier one not"
    handed.page = 12
    handed.show(has_next=True)
    assert pages.shown.pages == 13


@pytest.mark.parametrize(
    ("server_now", "settled"),
    [(None, False), (1000 + SETTLED, False), (1001 + SETTLED, True)],
)
def test_a_query_is_settled_once_its_range_ended_well_before_the_servers_clock(server_now, settled):
    assert QueryPages(lo=0, hi=1000).settled(server_now) is settled


def test_rows_met_newest_first_give_the_bounds_and_density():
    met = RowsMet()
    met.meet([50, 40, 30], later_page=False)
    met.meet([30, 20], later_page=True)
    assert (met.count, met.oldest, met.newest, met.top, met.monotone) == (5, 20, 50, None, True)
    # Rows above ``hi`` (a split by time lowered it) do not thin the density out.
    assert met.density(45) == pytest.approx(5 / 26)
    assert met.density(100) == pytest.approx(5 / 31)


def test_a_page_out_of_order_is_noted_and_stays_noted():
    met = RowsMet()
    met.meet([10, 30], later_page=False)
    assert not met.monotone
    met.meet([9, 8], later_page=True)
    assert not met.monotone and (met.oldest, met.newest) == (8, 30)


def test_a_walk_starting_after_a_split_by_page_tops_out_at_its_first_row():
    met = RowsMet()
    met.meet([90, 80], later_page=True)
    met.meet([95, 70], later_page=True)
    assert met.top == 90, "the first page met sets it, once"


# --- a walk split by time, then by page ---------------------------------------------------------


class _EventsPages:
    """Events newest first, ``limit`` a page, with the Date its answers carry set by the test:
    the sandbox's clock is the machine's, and a window only settles ten minutes after its end."""

    def __init__(self, times: list[int]) -> None:
        self.events = [{"id": f"e{k}", "created_at": t} for k, t in enumerate(times)]
        self.now = 0
        self.requests = 0

    def get(self, path: str, params: list[tuple[str, object]]) -> Response:
        q = dict(params)
        lo, hi = q["filter[created_at][from]"], q["filter[created_at][to]"]
        limit, page = int(q["limit"]), int(q["page"])
        rows = sorted(
            (e for e in self.events if lo <= e["created_at"] <= hi),
            key=lambda e: -e["created_at"],
        )
        served = rows[(page - 1) * limit : page * limit]
        links = {"next": {"href": "more"}} if len(rows) > page * limit else {}
        self.requests += 1
        body = {"_embedded": {"events": served}, "_links": links}
        return Response(body=orjson.dumps(body), server_time=self.now)


def _run(walk: Walk) -> list[dict]:
    job = walk.next_job()
    assert job is not None
    return walk.on_result(job, job.run())


def test_a_walk_split_by_time_then_by_page_leaves_the_older_part_to_its_first_split():
    # One event every 10 s over 30,000 s: 30 pages. The window reaches now at first, so the
    # first split is by time; ten minutes later it has settled, and the next split is by page.
    hi = 29_999
    server = _EventsPages(list(range(5, hi, 10)))
    walk = PagesWalk(
        stream=get_stream("events"),
        transport=server,  # type: ignore[arg-type]
        lo=0,
        hi=hi,
        kind="pages",
        cursor="created_at",
        newest_first=True,
        dedupe=True,
    )
    server.now = hi
    got = _run(walk)
    older = walk.split()
    assert older is not None and older.hi < walk.lo, "split by time"
    server.now = hi + SETTLED + 1
    got += _run(walk)
    later = walk.split()
    assert later is not None, "split by page"
    walks = [walk, older, later]
    while not all(w.done for w in walks):
        for w in walks:
            if not w.done:
                got += _run(w)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)), "no event twice"
    assert set(ids) == {e["id"] for e in server.events}
    # Each page of the window once, and one more where the split by time cut it.
    assert server.requests <= 30 + 1, server.requests
