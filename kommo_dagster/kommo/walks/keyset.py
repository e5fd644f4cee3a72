"""Keyset walks (leads, contacts, companies, tasks): a walk from one end of a `Gap` on the
cursor, and the closing checks of a crowded second, which the walk reads by id as a
`CrowdedSecond` (see the package docstring)."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.errors import KommoConsistencyError, KommoResponseError
from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.kommo.transport import Params, Response

if TYPE_CHECKING:
    from kommo_dagster.kommo.transport import Transport

from kommo_dagster.kommo.walks.base import (
    CLOCK_SLACK,
    MIN_SPLIT_PAGES,
    Job,
    Walk,
    cursor_values,
    log,
    records_of,
    seconds_for,
)
from kommo_dagster.kommo.walks.crowded import CrowdedSecond

# A page whose last second holds this share of it or more goes on with that second by id.
CROWD_SHARE = 0.2
# Cut a gap two walks share only when it holds at least this many pages: the cut makes one more
# place where walks meet, which costs a partial page, to keep more requests in flight.
MIN_CUT_PAGES = 8.0
# Upper bound of cursor values for "changed since" checks (any future time works: from/to).
FAR_FUTURE = 4_102_444_800  # 2100-01-01
# Pages a consistency check may read before it gives up and assumes the worst.
CHECK_MAX_PAGES = 8
# The same for a check's list of events (100 a page).
EVENTS_CHECK_MAX_PAGES = 20
# Ids per filter[id][] request: about 3 KB of query string, well under gateways' URL limits.
ID_CHUNK = 100


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
    max_rewalks: int = 3
    gap: Gap | None = None
    descending: bool = False
    # "walk" (pages of the gap), "second" (pages of a crowded second by id), "check" (the
    # closing check of a crowded second that needed offset pages).
    phase: str = "walk"
    # The crowded second being read: there exactly while the phase is not "walk".
    crowded: CrowdedSecond | None = None
    first_seen: int | None = None
    rows_seen: int = 0

    def __post_init__(self) -> None:
        if self.gap is None:
            self.gap = Gap(lo=self.lo, hi=self.hi)
        if self.descending:
            self.gap.down, self.lo = self, self.hi
        else:
            self.gap.up, self.hi = self, self.lo

    @property
    def sized(self) -> bool:
        # A walk reading a crowded second by id has no estimate to give until it is back.
        return self.density is not None or self.phase != "walk"

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
        if self.phase == "check":
            return self._check_job()
        if self.phase == "second":
            query = self._crowded().query(cursor=self.cursor, limit=self.limit)
            return self._get([*self.base, *query])
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
        if partner is None or not partner.inflight or partner.phase != "walk":
            return False
        density = self.density or partner.density
        assert self.gap is not None
        return density is not None and density * self.gap.seconds() <= 2 * self.limit

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        if job.kind == "check":
            return self._on_check(result)
        self.requests += 1
        records, has_next = self.decode(self.stream, result)
        if self.phase == "second":
            return self._on_second_page(records, has_next, result)
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
        self._check_order(cursors)
        lo, hi, lo_ids, hi_ids = g.lo, g.hi, g.lo_ids, g.hi_ids
        out = [
            r
            for r, c in zip(records, cursors, strict=True)
            if lo <= c <= hi
            and not (c == lo and r["id"] in lo_ids)
            and not (c == hi and r["id"] in hi_ids)
        ]
        full = len(records) >= self.limit and has_next
        last = cursors[-1]
        if not full or (last < lo if self.descending else last > hi):
            self._close()
        elif cursors[0] == last:
            # A page full of one second: read that second on its own, by id.
            self._start_second(last, {r["id"] for r in records})
        else:
            self._learn(len(records), cursors[0], last)
            ids = {r["id"] for r, c in zip(records, cursors, strict=True) if c == last}
            g.advance(descending=self.descending, last=last, ids=ids)
            if len(ids) >= self.limit * CROWD_SHARE:
                # The page ends inside a second this busy: it is likely crowded, and reading it
                # by id now spares the page that would only show it is.
                self._start_second(last, ids)
        self._reached(max(lo, min(hi, last)))
        self.rows += len(out)
        return out

    def _check_order(self, cursors: list[int]) -> None:
        if any((a < b) if self.descending else (a > b) for a, b in itertools.pairwise(cursors)):
            order = "desc" if self.descending else "asc"
            raise KommoResponseError(
                f"Kommo returned {self.stream.name} out of {self.cursor} order for "
                f"order[{self.cursor}]={order}; the keyset walk relies on it"
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
        if partner is not None and partner.phase == "walk" and not partner.inflight:
            partner.done = True

    def _start_second(self, second: int, ids: set) -> None:
        """Take ``second`` out of the gap and read it by id (``ids``: those a page yielded)."""
        assert self.gap is not None
        self.phase = "second"
        seen = self.gap.take(descending=self.descending, second=second)
        self.crowded = CrowdedSecond(second=second, ids=ids | seen)

    def _crowded(self) -> CrowdedSecond:
        """The crowded second being read (only asked for while there is one)."""
        assert self.crowded is not None
        return self.crowded

    def _learn(self, n: int, first: int, last: int) -> None:
        if self.first_seen is None:
            self.first_seen = first
        self.rows_seen += n
        self.density = self.rows_seen / (abs(last - self.first_seen) + 1)

    def _on_second_page(
        self, records: list[dict[str, Any]], has_next: bool, resp: Response
    ) -> list[dict[str, Any]]:
        """A page of the crowded second by id (see `CrowdedSecond`): its new records, then the
        next page, the gap again, or the closing check."""
        crowded = self._crowded()
        out = crowded.new_records(records, resp, cursor=self.cursor, stream=self.stream.name)
        full = len(records) >= self.limit and has_next
        step = crowded.advance([r.get("id") for r in records], full=full)
        if step == "done":
            self._second_done()
        elif step == "check":
            self.phase = "check"
        self.rows += len(out)
        return out

    def _second_done(self) -> None:
        """Back to the gap (taken out of it, the second is no walk's business any more)."""
        self.phase = "walk"
        self._reached(self._crowded().second)
        self.crowded = None
        assert self.gap is not None
        if self.gap.closed:
            self.done = True

    def _check_job(self) -> Job:
        crowded = self._crowded()
        second, ids = crowded.second, frozenset(crowded.walk_ids)
        since = crowded.since or int(time.time()) - CLOCK_SLACK
        stream, transport, kind = self.stream, self.transport, self.kind

        def run() -> tuple[bool, int]:
            return second_is_stable(
                stream=stream,
                transport=transport,
                second=second,
                ids=ids,
                since=since,
                deleted_list=kind == "deleted",
            )

        return Job(walk=self, run=run, kind="check")

    def _on_check(self, result: tuple[bool, int]) -> list[dict[str, Any]]:
        """The closing check's answer: back to the gap when nothing the walk of the second met
        changed meanwhile, else walk the second again (a bounded number of times)."""
        stable, requests = result
        self.requests += requests
        if stable:
            self._second_done()
            return []
        crowded = self._crowded()
        crowded.rewalks += 1
        if crowded.rewalks > self.max_rewalks:
            raise KommoConsistencyError(
                f"{self.stream.name}: the {self.limit}+ records updated at {crowded.second} kept "
                f"changing during {crowded.rewalks} walks of that second; retry later"
            )
        log.info(
            "%s: records of second %d changed while it was paged; walking it again",
            self.stream.name,
            crowded.second,
        )
        self.phase = "second"
        crowded.restart()
        return []

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
            if self.phase == "walk" and self.remaining_pages() < MIN_SPLIT_PAGES:
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
            max_rewalks=self.max_rewalks,
            density=self.density,
            gap=gap,
            descending=descending,
        )


def second_is_stable(
    *,
    stream: Stream,
    transport: Transport,
    second: int,
    ids: frozenset,
    since: int,
    deleted_list: bool = False,
) -> tuple[bool, int]:
    """False if a record of ``ids`` (seen in second ``second`` of the live list, or of the
    deleted list when ``deleted_list``) changed, or moved to the other list, since ``since``:
    then offset paging inside the second may have skipped a record. Also returns the number of
    requests made.

    Any change to a record leaves an event stamped since ``since``, whatever updated_at the
    change carried. For a server whose changes leave no event: a record changed at the time of
    the change carries ``updated_at >= since`` in whichever list it is now, and one that moved
    between the lists without a new ``updated_at`` (deleted, or restored, in place) is found in
    the other list at ``second``; the walk's own list at ``second`` holds exactly the records it
    saw, so it is never the one asked.
    """
    only_deleted = (("with", "only_deleted"),)
    checks: list[Callable[[], tuple[bool, int]]] = [
        # Events first, so that changes made after the walk, while the check runs, weigh least.
        lambda: _has_events(stream=stream, transport=transport, ids=ids, since=since),
        lambda: _updated_since(stream=stream, transport=transport, ids=ids, since=since),
    ]
    if stream.has_deleted_list:
        other_list = () if deleted_list else only_deleted
        checks += [
            lambda: _updated_since(
                stream=stream, transport=transport, ids=ids, since=since, base=only_deleted
            ),
            lambda: _moved_in_place(
                stream=stream, transport=transport, second=second, ids=ids, other_list=other_list
            ),
        ]
    requests = 0
    for check in checks:
        changed, more = check()
        requests += more
        if changed:
            return False, requests
    return True, requests


def _has_events(
    *, stream: Stream, transport: Transport, ids: frozenset, since: int
) -> tuple[bool, int]:
    """Whether a record of ``ids`` has an event since ``since`` (or there were too many to
    tell); requests made."""
    if stream.event_entity is None:
        return False, 0
    changed, requests = events_since(transport=transport, entity=stream.event_entity, since=since)
    return changed is None or not ids.isdisjoint(changed), requests


def _updated_since(
    *, stream: Stream, transport: Transport, ids: frozenset, since: int, base: Params = ()
) -> tuple[bool, int]:
    """Whether a record of ``ids`` carries ``updated_at >= since`` in the list ``base`` asks
    for (or there were too many to tell); requests made."""
    query = (
        *base,
        ("filter[updated_at][from]", since),
        ("filter[updated_at][to]", FAR_FUTURE),
        ("order[id]", "asc"),
    )
    found, requests = list_since(
        stream=stream, transport=transport, query=query, max_pages=CHECK_MAX_PAGES
    )
    return found is None or any(r.get("id") in ids for r in found), requests


def list_since(
    *, stream: Stream, transport: Transport, query: Params, max_pages: int
) -> tuple[list[dict[str, Any]] | None, int]:
    """Every record of ``stream`` the filter ``query`` matches, read in pages, and the requests
    made; None instead of the records when there were more than ``max_pages`` pages."""
    limit = stream.page_size or 250
    found: list[dict[str, Any]] = []
    for page in range(1, max_pages + 1):
        resp = transport.get(stream.path, [*query, ("limit", limit), ("page", page)])
        records, has_next = records_of(stream, resp)
        found += records
        if len(records) < limit or not has_next:
            return found, page
    return None, max_pages


def events_since(
    *, transport: Transport, entity: str, since: int
) -> tuple[Counter[Any] | None, int]:
    """How many events each record of ``entity`` (``lead``, ``task``...) has had since ``since``
    on the server clock, and the requests made; None instead of the counts when there were more
    than `EVENTS_CHECK_MAX_PAGES` pages. Kommo stamps every event with its own current time, so
    this finds every record changed or deleted since then, whatever updated_at the change
    carried."""
    query = (
        ("filter[entity][]", entity),
        ("filter[created_at][from]", since),
        ("filter[created_at][to]", FAR_FUTURE),
    )
    events, requests = list_since(
        stream=get_stream("events"),
        transport=transport,
        query=query,
        max_pages=EVENTS_CHECK_MAX_PAGES,
    )
    if events is None:
        return None, requests
    return Counter(e.get("entity_id") for e in events), requests


def _moved_in_place(
    *,
    stream: Stream,
    transport: Transport,
    second: int,
    ids: frozenset,
    other_list: tuple[tuple[str, str], ...],
) -> tuple[bool, int]:
    """Whether a record of ``ids`` now stands in the other list at ``second``; requests made.

    Exact, and as cheap as the two ways of asking allow: page the other list's records of that
    second while that costs fewer requests than asking for ``ids`` themselves (``filter[id][]``,
    `ID_CHUNK` at a time, short enough for any URL limit), then switch to asking for ``ids``.
    """
    limit = stream.page_size or 250
    by_id_cost = math.ceil(len(ids) / ID_CHUNK)
    query = (*other_list, ("filter[updated_at][from]", second), ("filter[updated_at][to]", second))
    requests = 0
    page = 1
    while True:
        resp = transport.get(
            stream.path, [*query, ("order[id]", "asc"), ("limit", limit), ("page", page)]
        )
        requests += 1
        records, has_next = records_of(stream, resp)
        if any(r.get("id") in ids for r in records):
            return True, requests
        if len(records) < limit or not has_next:
            return False, requests
        if page >= by_id_cost:
            break
        page += 1
    ordered = sorted(ids)
    for i in range(0, len(ordered), ID_CHUNK):
        chunk = ordered[i : i + ID_CHUNK]
        resp = transport.get(
            stream.path, [*other_list, *(("filter[id][]", v) for v in chunk), ("limit", limit)]
        )
        requests += 1
        if records_of(stream, resp)[0]:
            return True, requests
    return False, requests


__all__ = [
    "Gap",
    "KeysetWalk",
    "events_since",
    "list_since",
    "second_is_stable",
]
