"""The counters behind /__sandbox/stats."""

from __future__ import annotations

import threading
import time
from collections import Counter

from kommo_dagster.sandbox.stats import Stats


def test_arrivals_report_how_many_came_before_within_the_window():
    stats = Stats()
    assert [stats.arrive(window=60) for _ in range(4)] == [0, 1, 2, 3]
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
            before = stats.arrive(window=600)
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
    stats.arrive()
    stats.record("/api/v4/leads", 429)
    stats.record("/api/v4/leads", "dropped")
    stats.violation()
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
