"""What the Kommo sandbox itself costs, so benchmarks never measure it by mistake.

Prints (no assertions):
- start-up: wall time from launching `python -m kommo_dagster.sandbox` to its URL line, for a
  100,000-lead account, and the server's resident memory once it serves;
- server CPU per 250-lead page, read from the server process's own CPU counters while a client
  walks pages: the first walk over a window (selection computed), a second walk (cached
  selection), day-partition first pages, and a tiny request for the HTTP floor.

Run: .venv/bin/python benchmarks/sandbox_cost.py [--leads 100000] [--pages 100]
"""

from __future__ import annotations

import argparse
import sys
import time

import psutil
import requests

from kommo_dagster.sandbox import SandboxConfig, SandboxProcess

START_TS = 1_790_812_800  # 2026-10-01, the default window's start
DAY = 86_400
# A month of leads from the default window's start, as the extraction asks for them.
WINDOW = {
    "limit": 250,
    "order[updated_at]": "asc",
    "filter[updated_at][from]": START_TS,
    "filter[updated_at][to]": START_TS + 31 * DAY - 1,
    "with": "source_id,is_price_modified_by_robot",
}


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _walk(session: requests.Session, base: str, params: dict, pages: int) -> int:
    served = 0
    for page in range(1, pages + 1):
        r = session.get(f"{base}/api/v4/leads", params={**params, "page": page}, timeout=60)
        if r.status_code == 204:
            break
        r.raise_for_status()
        served += 1
    return served


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--leads", type=int, default=100_000)
    p.add_argument("--pages", type=int, default=100)
    args = p.parse_args(argv)

    began = time.perf_counter()
    sp = SandboxProcess(SandboxConfig(leads=args.leads, requests_per_second=None)).start()
    startup = time.perf_counter() - began
    try:
        proc = psutil.Process(sp.pid)
        rss = proc.memory_info().rss / 2**20
        print(
            f"sandbox with {args.leads:,} leads: start-up {startup:.2f} s wall "
            f"({_cpu(proc):.2f} s CPU), RSS {rss:,.0f} MiB"
        )
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {sp.token}"
        _page_walks(proc, session, sp.base_url, pages=args.pages)
        _day_partitions(proc, session, sp.base_url)
        _http_floor(proc, session, sp.base_url)
        session.close()
    finally:
        sp.stop()
    return 0


def _page_walks(proc: psutil.Process, session: requests.Session, base: str, *, pages: int) -> None:
    """Server CPU per page over the window, walked twice: the selection computed, then cached."""
    for label in (
        "250-lead page, first walk (selection computed on page 1)",
        "250-lead page, second walk (cached selection)",
    ):
        cpu0 = _cpu(proc)
        t0 = time.perf_counter()
        served = _walk(session, base, WINDOW, pages)
        wall = time.perf_counter() - t0
        per_page = (_cpu(proc) - cpu0) / served * 1000
        print(
            f"{label}: {per_page:.2f} ms server CPU per page "
            f"({served} pages, {wall / served * 1000:.2f} ms wall per page incl. client)"
        )


def _day_partitions(proc: psutil.Process, session: requests.Session, base: str) -> None:
    """Server CPU of each day partition's first page, every one a fresh selection."""
    cpu0 = _cpu(proc)
    days = 31
    for d in range(days):
        lo = START_TS + d * DAY
        params = {
            **WINDOW,
            "filter[updated_at][from]": lo,
            "filter[updated_at][to]": lo + DAY - 1,
        }
        _walk(session, base, params, 1)
    per_page = (_cpu(proc) - cpu0) / days * 1000
    print(f"first page of each day partition (fresh selection): {per_page:.2f} ms server CPU")


def _http_floor(proc: psutil.Process, session: requests.Session, base: str) -> None:
    """Server CPU of a tiny request: what any request costs before its page."""
    cpu0 = _cpu(proc)
    n = 200
    for _ in range(n):
        session.get(f"{base}/api/v4/account", timeout=60).raise_for_status()
    print(f"HTTP floor (GET /api/v4/account): {(_cpu(proc) - cpu0) / n * 1000:.2f} ms CPU")


if __name__ == "__main__":
    sys.exit(main())
