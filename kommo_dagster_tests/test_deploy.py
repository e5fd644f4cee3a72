"""The example instance configuration (deploy/dagster.yaml), loaded into a real DagsterInstance:
runs queue behind a global maximum and one run per account, keyed on the tag the account's jobs
give their runs."""

from __future__ import annotations

import logging
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._utils.tags import TagConcurrencyLimitsCounter

from kommo_dagster.definitions import build_definitions
from kommo_dagster.orchestration.jobs import ACCOUNT_TAG
from kommo_dagster.settings import Settings
from kommo_dagster_tests.wiring import (
    materialize_streams,
    named_accounts_definitions,
    sandbox_kommo,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    shutil.copy(EXAMPLE, tmp_path / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(tmp_path))


def test_the_example_queues_runs_behind_a_maximum_and_one_per_account(tmp_path: Path):
    with _instance(tmp_path) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [
            {"key": ACCOUNT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_every_run_of_an_account_carries_the_tag_the_queue_keys_on(tmp_path: Path):
    defs = named_accounts_definitions(tmp_path, ["br", "ru"])
    jobs = [j for j in defs.get_repository_def().get_all_jobs() if not j.name.startswith("__")]
    assert len(jobs) == 6
    for job in jobs:
        account = job.name.split("_")[1]
        assert job.tags[ACCOUNT_TAG] == account, job.name


def test_a_second_run_of_an_account_waits_while_other_accounts_start(tmp_path: Path):
    """Dagster's own counter of the queue's tag limits, over runs with our jobs' tags."""
    defs = named_accounts_definitions(tmp_path, ["br", "ru"])
    repo = defs.get_repository_def()
    with _instance(tmp_path) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits

        def run(job: str, status: DagsterRunStatus) -> DagsterRun:
            tags = dict(repo.get_job(job).tags)
            return DagsterRun(job_name=job, status=status, tags=tags)

        started = run("kommo_br_incremental_job", DagsterRunStatus.STARTED)
        counter = TagConcurrencyLimitsCounter(limits, [started])
        assert counter.is_blocked(run("kommo_br_full_tables_job", DagsterRunStatus.NOT_STARTED))
        assert not counter.is_blocked(run("kommo_ru_incremental_job", DagsterRunStatus.NOT_STARTED))


def test_the_clients_own_log_lines_reach_the_run_s_event_log(sandbox, tmp_path: Path):
    """A retry is logged by the client's plain Python logger; the example instance manages it,
    so the line is in the run's event log (the UI), not only on the process's stderr."""
    sandbox.reset()
    sandbox.inject_fault("502", path="/api/v4/leads/pipelines")
    settings = Settings(start_date=date(2026, 9, 1), duckdb_path=tmp_path / "crm.duckdb")
    defs = build_definitions(settings, kommo=sandbox_kommo(sandbox, tmp_path, max_workers=1))
    with _instance(tmp_path) as instance:
        result = materialize_streams(defs, instance, ["pipelines"])
        logged = [
            e
            for e in instance.all_logs(result.run_id)
            if e.user_message and "retry 1 of" in e.user_message
        ]
    assert len(logged) == 1 and logged[0].level == logging.WARNING
    assert "/api/v4/leads/pipelines" in logged[0].user_message
