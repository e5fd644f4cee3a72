"""What the sandbox saw: requests by path and status, 429s, violations, peaks.

Tests and benchmarks read these to check a client's manners (it never went over the limit, it
backed off after a 429) without trusting the client's own account of itself.

The counters fall into groups (the requests and their answers, the arrival clock, concurrency,
churn), each reset with the others under one lock, so a snapshot is one consistent moment. The
arrival clock's windows and peaks are computed in `arrival_clock`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from kommo_dagster.sandbox.arrival_clock import Arrival, ArrivalClock


@dataclass(slots=True)
class _Answers:
    """How many API requests came, and how they were answered."""

    requests: int = 0
    by_path: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_status: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    # Injected or drawn faults by kind (see `faults`).
    faults: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Concurrency:
    """Requests being handled at once: now, and the most so far."""

    in_flight: int = 0
    peak: int = 0


@dataclass(slots=True)
class _Churn:
    """The churn steps applied, and the changes they made by kind."""

    steps: int = 0
    changes: Counter[str] = field(default_factory=Counter)


class Stats:
    """Thread-safe counters of API requests (the /__sandbox/ paths are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.started = time.monotonic()
            self._answers = _Answers()
            self._clock = ArrivalClock()
            self._concurrency = _Concurrency()
            self._churn = _Churn()

    def arrive(
        self, *, at: float | None = None, window: float = 1.0, limit: float | None = None
    ) -> Arrival:
        """Count an arrival at Unix time `at` (None: now) against `limit` per `window` seconds.

        The peak is always measured over one second; the limiter's window may differ. Without
        a limit nothing is over.
        """
        with self._lock:
            handled = time.monotonic()
            arrival = self._clock.arrive(
                at=time.time() if at is None else at,
                handled=handled,
                stamp="handler" if at is None else "kernel",
                window=window,
                limit=limit,
            )
            self._answers.requests += 1
            conc = self._concurrency
            conc.in_flight += 1
            conc.peak = max(conc.peak, conc.in_flight)
            return arrival

    def record(self, path: str, status: int | str) -> None:
        """Count the answer to a request (before it is written, so a client sees it counted)."""
        with self._lock:
            answers = self._answers
            answers.by_path[path][str(status)] += 1
            answers.by_status[str(status)] += 1
            if status == 429:
                answers.rate_limited += 1

    def leave(self) -> None:
        with self._lock:
            self._concurrency.in_flight -= 1

    def violation(self, arrival: Arrival) -> int:
        """Count the violations of an arrival the limit applies to; return the total."""
        with self._lock:
            return self._clock.count_violations(arrival)

    def fault(self, kind: str) -> None:
        with self._lock:
            self._answers.faults[kind] += 1

    def churned(self, changes: Counter[str]) -> None:
        with self._lock:
            self._churn.steps += 1
            self._churn.changes.update(changes)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """The counters as GET /__sandbox/stats serves them; benchmarks and tests read these
        keys, in this order."""
        with self._lock:
            answers, clock, conc = self._answers, self._clock, self._concurrency
            return {
                "requests": answers.requests,
                "by_path": {p: dict(c) for p, c in sorted(answers.by_path.items())},
                "by_status": dict(answers.by_status),
                "rate_limited": answers.rate_limited,
                "violations": clock.violations,
                "peak_requests_per_second": clock.peak_per_second,
                # The same by the handler threads' clock (late when the machine is starved).
                "violations_handler": clock.violations_handler,
                "peak_requests_per_second_handler": clock.peak_per_second_handler,
                "arrival_clock": clock.clock(),
                "arrivals_by_clock": dict(clock.stamped_by),
                "peak_concurrency": conc.peak,
                "in_flight": conc.in_flight,
                "faults": dict(answers.faults),
                "churn_steps": self._churn.steps,
                "churn_changes": dict(self._churn.changes),
                "uptime_seconds": round(time.monotonic() - self.started, 3),
                "first_arrival_at": clock.first_at,
                "last_arrival_at": clock.last_at,
                **extra,
            }
