"""What the sandbox saw: requests by path and status, 429s, violations, peaks.

Tests and benchmarks read these to check a client's manners (it never went over the limit, it
backed off after a 429) without trusting the client's own account of itself.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any


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
            self.faults: Counter[str] = Counter()
            self.peak_requests_per_second = 0
            self.in_flight = 0
            self.peak_concurrency = 0
            self.churn_steps = 0
            self.churn_changes: Counter[str] = Counter()
            # Unix times of the first and the last arrival: when a client started, how long it
            # kept at it (a run's start-up and rate, seen from the server).
            self.first_arrival_at: float | None = None
            self.last_arrival_at: float | None = None
            self._arrivals: deque[float] = deque()

    def arrive(self, *, window: float = 1.0) -> int:
        """Count an arrival; return how many arrived within `window` seconds before it.

        The clock is read under the lock, so arrivals are recorded in order even when threads
        race. The peak is always measured over one second; the limiter's window may differ.
        """
        with self._lock:
            now = time.monotonic()
            q = self._arrivals
            horizon = max(window, 1.0)
            while q and q[0] <= now - horizon:
                q.popleft()
            q.append(now)
            self.last_arrival_at = time.time()
            if self.first_arrival_at is None:
                self.first_arrival_at = self.last_arrival_at
            self.requests += 1
            # Arrivals in (now - 1, now], this one included.
            in_second = len(q) - bisect.bisect_right(q, now - 1.0)
            self.peak_requests_per_second = max(self.peak_requests_per_second, in_second)
            before = len(q) - 1 - bisect.bisect_right(q, now - window)
            self.in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
            return before

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

    def violation(self) -> int:
        with self._lock:
            self.violations += 1
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
