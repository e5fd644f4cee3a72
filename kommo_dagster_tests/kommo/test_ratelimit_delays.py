"""The limiter on a machine short of CPU: requests reach the server a random while after their
slot. A discrete-event simulation on a simulated clock (no sleeping, seeded): workers of two
processes plan, confirm, wait, "arrive" at a server that counts arrivals, settle, and wait for
the answer. The server's count is the independent ground truth."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kommo_dagster.kommo.ratelimit import (
    DEFAULT_MARGIN,
    DELAY_CAP,
    DELAY_HALF_LIFE,
    MIN_GAP,
    SharedRateLimiter,
)

RPS = 7
# More workers than the limit keeps busy (7 rps x ~0.45 s a request): slots are the bottleneck.
WORKERS = 8
# Slot times are epoch-like doubles: a gap the limiter made exactly one window reads back a
# few hundred nanoseconds short.
FLOAT_RESOLUTION = 1e-6


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Simulation:
    limiters: list[SharedRateLimiter]
    clock: Clock
    rng: random.Random
    confirm: bool
    max_delay: float
    arrivals: list[float] = field(default_factory=list)
    confirms: list[float] = field(default_factory=list)
    _events: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _order: itertools.count = field(default_factory=itertools.count)

    def at(self, when: float, step: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), step))

    def run(self, *, requests: int) -> None:
        for worker in range(WORKERS):
            self.at(self.clock.now, self._planner(self.limiters[worker % 2]))
        while self._events and len(self.arrivals) < requests:
            when, _, step = heapq.heappop(self._events)
            self.clock.now = max(self.clock.now, when)
            step()

    def _planner(self, lim: SharedRateLimiter) -> Callable[[], None]:
        def plan() -> None:
            slot, wait = lim.reserve()
            if slot is None:
                self.at(self.clock.now + wait, plan)
            elif self.confirm:
                self.at(slot, self._confirmer(lim, slot))
            else:  # the slot alone, as a limiter that never looks again would send it
                self.at(slot, lambda: self._send(lim, slot))

        return plan

    def _confirmer(self, lim: SharedRateLimiter, slot: float) -> Callable[[], None]:
        def confirm() -> None:
            sent, wait = lim.confirm(slot)
            if sent is None:
                self.at(self.clock.now + wait, confirm)
            else:
                self._send(lim, sent)

        return confirm

    def _send(self, lim: SharedRateLimiter, slot: float) -> None:
        """The request leaves up to ``max_delay`` after its slot (a starved thread), and the
        server counts it when it arrives; its answer comes 300 +- 50 ms later."""
        self.confirms.append(self.clock.now)

        def arrive() -> None:
            self.arrivals.append(self.clock.now)
            lim.settle(slot, self.clock.now)
            self.at(self.clock.now + self.rng.uniform(0.25, 0.35), self._planner(lim))

        self.at(self.clock.now + self.rng.uniform(0.0, self.max_delay), arrive)


def simulate(
    tmp_path: Path, *, confirm: bool, seed: int, max_delay: float = 0.3, requests: int = 700
) -> tuple[Simulation, SharedRateLimiter]:
    clock = Clock()
    limiters = [
        SharedRateLimiter(
            key=f"sim{seed}{confirm}", requests_per_second=RPS, directory=tmp_path, clock=clock
        )
        for _ in range(2)
    ]
    sim = Simulation(limiters, clock, random.Random(seed), confirm, max_delay)
    sim.run(requests=requests)
    return sim, limiters[0]


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals the server saw in any window of one second."""
    times = sorted(arrivals)
    ends = (j for j in range(len(times)))
    return max(
        j - next(i for i in range(j + 1) if times[j] - times[i] < 1.0 - FLOAT_RESOLUTION) + 1
        for j in ends
    )


def rate(arrivals: list[float]) -> float:
    return (len(arrivals) - 1) / (max(arrivals) - min(arrivals))


def test_the_simulation_bunches_arrivals_when_slots_are_not_confirmed(tmp_path):
    """Without the confirmation, the same delays put more than seven arrivals into a second:
    the scenario below is one that needs it."""
    sim, _ = simulate(tmp_path, confirm=False, seed=1)
    assert busiest_second(sim.arrivals) > RPS


def test_delayed_sends_never_bunch_at_the_server(tmp_path):
    for seed in range(3):
        sim, lim = simulate(tmp_path, confirm=True, seed=seed)
        assert len(sim.arrivals) >= 700
        assert busiest_second(sim.arrivals) <= RPS, seed
        # The margin adapted to the delays measured (up to 300 ms), within its bound...
        assert 0.1 < lim.send_delay_margin() <= DELAY_CAP
        # ...and the account still gets a useful share of its limit.
        assert rate(sim.arrivals) > 0.5 * RPS


def test_confirmed_sends_keep_the_least_gap(tmp_path):
    sim, lim = simulate(tmp_path, confirm=True, seed=7)
    gaps = [b - a for a, b in itertools.pairwise(sorted(sim.confirms))]
    assert min(gaps) >= MIN_GAP * lim.window / RPS - FLOAT_RESOLUTION


def test_without_delays_the_margin_stays_small_and_the_rate_high(tmp_path):
    sim, lim = simulate(tmp_path, confirm=True, seed=3, max_delay=0.002)
    assert busiest_second(sim.arrivals) <= RPS
    assert lim.send_delay_margin() == 0.0
    assert rate(sim.arrivals) > RPS / (1 + DEFAULT_MARGIN) * 0.98


def test_a_late_wake_widens_the_window_sends_are_confirmed_on(tmp_path):
    clock = Clock()
    lim = SharedRateLimiter(key="wake", requests_per_second=RPS, directory=tmp_path, clock=clock)
    lim.note_wake(late=0.12)
    assert lim.send_delay_margin() == 0.12
    lim.note_wake(late=5.0)  # bounded
    assert lim.send_delay_margin() == DELAY_CAP
    clock.now += DELAY_HALF_LIFE  # and fading
    assert abs(lim.send_delay_margin() - DELAY_CAP / 2) < FLOAT_RESOLUTION
