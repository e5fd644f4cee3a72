"""The counters behind /__sandbox/stats (the arrival clock's arithmetic: test_arrival_clock)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from kommo_dagster.sandbox.arrival_clock import Arrival
from kommo_dagster.sandbox.stats import Stats


def test_arrivals_report_how_many_came_before_within_the_window():
    stats = Stats()
    assert [stats.arrive(window=60).before for _ in range(4)] == [0, 1, 2, 3]
    snap = stats.snapshot()
    assert snap["requests"] == 4
    assert snap["peak_requests_per_second"] == 4
    assert snap["peak_concurrency"] == 4 and snap["in_flight"] == 4
    for _ in range(4):
        stats.leave()
    assert stats.snapshot()["in_flight"] == 0


def test_racing_threads_record_every_arrival_once():
    stats = Stats()
    seen: list[int] = []
    lock = threading.Lock()

    def hammer():
        for _ in range(200):
            before = stats.arrive(window=600).before
            with lock:
                seen.append(before)
            stats.leave()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each arrival saw a distinct number of predecessors: the window is kept in order.
    assert sorted(seen) == list(range(800))
    assert stats.snapshot()["requests"] == 800


def test_answers_violations_faults_and_churn_are_counted_and_reset():
    stats = Stats()
    stats.arrive(limit=1)
    stats.violation(stats.arrive(limit=1))
    stats.record("/api/v4/leads", 429)
    stats.record("/api/v4/leads", "dropped")
    stats.fault("drop")
    stats.churned(Counter(leads_updated=2))
    snap = stats.snapshot(banned=False)
    assert snap["by_path"] == {"/api/v4/leads": {"429": 1, "dropped": 1}}
    assert snap["rate_limited"] == 1 and snap["violations"] == 1
    assert snap["faults"] == {"drop": 1}
    assert snap["churn_steps"] == 1 and snap["churn_changes"] == {"leads_updated": 2}
    assert snap["banned"] is False
    stats.reset()
    assert stats.snapshot()["requests"] == 0


def test_the_first_and_last_arrival_are_unix_times_cleared_by_a_reset():
    stats = Stats()
    assert stats.snapshot()["first_arrival_at"] is None
    before = time.time()
    stats.arrive()
    stats.arrive()
    snap = stats.snapshot()
    assert before <= snap["first_arrival_at"] <= snap["last_arrival_at"] <= time.time()
    stats.reset()
    assert stats.snapshot()["last_arrival_at"] is None


def _record(stats: Stats, stamps: list[float], *, window: float, limit: float) -> list[Arrival]:
    """Record arrivals as the gateway does: the violations of each counted as it is decided."""
    out = []
    for at in stamps:
        arrival = stats.arrive(at=at, window=window, limit=limit)
        if arrival.over or arrival.over_handler:
            stats.violation(arrival)
        out.append(arrival)
    return out


def test_an_earlier_arrival_recorded_late_completes_the_window_of_a_later_one():
    stats = Stats()
    stamps = [100.1, 100.2, 100.3, 100.4, 100.5, 100.6, 100.7]
    answered = _record(stats, stamps, window=1.0, limit=7)
    assert [a.over for a in answered] == [0] * 7
    # Recorded last, arrived first: the window of the arrival at 100.7 now holds 8.
    late = stats.arrive(at=100.05, window=1.0, limit=7)
    assert (late.before, late.over) == (0, 1)
    # Outside every window of the others: nothing completed.
    assert stats.arrive(at=99.0, window=1.0, limit=7).over == 0
    snap = stats.snapshot()
    assert snap["peak_requests_per_second"] == 8
    assert (snap["first_arrival_at"], snap["last_arrival_at"]) == (99.0, 100.7)


def test_the_handler_clock_is_kept_beside_the_kernel_stamps():
    stats = Stats()
    # Eight arrivals 0.16 s apart, recorded at once as stalled handler threads would.
    arrivals = _record(stats, [50.0 + 0.16 * k for k in range(8)], window=1.0, limit=7)
    assert [a.over for a in arrivals] == [0] * 8
    assert [a.over_handler for a in arrivals] == [False] * 7 + [True]
    snap = stats.snapshot()
    assert snap["violations"] == 0 and snap["peak_requests_per_second"] == 7
    assert snap["violations_handler"] == 1 and snap["peak_requests_per_second_handler"] == 8
    assert snap["arrival_clock"] == "kernel" and snap["arrivals_by_clock"] == {"kernel": 8}
    stats.arrive()
    assert stats.snapshot()["arrival_clock"] == "mixed"
    stats.reset()
    assert stats.snapshot()["arrival_clock"] is None
    stats.arrive()
    assert stats.snapshot()["arrivals_by_clock"] == {"handler": 1}
