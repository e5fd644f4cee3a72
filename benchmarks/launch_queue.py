"""`python -m benchmarks.launch --through-queue`: N accounts' runs through the shipped run queue.

The same accounts and work as the CLI mode (`benchmarks.launch`: each account's leads window in
one run, against its own sandbox), but the N runs are submitted at one moment to a DAGSTER_HOME
made from `deploy/dagster.yaml` as shipped (at most 4 runs at once, one per account; the daemon
polls the queue every 5 s), and a running ``dagster-daemon run`` starts them as slots free up,
each in a process its code server spawns. A run is the account's incremental job narrowed to its
leads, with the range tags of the window: one single-run backfill, like the CLI's
``--partition-range``.

Reported per account, besides the CLI mode's figures (measured from the moment the daemon took
the run off the queue): the time it waited in the queue. The run's process is not ours to
``wait4``: its CPU and peak RSS (``VmHWM``) are sampled from ``/proc`` every 0.1 s. For the
machine: the most runs in progress at once, how long each waiting run took to leave the queue
after a slot freed, the wall from the submission to the last run's end, and rows per second.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg

from benchmarks import run_queue
from benchmarks.launch import (
    COLUMNS,
    AccountRun,
    code_location_env,
    cpu_now,
    loads,
    machine_figures,
    served,
)
from benchmarks.run import Plan
from benchmarks.worker import SandboxControl
from kommo_dagster.orchestration.jobs import range_tags

_ACTIVE = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}


@dataclass(frozen=True, kw_only=True)
class QueuedAccountRun(AccountRun):
    """An account's run through the queue: ``launched`` is when the daemon dequeued it."""

    enqueued: float

    @property
    def queued(self) -> float:
        return self.launched - self.enqueued


@dataclass(frozen=True, kw_only=True)
class QueueResult:
    runs: list[QueuedAccountRun]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    slots: int
    most_at_once: int
    slot_waits: list[float]

    @property
    def wall(self) -> float:
        """From the submission to the last run's end."""
        return max(r.ended for r in self.runs) - min(r.enqueued for r in self.runs)

    def summary(self) -> str:
        rows = sum(r.rows for r in self.runs)
        columns = ["queued s", *(c.replace("launch →", "dequeued →") for c in COLUMNS)]
        lines = [
            "| account | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
            *(f"| {r.name} | {r.queued:.1f} | " + " | ".join(r.cells()) + " |" for r in self.runs),
        ]
        waits = "–"
        if self.slot_waits:
            waits = f"{min(self.slot_waits):.1f}-{max(self.slot_waits):.1f} s"
        lines.append(
            f"\n{len(self.runs)} runs submitted at once to the queue (at most {self.slots} at "
            f"once, one per account): at most {self.most_at_once} in progress at once; each "
            f"waiting run left the queue {waits} after a slot freed; {rows:,} rows in "
            f"{self.wall:.1f} s from the submission, {rows / self.wall:,.0f} rows/s; "
            f"{machine_figures(self.runs)} (sampled); load average {loads(self.load_before)} "
            f"before, {loads(self.load_after)} after; {os.cpu_count()} cores."
        )
        return "\n".join(lines)


class _Sampler(threading.Thread):
    """Every 0.1 s, each running run's process (from the launcher's engine event) and its CPU
    so far and peak RSS, read from ``/proc``; from before the first submission, so the first
    runs' start-up is seen."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home = home
        self.done = threading.Event()
        self.pids: dict[str, int] = {}
        self.cpu: dict[int, list[tuple[float, float]]] = {}
        self.peak_rss: dict[int, int] = {}

    def run(self) -> None:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            while not self.done.wait(0.1):
                active = instance.get_run_records(dg.RunsFilter(statuses=list(_ACTIVE)))
                for record in active:
                    run_id = record.dagster_run.run_id
                    if run_id not in self.pids:
                        pid = run_queue.run_pid(instance, run_id)
                        if pid is not None:
                            self.pids[run_id] = pid
                for pid in self.pids.values():
                    self._sample(pid)

    def _sample(self, pid: int) -> None:
        cpu, rss = cpu_now(pid), _peak_rss(pid)
        if cpu is not None:
            self.cpu.setdefault(pid, []).append((time.time(), cpu))
        if rss is not None:
            self.peak_rss[pid] = rss


def _peak_rss(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _requests(plan: Plan, accounts: list[dict[str, str]]) -> list[run_queue.RunRequest]:
    """Each account's leads over the window, as one run of its incremental job."""
    tags = range_tags(plan.data_start, plan.data_end - timedelta(days=1))
    return [
        run_queue.RunRequest(
            job=f"kommo_{a['name']}_incremental_job",
            tags=tags,
            assets=(dg.AssetKey(["kommo", a["name"], "leads"]),),
        )
        for a in accounts
    ]


def launch_through_queue(
    plan: Plan, *, accounts: list[dict[str, str]], workdir: Path
) -> QueueResult:
    """Start the daemon, submit every account's run at once, wait for all, read the sandboxes."""
    env = code_location_env(accounts, plan, workdir)
    home = Path(env["DAGSTER_HOME"])
    run_queue.queued_home(home)
    controls = {a["name"]: SandboxControl(a["base_url"]) for a in accounts}
    sampler = _Sampler(home)
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        run_queue.run_submitter(instance, env=env) as submit,
        run_queue.running_daemon(env, workdir / "daemon.log") as daemon,
    ):
        run_queue.wait_for_daemon(instance, daemon, timeout=300)
        for control in controls.values():
            control.reset_stats()
        sampler.start()
        load_before = os.getloadavg()
        try:
            ids = submit(_requests(plan, accounts))
            runs = run_queue.wait_for_runs(
                instance, ids, daemon=daemon, timeout=plan.worker_timeout
            )
        finally:
            sampler.done.set()
            sampler.join()
        load_after = os.getloadavg()
        slots = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
    results = [
        _account_run(a["name"], run, sampler, controls[a["name"]], env["KOMMO_DUCKDB_PATH"])
        for a, run in zip(accounts, runs, strict=True)
    ]
    return QueueResult(
        runs=results,
        load_before=load_before,
        load_after=load_after,
        slots=slots,
        most_at_once=run_queue.most_at_once(runs),
        slot_waits=run_queue.slot_waits(runs, slots),
    )


def _account_run(
    name: str, run: run_queue.QueuedRun, sampler: _Sampler, control: SandboxControl, db: str
) -> QueuedAccountRun:
    ok = run.status == dg.DagsterRunStatus.SUCCESS
    samples = sampler.cpu.get(run.pid, []) if run.pid is not None else []
    return QueuedAccountRun(
        name=name,
        returncode=0 if ok else 1,
        enqueued=run.enqueued,
        launched=run.dequeued,
        ended=run.ended or time.time(),
        cpu=samples[-1][1] if samples else 0.0,
        cpu_samples=samples,
        peak_rss=sampler.peak_rss.get(run.pid, 0) if run.pid is not None else 0,
        **served(control, db, name, ok=ok),
    )


__all__ = ["QueueResult", "QueuedAccountRun", "launch_through_queue"]
