"""What the sandbox saw: requests by path and status, 429s, violations, peaks.

Tests and benchmarks read these to check a client's manners (it never went over the limit, it
backed off after a 429) without trusting the client's own account of itself.

Arrivals are counted at the time they reached the host (the kernel's stamp, see `arrivals`),
falling back to the clock read when the handler thread records them. Threads reach the lock in
their own order, so an arrival may be recorded after later ones: it is put in its place, and
the windows it completes are counted then. The handler threads' own stamps are kept beside,
for the peak and violations they would show: the difference is the machine's scheduling, not
the client.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any

# How long after later arrivals an arrival may still be recorded with its whole window in view:
# a handler thread this late has stalled for far longer than any scheduling delay.
LATE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Arrival:
    """What recording one arrival found, for the rate-limit decision."""

    # Arrivals within the window before this one (by arrival time).
    before: int
    # Violations this arrival makes: itself over the limit, and later arrivals (recorded
    # before it) whose window it brought over the limit. The request can still get a 429; the
    # later ones were answered already.
    over: int
    # By the handler threads' clock, this arrival is over the limit.
    over_handler: bool


class Stats:
    """Thread-safe counters of API requests (the /__sandbox/ paths are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.started = time.monotonic()
            self.requests = 0
            self.by_path: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self.by_status: Counter[str] = Counter()
            self.rate_limited = 0
            self.violations = 0
            self.violations_handler = 0
            self.faults: Counter[str] = Counter()
            self.peak_requests_per_second = 0
            self.peak_requests_per_second_handler = 0
            self.in_flight = 0
            self.peak_concurrency = 0
            self.churn_steps = 0
            self.churn_changes: Counter[str] = Counter()
            # Which clock stamped the arrivals: "kernel" or "handler" (no kernel stamp).
            self.stamped_by: Counter[str] = Counter()
            # Unix times of the first and the last arrival: when a client started, how long it
            # kept at it (a run's start-up and rate, seen from the server).
            self.first_arrival_at: float | None = None
            self.last_arrival_at: float | None = None
            # Arrival times (Unix), sorted; older ones are dropped in batches.
            self._arrivals: list[float] = []
            # The handler threads' monotonic clock read under the lock, hence in order.
            self._handled: deque[float] = deque()

    def arrive(
        self, *, at: float | None = None, window: float = 1.0, limit: float | None = None
    ) -> Arrival:
        """Count an arrival at Unix time `at` (None: now) against `limit` per `window` seconds.

        The peak is always measured over one second; the limiter's window may differ. Without
        a limit nothing is over.
        """
        with self._lock:
            handled = time.monotonic()
            self.stamped_by["handler" if at is None else "kernel"] += 1
            if at is None:
                at = time.time()
            self.requests += 1
            self.first_arrival_at = min(at, self.first_arrival_at or at)
            self.last_arrival_at = max(at, self.last_arrival_at or at)
            before, over = self._place(at, window, limit)
            by_handler = self._handle_in_order(handled, window)
            self.in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
            return Arrival(
                before=before,
                over=over,
                over_handler=limit is not None and by_handler >= limit,
            )

    def _place(self, at: float, window: float, limit: float | None) -> tuple[int, int]:
        """Insert `at` in order; return the arrivals in the window before it, and the
        violations it makes (itself, and later arrivals it brings over `limit`)."""
        q = self._arrivals
        i = bisect.bisect_right(q, at)
        q.insert(i, at)
        before = i - bisect.bisect_right(q, at - window)
        over = int(limit is not None and before >= limit)
        peak = i + 1 - bisect.bisect_right(q, at - 1.0)
        # Later arrivals recorded already: their windows now hold this one too.
        reach = at + max(window, 1.0)
        for j in range(i + 1, len(q)):
            later = q[j]
            if later >= reach:
                break
            if later < at + 1.0:
                peak = max(peak, j + 1 - bisect.bisect_right(q, later - 1.0))
            if limit is not None and later < at + window:
                n = j - bisect.bisect_right(q, later - window)
                if n >= limit > n - 1:  # this arrival is the one that brought it to the limit
                    over += 1
        self.peak_requests_per_second = max(self.peak_requests_per_second, peak)
        cut = bisect.bisect_right(q, q[-1] - max(window, 1.0) - LATE_SECONDS)
        if cut * 2 > len(q):
            del q[:cut]
        return before, over

    def _handle_in_order(self, now: float, window: float) -> int:
        """Count the handler's stamp (in order); return how many it has in the window before."""
        q = self._handled
        while q and q[0] <= now - max(window, 1.0):
            q.popleft()
        q.append(now)
        in_second = len(q) - bisect.bisect_right(q, now - 1.0)
        self.peak_requests_per_second_handler = max(
            self.peak_requests_per_second_handler, in_second
        )
        return len(q) - 1 - bisect.bisect_right(q, now - window)

    def record(self, path: str, status: int | str) -> None:
        """Count the answer to a request (before it is written, so a client sees it counted)."""
        with self._lock:
            self.by_path[path][str(status)] += 1
            self.by_status[str(status)] += 1
            if status == 429:
                self.rate_limited += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def violation(self, arrival: Arrival) -> int:
        """Count the violations of an arrival the limit applies to; return the total."""
        with self._lock:
            self.violations += arrival.over
            self.violations_handler += arrival.over_handler
            return self.violations

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def churned(self, changes: Counter[str]) -> None:
        with self._lock:
            self.churn_steps += 1
            self.churn_changes.update(changes)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_path": {p: dict(c) for p, c in sorted(self.by_path.items())},
                "by_status": dict(self.by_status),
                "rate_limited": self.rate_limited,
                "violations": self.violations,
                "peak_requests_per_second": self.peak_requests_per_second,
                # The same by the handler threads' clock (late when the machine is starved).
                "violations_handler": self.violations_handler,
                "peak_requests_per_second_handler": self.peak_requests_per_second_handler,
                "arrival_clock": _clock(self.stamped_by),
                "arrivals_by_clock": dict(self.stamped_by),
                "peak_concurrency": self.peak_concurrency,
                "in_flight": self.in_flight,
                "faults": dict(self.faults),
                "churn_steps": self.churn_steps,
                "churn_changes": dict(self.churn_changes),
                "uptime_seconds": round(time.monotonic() - self.started, 3),
                "first_arrival_at": self.first_arrival_at,
                "last_arrival_at": self.last_arrival_at,
                **extra,
            }


def _clock(stamped_by: Counter[str]) -> str | None:
    """The clock of the arrival times: "kernel", "handler", "mixed" (None: no arrival yet)."""
    clocks = [c for c in ("kernel", "handler") if stamped_by[c]]
    return clocks[0] if len(clocks) == 1 else ("mixed" if clocks else None)
