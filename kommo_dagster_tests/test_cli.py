"""`dagster asset materialize` as a user runs it: a subprocess, configured by environment
variables, against the sandbox over HTTP, writing a DuckDB file and a DAGSTER_HOME."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import filelock
import pytest

from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.warehouse.locks import lock_path
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.rows import canonical

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[KommoSandbox]:
    with KommoSandbox(SandboxConfig(seed=1, leads=300, requests_per_second=None)) as sb:
        yield sb


@pytest.fixture
def env(sandbox: KommoSandbox, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Create the instance's storage once: two processes doing it at the same moment race in
    # Dagster's own schema migration (as they would with a brand-new DAGSTER_HOME anywhere).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))},
        "KOMMO_BASE_URL": sandbox.base_url,
        "KOMMO_API_TOKEN": sandbox.token,
        "KOMMO_START_DATE": "2026-09-01",
        "KOMMO_DUCKDB_PATH": str(tmp_path / "kommo_crm.duckdb"),
        "KOMMO_REQUESTS_PER_SECOND": "200",
        "KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT": "true",  # the sandbox is not Kommo
        "KOMMO_RATE_LIMIT_DIR": str(tmp_path / "rate-limit"),
        "DAGSTER_HOME": str(home),
    }


def _materialize(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DAGSTER, "asset", "materialize", "-m", "kommo_dagster.definitions", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=150)
    assert process.returncode == 0, output[-4000:]
    return output


def _rows(db: str, stream: str, where: str = "") -> list[dict]:
    with duckdb.connect(db, read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM kommo.{stream} {where}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


@pytest.mark.timeout(180)
def test_one_partition_from_the_command_line(env: dict[str, str], sandbox: KommoSandbox):
    output = _finish(_materialize(env, "--select", "kommo/leads", "--partition", "2026-10-16"))
    assert "RUN_SUCCESS" in output
    day = EpochWindow(1_792_108_800, 1_792_195_200)  # 2026-10-16 UTC
    expected = [r for r in sandbox.expected_rows("leads") if day.contains(r["updated_at"])]
    assert expected
    assert canonical("leads", _rows(env["KOMMO_DUCKDB_PATH"], "leads")) == canonical(
        "leads", expected
    )
    assert sandbox.token not in output


@pytest.mark.timeout(240)
def test_two_materializations_launched_together_take_turns(
    env: dict[str, str], sandbox: KommoSandbox
):
    """Hold the database's lock while two runs start, so both reach their write while the
    other is waiting too; both must wait and succeed, not fail on DuckDB's writer lock."""
    db = env["KOMMO_DUCKDB_PATH"]
    sandbox.reset_stats()
    held = filelock.FileLock(str(lock_path(db)))
    held.acquire()
    try:
        ranged = _materialize(
            env, "--select", "kommo/events", "--partition-range", "2026-10-01...2026-10-31"
        )
        full = _materialize(env, "--select", "kommo/users")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            served = set(sandbox.stats()["by_path"])
            if {"/api/v4/users", "/api/v4/events"} <= served:
                break
            if ranged.poll() is not None or full.poll() is not None:
                break  # the assertion below reports the run's output
            time.sleep(0.2)
        else:
            pytest.fail("the runs did not reach the API")
        time.sleep(1.0)  # both are now extracting or already waiting for the file
        for process in (ranged, full):
            if process.poll() is not None:
                pytest.fail(f"a run ended while the file was locked:\n{_finish(process)[-4000:]}")
    finally:
        held.release()
    outputs = [_finish(ranged), _finish(full)]
    assert all("is being written by another run; waiting" in o for o in outputs)

    for stream in ("events", "users"):
        assert canonical(stream, _rows(db, stream)) == canonical(
            stream, sandbox.expected_rows(stream)
        )
    # the runs are recorded in DAGSTER_HOME, where `dagster dev` will show them
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
