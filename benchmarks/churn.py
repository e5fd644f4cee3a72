"""What the walks cost in requests while the account changes, and what they lose.

Prints a table (no assertions), one row per scenario of the walks' tests: a sandbox account, a
window of one stream (tasks: the data's month, or ten days up to a window reaching now; leads:
the data's last day, which ends in a crowded second of over two pages), a churn of the sandbox
applied every few requests, and one or three workers. For each: the rows delivered, the
requests the sandbox served, the records that were in the window before and never changed
("stayed"), and those of them not delivered ("lost", which must be 0). Scenarios with three
workers are run three times (the churn then depends on the order the requests arrive in).

Run: .venv/bin/python -m benchmarks.churn [--stream tasks|leads]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.errors import KommoConsistencyError
from kommo_dagster.sandbox import ChurnConfig, KommoSandbox, SandboxConfig

# The sandbox's default data window.
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
HEAVY = ChurnConfig(every_requests=2, updates=3, creates=1, deletes=1, restores=1)
TASKS_ONLY = ChurnConfig(every_requests=2, updates=5, deletes=2, streams=("tasks",))
BACKDATED = ChurnConfig(every_requests=2, updates=10, deletes=0, streams=("tasks",), backdate=1.0)
LEADS_BACKDATED = ChurnConfig(
    every_requests=2, updates=10, creates=0, deletes=0, streams=("leads",), backdate=1.0
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    leads: int
    churn: ChurnConfig | None = None
    workers: int = 1
    # A window of ten days up to one reaching now, instead of the data's month.
    live: bool = False
    # Records updated (stamped at the window's last second) before the read: a bigger crowd.
    crowd: int = 0


TASKS = (
    Scenario("1,500 leads, no churn", 1500),
    Scenario("1,500 leads, no churn", 1500, workers=3),
    Scenario("3,000 leads, no churn", 3000),
    Scenario("9,000 leads, no churn", 9000),
    Scenario("1,500 leads, tasks churn (5 updates, 2 deletions / 2 requests)", 1500, TASKS_ONLY),
    Scenario("1,500 leads, heavy churn", 1500, HEAVY, workers=3),
    Scenario(
        "1,500 leads, heavy churn, half back-dated",
        1500,
        dataclasses.replace(HEAVY, backdate=0.5),
        workers=3,
    ),
    Scenario("3,000 leads, tasks churn all back-dated (10 updates / 2 requests)", 3000, BACKDATED),
    Scenario("1,500 leads, window reaching now, no churn", 1500, live=True),
    Scenario("1,500 leads, window reaching now, heavy churn", 1500, HEAVY, workers=3, live=True),
)
LEADS = (
    Scenario("9,000 leads, no churn", 9000),
    Scenario("9,000 leads, 2,000 more in the last second, no churn", 9000, crowd=2000),
    Scenario(
        "9,000 leads, 2,000 more in the last second, leads back-dated (10 updates / 2 requests)",
        9000,
        LEADS_BACKDATED,
        crowd=2000,
    ),
    Scenario("9,000 leads, 2,000 more in the last second, heavy churn", 9000, HEAVY, 3, crowd=2000),
)
SCENARIOS = {"tasks": TASKS, "leads": LEADS}


def _sandbox(s: Scenario, stream: str) -> tuple[KommoSandbox, datetime, datetime]:
    config = SandboxConfig(seed=1, leads=s.leads)
    if not s.live:
        first = START if stream == "tasks" else END - timedelta(days=1)
        return KommoSandbox(config, requests_per_second=None).start(), first, END
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first: date = (today - timedelta(days=10)).date()
    config = dataclasses.replace(config, start=first, end=today.date())
    sb = KommoSandbox(config, requests_per_second=None).start()
    return sb, today - timedelta(days=10), today + timedelta(days=1)


def _keys(records) -> set[tuple]:
    return {(r["id"], r["updated_at"], r.get("is_deleted")) for r in records}


def run(s: Scenario, stream: str) -> tuple[int, int, int, int]:
    """Rows delivered, requests served, records that stayed, and those of them lost."""
    sb, start, end = _sandbox(s, stream)
    try:
        if s.crowd:
            second = int(end.timestamp()) - 1
            stamp = ChurnConfig(updates=s.crowd, creates=0, deletes=0, clock=lambda: second)
            sb.update_config(churn=dataclasses.replace(stamp, streams=(stream,)))
            sb.churn_step()
        before = _keys(sb.records(stream))
        with tempfile.TemporaryDirectory() as tmp:
            client = KommoClient(
                base_url=sb.base_url,
                token=sb.token,
                requests_per_second=None,
                rate_limit_dir=Path(tmp),
                max_workers=s.workers,
            )
            sb.update_config(churn=s.churn)
            served = sb.stats()["requests"]
            got = _keys(
                r for page in client.iter_records(stream, start=start, end=end) for r in page
            )
            served = sb.stats()["requests"] - served
            sb.update_config(churn=None)
            client.close()
        lo, hi = start.timestamp(), end.timestamp()
        now = _keys(sb.records(stream))
        stayed = {k for k in before & now if lo <= k[1] < hi}
        return len(got), served, len(stayed), len(stayed - got)
    finally:
        sb.stop()


def _run_or_fail(s: Scenario, stream: str) -> tuple[int, int, int, int] | None:
    """`run`, or None where the walk gave up on an account changing faster than it is read."""
    try:
        return run(s, stream)
    except KommoConsistencyError as e:
        print(f"{s.name}: {e}", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=sorted(SCENARIOS), default="tasks")
    stream = parser.parse_args().stream
    print("| Scenario | Workers | Rows | Requests | Stayed | Lost |")
    print("|---|---|---|---|---|---|")
    for s in SCENARIOS[stream]:
        runs = [_run_or_fail(s, stream) for _ in range(3 if s.workers > 1 else 1)]
        cols = " | ".join(
            " / ".join("failed" if r is None else f"{r[k]:,}" for r in runs) for k in range(4)
        )
        print(f"| {s.name} | {s.workers} | {cols} |", flush=True)


if __name__ == "__main__":
    main()
