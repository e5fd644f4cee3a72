"""Counters of what the client did, and the progress reports an extraction emits."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, kw_only=True)
class PartStats:
    """One sub-window a stream was walked in, with what it cost (for request-count audits)."""

    stream: str
    kind: str  # "live", "deleted", "pages", "second", "verify", "full"
    start: int | None  # cursor bounds, inclusive (Unix seconds)
    end: int | None
    requests: int
    rows: int


@dataclass(frozen=True, kw_only=True)
class ClientStats:
    """A snapshot of a client's counters since it was created."""

    requests: int
    pages: int
    rows: int
    retries: int
    unsent: int  # of the retries, attempts whose connection failed before the request went out
    throttled: int  # 429 answers
    errors: int  # responses or connection failures that were retried or raised
    elapsed: float  # seconds from the first request to the last response
    waited: float  # seconds spent waiting for the rate limit
    parts: tuple[PartStats, ...] = ()

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


class StatsRecorder:
    """Thread-safe counters behind `ClientStats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.pages = 0
        self.rows = 0
        self.retries = 0
        self.unsent = 0
        self.throttled = 0
        self.errors = 0
        self.waited = 0.0
        self._first: float | None = None
        self._last: float | None = None
        self._latency: float | None = None
        self._parts: list[PartStats] = []

    def request_started(self, waited: float) -> None:
        """A request is about to be written after ``waited`` seconds for its slot."""
        with self._lock:
            self.requests += 1
            self.waited += waited
            if self._first is None:
                self._first = time.monotonic()

    def request_withdrawn(self) -> None:
        """The request last started was not written: its connection, found closed, is made
        again (and the request counted again once it has its new slot)."""
        with self._lock:
            self.requests -= 1

    def response(self, *, seconds: float) -> None:
        with self._lock:
            self._last = time.monotonic()
            # A smoothed request latency: how many requests must be in flight to use the budget.
            self._latency = (
                seconds if self._latency is None else 0.8 * self._latency + 0.2 * seconds
            )

    def page(self, rows: int) -> None:
        with self._lock:
            self.pages += 1
            self.rows += rows

    def retry(self, *, throttled: bool, sent: bool) -> None:
        """An attempt failed and is tried again; ``sent``: its request went out (an attempt
        whose connection failed first is not among the requests)."""
        with self._lock:
            self.retries += 1
            self.unsent += not sent
            self.errors += 1
            if throttled:
                self.throttled += 1

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def part(self, part: PartStats) -> None:
        with self._lock:
            self._parts.append(part)

    @property
    def latency(self) -> float | None:
        return self._latency

    def snapshot(self) -> ClientStats:
        with self._lock:
            end = self._last if self._last is not None else self._first
            elapsed = (end - self._first) if self._first is not None and end is not None else 0.0
            return ClientStats(
                requests=self.requests,
                pages=self.pages,
                rows=self.rows,
                retries=self.retries,
                unsent=self.unsent,
                throttled=self.throttled,
                errors=self.errors,
                elapsed=elapsed,
                waited=self.waited,
                parts=tuple(self._parts),
            )


@dataclass(frozen=True, kw_only=True)
class Progress:
    """Where one `iter_records` call stands; emitted every few seconds and once at the end."""

    stream: str
    window_start: datetime | None
    window_end: datetime | None
    pages: int
    rows: int
    requests: int
    elapsed: float
    requests_per_second: float
    retries: int
    throttled: int
    unsent: int = 0  # of the retries, attempts that could not connect (see `retries_text`)
    fraction_done: float | None = None  # share of the time window covered, when measurable
    eta_seconds: float | None = None
    done: bool = False

    @property
    def _rate(self) -> str:
        """The request rate, once the requests span a second: a few requests in a fraction of
        one read as "630/s", which says nothing about the budget of 7 in any second."""
        return f" ({self.requests_per_second:.2f}/s)" if self.elapsed >= 1.0 else ""

    def __str__(self) -> str:
        window = (
            f"{_fmt(self.window_start)}..{_fmt(self.window_end)}"
            if self.window_start or self.window_end
            else "full table"
        )
        parts = [
            f"{self.stream} [{window}]",
            f"{self.rows} rows in {self.pages} pages",
            f"{self.requests} requests{self._rate}",
            retries_text(self.retries, unsent=self.unsent),
            f"{self.throttled} throttled",
        ]
        if self.done:
            parts.append(f"done in {self.elapsed:.1f}s")
        else:
            if self.fraction_done is not None:
                parts.append(f"{self.fraction_done:.0%} of the window")
            if self.eta_seconds is not None:
                parts.append(f"~{self.eta_seconds:.0f}s left")
        return ", ".join(parts)


def retries_text(retries: int, *, unsent: int) -> str:
    """``3 retries``, saying how many of them could not connect: such an attempt sent no
    request, so a host that refuses connections read as "0 requests, 3 retries"."""
    if not unsent:
        return f"{retries} retries"
    return f"{retries} retries ({unsent} could not connect, so sent no request)"


def _fmt(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "…"
