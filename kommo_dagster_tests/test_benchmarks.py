"""Smoke test of the benchmark entry point in a tiny configuration (no timing is asserted).

The real figures come from running `python -m benchmarks.run` by hand; this only checks that
the harness drives every scenario end to end through the Dagster path and reports the sandbox's
own counts, and that the dlt peer's configuration reads the sandbox (when dlt, the `bench`
extra, is installed; CI installs only `dev`).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import pytest

from benchmarks import metrics, run

pytestmark = pytest.mark.timeout(180)


def test_quick_run_reports_every_scenario(tmp_path):
    # The peer's workers would double the cost; its configuration is checked below, in process.
    extractors = "dagster"
    code = run.main(
        [
            "--quick",
            "--ceiling-leads", "300",
            "--local-leads", "300",
            "--account-leads", "300",
            "--streams", "leads",
            "--latency-ms", "0",
            "--jitter-ms", "0",
            "--extractors", extractors,
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    rows = {(r["scenario"], r["extractor"]): r for r in data["rows"]}
    names = [run.NAMES[e] for e in extractors.split(",")]
    assert set(rows) == {
        (s, n) for s in ("1 ceiling", "2 local cost", "3 quiet day") for n in names
    } | {("5 accounts", run.NAMES["dagster"])}
    accounts = rows.pop(("5 accounts", run.NAMES["dagster"]))
    # Two accounts of the multi-account configuration, each its own run against its own host.
    assert [s["stream"] for s in accounts["streams"]] == ["acc0/leads", "acc1/leads"]
    assert all(s["rows"] == 300 and s["requests"] >= s["minimum"] for s in accounts["streams"])
    assert accounts["errors"] == [] and accounts["throttled"] == 0 and accounts["targets"]
    assert accounts["violations"] == 0
    for (scenario, _), row in rows.items():
        assert row["errors"] == []
        # The sandbox's own counts, by the kernel's arrival stamps: the client kept to 7 a second.
        assert row["throttled"] == 0 and row["violations"] == 0
        assert row["targets"], "every row is judged against its targets"
        (leads,) = row["streams"]
        assert leads["stream"] == "leads"
        # Requests are the sandbox's count; at least the minimum is needed to read the rows.
        assert leads["requests"] >= 1
        if scenario == "3 quiet day":
            assert leads["rows"] == 0
        else:
            assert leads["rows"] > 0
            assert leads["requests"] >= leads["minimum"]
    ours = rows[("1 ceiling", run.NAMES["dagster"])]["streams"][0]
    # 300 leads hold 12 deleted ones (every 25th): our extraction reads both lists.
    assert ours["rows"] == 300
    markdown = (tmp_path / "latest.md").read_text()
    for scenario in ("1 ceiling", "2 local cost", "3 quiet day", "5 accounts"):
        assert f"| {scenario} |" in markdown


def test_dlt_peer_reads_the_window(sandbox, tmp_path):
    pytest.importorskip("dlt")
    from benchmarks import dlt_peer

    sandbox.reset()
    lo, hi = run.Plan().epoch(sandbox.config.start), run.Plan().epoch(sandbox.config.end)
    out = dlt_peer.run_stream(
        base_url=sandbox.base_url,
        token=sandbox.token,
        stream="leads",
        start=lo,
        end=hi,
        workdir=tmp_path,
    )
    live = [r for r in sandbox.records("leads") if not r.get("is_deleted")]
    assert out["extract_seconds"] > 0
    assert dlt_peer.window_rows(tmp_path, "leads", lo, hi) == len(live)
    # Full pages of 250, then the page past the end (204) that stops its paginator.
    assert sandbox.stats()["requests"] == -(-len(live) // 250) + 1


def _run(stream: str, lists: dict[str, int], requests: int, **extra) -> dict:
    return {
        "stream": stream,
        "lists": lists,
        "requests": requests,
        "wall": 10.0,
        "extract_seconds": 5.0,
        "cpu": 1.0,
        "rate_limited": 0,
        "violations": 0,
        "peak_requests_per_second": 7,
        **extra,
    }


def test_minimum_counts_every_list_in_full_pages():
    # 500 live leads = 2 pages; an empty deleted list still costs the request that finds it.
    assert metrics.window_minimum("leads", {"live": 500, "deleted": 0}) == 3
    assert metrics.window_minimum("leads", {"live": 501, "deleted": 30}) == 4
    # Events page by 100.
    assert metrics.window_minimum("events", {"live": 101}) == 2


def test_subwindow_minimum_skips_checks_and_a_probe_that_pages_re_read():
    parts = [
        {"kind": "probe", "rows": 250},
        {"kind": "pages", "rows": 260},
        {"kind": "pages", "rows": 0},
        {"kind": "verify", "rows": 3},
    ]
    assert metrics.subwindow_minimum("tasks", parts) == 2 + 1
    # A probe that was the whole walk is the list.
    assert metrics.subwindow_minimum("tasks", [{"kind": "probe", "rows": 40}]) == 1
    assert metrics.subwindow_minimum("tasks", []) is None


def _ceiling(*, leads: int, leads_requests: int, events_requests: int) -> metrics.Row:
    """Scenario 1 with a leads run and an events run (150 events) of 5 s of extraction each."""
    return metrics.Row(
        scenario="1 ceiling",
        extractor="x",
        streams=[
            metrics.stream_figures(_run("leads", {"live": leads, "deleted": 0}, leads_requests)),
            metrics.stream_figures(_run("events", {"live": 150}, events_requests)),
        ],
    )


def test_targets_judge_rate_wall_excess_per_list_and_429s():
    row = _ceiling(leads=1000, leads_requests=6, events_requests=5)
    # 11 requests in 10 s of extraction: 1.1/s of 7; the leads run's own: 6 in 5 s.
    assert row.rate_ratio == pytest.approx(11 / 10.0 / 7)
    assert row.streams[0].rate_ratio == pytest.approx(6 / 5.0 / 7)
    assert row.minimum == 5 + 2
    targets = metrics.evaluate_targets(row, kind="ceiling")
    assert targets == {
        "leads rate ≥ 0.95 of the limit": False,
        # leads: 10 s of wall against 5 requests at 7/s.
        "leads wall ≤ 1.10 × minimum time": False,
        # leads: +1 over two lists passes; events: 5 against 2 on its one list does not.
        "requests ≤ minimum + 2 per list": False,
        "no 429": True,
    }
    # The rate is judged on the leads run, whatever the short runs beside it achieve.
    at_limit = _ceiling(leads=8500, leads_requests=34, events_requests=2)
    assert at_limit.rate_ratio < 0.95
    assert metrics.evaluate_targets(at_limit, kind="ceiling")["leads rate ≥ 0.95 of the limit"]
    quiet = metrics.Row(
        scenario="3 quiet day",
        extractor="x",
        streams=[metrics.stream_figures(_run("leads", {"live": 0, "deleted": 0}, 2))],
        limit=None,
    )
    # Leads read two lists (live and deleted): one request each is the target.
    assert metrics.evaluate_targets(quiet, kind="quiet") == {"≤ 1 request per list": True}
    quiet.streams[0].requests = 3
    assert metrics.evaluate_targets(quiet, kind="quiet") == {"≤ 1 request per list": False}
    quiet.streams[0].requests = 2
    assert "| 3 quiet day | x | 0 | 2 (2) |" in metrics.summary_table([quiet])


def test_the_streams_table_shows_the_handler_clocks_peak_where_it_differs():
    same = _run("leads", {"live": 10}, 2, peak_requests_per_second_handler=7)
    late = _run("tasks", {"live": 10}, 2, peak_requests_per_second_handler=9)
    row = metrics.Row(
        scenario="1 ceiling",
        extractor="x",
        streams=[metrics.stream_figures(same), metrics.stream_figures(late)],
    )
    table = metrics.streams_table([row])
    assert "| 7 | 0 |" in table.splitlines()[2]
    assert "| 7 (9) | 0 |" in table.splitlines()[3]


def test_launch_runs_two_accounts_as_cli_runs_at_once(tmp_path):
    """`benchmarks.launch`: each account its own `dagster asset materialize` process; the
    figures are the sandboxes' counts and the processes' own usage."""
    from benchmarks import launch

    plan = run.Plan(account_leads=300, latency_ms=0, jitter_ms=0, worker_timeout=150)
    result = launch.run_scenario(plan, count=2, workdir=tmp_path)
    assert [r.name for r in result.runs] == ["acc0", "acc1"]
    for r in result.runs:
        assert r.returncode == 0
        assert r.rows == 300 and r.requests >= r.minimum >= 2
        assert r.throttled == 0 and r.violations == 0
        assert r.arrival_clock == ("kernel" if sys.platform == "linux" else "handler")
        assert r.peak_per_second_handler >= 1
        assert r.startup is not None and r.startup > 0 and r.startup_cpu is not None
        assert r.cpu > 0 and r.peak_rss > 0
    assert "2 runs launched at once: 600 rows" in result.summary()


def test_startup_marks_a_cli_run_up_to_its_first_request(tmp_path):
    """`benchmarks.startup`: the phases of a real CLI run, in order, with the code location
    configured for two accounts; and of the floor code location, whose definitions cost less."""
    from benchmarks import startup

    plan = run.Plan(latency_ms=0, jitter_ms=0)
    ours, floor = startup.Target(run.ROOT), startup.Target(run.ROOT, startup.FLOOR)
    marks = startup.measure(plan, tmp_path, accounts=2, tries=1, targets=[ours, floor])
    assert list(marks) == [ours, floor] and all(len(runs) == 1 for runs in marks.values())
    for phases in (marks[ours][0], marks[floor][0]):
        assert [mark.name for mark in phases] == [
            "Python started",
            "Dagster and its CLI imported",
            "instance opened",
            "definitions loaded and resolved",
            "run created (its planned events stored)",
            "first request",
        ]
        cpu = [mark.cpu for mark in phases]
        assert cpu == sorted(cpu) and cpu[-1] > cpu[0] > 0
        # Wall time from the launch: in order, and never less than the CPU of one thread.
        wall = [mark.wall for mark in phases]
        assert wall == sorted(wall) and wall[0] > 0 and wall[-1] >= cpu[-1] * 0.9
    assert "| first request |" in startup._table(marks[ours])

    def definitions_phase(phases: list[startup.Mark]) -> float:
        return phases[3].cpu - phases[2].cpu

    assert definitions_phase(marks[floor][0]) < definitions_phase(marks[ours][0])


def test_startup_env_reaches_every_try_and_names_a_malformed_assignment(tmp_path):
    """`--env NAME=VALUE` is in each try's environment: a malformed setting given through it
    stops the run at its definitions, and the benchmark quotes the run's error."""
    import argparse

    from benchmarks import startup

    assert startup._assignment("DAGSTER_X=a=b") == ("DAGSTER_X", "a=b")
    for bad in ("DAGSTER_X", "=true"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(bad))):
            startup._assignment(bad)
    plan = run.Plan(latency_ms=0, jitter_ms=0)
    with pytest.raises(RuntimeError, match="KOMMO_REQUESTS_PER_SECOND") as caught:
        startup.measure(
            plan,
            tmp_path,
            accounts=1,
            tries=1,
            targets=[startup.Target(run.ROOT)],
            extra_env={"KOMMO_REQUESTS_PER_SECOND": "fast"},
        )
    assert "'fast'" in str(caught.value)


def test_the_floor_code_location_has_the_leads_assets_shape(monkeypatch):
    """`benchmarks.floor_location` stands for one account's leads run: the same key, daily
    partitions from the same start, single-run backfills, as many checks."""
    import importlib

    import dagster as dg

    from kommo_dagster.kommo.streams import get_stream
    from kommo_dagster.orchestration.checks import check_names

    monkeypatch.setenv("KOMMO_START_DATE", "2026-01-01")
    floor = importlib.reload(importlib.import_module("benchmarks.floor_location"))
    (leads,) = floor.defs.assets
    assert leads.key == dg.AssetKey(["kommo", "acc0", "leads"])
    assert leads.partitions_def == dg.DailyPartitionsDefinition("2026-01-01", end_offset=1)
    assert leads.backfill_policy == dg.BackfillPolicy.single_run()
    assert len(list(leads.check_specs)) == floor.CHECKS == len(check_names(get_stream("leads")))


def test_launch_through_the_queue_reports_the_wait_and_the_slots(tmp_path):
    """`benchmarks.launch --through-queue`: the runs go through deploy/dagster.yaml's queue and
    a daemon; the figures are the sandboxes' counts, the queue's record and sampled usage."""
    from benchmarks import launch

    plan = run.Plan(account_leads=300, latency_ms=0, jitter_ms=0, worker_timeout=150)
    result = launch.run_scenario(plan, count=2, workdir=tmp_path, through_queue=True)
    assert [r.name for r in result.runs] == ["acc0", "acc1"]
    for r in result.runs:
        assert r.returncode == 0
        assert r.rows == 300 and r.requests >= r.minimum >= 2
        assert r.throttled == 0 and r.violations == 0
        assert r.queued >= 0 and r.launched < r.first_request < r.ended
        assert r.cpu > 0 and r.peak_rss > 0
    assert result.slots == 4 and result.most_at_once in (1, 2) and result.slot_waits == []
    assert "2 runs submitted at once to the queue (at most 4 at once" in result.summary()


def test_the_profile_charges_a_thread_blocked_at_the_end_none_of_the_main_threads_cpu():
    """A thread still waiting when profiling ends once took the main thread's whole CPU time
    (its open calls were closed on the main thread's clock). Bounded by CPU, not wall time:
    the main thread spends 0.3 s of its own clock; the blocked thread spends next to none."""
    from benchmarks.profile import AllThreadsProfile

    release = threading.Event()
    started = threading.Event()

    def blocked() -> None:
        started.set()
        release.wait()

    def burn() -> None:  # a call of its own: cProfile times calls begun while it is on
        spent = time.thread_time()
        while time.thread_time() - spent < 0.3:
            pass

    with AllThreadsProfile() as prof:
        thread = threading.Thread(target=blocked, name="blocked-at-the-end")
        thread.start()
        started.wait()
        burn()
    try:
        totals = prof.by_thread()
        prof.stats()  # the merged figures too, while the thread still waits
        totals_after = prof.by_thread()
    finally:
        release.set()
        thread.join()
    assert totals["MainThread"] >= 0.3
    assert totals["blocked-at-the-end"] < 0.05
    assert totals_after["blocked-at-the-end"] < 0.05


class _WalkedClient:
    """What `benchmarks.client_rate._walk` reads of a client: its stats before and after a
    walk that recorded ``parts``, and the walk's pages."""

    def __init__(self, parts, *, rows: int, requests: int) -> None:
        from kommo_dagster.kommo.stats import ClientStats

        def stats(n: int, parts=()):
            return ClientStats(
                requests=n, pages=n, rows=0, retries=0, unsent=0, throttled=0, errors=0,
                elapsed=1.0, waited=0.0, parts=tuple(parts),
            )  # fmt: skip

        self._stats = [stats(0), stats(requests, parts)]
        self._rows = rows

    def stats(self):
        return self._stats.pop(0)

    def iter_records(self, stream, *, start, end):
        yield [{}] * self._rows


def test_client_rate_counts_the_minimum_as_the_benchmark_does():
    """An empty list still costs the request that finds it empty; a tasks probe that the
    pages re-read is no list of its own."""
    from benchmarks import client_rate
    from kommo_dagster.kommo.stats import PartStats

    def part(stream: str, kind: str, rows: int) -> PartStats:
        return PartStats(stream=stream, kind=kind, start=0, end=1, requests=1, rows=rows)

    leads = [part("leads", "live", 100), part("leads", "deleted", 0)]
    walk = client_rate._walk(_WalkedClient(leads, rows=100, requests=2), "leads")
    assert (walk.rows, walk.requests, walk.minimum) == (100, 2, 2)
    quiet_tasks = [part("tasks", "probe", 0)]
    assert client_rate._walk(_WalkedClient(quiet_tasks, rows=0, requests=1), "tasks").minimum == 1
    tasks = [part("tasks", "probe", 250), part("tasks", "pages", 260), part("tasks", "pages", 240)]
    assert client_rate._walk(_WalkedClient(tasks, rows=500, requests=4), "tasks").minimum == 2 + 1


def test_the_summary_reports_violations_beside_the_429s():
    """The sandbox's violations (more than 7 in a second by the kernel's stamps) are in the
    table and the JSON, not only the 429s they drew."""
    late = _run("leads", {"live": 500, "deleted": 0}, 5, rate_limited=1, violations=3)
    row = metrics.Row(scenario="1 ceiling", extractor="x", streams=[metrics.stream_figures(late)])
    assert row.violations == 3 and metrics.as_dict(row)["violations"] == 3
    table = metrics.summary_table([row])
    assert "| 429s (violations) |" in table.splitlines()[0]
    assert "| 1 (3) |" in table.splitlines()[2]


def test_a_run_is_timed_without_the_count_of_its_rows():
    """The rows a run wrote are counted after its wall and CPU are taken: the benchmark's own
    query is no cost of the extractor's."""
    from benchmarks import worker

    class Runner:
        def run(self, stream, start, end):
            return {"extract_seconds": 0.01}

        def lists(self, stream, start, end, out):
            spent = time.process_time()
            while time.process_time() - spent < 0.3:
                pass
            return {"live": 500, "deleted": 0}

    class Control:
        def reset_stats(self):
            pass

        def stats(self):
            return dict.fromkeys(worker._SANDBOX_COUNTS, 0)

    run = {"stream": "leads", "start": 0, "end": 86_400}
    out = worker._measure_run(Runner(), Control(), run)  # type: ignore[arg-type]
    assert out["lists"] == {"live": 500, "deleted": 0} and out["error"] is None
    assert out["wall"] < 0.2 and out["cpu"] < 0.2


def test_a_leads_run_without_its_extraction_time_misses_the_rate_target():
    """A run whose asset reported no extraction time has no measured rate: the rate target is
    shown as missed, not left out of a row whose other targets pass."""
    unmeasured = _run("leads", {"live": 500, "deleted": 0}, 3, extract_seconds=None, wall=0.4)
    row = metrics.Row(
        scenario="1 ceiling", extractor="x", streams=[metrics.stream_figures(unmeasured)]
    )
    targets = metrics.evaluate_targets(row, kind="ceiling")
    assert targets["leads rate ≥ 0.95 of the limit"] is False
    assert targets["leads wall ≤ 1.10 × minimum time"] is True
