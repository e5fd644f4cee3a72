"""Keyset walks (leads, contacts, companies and their notes): a walk from one end of a `Gap` on
the cursor, which reads a crowded second by id as a `CrowdedSecond` (see the package
docstring)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.walks.base import (
    MIN_SPLIT_PAGES,
    Density,
    Job,
    Walk,
    cursor_values,
    record_ids,
    seconds_for,
)
from kommo_dagster.kommo.walks.crowded import CrowdedSecond

# A page whose last second holds this share of it or more goes on with that second by id.
CROWD_SHARE = 0.2
# Cut a gap two walks share only when it holds at least this many pages: the cut makes one more
# place where walks meet, which costs a partial page, to keep more requests in flight.
MIN_CUT_PAGES = 8.0


@dataclass(eq=False, kw_only=True)
class Gap:
    """The part ``[lo, hi]`` of one list's window that no walk has read yet, and the ids
    already yielded of its end seconds. An ascending walk reads it from ``lo``, a descending
    one from ``hi``; two walks on one gap meet wherever its rows happen to lie, so they share
    its work without cutting it (a cut costs a partial page at each new end). Only the
    coordinator thread touches it."""

    lo: int
    hi: int
    lo_ids: set = field(default_factory=set)
    hi_ids: set = field(default_factory=set)
    # The walks reading it from below and from above (None when that end has none).
    up: KeysetWalk | None = None
    down: KeysetWalk | None = None

    @property
    def closed(self) -> bool:
        return self.lo > self.hi

    def seconds(self) -> int:
        return max(0, self.hi - self.lo + 1)

    def seen(self, second: int) -> set:
        """The ids of ``second`` already yielded, when it is one of the gap's ends."""
        ids = self.lo_ids if second == self.lo else set()
        return ids | self.hi_ids if second == self.hi else ids

    def close(self) -> None:
        self.lo, self.lo_ids, self.hi_ids = self.hi + 1, set(), set()

    def advance(self, *, descending: bool, last: int, ids: set) -> None:
        """A full page ended at second ``last`` with ``ids`` of it: all before it (after it,
        descending) has been read."""
        if descending:
            self.hi, self.hi_ids = last, ids
        else:
            self.lo, self.lo_ids = last, ids

    def take(self, *, descending: bool, second: int) -> set:
        """Take the crowded second a walk's page was full of out of the gap (the walk reads it
        by id); returns its ids already yielded."""
        seen = self.seen(second)
        if descending:
            self.hi, self.hi_ids = second - 1, set()
        else:
            self.lo, self.lo_ids = second + 1, set()
        return seen


@dataclass(eq=False, kw_only=True)
class KeysetWalk(Walk):
    """Leads, contacts, companies: keyset on updated_at from one end of a `Gap` (see the
    module docstring). ``lo`` and ``hi`` are the span this walk has read, for the stats."""

    cursor: str = "updated_at"
    gap: Gap | None = None
    descending: bool = False
    # The crowded second being read by id, None while the walk pages its gap.
    crowded: CrowdedSecond | None = None
    # The rows of the pages that moved this walk's end of the gap, and the seconds they span.
    counted: Density = field(default_factory=Density, init=False)

    def __post_init__(self) -> None:
        if self.gap is None:
            self.gap = Gap(lo=self.lo, hi=self.hi)
        if self.descending:
            self.gap.down, self.lo = self, self.hi
        else:
            self.gap.up, self.hi = self, self.lo

    def own_density(self) -> float | None:
        return self.counted.density()

    @property
    def sized(self) -> bool:
        # A walk reading a crowded second by id has no estimate to give until it is back.
        return self.density is not None or self.crowded is not None

    @property
    def partner(self) -> KeysetWalk | None:
        """The walk reading this one's gap from the other end."""
        assert self.gap is not None
        return self.gap.up if self.descending else self.gap.down

    def remaining_seconds(self) -> int:
        assert self.gap is not None
        return 0 if self.done else self.gap.seconds()

    def next_job(self) -> Job | None:
        if self.done:
            return None
        if self.crowded is not None:
            return self._get([*self.base, *self.crowded.query()])
        g = self.gap
        assert g is not None
        if g.closed:
            self.done = True
            return None
        if self._leaves_the_rest_to_partner():
            return None
        return self._get(
            [
                *self.base,
                (f"filter[{self.cursor}][from]", g.lo),
                (f"filter[{self.cursor}][to]", g.hi),
                (f"order[{self.cursor}]", "desc" if self.descending else "asc"),
                ("limit", self.limit),
                ("page", 1),
            ]
        )

    def _leaves_the_rest_to_partner(self) -> bool:
        """Whether the gap likely holds at most two pages while the partner's page is in
        flight: then the walks take turns, since pages from both ends at once would read the
        rows between them twice, and that could cost a request."""
        partner = self.partner
        if partner is None or not partner.inflight or partner.crowded is not None:
            return False
        density = self.density or partner.density
        assert self.gap is not None
        return density is not None and density * self.gap.seconds() <= 2 * self.limit

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        self.requests += 1
        records, has_next = self.decode(self.stream, result)
        if self.crowded is not None:
            return self._on_second_page(self.crowded, records, has_next)
        return self._on_walk_page(records, has_next)

    def _on_walk_page(self, records: list[dict[str, Any]], has_next: bool) -> list[dict[str, Any]]:
        """A page of the gap from this walk's end. Records the other end (or a crowded
        second) took meanwhile are dropped; a short page, or one reaching past the other
        end, leaves nothing unread."""
        g = self.gap
        assert g is not None
        if g.closed or not records:
            self._close()
            return []
        cursors = cursor_values(self.stream, records, self.cursor)
        page_ids = record_ids(self.stream, records)
        self._check_order(cursors, page_ids)
        lo, hi, lo_ids, hi_ids = g.lo, g.hi, g.lo_ids, g.hi_ids
        out = [
            r
            for r, c, i in zip(records, cursors, page_ids, strict=True)
            if lo <= c <= hi and not (c == lo and i in lo_ids) and not (c == hi and i in hi_ids)
        ]
        full = len(records) >= self.limit and has_next
        last = cursors[-1]
        if not full or (last < lo if self.descending else last > hi):
            self._close()
        elif cursors[0] == last:
            # A page full of one second: read that second on its own, by id.
            self._start_second(last, set(page_ids))
        else:
            # Checked in order: the page's first and last cursors bound it.
            self.counted.add(len(records), cursors[0], last)
            ids = {i for i, c in zip(page_ids, cursors, strict=True) if c == last}
            g.advance(descending=self.descending, last=last, ids=ids)
            if len(ids) >= self.limit * CROWD_SHARE:
                # The page ends inside a second this busy: it is likely crowded, and reading it
                # by id now spares the page that would only show it is.
                self._start_second(last, ids)
        self._reached(max(lo, min(hi, last)))
        self.rows += len(out)
        return out

    def _check_order(self, cursors: list[int], ids: list[Any]) -> None:
        """Fail on the first record out of the order asked for, naming it and both cursors."""
        for (a, b), i in zip(itertools.pairwise(cursors), ids[1:], strict=True):
            if (a < b) if self.descending else (a > b):
                order = "desc" if self.descending else "asc"
                raise KommoResponseError(
                    f"Kommo returned {self.stream.name} out of {self.cursor} order for "
                    f"order[{self.cursor}]={order}: record {i!r} has {self.cursor} {b} after "
                    f"{a}; the keyset walk relies on it"
                )

    def _reached(self, second: int) -> None:
        if self.descending:
            self.lo = min(self.lo, second)
        else:
            self.hi = max(self.hi, second)

    def _close(self) -> None:
        """Nothing of the gap is left unread: this walk, and an idle partner, are done."""
        assert self.gap is not None
        self.gap.close()
        self.done = True
        partner = self.partner
        if partner is not None and partner.crowded is None and not partner.inflight:
            partner.done = True

    def _start_second(self, second: int, ids: set) -> None:
        """Take ``second`` out of the gap and read it by id (``ids``: those a page yielded)."""
        assert self.gap is not None
        seen = self.gap.take(descending=self.descending, second=second)
        self.crowded = CrowdedSecond(
            stream=self.stream, second=second, ids=ids | seen, limit=self.limit, cursor=self.cursor
        )

    def _on_second_page(
        self, crowded: CrowdedSecond, records: list[dict[str, Any]], has_next: bool
    ) -> list[dict[str, Any]]:
        """A page of the crowded second by id (see `CrowdedSecond`): its new records, then the
        next page or the gap again."""
        out = crowded.new_records(records)
        if crowded.advance(records, has_next=has_next) == "done":
            self._reached(crowded.second)
            self.crowded = None
            assert self.gap is not None
            if self.gap.closed:
                self.done = True
        self.rows += len(out)
        return out

    def split(self, *, cut: bool = True) -> Walk | None:
        """A new walk to share this one's work: a partner from the gap's other end when it has
        none (free: the two meet), else, with ``cut``, a cut of the gap in two (each part then
        ends somewhere, which costs a partial page)."""
        g = self.gap
        assert g is not None
        if self.done or g.closed:
            return None
        partner = self.partner
        if partner is None or partner.done:
            # While this walk reads a crowded second by id, its end of the gap waits: a
            # partner reads the gap meanwhile, however little is known of it.
            if self.crowded is None and self.remaining_pages() < MIN_SPLIT_PAGES:
                return None
            return self._walk_of(g, descending=not self.descending)
        if not cut or self.remaining_pages() < MIN_CUT_PAGES:
            return None
        return self._cut(g)

    def _cut(self, g: Gap) -> KeysetWalk | None:
        """Cut the gap in the middle: the walk from below keeps the lower half and gets a new
        partner from its top; the walk from above keeps the upper half. The pages in flight
        (and a half) stay on their own side of the cut."""
        up, down = g.up, g.down
        assert up is not None and down is not None
        keep = seconds_for(1.5, self)
        if g.hi - g.lo + 1 < 2 * keep + 2:
            return None
        mid = (g.lo + g.hi) // 2
        upper = Gap(lo=mid + 1, hi=g.hi, hi_ids=g.hi_ids, down=down)
        down.gap = upper
        g.hi, g.hi_ids, g.down = mid, set(), None
        return self._walk_of(g, descending=True)

    def _walk_of(self, gap: Gap, *, descending: bool) -> KeysetWalk:
        return KeysetWalk(
            stream=self.stream,
            transport=self.transport,
            decode=self.decode,
            lo=gap.lo,
            hi=gap.hi,
            kind=self.kind,
            base=self.base,
            cursor=self.cursor,
            prior_density=self.density,
            gap=gap,
            descending=descending,
        )


__all__ = ["Gap", "KeysetWalk"]
