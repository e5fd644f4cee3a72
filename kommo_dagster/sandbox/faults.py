"""Seeded fault injection: which request fails, and how.

Two sources, checked in this order: faults queued with `inject` ("the next N requests [to this
path] get a 502"), which make tests deterministic whatever else happens; then the configured
per-request rates, drawn from one seeded RNG (one draw per request, so a sequential client meets
the same faults on every run).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from kommo_dagster.sandbox.config import FAULT_KINDS, FaultConfig


@dataclass
class _Queued:
    kind: str
    remaining: int
    path: str | None


class Faults:
    def __init__(self, *, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"{seed}:faults")
        self._queue: list[_Queued] = []

    def inject(self, kind: str, *, count: int = 1, path: str | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queue.append(_Queued(kind, count, path))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(q.remaining for q in self._queue)

    def draw(self, path: str, config: FaultConfig) -> str | None:
        """The fault this request meets, or None."""
        with self._lock:
            for q in self._queue:
                if q.path is None or path == q.path or path.startswith(q.path.rstrip("/") + "/"):
                    q.remaining -= 1
                    if not q.remaining:
                        self._queue.remove(q)
                    return q.kind
            rates = config.rates()
            if not any(rates.values()):
                return None
            r = self._rng.random()
            for kind, rate in rates.items():
                if r < rate:
                    return kind
                r -= rate
            return None
