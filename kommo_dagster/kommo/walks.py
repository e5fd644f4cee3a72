"""How each incremental stream is paged so that no record is lost or repeated while the account
changes, and how a window is split so several requests can be in flight at once.

A *walk* covers one sub-window of cursor values ``[lo, hi]`` (Unix seconds, both inclusive) and
issues one request at a time, so the ordering arguments below hold inside it. The extraction
(`extraction.Extraction`) runs several walks at once, as the stream's `Strategy` starts them, and,
when a worker is idle, splits a walk's unwalked remainder off into a new walk. A walk drops
records outside its current bounds, so a record that a split moved to another walk is yielded
once, by that walk. Keyset walks share their sub-window, a `Gap`, with a second walk from its
other end, and a split first adds that second walk (which costs nothing) before it cuts a gap in
two (which costs a partial page where the new ends meet).

Guarantees, per stream. A record "stays" when its cursor is inside the window and it does not
change for the whole extraction. A change may carry any updated_at: Kommo sets it to the time of
the change (a deletion included), but an integration may set it explicitly, earlier than the
record had, on PATCH and POST of leads, contacts, companies and tasks. So a record can leave a
window or arrive in one, in the past too. What no change can do is go unrecorded: Kommo writes an
event for it, stamped with the server's own current time (`events_since`). The closing checks
below therefore ask "which of the records this walk met have events since it began", never
"which records carry a new updated_at". An arrival can only push records further along the
order, so it may repeat a row (dropped by id) but never skip one; only a departure can.

* leads, contacts, companies and their notes (`KeysetWalk`, chosen by the declaration's
  ``paging="keyset"``): the unread part of a list's window is a gap ``[L, H]``. A walk from
  below asks for ``L <= updated_at <= H`` ascending, a walk from above for the same range
  descending, never for an offset, so a record leaving the window (to any updated_at) cannot
  shift an unseen one past us. A full page ending at second ``F`` moves its end of the gap to
  ``F``; the records of ``F`` it held are skipped by id on the next pages from either end. A
  page that is short, or reaches past the other end of the gap, held all that was left of it
  (every record before its last second was on it): the gap is closed, and a page of the other
  walk still in flight yields only what lies inside the gap when it returns. So every record
  that stays is on a page that yields it, whichever end reaches it first, and none twice.
  When a page is full of one second ``T`` (or ends with `CROWD_SHARE` of it or more in ``T``,
  which likely goes on), that second leaves the gap and is read on its own (``from = to = T``)
  by id, skipping the ids already yielded: the first page ascending and the first page
  descending. If they overlap, every record that stayed in ``T`` was on one of them
  (one missing from both would lie above the first page's highest id and below the second's
  lowest), whatever arrived or left meanwhile. Only a second of over two pages is offset-paged;
  a record leaving ``T`` meanwhile could then shift another past a page boundary, but only if
  the walk had seen it, so a closing check (`second_is_stable`) looks for the second's records
  among the stream's events since the second's walk began, among the records changed or deleted
  since then (for a server whose changes leave no event), and among the other list's records
  of ``T`` (deleted or restored in place); the second is walked again if one it saw is there
  (bounded). The deleted list (``with=only_deleted``) is walked the same way, so deleted records
  arrive with is_deleted true. Notes have no deleted list and no events of their own: for them
  the check sees the notes edited since (at the server's time), not notes deleted or back-dated
  meanwhile, which matters only inside a second stamped on over two pages (500) of notes.

* tasks (`PagesWalk` by id, `kommo_dagster.kommo.tasks`): Kommo filters tasks on updated_at but
  orders them only by id. The window is cut into equal slices of time, each offset-paged by id.
  An update never moves a task within the id order; it only takes it out of a slice (to any
  updated_at) and a deletion removes it; either can shift an unseen task past a page boundary
  only if the walk had already seen the task that left. A slice read in one request is a
  consistent snapshot; for the others, one check reads the task events since the walk began
  and the tasks updated since then, and takes a seen task as departed unless its one change
  kept it inside its slice. Each slice that saw a departed task is walked again, cut into
  chunks of about 200 of the tasks it saw, so the new chunks are mostly single requests and the
  rounds end even while the account keeps changing. Changed tasks whose new version lies inside
  the window are yielded from the check itself.

* events (`PagesWalk`, newest first): events are immutable and only appended with
  created_at = now. In a window that lies in the past (it ended `SETTLED` seconds before the
  server's clock) the result never changes, so offset paging is exact, and a split hands the
  later pages of the same query to a new walk: each page is read once, by one walk. In a window
  that includes now, new events enter at the top and push rows down: rows can repeat on the next
  page but never skip one; such a window is split by time, each walk paging its own part from
  the top. Repeats are dropped by id in every window, so that even a server that inserts events
  among past ones cannot double a row.

In every stream each (id, cursor) is yielded at most once per extraction (and the write keeps one
row per key whatever it is handed), every record that stays is yielded, and a record that changed
during the extraction is yielded in the version(s) the walk met; its newest version lies in the
window of its change, earlier or later, which the next extraction of that window delivers.
"""

from __future__ import annotations

import itertools
import logging
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

log = logging.getLogger("kommo_dagster.kommo")

# Split a walk only when its estimated remainder is at least this many pages; the cut leaves the
# page in flight on the walk's side, so that page's rows are not fetched twice.
MIN_SPLIT_PAGES = 2.0
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
# Server clock slack for "since the walk began" (Date has one-second resolution).
CLOCK_SLACK = 2
# Seconds after which a window of events is taken as settled: events are stamped with the
# server's time as they are written, and this leaves room for one written a little late.
SETTLED = 600


@dataclass(kw_only=True)
class Job:
    """A unit of work for the pool: ``run()`` executes on a worker thread."""

    walk: Walk
    run: Callable[[], Any]
    kind: str = "page"  # "page" or "check"


def records_of(stream: Stream, resp: Response) -> tuple[list[Any], bool]:
    """The records in a list response and whether Kommo announced a next page."""
    data = resp.data
    if data is None:
        return [], False
    if stream.list_key is None:
        # The body is the one record (the account).
        if not isinstance(data, dict):
            raise KommoResponseError(f"Kommo's {stream.name} response is not a JSON object")
        return [data], False
    embedded = data.get("_embedded")
    if embedded is None:
        return [], False
    if not isinstance(embedded, dict) or not isinstance(embedded.get(stream.list_key, []), list):
        raise KommoResponseError(
            f"Kommo's {stream.name} response has no list at _embedded.{stream.list_key}"
        )
    records = embedded.get(stream.list_key) or []
    links = data.get("_links")
    has_next = isinstance(links, dict) and bool(links.get("next"))
    return records, has_next


# `records_of` or a decoder of the same shape (`kommo_dagster.kommo.decoding`).
Decoder = Callable[[Stream, Response], tuple[list[Any], bool]]


def _cursor_values(stream: Stream, records: list[dict[str, Any]], cursor: str) -> list[int]:
    try:
        values = [r[cursor] for r in records]
    except (KeyError, TypeError):
        raise KommoResponseError(f"a {stream.name} record has no {cursor}") from None
    for v in values:
        if type(v) is not int:
            raise KommoResponseError(f"a {stream.name} record has a non-integer {cursor}: {v!r}")
    return values


@dataclass(eq=False, kw_only=True)
class Walk:
    """One sub-window of one stream, walked one request at a time."""

    stream: Stream
    transport: Transport
    lo: int
    hi: int
    kind: str = "live"
    base: tuple[tuple[str, str | int], ...] = ()
    # How a page becomes records: dicts by default, typed records for column extractions.
    decode: Decoder = records_of
    requests: int = 0
    rows: int = 0
    done: bool = False
    inflight: bool = False
    # Rows per second of cursor seen so far (for split decisions and progress).
    density: float | None = None

    @property
    def limit(self) -> int:
        assert self.stream.page_size is not None
        return self.stream.page_size

    def next_job(self) -> Job | None:
        raise NotImplementedError

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def remaining_seconds(self) -> int:
        raise NotImplementedError

    def covered_seconds(self) -> int:
        return max(0, (self.hi - self.lo + 1) - self.remaining_seconds())

    def remaining_pages(self) -> float:
        if self.done or self.density is None:
            return 0.0
        return self.density * self.remaining_seconds() / self.limit

    @property
    def sized(self) -> bool:
        """Whether the walk has seen enough to estimate what it has left."""
        return self.density is not None

    def split(self, *, cut: bool = True) -> Walk | None:
        """A new walk taking part of this one's work, or None. Without ``cut``, only a split
        that costs no extra request."""
        return None

    def _get(self, params: Params) -> Job:
        path = self.stream.path

        def run() -> Response:
            return self.transport.get(path, params)

        return Job(walk=self, run=run)


def server_since(started: float, resp: Response) -> int:
    """The server-clock second a walk began in: the local start time ``started``, moved by the
    offset between the server's Date and our clock at this response, less `CLOCK_SLACK`. Taken
    from the start rather than the response, so a slow first answer leaves no gap."""
    now = time.time()
    offset = (resp.server_time - now) if resp.server_time is not None else 0.0
    return math.floor(started + offset) - CLOCK_SLACK


def _rate(rows: int, first: int, last: int) -> float:
    return rows / max(1, last - first + 1)


def _seconds_for(pages: float, walk: Walk) -> int:
    """Seconds of cursor that ``pages`` pages cover at the walk's density."""
    return math.ceil(pages * walk.limit / walk.density) if walk.density else 1


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
    # Paging inside one crowded second: "asc" (first page by id), "desc" (first page by id
    # descending), then, only for seconds of over two pages, "pages" (offset pages by id).
    phase: str = "walk"  # "walk", "second", "check"
    second: int = 0
    second_step: str = "asc"
    second_page: int = 1
    second_ids: set = field(default_factory=set)
    # Ids met by the current walk of the second (the ones whose departure could shift others).
    second_walk_ids: set = field(default_factory=set)
    second_asc_max: Any = None
    second_desc_min: Any = None
    second_since: int | None = None
    second_started: float = 0.0
    second_rewalks: int = 0
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
            desc = self.second_step == "desc"
            return self._get(
                [
                    *self.base,
                    (f"filter[{self.cursor}][from]", self.second),
                    (f"filter[{self.cursor}][to]", self.second),
                    ("order[id]", "desc" if desc else "asc"),
                    ("limit", self.limit),
                    ("page", 1 if desc else self.second_page),
                ]
            )
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
        cursors = _cursor_values(self.stream, records, self.cursor)
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
        assert self.gap is not None
        self.phase = "second"
        self.second = second
        self.second_step, self.second_page = "asc", 1
        self.second_ids = ids | self.gap.take(descending=self.descending, second=second)
        self.second_walk_ids = set()
        self.second_since = None
        self.second_started = time.time()
        self.second_rewalks = 0

    def _learn(self, n: int, first: int, last: int) -> None:
        if self.first_seen is None:
            self.first_seen = first
        self.rows_seen += n
        self.density = self.rows_seen / (abs(last - self.first_seen) + 1)

    def _on_second_page(
        self, records: list[dict[str, Any]], has_next: bool, resp: Response
    ) -> list[dict[str, Any]]:
        """Second ``T`` by id: the first page ascending, then the first page descending. If the
        two overlap, every record that stayed in ``T`` was on one of them: a record missing from
        both would lie above the ascending page's highest id and below the descending page's
        lowest, which the overlap rules out. Only a second of over two pages needs offset pages,
        and then the closing check."""
        if self.second_since is None:
            self.second_since = server_since(self.second_started, resp)
        ids = self.second_ids
        out = [r for r in records if r.get("id") not in ids]
        for r in out:
            if r.get(self.cursor) != self.second:
                raise KommoResponseError(
                    f"Kommo returned a {self.stream.name} record outside the requested second"
                )
        ids.update(r["id"] for r in out)
        page_ids = [r.get("id") for r in records]
        self.second_walk_ids.update(page_ids)
        full = len(records) >= self.limit and has_next
        step = self.second_step
        if not full and step != "pages":
            # One answer held the whole second.
            self._second_done()
        elif step == "asc":
            self.second_asc_max = max(page_ids)
            self.second_step = "desc"
        elif step == "desc":
            lowest = min(page_ids)
            if lowest <= self.second_asc_max:
                self._second_done()
            else:
                self.second_desc_min = lowest
                self.second_step, self.second_page = "pages", 2
        elif full and max(page_ids) < self.second_desc_min:
            self.second_page += 1
        else:
            # Offset pages met the descending page: check nothing left the second meanwhile.
            self.phase = "check"
        self.rows += len(out)
        return out

    def _second_done(self) -> None:
        """Back to the gap (taken out of it, the second is no walk's business any more)."""
        self.phase = "walk"
        self._reached(self.second)
        assert self.gap is not None
        if self.gap.closed:
            self.done = True

    def _check_job(self) -> Job:
        second, ids = self.second, frozenset(self.second_walk_ids)
        since = self.second_since or int(time.time()) - CLOCK_SLACK
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
        stable, requests = result
        self.requests += requests
        if stable:
            self._second_done()
            return []
        self.second_rewalks += 1
        if self.second_rewalks > self.max_rewalks:
            raise KommoConsistencyError(
                f"{self.stream.name}: the {self.limit}+ records updated at {self.second} kept "
                f"changing during {self.second_rewalks} walks of that second; retry later"
            )
        log.info(
            "%s: records of second %d changed while it was paged; walking it again",
            self.stream.name,
            self.second,
        )
        self.phase = "second"
        self.second_step, self.second_page = "asc", 1
        self.second_walk_ids = set()
        self.second_since = None
        self.second_started = time.time()
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
        keep = _seconds_for(1.5, self)
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
        cursors = _cursor_values(self.stream, records, self.cursor)
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
            self.density = _rate(self.rows_seen, self.oldest_seen, min(self.hi, self.newest_seen))
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
        keep = max((self.oldest_seen - self.lo) // 2, _seconds_for(1.5, self))
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

    def _split_pages(self) -> PagesWalk | None:
        """Hand the second half of the pages left (by the density so far) to a new walk of the
        same query: every page is read once, by one walk, and none is cut short."""
        first_free = self.page + 1 if self.inflight else self.page
        end = first_free + math.ceil(self.remaining_pages()) - 1
        if self.last_page is not None:
            end = min(end, self.last_page)
        first = first_free + (end - first_free + 1) // 2
        if first <= first_free or first > end:
            return None
        new = self._sibling(
            lo=self.query_lo,
            hi=self.query_hi,
            page=first,
            last_page=self.last_page,
            server_now=self.server_now,
        )
        self.last_page = first - 1
        return new


def even_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` consecutive sub-ranges of [lo, hi] of (nearly) equal width."""
    parts = max(1, min(parts, hi - lo + 1))
    starts = [lo + (hi - lo + 1) * k // parts for k in range(parts)]
    ends = [s - 1 for s in starts[1:]] + [hi]
    return list(zip(starts, ends, strict=True))


@dataclass(frozen=True, kw_only=True)
class WalkContext:
    """What walks and strategies use of the client: its transport, the bound on walking a
    window again, and how many requests are worth having in flight now."""

    transport: Transport
    max_rewalks: int
    target_concurrency: Callable[[], int]
    decode: Decoder = records_of


class Strategy:
    """How the extraction of one stream's window starts (`start`), what it keeps of the records
    its walks yield (`accept`), and what it walks next once every walk is done
    (`on_drained`; nothing by default)."""

    def __init__(self, *, context: WalkContext, stream: Stream, lo: int, hi: int) -> None:
        self.context = context
        self.stream = stream
        self.lo, self.hi = lo, hi

    @property
    def with_(self) -> tuple[tuple[str, str], ...]:
        s = self.stream
        return (("with", ",".join(s.with_)),) if s.with_ else ()

    def start(self) -> list[Walk]:
        raise NotImplementedError

    def on_response(self, walk: Walk, resp: Response) -> None:
        """Called with each answer to a walk's page request, before `accept`."""

    def accept(self, walk: Walk, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return records

    def on_drained(self) -> list[Walk]:
        return []

    def fraction(self, walks: list[Walk]) -> float | None:
        """The share of the window covered so far, for progress reports."""
        total = self.hi - self.lo + 1
        walks = [w for w in walks if w.kind in ("live", "pages")]
        if total <= 0 or not walks:
            return None
        return max(0.0, min(1.0, sum(w.covered_seconds() for w in walks) / total))


class KeysetStrategy(Strategy):
    """Leads, contacts, companies: one keyset walk of the live list and, where the stream has
    one, one of the deleted list; each splits as workers fall idle."""

    def start(self) -> list[Walk]:
        s = self.stream
        lists = [("live", self.with_)]
        if s.has_deleted_list:
            lists.append(("deleted", (("with", ",".join((*s.with_, "only_deleted"))),)))
        return [
            KeysetWalk(
                stream=s,
                transport=self.context.transport,
                decode=self.context.decode,
                lo=self.lo,
                hi=self.hi,
                kind=kind,
                base=base,
                cursor=s.cursor or "updated_at",
                max_rewalks=self.context.max_rewalks,
            )
            for kind, base in lists
        ]

    def fraction(self, walks: list[Walk]) -> float | None:
        """The share of the window outside the live list's gaps (what no page returned lies
        below the first record or above the last: covered too)."""
        gaps = {id(w.gap): w.gap for w in walks if isinstance(w, KeysetWalk) and w.kind == "live"}
        total = self.hi - self.lo + 1
        if total <= 0 or not gaps:
            return None
        left = sum(g.seconds() for g in gaps.values() if g is not None)
        return max(0.0, min(1.0, 1 - left / total))


class NewestFirstStrategy(Strategy):
    """Events: one newest-first walk that splits as workers fall idle."""

    def start(self) -> list[Walk]:
        s = self.stream
        return [
            PagesWalk(
                stream=s,
                transport=self.context.transport,
                decode=self.context.decode,
                lo=self.lo,
                hi=self.hi,
                kind="pages",
                base=self.with_,
                cursor=s.cursor or "created_at",
                newest_first=True,
                # New events enter a window that includes now at the top and push rows down a
                # page; a server that inserts among past events would do the same to a window
                # in the past. Either way a repeat is dropped by id.
                dedupe=True,
            )
        ]


__all__ = [
    "Job",
    "KeysetStrategy",
    "KeysetWalk",
    "NewestFirstStrategy",
    "PagesWalk",
    "Strategy",
    "Walk",
    "WalkContext",
    "even_bounds",
    "events_since",
    "list_since",
    "records_of",
    "second_is_stable",
    "server_since",
]
