"""Offset pages that overlap, for a list Kommo filters on one field but orders only by id
(tasks): each page is asked to start on or before the last record of the page before it, and
shows by its ids that it did, so no record that stayed in the range can slip between two pages.

Kommo serves page ``p`` at limit ``s`` from offset ``(p - 1) * s``, and takes any limit from 1
to 250, so a walk that has read the range up to offset ``end`` can ask for a page starting at or
before ``end - 1`` and reaching further than ``end``: it picks the limit that reaches furthest
(`page_at`). A page is a contiguous run of the range's ids as they are when it is served. So if
its lowest id is at most the highest id of the pages before it (``top``), every record with an
id up to its highest that is in the range both then and for the whole walk was on one of the
pages; a short page reached the end. A record that left the range below the page's offset since
the last page shifts the rest down: the page may then start above ``top``, and the walk steps
back (a lower offset, four times the overlap that failed, down to the first page, which always
holds the lowest ids) instead of going on. A record arriving below only pushes the rest up: rows
repeat, and the strategy drops a repeat by (id, updated_at).

A walk is never split: the page a second walk would start at overlaps this one's only once this
one's page before it has come back. The window is cut into parts up front instead.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from kommo_dagster.kommo.errors import KommoConsistencyError, KommoResponseError
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.kommo.walks.base import Job, Walk, cursor_values, log

# Step-backs a walk may take beyond one for each page it moved on by: an account that keeps
# opening gaps faster than that changes faster than it can be read.
STEP_BACK_SLACK = 4


def page_at(end: int, *, limit: int, need: int = 1) -> tuple[int, int]:
    """The (page, limit) whose offset is at most ``end - need`` and whose last row
    (offset + limit) lies furthest, limits up to ``limit``; a tie keeps the larger limit (more
    overlap). Page 1 at ``limit`` when ``need`` reaches back to the first row.

    With ``need`` 1 it reaches past ``end`` unless every limit up to ``limit`` divides ``end``:
    for Kommo's 250 that takes a multiple of lcm(1..250), a number of over a hundred digits.
    Raises ValueError when it cannot (a limit under 3 can)."""
    last = end - need
    if last <= 0:
        return 1, limit
    page, size = max(
        ((last // s + 1, s) for s in range(limit, 0, -1)), key=lambda ps: ps[0] * ps[1]
    )
    if need == 1 and page * size <= end:
        raise ValueError(f"no page of at most {limit} rows overlaps offset {end} and reaches past")
    return page, size


def ascending_ids(stream: Stream, records: list[dict[str, Any]]) -> list[int]:
    """The ids of a page, which must ascend: the overlap proof rests on the order by id."""
    ids = cursor_values(stream, records, "id")
    if any(a >= b for a, b in itertools.pairwise(ids)):
        raise KommoResponseError(f"Kommo's {stream.name} page is not ordered by id: {ids[:5]!r}")
    return ids


@dataclass(eq=False, kw_only=True)
class OverlapPages:
    """Where the next overlapping page of one range starts, and whether each page that came
    back joined the ones before it. A walk over a range ordered by id (`OverlapWalk`, and the
    offset pages of a crowded second) asks `next_page` and hands each page's ids to `take`.
    ``what`` names the range in errors ("tasks updated between ... and ...")."""

    limit: int
    what: str
    # The offset past the last page that overlapped, as the range stood when it was served.
    end: int = field(default=0, init=False)
    # The highest id of the pages that overlapped: every record that stayed in the range with an
    # id up to it was on one of them.
    top: int | None = field(default=None, init=False)
    # The rows the next page must reach back over: 1, more after a step back.
    need: int = field(default=1, init=False)
    moved_on: int = field(default=0, init=False)
    step_backs: int = field(default=0, init=False)
    asked: tuple[int, int] = field(default=(1, 0), init=False)

    def next_page(self) -> tuple[int, int]:
        """The (page, limit) to ask for next."""
        self.asked = page_at(self.end, limit=self.limit, need=self.need)
        return self.asked

    def take(self, ids: list[int], *, has_next: bool) -> Literal["on", "back", "end"]:
        """Take in the ascending ids of the page last asked for: it joined the ones before it
        and more may follow (``on``), it left a gap, so the next page reaches further back
        (``back``), or it joined them and reached the end of the range (``end``)."""
        page, size = self.asked
        offset = (page - 1) * size
        if len(ids) > size or (has_next and len(ids) < size):
            raise KommoResponseError(
                f"Kommo served {len(ids)} {self.what} on a page of limit {size}"
                f"{' and announced another' if has_next else ''}: the limit was not honoured"
            )
        if not self._overlaps(offset, ids):
            self._step_back(offset)
            return "back"
        if not ids:
            return "end"
        self.top = ids[-1] if self.top is None else max(self.top, ids[-1])
        self.end = offset + len(ids)
        self.need = 1
        self.moved_on += 1
        return "on" if has_next else "end"

    def _overlaps(self, offset: int, ids: list[int]) -> bool:
        """Whether a page joins the ones before it: the first page always does (an empty one
        says the range is empty); a later one if it starts at or below ``top``."""
        if not offset:
            return True
        return bool(ids) and self.top is not None and ids[0] <= self.top

    def _step_back(self, offset: int) -> None:
        """A gap may have opened (the page came back empty, or above ``top``): ask again for a
        page reaching back over four times the rows this one did, at most down to the first
        page; one departure takes one step back, a page of them a few."""
        self.step_backs += 1
        if self.step_backs > self.moved_on + STEP_BACK_SLACK:
            raise KommoConsistencyError(
                f"{self.what} kept leaving the range while it was paged "
                f"({self.step_backs} step-backs); retry later or use a smaller window"
            )
        self.need = 4 * (self.end - offset)
        log.info("%s: a page left a gap after the one before it; stepping back", self.what)


@dataclass(eq=False, kw_only=True)
class OverlapWalk(Walk):
    """One filter range ``[lo, hi]`` of ``cursor``, ordered by id, in overlapping offset pages."""

    cursor: str = "updated_at"
    order: tuple[tuple[str, str], ...] = ()
    pages: OverlapPages = field(init=False)

    def __post_init__(self) -> None:
        what = f"{self.stream.name} updated between {self.lo} and {self.hi}"
        self.pages = OverlapPages(limit=self.limit, what=what)

    def remaining_seconds(self) -> int:
        return max(0, self.hi - self.lo + 1) if not self.done and not self.requests else 0

    def next_job(self) -> Job | None:
        if self.done:
            return None
        page, size = self.pages.next_page()
        params = [
            *self.base,
            (f"filter[{self.cursor}][from]", self.lo),
            (f"filter[{self.cursor}][to]", self.hi),
            *self.order,
            ("limit", size),
            ("page", page),
        ]
        return self._get(params)

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        self.requests += 1
        records, has_next = self.decode(self.stream, result)
        ids = ascending_ids(self.stream, records)
        self.done = self.pages.take(ids, has_next=has_next) == "end"
        self.rows += len(records)
        return records


__all__ = ["STEP_BACK_SLACK", "OverlapPages", "OverlapWalk", "ascending_ids", "page_at"]
