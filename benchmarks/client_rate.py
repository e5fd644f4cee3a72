"""How close the Kommo client runs to the account's rate limit, and how many requests it spends.

Starts the sandbox in its own process (300 ms +- 50 ms latency, 7 requests/s by default),
extracts the incremental streams of its whole data window with the client alone (no Dagster),
and prints, per stream and in total: rows, requests, the minimum (sum over the sub-windows the
client used of ceil(rows / page size)), achieved requests per second against the limit, and the
429s, violations and peak second the sandbox saw (by the kernel's arrival stamps, and by its
handler threads' clock beside them).

    .venv/bin/python -m benchmarks.client_rate --leads 3000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from benchmarks import metrics
from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.stats import PartStats
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess

# The data window the streams are read over: the sandbox's default month.
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Walk:
    """One stream's walk over the window (or the walks' sum): what it read and spent."""

    rows: int
    requests: int
    minimum: int
    wall: float

    def line(self, label: str, *, limit: float) -> str:
        """The table's row: requests per second over the wall time, and against the limit."""
        rate = self.requests / self.wall
        return (
            f"{label:<10} {self.rows:>7} {self.requests:>8} {self.minimum:>7} {rate:>6.2f} "
            f"{rate / limit:>8.1%}"
        )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leads", type=int, default=3000)
    ap.add_argument("--rps", type=float, default=7.0)
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--jitter-ms", type=float, default=50.0)
    ap.add_argument("--max-workers", type=int, default=4)
    ap.add_argument("--streams", default=",".join(INCREMENTAL_STREAMS))
    return ap.parse_args(argv)


def _walk(client: KommoClient, stream: str) -> _Walk:
    """Read the stream's window; the wall time is the reading alone, the client's counters
    are read before and after it."""
    before = client.stats()
    t0 = time.monotonic()
    rows = sum(len(p) for p in client.iter_records(stream, start=START, end=END))
    wall = time.monotonic() - t0
    after = client.stats()
    minimum = walk_minimum(stream, after.parts[len(before.parts) :])
    return _Walk(rows, after.requests - before.requests, minimum, wall)


def walk_minimum(stream: str, parts: Sequence[PartStats]) -> int:
    """The minimum over the walk's sub-windows, counted as the benchmark counts it
    (`metrics.subwindow_minimum`): an empty list still costs its request, a probe the pages
    re-read is no list of its own, checks read none."""
    dicts = [{"kind": p.kind, "rows": p.rows} for p in parts]
    return metrics.subwindow_minimum(stream, dicts) or 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    config = SandboxConfig(
        leads=args.leads,
        requests_per_second=args.rps,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.jitter_ms,
    )
    print(
        f"sandbox: {args.leads} leads, {args.rps:g}/s, {args.latency_ms:g}+-{args.jitter_ms:g} ms; "
        f"client: max_workers={args.max_workers}"
    )
    print(f"{'stream':<10} {'rows':>7} {'requests':>8} {'minimum':>7} {'req/s':>6} {'of limit':>8}")
    walks: list[_Walk] = []
    with (
        SandboxProcess(config) as sb,
        tempfile.TemporaryDirectory() as rate_dir,
        KommoClient(
            base_url=sb.base_url,
            token=sb.token,
            requests_per_second=args.rps,
            max_workers=args.max_workers,
            rate_limit_dir=rate_dir,
        ) as client,
    ):
        for stream in args.streams.split(","):
            walks.append(_walk(client, stream))
            print(walks[-1].line(stream, limit=args.rps))
        stats = sb.stats()
    total = _Walk(
        rows=sum(w.rows for w in walks),
        requests=sum(w.requests for w in walks),
        minimum=sum(w.minimum for w in walks),
        wall=sum(w.wall for w in walks),
    )
    print(total.line("total", limit=args.rps))
    print(_sandbox_line(total.wall, stats))
    return 0 if stats["violations"] == 0 else 1


def _sandbox_line(wall: float, stats: dict) -> str:
    """What the sandbox saw over every walk: its 429s, violations and peak second."""
    return (
        f"wall {wall:.1f}s; sandbox: {stats['requests']} requests, "
        f"{stats['rate_limited']} answered 429, {stats['violations']} violations, "
        f"peak {stats['peak_requests_per_second']} requests in one second (arrivals stamped by: "
        f"{stats['arrival_clock']}; by the handler threads' clock {stats['violations_handler']} "
        f"violations, peak {stats['peak_requests_per_second_handler']})"
    )


if __name__ == "__main__":
    sys.exit(main())
