"""A MotherDuck database (``md:...``) as the warehouse: kept as written, no lock file, and a run
that cannot reach MotherDuck fails with a clear error (a fake database, no network needed)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.errors import WarehouseError
from kommo_dagster.warehouse.locks import connect, database_lock
from kommo_dagster.warehouse.sql import catalog_name, is_file_database
from kommo_dagster_tests.wiring import sandbox_kommo

FAKE = "md:kommo_fake_warehouse"


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory with a fake token: nothing may land here, and with network
    MotherDuck refuses the token instead of asking for a login."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOTHERDUCK_TOKEN", "not-a-real-token")
    monkeypatch.setenv("motherduck_token", "not-a-real-token")
    return tmp_path


def test_a_motherduck_path_is_kept_as_written():
    settings = Settings(duckdb_path=FAKE)
    assert settings.duckdb_path == FAKE
    assert not is_file_database(FAKE)
    assert is_file_database(Path("data/kommo_crm.duckdb"))
    assert catalog_name(FAKE) == "kommo_fake_warehouse"
    assert catalog_name("md:crm?attach_mode=single") == "crm"
    with pytest.raises(SettingsError, match="Ambiguous reference"):
        Settings(duckdb_path="md:kommo")


def test_no_lock_file_for_a_motherduck_database(offline: Path):
    with database_lock(FAKE, timeout=1):
        pass
    assert list(offline.iterdir()) == []


def test_an_unreachable_motherduck_database_fails_cleanly(offline: Path):
    with (
        pytest.raises(WarehouseError, match="could not open the MotherDuck database"),
        connect(FAKE, timeout=5),
    ):
        pass
    assert list(offline.iterdir()) == []


def test_a_run_writing_to_an_unreachable_motherduck_fails_naming_it(sandbox, offline: Path):
    settings = Settings(duckdb_path=FAKE)
    defs = build_definitions(settings, kommo=sandbox_kommo(sandbox, offline / "budget"))
    result = dg.materialize(
        list(defs.assets or []),
        selection=[dg.AssetKey(["kommo", "users"])],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    messages = [error.message] + ([error.cause.message] if error.cause else [])
    assert any(
        "could not open the MotherDuck database md:kommo_fake_warehouse" in m for m in messages
    )
    assert sorted(p.name for p in offline.iterdir()) == ["budget"]
