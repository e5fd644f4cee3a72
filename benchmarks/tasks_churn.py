"""What the tasks walk costs in requests while the account changes, and what it loses.

Prints a table (no assertions), one row per scenario of the tasks tests: a sandbox account, a
window of tasks (the data's month, or ten days up to a window reaching now), a churn of the
sandbox applied every few requests, and one or three workers. For each: the rows delivered, the
requests the sandbox served, the tasks that were in the window before and never changed
("stayed"), and those of them not delivered ("lost", which must be 0). Scenarios with three
workers are run three times (the churn then depends on the order the requests arrive in).

Run: .venv/bin/python -m benchmarks.tasks_churn
"""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from kommo_dagster.kommo import KommoClient
from kommo_dagster.sandbox import ChurnConfig, KommoSandbox, SandboxConfig

# The sandbox's default data window.
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
HEAVY = ChurnConfig(every_requests=2, updates=3, creates=1, deletes=1, restores=1)
TASKS_ONLY = ChurnConfig(every_requests=2, updates=5, deletes=2, streams=("tasks",))
BACKDATED = ChurnConfig(every_requests=2, updates=10, deletes=0, streams=("tasks",), backdate=1.0)


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    leads: int
    churn: ChurnConfig | None = None
    workers: int = 1
    # A window of ten days up to one reaching now, instead of the data's month.
    live: bool = False


SCENARIOS = (
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


def _sandbox(s: Scenario) -> tuple[KommoSandbox, datetime, datetime]:
    config = SandboxConfig(seed=1, leads=s.leads)
    if not s.live:
        return KommoSandbox(config, requests_per_second=None).start(), START, END
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first: date = (today - timedelta(days=10)).date()
    config = dataclasses.replace(config, start=first, end=today.date())
    sb = KommoSandbox(config, requests_per_second=None).start()
    return sb, today - timedelta(days=10), today + timedelta(days=1)


def run(s: Scenario) -> tuple[int, int, int, int]:
    """Rows delivered, requests served, tasks that stayed, and those of them lost."""
    sb, start, end = _sandbox(s)
    try:
        before = {(r["id"], r["updated_at"]) for r in sb.records("tasks")}
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
            got = {
                (r["id"], r["updated_at"])
                for page in client.iter_records("tasks", start=start, end=end)
                for r in page
            }
            served = sb.stats()["requests"] - served
            sb.update_config(churn=None)
            client.close()
        lo, hi = start.timestamp(), end.timestamp()
        now = {(r["id"], r["updated_at"]) for r in sb.records("tasks")}
        stayed = {k for k in before & now if lo <= k[1] < hi}
        return len(got), served, len(stayed), len(stayed - got)
    finally:
        sb.stop()


def main() -> None:
    print("| Scenario | Workers | Rows | Requests | Stayed | Lost |")
    print("|---|---|---|---|---|---|")
    for s in SCENARIOS:
        runs = [run(s) for _ in range(3 if s.workers > 1 else 1)]
        cols = " | ".join(" / ".join(f"{r[k]:,}" for r in runs) for k in range(4))
        print(f"| {s.name} | {s.workers} | {cols} |", flush=True)


if __name__ == "__main__":
    main()
