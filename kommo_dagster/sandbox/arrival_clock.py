"""The arrivals in time order, by two clocks: the rate-limit windows, violations and peaks.

Arrivals are counted at the time they reached the host (the kernel's stamp, see `arrivals`),
falling back to the clock read when the handler thread records them. Threads reach the
counters' lock in their own order, so an arrival may be recorded after later ones: it is put in
its place, and the windows it completes are counted then. The handler threads' own stamps are
kept beside, for the peak and violations they would show: the difference is the machine's
scheduling, not the client.

Kept apart from the other counters so this arithmetic can be checked with stamps chosen by a
test; `Stats` owns the lock and calls it under that lock only.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass
from typing import Literal

# How long after later arrivals an arrival may still be recorded with its whole window in view:
# a handler thread this late has stalled for far longer than any scheduling delay.
LATE_SECONDS = 30.0

# Which clock stamped an arrival: the kernel's receive time, or the handler thread's wall clock.
Stamp = Literal["kernel", "handler"]


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


class ArrivalClock:
    """Arrival times by the arrival clock and the handler clock, and what they add up to.

    Not thread-safe: the caller serialises every call (one lock around all the counters keeps a
    snapshot consistent).
    """

    def __init__(self) -> None:
        self.violations = 0
        self.violations_handler = 0
        # The most arrivals within one second, by each clock.
        self.peak_per_second = 0
        self.peak_per_second_handler = 0
        self.stamped_by: Counter[str] = Counter()
        # Unix times of the first and the last arrival: when a client started, how long it
        # kept at it (a run's start-up and rate, seen from the server).
        self.first_at: float | None = None
        self.last_at: float | None = None
        # Arrival times (Unix), sorted; older ones are dropped in batches.
        self._arrivals: list[float] = []
        # The handler threads' monotonic clock read under the lock, hence in order.
        self._handled: deque[float] = deque()

    def arrive(
        self, *, at: float, handled: float, stamp: Stamp, window: float, limit: float | None
    ) -> Arrival:
        """Record an arrival at Unix time `at` (stamped by `stamp`), met by its handler thread
        at monotonic time `handled`, against `limit` per `window` seconds.

        The peak is always measured over one second; the limiter's window may differ. Without
        a limit nothing is over.
        """
        self.stamped_by[stamp] += 1
        self.first_at = min(at, self.first_at or at)
        self.last_at = max(at, self.last_at or at)
        before, over = self._place(at, window, limit)
        by_handler = self._handle_in_order(handled, window)
        return Arrival(
            before=before,
            over=over,
            over_handler=limit is not None and by_handler >= limit,
        )

    def count_violations(self, arrival: Arrival) -> int:
        """Count the violations of an arrival the limit applies to; return the total."""
        self.violations += arrival.over
        self.violations_handler += arrival.over_handler
        return self.violations

    def clock(self) -> str | None:
        """The clock of the arrival times: "kernel", "handler", "mixed" (None: no arrival yet)."""
        clocks = [c for c in ("kernel", "handler") if self.stamped_by[c]]
        return clocks[0] if len(clocks) == 1 else ("mixed" if clocks else None)

    def _place(self, at: float, window: float, limit: float | None) -> tuple[int, int]:
        """Insert `at` in order; return the arrivals in the window before it, and the
        violations it makes (itself, and later arrivals it brings over `limit`)."""
        q = self._arrivals
        i = bisect.bisect_right(q, at)
        q.insert(i, at)
        before = i - bisect.bisect_right(q, at - window)
        over = int(limit is not None and before >= limit)
        peak, completed = self._later_windows(i, window, limit)
        self.peak_per_second = max(self.peak_per_second, peak)
        cut = bisect.bisect_right(q, q[-1] - max(window, 1.0) - LATE_SECONDS)
        if cut * 2 > len(q):
            del q[:cut]
        return before, over + completed

    def _later_windows(self, i: int, window: float, limit: float | None) -> tuple[int, int]:
        """The one-second peak the arrival at index `i` is part of, and how many windows of
        later arrivals (recorded already) it brought to `limit`: theirs now hold it too."""
        q = self._arrivals
        at = q[i]
        peak = i + 1 - bisect.bisect_right(q, at - 1.0)
        completed = 0
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
                    completed += 1
        return peak, completed

    def _handle_in_order(self, now: float, window: float) -> int:
        """Count the handler's stamp (in order); return how many it has in the window before."""
        q = self._handled
        while q and q[0] <= now - max(window, 1.0):
            q.popleft()
        q.append(now)
        in_second = len(q) - bisect.bisect_right(q, now - 1.0)
        self.peak_per_second_handler = max(self.peak_per_second_handler, in_second)
        return len(q) - 1 - bisect.bisect_right(q, now - window)
