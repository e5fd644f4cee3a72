"""Scenario 5, many accounts: N sandbox accounts extracted at once on this machine.

Each account is its own sandbox process (its own host, so its own 7/s budget, 300 ± 50 ms
latency). The code location is configured for all of them at once (``KOMMO_ACCOUNTS`` and each
account's ``KOMMO_<ACCOUNT>_*`` variables, one DuckDB file, one rate-limit folder), and each
account's leads are extracted by its own worker process, as a deployment's concurrent runs
would be. The workers pay their imports first and then start together (a barrier), so the
figures are the extractions', not Python's start-up.

Reported: per account, rows, requests, the rate over its own limit and 429s (the sandbox's
counts); together, the rows per second of the concurrent phase beside N × 1,750, the CPU our
workers used in it (and the sandboxes', which stand in for Kommo), and from that the number of
accounts at which this machine, not Kommo, becomes the bottleneck.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchmarks import metrics
from kommo_dagster.sandbox import SandboxConfig, SandboxProcess

# What one account can yield at most: 7 requests a second of 250 leads.
ROWS_PER_SECOND_PER_ACCOUNT = metrics.LIMIT_PER_SECOND * 250
# The workers run from the repository's root, with it on their path.
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class AccountsResult:
    runs: list[dict[str, Any]]  # one per account, as `benchmarks.worker` reports a run
    phase_seconds: float  # first run's start to last run's end
    worker_cpu: float  # our workers' CPU in their runs
    sandbox_cpu: float | None  # the sandboxes' CPU over the phase (psutil), if measurable
    cores: int

    @property
    def rows(self) -> int:
        return sum(sum((r.get("lists") or {}).values()) for r in self.runs)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.phase_seconds if self.phase_seconds else 0.0

    @property
    def extracting_rows_per_second(self) -> float:
        """The accounts' rows per second while each was extracting (their rates added up)."""
        return sum(
            sum((r.get("lists") or {}).values()) / r["extract_seconds"]
            for r in self.runs
            if r.get("extract_seconds")
        )

    @property
    def cores_per_account(self) -> float:
        """Cores one account at its pace keeps busy in our extractor."""
        return self.worker_cpu / self.phase_seconds / len(self.runs) if self.phase_seconds else 0.0

    @property
    def machine_bound_accounts(self) -> int | None:
        """Accounts at which our extractors alone would use every core of this machine."""
        per = self.cores_per_account
        return int(self.cores / per) if per > 0 else None

    def summary(self) -> str:
        n = len(self.runs)
        rates = [
            r["requests"] / r["extract_seconds"] / metrics.LIMIT_PER_SECOND
            for r in self.runs
            if r.get("extract_seconds")
        ]
        sandbox = (
            f"; the {n} sandboxes (standing in for Kommo) used {self.sandbox_cpu:.1f} CPU s"
            if self.sandbox_cpu is not None
            else ""
        )
        bound = self.machine_bound_accounts
        return (
            f"{n} accounts at once: {self.rows:,} rows in {self.phase_seconds:.1f} s of runs "
            f"(Dagster's run start and the writes included), {self.rows_per_second:,.0f} rows/s; "
            f"while extracting {self.extracting_rows_per_second:,.0f} rows/s, beside {n} × 1,750 "
            f"= {n * ROWS_PER_SECOND_PER_ACCOUNT:,.0f}; rate ÷ 7 per account "
            f"{min(rates, default=0):.2f}..{max(rates, default=0):.2f}. Our workers used "
            f"{self.worker_cpu:.1f} CPU s ({self.cores_per_account:.3f} cores per account at its "
            f"pace){sandbox}: on {self.cores} cores the machine, not Kommo, becomes the bottleneck "
            f"at about {bound if bound is not None else '–'} accounts."
        )


@contextlib.contextmanager
def account_sandboxes(config: SandboxConfig, count: int) -> Iterator[list[dict[str, Any]]]:
    """``count`` sandbox processes of ``config`` (seeds ``config.seed + i``), started side by
    side (generating the accounts is most of the set-up): ``[{"name": "acc<i>", "base_url",
    "token", "pid"}]``, stopped on exit."""
    configs = [dataclasses.replace(config, seed=config.seed + i) for i in range(count)]
    with contextlib.ExitStack() as stack:
        sandboxes = [SandboxProcess(c, startup_timeout=900) for c in configs]
        for sb in sandboxes:
            stack.callback(sb.stop)
        with ThreadPoolExecutor(len(sandboxes)) as pool:
            list(pool.map(lambda sb: sb.start(), sandboxes))
        yield [
            {"name": f"acc{i}", "base_url": sb.base_url, "token": sb.token, "pid": sb.pid}
            for i, sb in enumerate(sandboxes)
        ]


def _cpu_of(pids: list[int]) -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


@dataclass(frozen=True)
class _Worker:
    """One account's worker process, its directory and its open log."""

    name: str
    proc: subprocess.Popen
    workdir: Path
    log: IO[str]


def run_accounts(
    *,
    accounts: list[dict[str, Any]],
    sandbox_pids: list[int],
    spec: dict[str, Any],
    workdir: Path,
    timeout: float,
) -> AccountsResult:
    """Extract every account's leads at once, one worker process per account.

    ``accounts``: ``[{"name", "base_url", "token"}]``; ``spec``: the rest of a worker spec
    (partitions start, requests per second, runs), shared by all.
    """
    barrier = workdir / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    workers = [
        _start_worker(a, accounts=accounts, spec=spec, workdir=workdir, barrier=barrier, env=env)
        for a in accounts
    ]
    deadline = time.monotonic() + timeout
    try:
        _wait_until_ready(workers, barrier=barrier, deadline=deadline)
        sandbox_cpu = _release_and_wait(
            workers, barrier=barrier, sandbox_pids=sandbox_pids, deadline=deadline
        )
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            w.log.close()
    runs = [_account_run(w) for w in workers]
    began = min(r["began"] for r in runs)
    ended = max(r["began"] + r["wall"] for r in runs)
    return AccountsResult(
        runs=runs,
        phase_seconds=ended - began,
        worker_cpu=sum(r["cpu"] for r in runs),
        sandbox_cpu=sandbox_cpu,
        cores=os.cpu_count() or 1,
    )


def _start_worker(
    account: dict[str, Any],
    *,
    accounts: list[dict[str, Any]],
    spec: dict[str, Any],
    workdir: Path,
    barrier: Path,
    env: dict[str, str],
) -> _Worker:
    """Write the account's worker spec (the shared DuckDB file, rate-limit folder and barrier)
    and start its worker; it sets up, then waits at the barrier."""
    wd = workdir / account["name"]
    wd.mkdir(parents=True, exist_ok=True)
    worker_spec = {
        **spec,
        "engine": "dagster",
        "base_url": account["base_url"],
        "token": account["token"],
        "account": account["name"],
        "accounts": accounts,
        "duckdb_path": str(workdir / "kommo_accounts.duckdb"),
        "rate_limit_dir": str(workdir / "ratelimit"),
        "barrier": str(barrier),
        "workdir": str(wd),
    }
    (wd / "spec.json").write_text(json.dumps(worker_spec))
    log = (wd / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.worker", str(wd / "spec.json"), str(wd / "out.json")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return _Worker(account["name"], proc, wd, log)


def _wait_until_ready(workers: list[_Worker], *, barrier: Path, deadline: float) -> None:
    """Until every worker is set up (or one has exited: its error is read afterwards)."""
    while len(list(barrier.glob("*.ready"))) < len(workers):
        if any(w.proc.poll() is not None for w in workers):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the accounts' workers did not get ready in time")
        time.sleep(0.1)


def _release_and_wait(
    workers: list[_Worker], *, barrier: Path, sandbox_pids: list[int], deadline: float
) -> float | None:
    """The concurrent phase: start every worker's runs at once and wait for all of them. The
    sandboxes' CPU over it, when psutil can read it."""
    sandbox_before = _cpu_of(sandbox_pids)
    (barrier / "go").touch()
    for w in workers:
        w.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    sandbox_after = _cpu_of(sandbox_pids)
    if sandbox_before is None or sandbox_after is None:
        return None
    return sandbox_after - sandbox_before


def _account_run(worker: _Worker) -> dict[str, Any]:
    """The worker's one run, named for its account; its log's tail if it failed."""
    out = worker.workdir / "out.json"
    if worker.proc.returncode != 0 or not out.exists():
        tail = (worker.workdir / "worker.log").read_text()[-3000:]
        raise RuntimeError(
            f"account {worker.name}: the worker exited with {worker.proc.returncode}:\n{tail}"
        )
    (run,) = json.loads(out.read_text())["runs"]
    return {**run, "account": worker.name}


__all__ = ["ROWS_PER_SECOND_PER_ACCOUNT", "AccountsResult", "account_sandboxes", "run_accounts"]
