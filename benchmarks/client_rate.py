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
import math
import sys
import tempfile
import time
from datetime import UTC, datetime

from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, get_stream
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leads", type=int, default=3000)
    ap.add_argument("--rps", type=float, default=7.0)
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--jitter-ms", type=float, default=50.0)
    ap.add_argument("--max-workers", type=int, default=4)
    ap.add_argument("--streams", default=",".join(INCREMENTAL_STREAMS))
    args = ap.parse_args(argv)

    config = SandboxConfig(
        leads=args.leads,
        requests_per_second=args.rps,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.jitter_ms,
    )
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    rows_total = requests_total = minimum_total = 0
    wall_total = 0.0
    print(
        f"sandbox: {args.leads} leads, {args.rps:g}/s, {args.latency_ms:g}+-{args.jitter_ms:g} ms; "
        f"client: max_workers={args.max_workers}"
    )
    print(f"{'stream':<10} {'rows':>7} {'requests':>8} {'minimum':>7} {'req/s':>6} {'of limit':>8}")
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
            size = get_stream(stream).page_size or 250
            before = client.stats()
            t0 = time.monotonic()
            rows = sum(len(p) for p in client.iter_records(stream, start=start, end=end))
            wall = time.monotonic() - t0
            after = client.stats()
            requests = after.requests - before.requests
            parts = after.parts[len(before.parts) :]
            minimum = sum(math.ceil(p.rows / size) for p in parts if p.kind != "verify")
            rate = requests / wall
            print(
                f"{stream:<10} {rows:>7} {requests:>8} {minimum:>7} {rate:>6.2f} "
                f"{rate / args.rps:>8.1%}"
            )
            rows_total += rows
            requests_total += requests
            minimum_total += minimum
            wall_total += wall
        stats = sb.stats()
    rate = requests_total / wall_total
    print(
        f"{'total':<10} {rows_total:>7} {requests_total:>8} {minimum_total:>7} {rate:>6.2f} "
        f"{rate / args.rps:>8.1%}"
    )
    print(
        f"wall {wall_total:.1f}s; sandbox: {stats['requests']} requests, "
        f"{stats['rate_limited']} answered 429, {stats['violations']} violations, "
        f"peak {stats['peak_requests_per_second']} requests in one second (arrivals stamped by: "
        f"{stats['arrival_clock']}; by the handler threads' clock {stats['violations_handler']} "
        f"violations, peak {stats['peak_requests_per_second_handler']})"
    )
    return 0 if stats["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
