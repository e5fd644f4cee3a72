"""The arrival clock: windows, violations and peaks by the kernel's and the handler's stamps.

Every stamp is chosen by the test (no clock is read), so each count is known exactly.
"""

from __future__ import annotations

import random

import pytest

from kommo_dagster.sandbox.arrival_clock import LATE_SECONDS, Arrival, ArrivalClock


def _record(
    clock: ArrivalClock,
    stamps: list[float],
    *,
    window: float,
    limit: float | None,
    handled: list[float] | None = None,
) -> list[Arrival]:
    """Record arrivals as `Stats` and the gateway do: violations counted as each is decided."""
    out = []
    for k, at in enumerate(stamps):
        seen = handled[k] if handled is not None else at
        arrival = clock.arrive(at=at, handled=seen, stamp="kernel", window=window, limit=limit)
        if arrival.over or arrival.over_handler:
            clock.count_violations(arrival)
        out.append(arrival)
    return out


def _brute_force(stamps: list[float], *, window: float, limit: float) -> tuple[int, int]:
    """Violations and the one-second peak of a set of arrival times, counted from scratch."""
    s = sorted(stamps)
    violations = sum(
        sum(1 for j in range(i) if s[j] > s[i] - window) >= limit for i in range(len(s))
    )
    peak = max(sum(1 for j in range(i + 1) if s[j] > s[i] - 1.0) for i in range(len(s)))
    return violations, peak


def test_arrivals_in_order_count_the_ones_before_within_the_window():
    clock = ArrivalClock()
    arrivals = _record(clock, [10.0, 10.2, 10.4, 10.6, 11.3], window=1.0, limit=3)
    assert [a.before for a in arrivals] == [0, 1, 2, 3, 2]
    assert [a.over for a in arrivals] == [0, 0, 0, 1, 0]
    assert [a.over_handler for a in arrivals] == [False, False, False, True, False]
    assert (clock.violations, clock.violations_handler) == (1, 1)
    assert (clock.peak_per_second, clock.peak_per_second_handler) == (4, 4)


def test_without_a_limit_nothing_is_over_but_the_peak_is_measured():
    clock = ArrivalClock()
    arrivals = _record(clock, [5.0] * 20, window=1.0, limit=None)
    assert not any(a.over or a.over_handler for a in arrivals)
    assert clock.violations == 0 and clock.peak_per_second == 20


def test_an_earlier_arrival_recorded_late_completes_the_window_of_a_later_one():
    clock = ArrivalClock()
    stamps = [100.1, 100.2, 100.3, 100.4, 100.5, 100.6, 100.7]
    answered = _record(clock, stamps, window=1.0, limit=7)
    assert [a.over for a in answered] == [0] * 7
    # Recorded last, arrived first: the window of the arrival at 100.7 now holds 8.
    (late,) = _record(clock, [100.05], window=1.0, limit=7)
    assert (late.before, late.over) == (0, 1)
    assert clock.violations == 1 and clock.peak_per_second == 8
    # Outside every window of the others: nothing completed, and it is the first arrival.
    (early,) = _record(clock, [99.0], window=1.0, limit=7)
    assert early.over == 0 and clock.violations == 1
    assert (clock.first_at, clock.last_at) == (99.0, 100.7)


@pytest.mark.parametrize(("window", "limit"), [(1.0, 7), (2.5, 3), (0.5, 2.5)])
def test_violations_and_peak_do_not_depend_on_the_order_arrivals_are_recorded(window, limit):
    rng = random.Random(f"{window}:{limit}")
    stamps = [1000.0]
    for _ in range(60):
        stamps.append(stamps[-1] + rng.choice((0.0, rng.uniform(0.01, 0.3))))
    expected = _brute_force(stamps, window=window, limit=limit)
    assert expected[0] > 0
    for _ in range(5):
        shuffled = stamps[:]
        rng.shuffle(shuffled)
        clock = ArrivalClock()
        _record(clock, shuffled, window=window, limit=limit, handled=sorted(shuffled))
        assert (clock.violations, clock.peak_per_second) == expected


def test_handler_stamps_bunched_by_a_stall_show_what_the_kernel_stamps_do_not():
    clock = ArrivalClock()
    # Eight arrivals 0.16 s apart, met by handler threads within 0.07 s after a stall.
    kernel = [50.0 + 0.16 * k for k in range(8)]
    handled = [7.0 + 0.01 * k for k in range(8)]
    arrivals = _record(clock, kernel, window=1.0, limit=7, handled=handled)
    assert [a.over for a in arrivals] == [0] * 8
    assert [a.over_handler for a in arrivals] == [False] * 7 + [True]
    assert (clock.violations, clock.peak_per_second) == (0, 7)
    assert (clock.violations_handler, clock.peak_per_second_handler) == (1, 8)


def test_the_clock_names_which_stamps_the_arrivals_carry():
    clock = ArrivalClock()
    assert clock.clock() is None
    clock.arrive(at=1.0, handled=1.0, stamp="handler", window=1.0, limit=None)
    assert clock.clock() == "handler"
    clock.arrive(at=2.0, handled=2.0, stamp="kernel", window=1.0, limit=None)
    assert clock.clock() == "mixed"
    assert clock.stamped_by == {"handler": 1, "kernel": 1}


def test_old_arrivals_are_forgotten_but_a_late_one_still_finds_its_window():
    clock = ArrivalClock()
    stamps = [0.1 * k for k in range(10_000)]  # ten a second, for 1000 s
    _record(clock, stamps, window=1.0, limit=20)
    kept = len(clock._arrivals)
    assert kept < 2 * (LATE_SECONDS + 1) * 10 + 10, kept
    # Recorded LATE_SECONDS/2 late: still among the arrivals it came with.
    (late,) = _record(clock, [stamps[-1] - LATE_SECONDS / 2], window=1.0, limit=20)
    assert late.before == 10 and late.over == 0
