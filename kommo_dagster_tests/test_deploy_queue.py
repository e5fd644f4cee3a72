"""The run queue of deploy/dagster.yaml end to end: a real ``dagster-daemon`` starts queued runs.

Three sandbox accounts; a DAGSTER_HOME made from the shipped file with the global maximum lowered
to 2 (the per-account limit as shipped) and the daemon polling every second; four runs submitted
at once (two of one account), more than the slots. The daemon, over the repository's
``workspace.yaml``, must start them as slots free up: never more than 2 at once, never two of an
account at once, each waiting run taken off the queue only after a run before it ended, and each
run's rows in DuckDB as the sandbox served them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from benchmarks.run_queue import (
    RunRequest,
    most_at_once,
    queued_home,
    running_daemon,
    slot_waits,
    submit_runs,
    wait_for_runs,
)
from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.rows import canonical
from kommo_dagster_tests.wiring import accounts_env

pytestmark = pytest.mark.slow

SLOTS = 2
DAY = "2026-10-16"
DAY_WINDOW = EpochWindow(1_792_108_800, 1_792_195_200)  # 2026-10-16 UTC


def _table(db: str, account: str, stream: str) -> list[dict]:
    with duckdb.connect(db, read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM kommo_{account}.{stream}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


@pytest.mark.timeout(300)
def test_queued_runs_start_as_slots_free_up(
    sandbox_factory: Callable[..., KommoSandbox], tmp_path: Path
):
    accounts = {
        name: sandbox_factory(SandboxConfig(seed=seed, leads=100, requests_per_second=None))
        for seed, name in enumerate(["aa", "bb", "cc"], start=1)
    }
    env = accounts_env(accounts, tmp_path) | {"KOMMO_STREAMS": "leads,pipelines,statuses,users"}
    home = Path(env["DAGSTER_HOME"])
    queued_home(home, max_concurrent_runs=SLOTS, dequeue_interval_seconds=1)
    day = {"dagster/partition": DAY}
    requests = [
        RunRequest(job="kommo_aa_full_tables_job"),
        RunRequest(job="kommo_aa_incremental_job", tags=day),
        RunRequest(job="kommo_bb_incremental_job", tags=day),
        RunRequest(job="kommo_cc_full_tables_job"),
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ids = submit_runs(instance, requests, env=env)
        queued = instance.get_runs(dg.RunsFilter(run_ids=ids))
        assert {r.status for r in queued} == {dg.DagsterRunStatus.QUEUED}
        with running_daemon(env, tmp_path / "daemon.log") as daemon:
            runs = wait_for_runs(instance, ids, daemon=daemon, timeout=180)

    log = (tmp_path / "daemon.log").read_text()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 4, log[-4000:]
    assert [r.account for r in runs] == ["aa", "aa", "bb", "cc"]
    # Side by side up to the maximum, never more (each run holds its slot from its dequeue).
    assert most_at_once(runs) == SLOTS
    # Never two runs of one account at once: aa's second run left the queue after its first ended.
    aa_tables, aa_day = runs[0], runs[1]
    assert aa_tables.ended is not None and aa_day.dequeued >= aa_tables.ended
    # Not all at once: the runs beyond the first two each left the queue only after a run ended.
    waits = slot_waits(runs, SLOTS)
    assert len(waits) == len(runs) - SLOTS and min(waits) >= 0, waits

    db = env["KOMMO_DUCKDB_PATH"]
    for account in ("aa", "cc"):
        assert canonical("users", _table(db, account, "users")) == canonical(
            "users", accounts[account].expected_rows("users")
        )
    for account in ("aa", "bb"):
        served = [
            r
            for r in accounts[account].expected_rows("leads")
            if DAY_WINDOW.contains(r["updated_at"])
        ]
        assert served
        assert canonical("leads", _table(db, account, "leads")) == canonical("leads", served)
