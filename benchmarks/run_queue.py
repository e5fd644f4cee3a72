"""Runs through the run queue of `deploy/dagster.yaml`, as a deployment's daemon starts them.

A DAGSTER_HOME made from the shipped file; runs created and submitted to it the way
``dagster job launch`` does (so they wait as QUEUED, as a schedule's runs do); a real
``dagster-daemon run`` over the repository's ``workspace.yaml`` that dequeues and launches them;
and what the instance recorded of each run: when it was queued, taken off the queue, started and
ended, and the process it ran in. Shared by ``benchmarks.launch --through-queue`` and the
queue's end-to-end test (``kommo_dagster_tests/test_deploy_queue.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import yaml

from kommo_dagster.orchestration.jobs import ACCOUNT_TAG

if TYPE_CHECKING:
    from dagster._core.remote_representation.code_location import CodeLocation

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = ROOT / "deploy" / "dagster.yaml"
WORKSPACE = ROOT / "workspace.yaml"
DAEMON = Path(sys.executable).with_name("dagster-daemon")
_FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


def queued_home(
    home: Path,
    *,
    max_concurrent_runs: int | None = None,
    dequeue_interval_seconds: int | None = None,
) -> None:
    """Write ``home/dagster.yaml`` from `deploy/dagster.yaml` (telemetry off; the global maximum
    and the daemon's polling interval overridden when given, the per-account limit as shipped)
    and create its storage, which processes starting together would race to migrate."""
    config = yaml.safe_load(DEPLOY_CONFIG.read_text())
    if max_concurrent_runs is not None:
        config["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs
    if dequeue_interval_seconds is not None:
        coordinator = config["run_coordinator"].setdefault("config", {})
        coordinator["dequeue_interval_seconds"] = dequeue_interval_seconds
    config["telemetry"] = {"enabled": False}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """A run to submit: a job of the code location, extra tags, optionally an asset subset."""

    job: str
    tags: Mapping[str, str] = field(default_factory=dict)
    assets: tuple[dg.AssetKey, ...] | None = None


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` replaced by ``env`` inside: the workspace's code server is a child
    process and inherits it, as the daemon's does."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def run_submitter(
    instance: dg.DagsterInstance, *, env: Mapping[str, str]
) -> Iterator[Callable[[Sequence[RunRequest]], list[str]]]:
    """A function that creates each run from the workspace's code location and submits it to
    the instance's run coordinator, as ``dagster job launch`` (or the UI, for an asset subset)
    does, returning the run ids in order. The code location's server (started with ``env``)
    is started on entry, so submitting is only the runs' creation, as a schedule's tick is."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with _environment(env):
        process = WorkspaceProcessContext(instance, WorkspaceFileTarget([str(WORKSPACE)]))
    with process:
        workspace = process.create_request_context()
        (name,) = workspace.code_location_names
        location = workspace.get_code_location(name)

        def submit(requests: Sequence[RunRequest]) -> list[str]:
            ids = []
            for request in requests:
                run = _create_run(instance, location, request)
                instance.submit_run(run.run_id, workspace)
                ids.append(run.run_id)
            return ids

        yield submit


def submit_runs(
    instance: dg.DagsterInstance, requests: Sequence[RunRequest], *, env: Mapping[str, str]
) -> list[str]:
    """Submit ``requests`` (`run_submitter`); returns the run ids in order."""
    with run_submitter(instance, env=env) as submit:
        return submit(requests)


def _create_run(
    instance: dg.DagsterInstance, location: CodeLocation, request: RunRequest
) -> dg.DagsterRun:
    """The run of ``request``, created as Dagster's CLI creates one (its execution plan from the
    code location, the job's tags under the request's)."""
    from dagster._core.definitions.selector import JobSubsetSelector

    (repo,) = location.get_repositories().values()
    selector = JobSubsetSelector(
        location_name=location.name,
        repository_name=repo.name,
        job_name=request.job,
        op_selection=None,
        asset_selection=request.assets,
    )
    job = location.get_job(selector)
    plan = location.get_execution_plan(
        job, {}, step_keys_to_execute=None, known_state=None, instance=instance
    ).execution_plan_snapshot
    return instance.create_run(
        job_name=job.name,
        run_id=None,
        run_config={},
        resolved_op_selection=job.resolved_op_selection,
        step_keys_to_execute=plan.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags={**job.tags, **request.tags},
        job_snapshot=job.job_snapshot,
        execution_plan_snapshot=plan,
        parent_job_snapshot=job.parent_job_snapshot,
        remote_job_origin=job.get_remote_origin(),
        job_code_origin=job.get_python_origin(),
        asset_selection=frozenset(request.assets) if request.assets else None,
        asset_check_selection=None,
        asset_graph=repo.asset_graph,
    )


@contextlib.contextmanager
def running_daemon(env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run -w workspace.yaml`` in its own session, its output in ``log``.

    On exit it is asked to stop (SIGTERM: it stops its code server) and given 30 s; then its
    whole session (code server, run workers) is killed, so nothing outlives the caller."""
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(DAEMON), "run", "-w", str(WORKSPACE)],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield daemon
        finally:
            _stop(daemon)


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait()


def wait_for_daemon(instance: dg.DagsterInstance, daemon: subprocess.Popen, *, timeout: float):
    """Until the daemon's run queue reports a heartbeat (it is dequeuing)."""
    deadline = time.monotonic() + timeout
    while "QUEUED_RUN_COORDINATOR" not in instance.get_daemon_heartbeats():
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dagster-daemon sent no heartbeat in {timeout:.0f} s")
        time.sleep(0.2)


@dataclass(frozen=True, kw_only=True)
class QueuedRun:
    """One run as the instance recorded it (Unix times)."""

    run_id: str
    job: str
    account: str | None
    status: dg.DagsterRunStatus
    enqueued: float  # submitted to the queue
    dequeued: float  # taken off it by the daemon (RUN_STARTING): a slot is held from here
    started: float | None  # the run's process began the run
    ended: float | None
    pid: int | None  # the run's process


def wait_for_runs(
    instance: dg.DagsterInstance,
    run_ids: Sequence[str],
    *,
    daemon: subprocess.Popen,
    timeout: float,
) -> list[QueuedRun]:
    """Poll the runs until all have finished, then read them; fails if the daemon exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        records = instance.get_run_records(dg.RunsFilter(run_ids=list(run_ids)))
        if all(r.dagster_run.status in _FINISHED for r in records):
            break
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {daemon.returncode}")
        if time.monotonic() > deadline:
            waiting = {r.dagster_run.run_id: r.dagster_run.status.value for r in records}
            raise RuntimeError(f"runs not finished after {timeout:.0f} s: {waiting}")
        time.sleep(0.1)
    return [queued_run(instance, run_id) for run_id in run_ids]


def queued_run(instance: dg.DagsterInstance, run_id: str) -> QueuedRun:
    (record,) = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    run = record.dagster_run
    times = {
        e.dagster_event_type: e.timestamp
        for e in instance.all_logs(run_id)
        if e.dagster_event_type is not None
    }
    return QueuedRun(
        run_id=run_id,
        job=run.job_name,
        account=run.tags.get(ACCOUNT_TAG),
        status=run.status,
        enqueued=times[dg.DagsterEventType.RUN_ENQUEUED],
        dequeued=times[dg.DagsterEventType.RUN_STARTING],
        started=record.start_time,
        ended=record.end_time,
        pid=run_pid(instance, run_id),
    )


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process the run executes in, from the launcher's engine event (``pid`` metadata)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        metadata = event.engine_event_data.metadata if event and event.engine_event_data else {}
        pid = metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def most_at_once(runs: Sequence[QueuedRun]) -> int:
    """The most runs holding a slot at one moment, each from its dequeue to its end (a run
    ending at the moment another is dequeued has left its slot)."""
    edges = sorted(
        [(r.dequeued, 1) for r in runs] + [(r.ended or float("inf"), -1) for r in runs],
        key=lambda edge: (edge[0], edge[1]),
    )
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def slot_waits(runs: Sequence[QueuedRun], slots: int) -> list[float]:
    """Seconds from a slot freeing to the dequeue of each run that waited for one: the i-th run
    off the queue (from 0; i >= ``slots``) needs i - slots + 1 runs ended first, and its wait is
    from the last of those ends. Negative would mean the queue let more than ``slots`` run."""
    dequeues = sorted(r.dequeued for r in runs)
    ends = sorted(r.ended if r.ended is not None else float("inf") for r in runs)
    return [dequeues[i] - ends[i - slots] for i in range(slots, len(dequeues))]


__all__ = [
    "DEPLOY_CONFIG",
    "QueuedRun",
    "RunRequest",
    "most_at_once",
    "queued_home",
    "queued_run",
    "run_submitter",
    "running_daemon",
    "slot_waits",
    "submit_runs",
    "wait_for_daemon",
    "wait_for_runs",
]
