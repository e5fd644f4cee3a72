"""What every kind of walk shares: a job (one request), the walk it belongs to, the records of
a response, when a split is worth it, and the server's clock."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.pages import page_of
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.kommo.transport import Params

if TYPE_CHECKING:
    from kommo_dagster.kommo.transport import Transport


log = logging.getLogger("kommo_dagster.kommo")

# Split a walk only when its estimated remainder is at least this many pages; the cut leaves the
# page in flight on the walk's side, so that page's rows are not fetched twice.
MIN_SPLIT_PAGES = 2.0
# Server clock slack for "since the walk began" (Date has one-second resolution).
CLOCK_SLACK = 2


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
    return page_of(data, stream.list_key, name=stream.name)


# `records_of` or a decoder of the same shape (`kommo_dagster.kommo.decoding`).
Decoder = Callable[[Stream, Response], tuple[list[Any], bool]]


def record_ids(stream: Stream, records: list[dict[str, Any]]) -> list[Any]:
    """The ids of a page's records, which the walks drop repeats by: a record without one
    (or with a null one) fails the run naming it, rather than as a bare KeyError."""
    try:
        ids = [r["id"] for r in records]
    except (KeyError, TypeError):
        raise KommoResponseError(f"a {stream.name} record has no id") from None
    if None in ids:
        raise KommoResponseError(f"a {stream.name} record has a null id")
    return ids


def cursor_values(stream: Stream, records: list[dict[str, Any]], cursor: str) -> list[int]:
    """The integer ``cursor`` of each record; a record without one fails the run naming it."""
    values = []
    for r in records:
        try:
            v = r[cursor]
        except (KeyError, TypeError):
            raise KommoResponseError(
                f"a {stream.name} record{_by_id(r, cursor)} has no {cursor}"
            ) from None
        if type(v) is not int:
            raise KommoResponseError(
                f"a {stream.name} record{_by_id(r, cursor)} has a non-integer {cursor}: {v!r}"
            )
        values.append(v)
    return values


def _by_id(record: Any, cursor: str) -> str:
    """`` (id 5)`` for a record with an id, so an error about its ``cursor`` can name it."""
    get = getattr(record, "get", None)
    rid = get("id") if cursor != "id" and callable(get) else None
    return "" if rid is None else f" (id {rid!r})"


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
    # The density of the walk this one was split from: its estimate until it has its own.
    prior_density: float | None = None

    @property
    def density(self) -> float | None:
        """Rows per second of cursor (for split decisions and progress): what this walk's own
        pages tell (`own_density`) once they tell anything, else ``prior_density``."""
        own = self.own_density()
        return self.prior_density if own is None else own

    def own_density(self) -> float | None:
        return None

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


def rows_per_second(rows: int, first: int, last: int) -> float:
    return rows / max(1, last - first + 1)


@dataclass(eq=False)
class Density:
    """The rows a walk counted and the span of cursor they lie in, ``[oldest, newest]``: their
    rows per second tell how many pages the walk has left and how many seconds a page covers."""

    count: int = 0
    oldest: int | None = None
    newest: int | None = None

    def add(self, rows: int, first: int, last: int) -> None:
        """Count ``rows`` more, whose cursors lie between ``first`` and ``last`` (either way)."""
        oldest, newest = min(first, last), max(first, last)
        self.count += rows
        self.oldest = oldest if self.oldest is None else min(oldest, self.oldest)
        self.newest = newest if self.newest is None else max(newest, self.newest)

    def density(self, upto: int | None = None) -> float | None:
        """Rows per second of cursor between the oldest row counted and the newest (held to
        ``upto``); None before any was."""
        if self.oldest is None or self.newest is None:
            return None
        newest = self.newest if upto is None else min(upto, self.newest)
        return rows_per_second(self.count, self.oldest, newest)


def seconds_for(pages: float, walk: Walk) -> int:
    """Seconds of cursor that ``pages`` pages cover at the walk's density."""
    return math.ceil(pages * walk.limit / walk.density) if walk.density else 1


__all__ = [
    "CLOCK_SLACK",
    "Decoder",
    "Density",
    "Job",
    "Walk",
    "cursor_values",
    "record_ids",
    "records_of",
    "rows_per_second",
    "seconds_for",
    "server_since",
]
