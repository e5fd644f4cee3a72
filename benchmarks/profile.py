"""`python -m benchmarks.profile`: where our CPU goes in scenario 2 (local cost).

Starts the sandbox without latency or limit in its own process, materializes one stream's whole
window through the Dagster path in this process under cProfile (every thread: the client's HTTP
workers too), and prints the functions that cost the most, grouped by the module that owns them
(client, records, warehouse/IO manager, assets, Dagster, DuckDB, HTTP).

    python -m benchmarks.profile --leads 100000 --stream leads --top 40 --save /tmp/leads.pstats
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.run import Plan
from benchmarks.worker import DagsterRunner, cpu_seconds
from kommo_dagster.sandbox import SandboxProcess

# Owner of each hot spot, by path fragment (first match wins).
OWNERS = (
    ("kommo_dagster/kommo/decoding", "decoding into typed records (client)"),
    ("kommo_dagster/kommo/columns", "Arrow batches (client)"),
    ("kommo_dagster/kommo/records", "records.to_columns (client)"),
    ("kommo_dagster/kommo/", "client (kommo_dagster.kommo)"),
    ("kommo_dagster/warehouse", "warehouse (IO manager)"),
    ("kommo_dagster/orchestration/io_manager", "IO manager"),
    ("kommo_dagster/orchestration/assets", "assets"),
    ("kommo_dagster/", "kommo_dagster (other)"),
    ("site-packages/dagster", "dagster"),
    ("site-packages/duckdb", "duckdb"),
    ("site-packages/pandas", "pandas"),
    ("site-packages/numpy", "numpy"),
    ("site-packages/pyarrow", "Arrow batches (client)"),
    ("msgspec", "decoding into typed records (client)"),
    ("pyarrow", "Arrow batches (client)"),
    ("site-packages/requests", "requests/urllib3"),
    ("site-packages/urllib3", "requests/urllib3"),
    ("/urllib/request.py", "requests/urllib3"),
    ("/http/client.py", "requests/urllib3"),
    ("/email/", "requests/urllib3"),
    ("site-packages/sqlalchemy", "dagster"),
    ("site-packages/filelock", "filelock (rate limiter)"),
)


def owner(filename: str, name: str) -> str:
    # Built-in methods have no file; their names say whose they are ("of 'msgspec...").
    for fragment, who in OWNERS:
        if fragment in filename or (filename == "~" and fragment in name):
            return who
    return "other (stdlib, builtins)"


class ThreadProfile(cProfile.Profile):
    """cProfile on the CPU clock of the thread that made it, which alone may close it."""

    def __init__(self) -> None:
        super().__init__(time.thread_time)
        self.thread = threading.current_thread()

    def disable(self) -> None:
        # disable() closes the calls still open with the calling thread's clock: from another
        # thread it charged a thread blocked at the end (the watchdog waiting on its lock, an
        # idle pool worker) the caller's whole CPU time, seconds it never ran. A thread still
        # in a call when the run ends keeps its finished calls only.
        if threading.current_thread() is self.thread:
            super().disable()


class AllThreadsProfile:
    """cProfile (CPU time) in the calling thread and in every thread started while active."""

    def __init__(self) -> None:
        self.profiles: list[ThreadProfile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *_: object) -> None:
        # Each thread's own CPU clock: waits (queues, sockets, locks, sleeps) cost nothing.
        profile = ThreadProfile()
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def __enter__(self) -> AllThreadsProfile:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        for p in self.profiles:
            p.disable()

    def stats(self) -> pstats.Stats:
        stats = pstats.Stats(self.profiles[0], stream=io.StringIO())
        for p in self.profiles[1:]:
            # A thread that never ran any profiled code has no stats to add.
            with contextlib.suppress(TypeError):
                stats.add(p)
        return stats

    def by_thread(self) -> dict[str, float]:
        """Own CPU time of each profiled thread (threads of one name summed)."""
        totals: dict[str, float] = defaultdict(float)
        for p in self.profiles:
            with contextlib.suppress(TypeError):
                stats = pstats.Stats(p, stream=io.StringIO())
                totals[p.thread.name] += sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def by_owner(stats: pstats.Stats) -> dict[str, float]:
    """Own CPU time per owner. A builtin (``dict.get``, ``orjson.loads``...) is charged to the
    owners of the functions that called it, in proportion to the time each call site spent."""
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, name), (_cc, _nc, tottime, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename != "~" or not callers:
            totals[owner(filename, name)] += tottime
            continue
        for (caller_file, _l, caller_name), edge in callers.items():
            totals[owner(caller_file, caller_name)] += edge[2]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--leads", type=int, default=100_000)
    p.add_argument("--stream", default="leads")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--save", type=Path, help="write the merged pstats here")
    ns = p.parse_args(argv)
    plan = Plan()
    config = plan.sandbox(leads=ns.leads, requests_per_second=None)
    with (
        tempfile.TemporaryDirectory(prefix="kommo-profile-") as tmp,
        SandboxProcess(config, startup_timeout=900) as sandbox,
    ):
        spec = {
            "base_url": sandbox.base_url,
            "token": sandbox.token,
            "partitions_start": plan.data_start.isoformat(),
            "requests_per_second": plan.local_client_rps,
        }
        runner = DagsterRunner(spec, Path(tmp))
        lo, hi = plan.full_window()
        c0, t0 = cpu_seconds(), time.perf_counter()
        with AllThreadsProfile() as prof:
            out = runner.run(ns.stream, lo, hi)
        cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
        # Counted before the temporary folder (and its DuckDB file) goes.
        rows = sum(runner.lists(ns.stream, lo, hi, out).values())
    print(
        f"{ns.stream}: {rows:,} rows, {cpu:.1f} CPU s under the profiler ({wall:.1f} s wall); "
        "profiling inflates CPU, read the shares, not the totals",
        file=sys.stderr,
    )
    stats = prof.stats()
    total = sum(v for v in by_owner(stats).values())
    print("\nOwn time by owner:")
    for who, seconds in by_owner(stats).items():
        print(f"  {who:32s} {seconds:8.2f} s  {seconds / total:6.1%}")
    print(f"\nOwn time by thread (profiled: {total:.2f} s of the process's {cpu:.2f} CPU s):")
    for name, seconds in prof.by_thread().items():
        print(f"  {name:32s} {seconds:8.2f} s")
    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(ns.top)
    print(buffer.getvalue())
    if ns.save:
        stats.dump_stats(str(ns.save))
    os.environ.pop("DAGSTER_HOME", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
