"""Offset paging of one filter range (events, notes, calls), newest first where the API is,
split by cursor range when a window is large."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from kommo_dagster.kommo.transport import Response
from kommo_dagster.kommo.walks.base import (
    MIN_SPLIT_PAGES,
    Job,
    Walk,
    cursor_values,
    log,
    rows_per_second,
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
class PagesWalk(Walk):
    """Offset paging of one filter range, one page at a time.

    Events (``newest_first``): in a window that lies in the past a split hands the pages from
    ``first_page`` on to a new walk of the same query and this one stops before them
    (``last_page``); in a window that reaches now, a split raises ``lo`` and hands the older
    part to another walk, and this one stops once its pages pass below ``lo``. Tasks: ordered
    by id, never split (a new filter range would invalidate the offsets).
    """

    cursor: str = "updated_at"
    order: tuple[tuple[str, str], ...] = ()
    newest_first: bool = False
    # The filter range of the query; fixed for the walk's life so offsets stay meaningful.
    query_lo: int = 0
    query_hi: int = 0
    page: int = 1
    dedupe: bool = False
    seen: set = field(default_factory=set)
    oldest_seen: int | None = None
    newest_seen: int | None = None
    monotone: bool = True
    # A probe reads one page only and notes whether there was more.
    probe_only: bool = False
    probe_full: bool = False
    rows_seen: int = 0
    # The last page this walk reads, when a split handed the pages after it to another walk.
    last_page: int | None = None
    # The server's clock at the last answer (Unix seconds), to tell a window in the past.
    server_now: int | None = None
    # The newest row of the first page, for a walk that starts after a split by page.
    top: int | None = None
    # The pages the query has shown to hold, shared with the walks split from this one.
    shown: ShownPages = field(default_factory=ShownPages)

    def __post_init__(self) -> None:
        self.query_lo, self.query_hi = self.lo, self.hi

    def remaining_seconds(self) -> int:
        if self.done:
            return 0
        if self.newest_first:
            top = self.hi if self.oldest_seen is None else self.oldest_seen
            return max(0, top - self.lo + 1)
        return max(0, self.hi - self.lo + 1) if self.page == 1 else 0

    def next_job(self) -> Job | None:
        if self.done:
            return None
        params = [
            *self.base,
            (f"filter[{self.cursor}][from]", self.query_lo),
            (f"filter[{self.cursor}][to]", self.query_hi),
            *self.order,
            ("limit", self.limit),
            ("page", self.page),
        ]
        return self._get(params)

    def covered_seconds(self) -> int:
        """Newest first: from the top of this walk's pages (the window's top, or the newest row
        of its first page after a split by page) down to the oldest row it met, or to ``lo``
        once it has read its last page."""
        if not self.newest_first or self.oldest_seen is None:
            return super().covered_seconds()
        top = self.hi if self.top is None else self.top
        bottom = self.lo if self.done and self.last_page is None else self.oldest_seen
        return max(0, top - bottom + 1)

    def remaining_pages(self) -> float:
        pages = super().remaining_pages()
        if self.last_page is None:
            return pages
        return min(pages, float(self.last_page - self.page + 1))

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        self.requests += 1
        if isinstance(result, Response) and result.server_time is not None:
            self.server_now = result.server_time
        records, has_next = self.decode(self.stream, result)
        if not records:
            self.done = True
            return []
        self.shown.pages = max(self.shown.pages, self.page + 1 if has_next else self.page)
        cursors = cursor_values(self.stream, records, self.cursor)
        lo, hi = self.lo, self.hi
        if self.dedupe:
            seen = self.seen
            out = []
            for r, c in zip(records, cursors, strict=True):
                if lo <= c <= hi and r["id"] not in seen:
                    seen.add(r["id"])
                    out.append(r)
        elif lo == self.query_lo:
            out = records
        else:
            out = [r for r, c in zip(records, cursors, strict=True) if lo <= c <= hi]
        full = len(records) >= self.limit and has_next
        if self.newest_first:
            if any(a < b for a, b in itertools.pairwise(cursors)):
                if self.monotone:
                    log.warning("%s are not newest first; paging to the end", self.stream.name)
                self.monotone = False
            oldest = min(cursors)
            if self.page > 1 and self.newest_seen is None:
                self.top = max(cursors)
            self.newest_seen = max(self.newest_seen or 0, *cursors)
            self.oldest_seen = oldest if self.oldest_seen is None else min(oldest, self.oldest_seen)
            self.rows_seen += len(records)
            self.density = rows_per_second(
                self.rows_seen, self.oldest_seen, min(self.hi, self.newest_seen)
            )
            if self.monotone and self.oldest_seen < lo:
                full = False
        if full and not self.probe_only and self.page != self.last_page:
            self.page += 1
        else:
            self.done = True
        self.rows += len(out)
        self.probe_full = full
        return out

    def split(self, *, cut: bool = True) -> Walk | None:
        if not self.newest_first or not self.monotone or self.done or self.oldest_seen is None:
            return None
        if self.remaining_pages() < MIN_SPLIT_PAGES:
            return None
        if self._in_the_past():
            return self._split_pages()
        if not cut:
            return None
        # Events come newest first: keep the page in flight (and a half) below what was seen.
        keep = max((self.oldest_seen - self.lo) // 2, seconds_for(1.5, self))
        mid = self.oldest_seen - keep
        if mid <= self.lo:
            return None
        new = self._sibling(lo=self.lo, hi=mid)
        self.lo = mid + 1
        return new

    def _sibling(self, *, lo: int, hi: int, **state: Any) -> PagesWalk:
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
            density=self.density,
            **state,
        )

    def _in_the_past(self) -> bool:
        """Whether the query's window ended well before the server's clock (`SETTLED`): no
        event enters it any more, so its pages keep their rows and a split by page is exact."""
        return self.server_now is not None and self.query_hi < self.server_now - SETTLED

    def _last_page(self, first_free: int) -> int:
        """The last page this walk may share: its own last page once the query has shown it
        holds that many, else a guess, and a first page past the query's end costs a request
        for nothing. Kommo says nothing of how events spread over a window: a busy hour at its
        top can hold several times the window's mean, a quiet day at its bottom a third of it.
        So the guess counts on half the pages the density so far promises, and on at most
        twice the pages the query has shown (a galloping search): the new walk starts a
        quarter of the promise, and at most half again the pages known to exist, past where
        this one stands. It stays a guess: a density read off a page that a bulk edit's
        crowded second fills can still promise several times what lies below."""
        if self.last_page is not None and self.last_page <= self.shown.pages:
            return self.last_page
        end = min(first_free - 1 + int(self.remaining_pages() / 2), 2 * self.shown.pages)
        return end if self.last_page is None else min(end, self.last_page)

    def _split_pages(self) -> PagesWalk | None:
        """Hand the second half of the pages left to a new walk of the same query: every page
        is read once, by one walk, and none is cut short."""
        first_free = self.page + 1 if self.inflight else self.page
        end = self._last_page(first_free)
        first = first_free + (end - first_free + 1) // 2
        if first <= first_free or first > end:
            return None
        new = self._sibling(
            lo=self.query_lo,
            hi=self.query_hi,
            page=first,
            last_page=self.last_page,
            server_now=self.server_now,
            shown=self.shown,
        )
        self.last_page = first - 1
        return new


def even_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive sub-ranges of [lo, hi] of (nearly) equal width."""
    parts = max(1, min(parts, hi - lo + 1))
    starts = [lo + (hi - lo + 1) * k // parts for k in range(parts)]
    ends = [s - 1 for s in starts[1:]] + [hi]
    return list(zip(starts, ends, strict=True))


__all__ = [
    "PagesWalk",
    "ShownPages",
    "even_bounds",
]
