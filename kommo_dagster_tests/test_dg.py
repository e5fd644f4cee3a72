"""The project works with `dg` as well as the classic `dagster` commands ([tool.dg] settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.orchestration.derived_selection import all_derived_keys
from kommo_dagster.orchestration.link_assets import link_keys
from kommo_dagster.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).with_name("dg"))


def _dg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DG, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture
def dg_env(tmp_path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KOMMO_")}
    return environ | {"DAGSTER_HOME": str(home)}


def test_dg_check_and_list_defs(dg_env):
    checked = _dg("check", "defs", env=dg_env)
    assert checked.returncode == 0, checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = _dg("list", "defs", "--json", env=dg_env)
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    keys = {a["asset_key"] for a in defs["assets"]}
    derived = {k.to_user_string() for k in all_derived_keys(Settings())}
    linked = {
        k.to_user_string()
        for partitioned in (True, False)
        for k in link_keys(Settings(), partitioned=partitioned)
    }
    assert keys == {f"kommo/{name}" for name in STREAMS} | derived | linked
    assert defs["schedules"] and defs["asset_checks"]


def test_dg_launch_materializes_from_the_sandbox(dg_env, sandbox, tmp_path):
    database = tmp_path / "dg_launch.duckdb"
    env = dg_env | {
        "KOMMO_API_TOKEN": sandbox.token,
        "KOMMO_BASE_URL": sandbox.base_url,
        "KOMMO_DUCKDB_PATH": str(database),
        "KOMMO_START_DATE": "2026-10-01",
        "KOMMO_RATE_LIMIT_DIR": str(tmp_path / "rate-limit"),
    }
    launched = _dg("launch", "--assets", "kommo/pipelines,kommo/users", env=env)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    with duckdb.connect(str(database), read_only=True) as con:
        counts = {
            table: con.execute(f"select count(*) from kommo.{table}").fetchone()[0]
            for table in ("pipelines", "users")
        }
    assert counts == {
        "pipelines": len(sandbox.expected_rows("pipelines")),
        "users": len(sandbox.expected_rows("users")),
    }
