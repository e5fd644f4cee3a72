"""Scale-out: each account's extractions share one Dagster concurrency pool, ``kommo_<account>``.

A real Dagster instance in a temporary DAGSTER_HOME, configured as a deployment whose runs execute
on other machines would be: ``concurrency: pools: default_limit: 1`` in ``dagster.yaml``, and the
pool of account ``busy`` set to 1 the way ``dagster instance concurrency set kommo_busy 1`` does.
The test holds ``kommo_busy``'s one slot itself, as a long extraction of that account elsewhere
would, and launches two runs of ``busy`` and one of ``quick`` together, each its own
``dagster asset materialize`` process. The instance decides, not timing: ``quick`` completes while
``kommo_busy`` is held; the two ``busy`` runs wait in the pool until the slot is released, then
extract one after the other.
"""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from kommo_dagster.sandbox import SandboxConfig
from kommo_dagster_tests.wiring import accounts_env, finish, materialize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
HOLDER = ("a-run-elsewhere", "kommo__busy__leads")


def _step_span(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[float, float]:
    """When the run's extraction step started and finished, from the instance's log."""
    [key] = run.asset_selection or []
    step = "__".join(key.path)
    records = [r for r in instance.all_logs(run.run_id) if r.dagster_event and r.step_key == step]
    start = [r.timestamp for r in records if r.dagster_event.is_step_start]
    end = [r.timestamp for r in records if r.dagster_event.is_step_success]
    assert len(start) == len(end) == 1, [r.dagster_event.event_type for r in records]
    return start[0], end[0]


def _wait_for_pending_steps(instance: dg.DagsterInstance, pool: str, count: int) -> None:
    """Until ``count`` steps wait for ``pool`` (each run registers its step when it reaches it)."""
    pause = threading.Event()
    for _ in range(3000):
        if len(instance.event_log_storage.get_concurrency_info(pool).pending_steps) >= count:
            return
        pause.wait(0.05)
    raise AssertionError(f"{count} steps never waited for {pool}")


def test_runs_of_one_account_queue_on_its_pool_while_another_account_runs(
    tmp_path: Path, sandbox_factory
):
    busy = sandbox_factory(SandboxConfig(seed=1, leads=30, token="busy-token"))
    quick = sandbox_factory(SandboxConfig(seed=2, leads=30, token="quick-token"))
    env = accounts_env({"busy": busy, "quick": quick}, tmp_path)
    home = Path(env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
    )

    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("kommo_busy", 1)
        assert storage.claim_concurrency_slot("kommo_busy", *HOLDER).is_claimed

        processes = {
            label: materialize(env, "--select", key)
            for label, key in (
                ("busy-1", "kommo/busy/pipelines"),
                ("busy-2", "kommo/busy/users"),
                ("quick", "kommo/quick/users"),
            )
        }
        finish(processes["quick"])  # done while kommo_busy is held
        _wait_for_pending_steps(instance, "kommo_busy", 2)
        assert processes["busy-1"].poll() is None and processes["busy-2"].poll() is None

        storage.free_concurrency_slot_for_step(*HOLDER)
        for label in ("busy-1", "busy-2"):
            finish(processes[label])

        spans = {
            next(iter(run.asset_selection or [])).to_user_string(): _step_span(instance, run)
            for run in instance.get_runs()
        }
        assert set(spans) == {"kommo/busy/pipelines", "kommo/busy/users", "kommo/quick/users"}
        first, second = sorted([spans["kommo/busy/pipelines"], spans["kommo/busy/users"]])
        assert second[0] >= first[1]  # one slot: the second started after the first ended
        for pool in ("kommo_busy", "kommo_quick"):
            info = storage.get_concurrency_info(pool)
            assert info.slot_count == 1
            assert info.claimed_slots == [] and info.pending_steps == []
