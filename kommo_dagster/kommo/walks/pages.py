"""Offset paging of one filter range (events, notes, calls), newest first where the API is,
split by cursor range when a window is large."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.walks.base import (
    MIN_SPLIT_PAGES,
    Density,
    Job,
    Walk,
    cursor_values,
    log,
    record_ids,
    seconds_for,
)

# Seconds after which a window of events is taken as settled: events are stamped with the
# server's time as they are written, and this leaves room for one written a little late.
SETTLED = 600


@dataclass(eq=False)
class ShownPages:
    """How many pages a query has shown to hold (a page that came back with rows, and the one
    its ``next`` link announced), shared by the walks that split its pages between them."""

    pages: int = 0


@dataclass(eq=False, kw_only=True)
class QueryPages:
    """The pages of one offset-paged query that a walk reads.

    The query's filter range ``[lo, hi]`` stays fixed for the life of every walk reading its
    pages, as a page number means the same rows only while the query does. ``page`` is the next
    page to ask and ``last`` the last one this walk reads (None: until a page says there is no
    more); a split by page hands the pages after ``last`` to a new walk of the same query, and
    the two share ``shown``.
    """

    lo: int
    hi: int
    page: int = 1
    last: int | None = None
    shown: ShownPages = field(default_factory=ShownPages)

    def settled(self, server_now: int | None) -> bool:
        """Whether the query's range ended well before the server's clock (`SETTLED`): no event
        enters it any more, so its pages keep their rows and a split by page is exact."""
        return server_now is not None and self.hi < server_now - SETTLED

    def show(self, *, has_next: bool) -> None:
        """Count the current page, which came back with rows, and the next one if announced."""
        self.shown.pages = max(self.shown.pages, self.page + 1 if has_next else self.page)

    def advance(self) -> bool:
        """Move on to the next page; False when the current one is this walk's last."""
        if self.page == self.last:
            return False
        self.page += 1
        return True

    def left(self, pages: float) -> float:
        """``pages``, what a walk's density promises it has left, held to the pages it has left
        to read when a split gave the later ones to another walk."""
        if self.last is None:
            return pages
        return min(pages, float(self.last - self.page + 1))

    def last_to_share(self, first_free: int, pages_left: float) -> int:
        """The last page this walk may share: its own last page once the query has shown it
        holds that many, else a guess, and a first page past the query's end costs a request
        for nothing. Kommo says nothing of how events spread over a window: a busy hour at its
        top can hold several times the window's mean, a quiet day at its bottom a third of it.
        So the guess counts on half the pages the density so far promises (``pages_left``),
        and on at most twice the pages the query has shown (a galloping search): the new walk
        starts a quarter of the promise, and at most half again the pages known to exist, past
        where this one stands. It stays a guess: a density read off a page that a bulk edit's
        crowded second fills can still promise several times what lies below."""
        if self.last is not None and self.last <= self.shown.pages:
            return self.last
        end = min(first_free - 1 + int(pages_left / 2), 2 * self.shown.pages)
        return end if self.last is None else min(end, self.last)

    def hand_over(self, *, inflight: bool, pages_left: float) -> QueryPages | None:
        """The second half of the pages left (the page in flight stays here), for a new walk
        of the same query, and this walk's pages end before them: every page is read once, by
        one walk, and none is cut short. None when there is no page to hand over."""
        first_free = self.page + 1 if inflight else self.page
        end = self.last_to_share(first_free, pages_left)
        first = first_free + (end - first_free + 1) // 2
        if first <= first_free or first > end:
            return None
        handed = QueryPages(lo=self.lo, hi=self.hi, page=first, last=self.last, shown=self.shown)
        self.last = first - 1
        return handed


@dataclass(eq=False)
class RowsMet(Density):
    """What a newest-first walk has met of its query's rows, page after page: how many, the
    oldest and newest cursor (`Density`), and whether they all came newest first (out of order,
    the walk cannot tell where it stands and pages to the end). ``top`` is the newest row of the
    first page of a walk that starts after a split by page, where its share of the window
    begins."""

    top: int | None = None
    monotone: bool = True

    def meet(self, cursors: list[int], *, later_page: bool) -> None:
        """Take in the cursors of a page (not empty, in the order served); ``later_page``
        when it is not the query's first."""
        if any(a < b for a, b in itertools.pairwise(cursors)):
            self.monotone = False
        if later_page and self.newest is None:
            self.top = max(cursors)
        self.add(len(cursors), min(cursors), max(cursors))


@dataclass(eq=False, kw_only=True)
class PagesWalk(Walk):
    """Offset paging of one filter range, one page at a time.

    Events (``newest_first``): in a window that lies in the past a split hands the later pages
    of the same query to a new walk and this one stops before them (`QueryPages.hand_over`); in
    a window that reaches now, a split raises ``lo`` and hands the older part to another walk,
    and this one stops once its pages pass below ``lo`` (`RowsMet`). The tasks probe
    (``probe_only``): the first page of a window, and whether there is more; the tasks
    themselves are read in overlapping pages (`walks.overlap`).
    """

    cursor: str = "updated_at"
    order: tuple[tuple[str, str], ...] = ()
    newest_first: bool = False
    # Drop a row whose id this walk has yielded already.
    dedupe: bool = False
    # A probe reads one page only and notes whether there was more (`probe_full`).
    probe_only: bool = False
    pages: QueryPages = field(init=False)
    met: RowsMet = field(default_factory=RowsMet, init=False)
    # The ids yielded so far, where repeats are dropped.
    seen: set[Any] = field(default_factory=set, init=False)
    # The server's clock at the last answer (Unix seconds), to tell a window in the past.
    server_now: int | None = field(default=None, init=False)
    # Whether the last page was full and announced another: for a probe, that there is more.
    probe_full: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.pages = QueryPages(lo=self.lo, hi=self.hi)

    def own_density(self) -> float | None:
        # Held to ``hi``: rows met above it are not this walk's and would thin it out.
        return self.met.density(self.hi)

    def remaining_seconds(self) -> int:
        if self.done:
            return 0
        if self.newest_first:
            top = self.hi if self.met.oldest is None else self.met.oldest
            return max(0, top - self.lo + 1)
        return max(0, self.hi - self.lo + 1) if self.pages.page == 1 else 0

    def next_job(self) -> Job | None:
        if self.done:
            return None
        params = [
            *self.base,
            (f"filter[{self.cursor}][from]", self.pages.lo),
            (f"filter[{self.cursor}][to]", self.pages.hi),
            *self.order,
            ("limit", self.limit),
            ("page", self.pages.page),
        ]
        return self._get(params)

    def covered_seconds(self) -> int:
        """Newest first: from the top of this walk's pages (the window's top, or the newest row
        of its first page after a split by page) down to the oldest row it met, or to ``lo``
        once it has read its last page."""
        met = self.met
        if not self.newest_first or met.oldest is None:
            return super().covered_seconds()
        top = self.hi if met.top is None else met.top
        bottom = self.lo if self.done and self.pages.last is None else met.oldest
        return max(0, top - bottom + 1)

    def remaining_pages(self) -> float:
        return self.pages.left(super().remaining_pages())

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        self.requests += 1
        if isinstance(result, Response) and result.server_time is not None:
            self.server_now = result.server_time
        records, has_next = self.decode(self.stream, result)
        if not records:
            self.done = True
            return []
        self.pages.show(has_next=has_next)
        cursors = cursor_values(self.stream, records, self.cursor)
        out = self._kept(records, cursors, record_ids(self.stream, records))
        full = len(records) >= self.limit and has_next
        if self.newest_first and self._meet(cursors):
            full = False
        if not (full and not self.probe_only and self.pages.advance()):
            self.done = True
        self.rows += len(out)
        self.probe_full = full
        return out

    def _kept(
        self, records: list[dict[str, Any]], cursors: list[int], ids: list[Any]
    ) -> list[dict[str, Any]]:
        """The rows of a page this walk yields: those inside its bounds (a split by time may
        have raised ``lo`` above the query's), each id once where repeats are dropped."""
        lo, hi = self.lo, self.hi
        if self.dedupe:
            seen = self.seen
            out = []
            for r, c, i in zip(records, cursors, ids, strict=True):
                if lo <= c <= hi and i not in seen:
                    seen.add(i)
                    out.append(r)
            return out
        if lo == self.pages.lo:
            return records
        return [r for r, c in zip(records, cursors, strict=True) if lo <= c <= hi]

    def _meet(self, cursors: list[int]) -> bool:
        """Take in a newest-first page and the density it tells; True once the pages, in
        order, have passed below ``lo``: what lies below is another walk's since a split."""
        met = self.met
        monotone = met.monotone
        met.meet(cursors, later_page=self.pages.page > 1)
        if monotone and not met.monotone:
            log.warning("%s are not newest first; paging to the end", self.stream.name)
        return met.monotone and met.oldest is not None and met.oldest < self.lo

    def split(self, *, cut: bool = True) -> Walk | None:
        met = self.met
        if not self.newest_first or not met.monotone or self.done or met.oldest is None:
            return None
        if self.remaining_pages() < MIN_SPLIT_PAGES:
            return None
        if self.pages.settled(self.server_now):
            return self._split_pages()
        if not cut:
            return None
        # Events come newest first: keep the page in flight (and a half) below what was seen.
        keep = max((met.oldest - self.lo) // 2, seconds_for(1.5, self))
        mid = met.oldest - keep
        if mid <= self.lo:
            return None
        new = self._sibling(lo=self.lo, hi=mid)
        self.lo = mid + 1
        return new

    def _sibling(self, *, lo: int, hi: int) -> PagesWalk:
        """A new newest-first walk of ``[lo, hi]`` with this one's stream and settings."""
        return PagesWalk(
            stream=self.stream,
            transport=self.transport,
            decode=self.decode,
            lo=lo,
            hi=hi,
            kind=self.kind,
            base=self.base,
            cursor=self.cursor,
            order=self.order,
            newest_first=True,
            dedupe=self.dedupe,
            prior_density=self.density,
        )

    def _split_pages(self) -> PagesWalk | None:
        """A new walk of the same query reading the second half of the pages left. It keeps to
        this walk's bounds, not the query's: a split by time before the window settled may have
        raised ``lo``, and what lies below is another walk's."""
        handed = self.pages.hand_over(inflight=self.inflight, pages_left=self.remaining_pages())
        if handed is None:
            return None
        new = self._sibling(lo=self.lo, hi=self.hi)
        new.server_now = self.server_now
        new.pages = handed
        return new


def even_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive sub-ranges of [lo, hi] of (nearly) equal width."""
    parts = max(1, min(parts, hi - lo + 1))
    starts = [lo + (hi - lo + 1) * k // parts for k in range(parts)]
    ends = [s - 1 for s in starts[1:]] + [hi]
    return list(zip(starts, ends, strict=True))


__all__ = [
    "PagesWalk",
    "QueryPages",
    "RowsMet",
    "ShownPages",
    "even_bounds",
]
