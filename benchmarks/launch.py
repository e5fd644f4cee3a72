"""`python -m benchmarks.launch`: N accounts launched at once, N ``dagster asset materialize`` runs.

What a deployment does when the schedules of N accounts fire at one minute and the default run
launcher starts one process per run: each account is its own sandbox (its own host and 7/s
budget, 300 ± 50 ms), the code location is configured for all of them (``KOMMO_ACCOUNTS``, one
DuckDB file, one rate-limit folder), and each account's leads window is materialized by its own
CLI run, all started at the same moment. Unlike scenario 5 (`benchmarks.accounts`), nothing is
imported before the start: the runs pay their imports and set-up while competing for the CPU.

Reported per account, from the sandbox's own counts: rate ÷ limit (requests over the time from
its first to its last arrival), 429s, violations and the peak second (by the kernel's arrival
stamps, and in brackets by the sandbox's handler threads, which a starved machine runs late),
requests ÷ minimum, the time from launch to the first request, and the wall of its run; for the
machine: rows per second in all, the runs' CPU and the
largest peak RSS of a run (``wait4``), and the load average. ``--accounts 1`` measures one run's
start-up alone (process start to first request). ``--through-queue`` sends the same runs through
`deploy/dagster.yaml`'s run queue and a daemon instead (`benchmarks.launch_queue`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import metrics
from benchmarks.accounts import account_sandboxes
from benchmarks.run import ROOT, Plan
from benchmarks.worker import SandboxControl

if TYPE_CHECKING:
    from benchmarks.launch_queue import QueueResult

DAGSTER = Path(sys.executable).with_name("dagster")


@dataclass(frozen=True, kw_only=True)
class AccountRun:
    """One account's CLI run, as the sandbox and ``wait4`` saw it."""

    name: str
    returncode: int
    rows: int
    minimum: int
    requests: int
    throttled: int
    violations: int
    peak_per_second: int
    # The same counted by the sandbox's handler threads' clock, and the clock of the above.
    violations_handler: int
    peak_per_second_handler: int
    arrival_clock: str | None
    launched: float
    first_request: float | None
    last_request: float | None
    ended: float
    cpu: float
    peak_rss: int
    # (Unix time, CPU seconds so far) of the process, sampled while it ran.
    cpu_samples: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        """Requests per second over the limit, from the first arrival to the last."""
        if self.first_request is None or self.last_request is None or self.requests < 2:
            return 0.0
        span = self.last_request - self.first_request
        return (self.requests - 1) / span / metrics.LIMIT_PER_SECOND if span > 0 else 0.0

    @property
    def startup(self) -> float | None:
        """Seconds from the process's launch to its first request at the server."""
        return None if self.first_request is None else self.first_request - self.launched

    def cells(self) -> list[str]:
        """This run's figures as table cells (`COLUMNS`)."""
        startup = "–"
        if self.startup is not None:
            cpu = self.startup_cpu
            startup = f"{self.startup:.1f}" + (f" ({cpu:.2f})" if cpu is not None else "")
        return [
            f"{self.rate:.2f}",
            str(self.throttled),
            f"{self.violations} ({self.violations_handler})",
            f"{self.peak_per_second} ({self.peak_per_second_handler})",
            f"{self.requests} ÷ {self.minimum}",
            startup,
            f"{self.ended - self.launched:.1f}",
            f"{self.cpu:.1f}",
            f"{self.peak_rss / 2**20:.0f}",
        ]

    @property
    def startup_cpu(self) -> float | None:
        """CPU seconds the process had used when its first request arrived (the last sample
        before it): unlike the wall, hardly changed by other load on the machine."""
        if self.first_request is None:
            return None
        before = [cpu for at, cpu in self.cpu_samples if at <= self.first_request]
        return before[-1] if before else None


@dataclass(frozen=True, kw_only=True)
class LaunchResult:
    runs: list[AccountRun]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def wall(self) -> float:
        return max(r.ended for r in self.runs) - min(r.launched for r in self.runs)

    def summary(self) -> str:
        rows = sum(r.rows for r in self.runs)
        lines = [
            "| account | " + " | ".join(COLUMNS) + " |",
            "|---|" + "---|" * len(COLUMNS),
            *(f"| {r.name} | " + " | ".join(r.cells()) + " |" for r in self.runs),
        ]
        lines.append(
            f"\n{len(self.runs)} runs launched at once: {rows:,} rows in {self.wall:.1f} s, "
            f"{rows / self.wall:,.0f} rows/s; {machine_figures(self.runs)}; load average "
            f"{loads(self.load_before)} before, {loads(self.load_after)} after; "
            f"{os.cpu_count()} cores."
        )
        return "\n".join(lines)


# The figures of each account's run, in `AccountRun.cells` order.
COLUMNS = (
    "rate ÷ 7",
    "429s",
    "violations (handler clock)",
    "peak in 1 s (handler clock)",
    "requests ÷ min.",
    "launch → 1st request s (CPU s)",
    "wall s",
    "CPU s",
    "peak RSS MiB",
)


def machine_figures(runs: Sequence[AccountRun]) -> str:
    """The runs' CPU in all, the largest peak RSS of one, the sandboxes' arrival clock."""
    clocks = ", ".join(sorted({str(r.arrival_clock) for r in runs}))
    return (
        f"runs' CPU {sum(r.cpu for r in runs):.1f} s; "
        f"largest peak RSS {max(r.peak_rss for r in runs) / 2**20:.0f} MiB; "
        f"arrivals stamped by: {clocks}"
    )


def loads(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def code_location_env(accounts: list[dict[str, str]], plan: Plan, workdir: Path) -> dict[str, str]:
    """The environment of the deployment: every account, one warehouse, one budget folder, a
    DAGSTER_HOME whose storage exists already (runs starting together race in its migration)."""
    import dagster as dg

    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "KOMMO_ACCOUNTS": ",".join(a["name"] for a in accounts),
        "KOMMO_START_DATE": plan.data_start.isoformat(),
        "KOMMO_DUCKDB_PATH": str(workdir / "kommo_launch.duckdb"),
        "KOMMO_RATE_LIMIT_DIR": str(workdir / "ratelimit"),
        "KOMMO_REQUESTS_PER_SECOND": f"{plan.limit:g}",
    }
    for a in accounts:
        env[f"KOMMO_{a['name'].upper()}_BASE_URL"] = a["base_url"]
        env[f"KOMMO_{a['name'].upper()}_API_TOKEN"] = a["token"]
    return env


def _launch(name: str, plan: Plan, env: dict[str, str], log: Path) -> tuple[float, int, Any]:
    last = plan.data_end - timedelta(days=1)
    args = [
        str(DAGSTER),
        "asset",
        "materialize",
        "-m",
        "kommo_dagster.definitions",
        "--select",
        f"kommo/{name}/leads",
        "--partition-range",
        f"{plan.data_start.isoformat()}...{last.isoformat()}",
    ]
    out = log.open("w")
    launched = time.time()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return launched, proc.pid, out


def cpu_now(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_all(
    pids: list[int], timeout: float, samples: dict[int, list[tuple[float, float]]]
) -> dict[int, tuple[int, float, Any]]:
    """``wait4`` every run: its exit code, end time and own resource usage; meanwhile sample
    each one's CPU into ``samples`` every 20 ms."""
    done: dict[int, tuple[int, float, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(pids):
        for pid in pids:
            if pid in done:
                continue
            cpu = cpu_now(pid)
            if cpu is not None:
                samples.setdefault(pid, []).append((time.time(), cpu))
            got, status, usage = os.wait4(pid, os.WNOHANG)
            if got:
                done[pid] = (os.waitstatus_to_exitcode(status), time.time(), usage)
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs still going after {timeout:.0f} s")
        time.sleep(0.02)
    return done


def leads_lists(duckdb_path: str, name: str) -> dict[str, int]:
    """The rows of the account's leads table, live and deleted (each its own list)."""
    from kommo_dagster.warehouse.locks import connect

    with connect(duckdb_path, timeout=300, read_only=True) as con:
        live, deleted = con.execute(
            "SELECT count(*) FILTER (WHERE NOT is_deleted), count(*) FILTER (WHERE is_deleted) "
            f"FROM kommo_{name}.leads"
        ).fetchone()  # type: ignore[misc]
    return {"live": int(live), "deleted": int(deleted)}


def served(control: SandboxControl, duckdb_path: str, name: str, *, ok: bool) -> dict[str, Any]:
    """What the account's sandbox counted and its run wrote (`AccountRun` fields)."""
    stats = control.stats()
    lists = leads_lists(duckdb_path, name) if ok else {}
    return {
        "rows": sum(lists.values()),
        "minimum": metrics.window_minimum("leads", lists),
        "requests": stats["requests"],
        "throttled": stats["rate_limited"],
        "violations": stats["violations"],
        "peak_per_second": stats["peak_requests_per_second"],
        "violations_handler": stats["violations_handler"],
        "peak_per_second_handler": stats["peak_requests_per_second_handler"],
        "arrival_clock": stats["arrival_clock"],
        "first_request": stats.get("first_arrival_at"),
        "last_request": stats.get("last_arrival_at"),
    }


def launch_accounts(plan: Plan, *, accounts: list[dict[str, str]], workdir: Path) -> LaunchResult:
    """Launch one CLI run per account at the same moment, wait for all, read the sandboxes."""
    env = code_location_env(accounts, plan, workdir)
    controls = {a["name"]: SandboxControl(a["base_url"]) for a in accounts}
    for control in controls.values():
        control.reset_stats()
    load_before = os.getloadavg()
    launched = {
        a["name"]: _launch(a["name"], plan, env, workdir / f"{a['name']}.log") for a in accounts
    }
    try:
        samples: dict[int, list[tuple[float, float]]] = {}
        done = _wait_all([pid for _, pid, _ in launched.values()], plan.worker_timeout, samples)
    finally:
        for _, _, log in launched.values():
            log.close()
    load_after = os.getloadavg()
    runs = []
    for name, (began, pid, _) in launched.items():
        code, ended, usage = done[pid]
        runs.append(
            AccountRun(
                name=name,
                returncode=code,
                launched=began,
                ended=ended,
                cpu=usage.ru_utime + usage.ru_stime,
                cpu_samples=samples.get(pid, []),
                peak_rss=usage.ru_maxrss * 1024,
                **served(controls[name], env["KOMMO_DUCKDB_PATH"], name, ok=code == 0),
            )
        )
    return LaunchResult(runs=runs, load_before=load_before, load_after=load_after)


def run_scenario(
    plan: Plan, *, count: int, workdir: Path, through_queue: bool = False
) -> LaunchResult | QueueResult:
    """Start ``count`` sandboxes (as `benchmarks.run` does for scenario 5) and launch, as CLI
    runs or (``through_queue``) as runs a daemon starts from `deploy/dagster.yaml`'s queue."""
    from benchmarks import launch_queue

    config = plan.sandbox(
        leads=plan.account_leads,
        requests_per_second=plan.limit,
        latency_ms=plan.latency_ms,
        latency_jitter_ms=plan.jitter_ms,
    )
    launch = launch_queue.launch_through_queue if through_queue else launch_accounts
    with account_sandboxes(config, count) as accounts:
        return launch(plan, accounts=accounts, workdir=workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch", description=__doc__)
    parser.add_argument("--accounts", type=int, default=6)
    parser.add_argument("--leads", type=int, default=15_000, help="leads in each account")
    parser.add_argument("--latency-ms", type=float, default=300.0)
    parser.add_argument("--jitter-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--through-queue",
        action="store_true",
        help="submit the runs to a DAGSTER_HOME made from deploy/dagster.yaml (as shipped: at "
        "most 4 at once, one per account) and let `dagster-daemon run` start them",
    )
    ns = parser.parse_args(argv)
    plan = Plan(account_leads=ns.leads, latency_ms=ns.latency_ms, jitter_ms=ns.jitter_ms)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"kommo-launch-{os.getpid()}"
    try:
        result = run_scenario(
            plan, count=ns.accounts, workdir=workdir, through_queue=ns.through_queue
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(result.summary())
    if ns.json:
        figures = [
            {k: v for k, v in dataclasses.asdict(r).items() if k != "cpu_samples"}
            | {"rate": r.rate, "startup": r.startup, "startup_cpu": r.startup_cpu}
            for r in result.runs
        ]
        ns.json.write_text(json.dumps(figures, indent=1))
    failed = [r.name for r in result.runs if r.returncode != 0]
    if failed:
        print(f"runs failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
