"""Settings read from KOMMO_* variables: defaults, validation with the variable's name, and the
guard against a DuckDB file named like the schema."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from kommo_dagster.settings import (
    DEFAULT_DUCKDB_PATH,
    DEFAULT_START_DATE,
    Settings,
    SettingsError,
)


def test_defaults_without_any_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.start_date == DEFAULT_START_DATE == date(2024, 1, 1)
    assert settings.duckdb_path == tmp_path / DEFAULT_DUCKDB_PATH
    assert settings.duckdb_path.is_absolute()
    assert settings.schema == "kommo"
    assert settings.staging_dir is None


def test_values_from_the_environment(tmp_path: Path):
    settings = Settings.from_env(
        {
            "KOMMO_START_DATE": "2026-10-01",
            "KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"),
            "KOMMO_DUCKDB_LOCK_TIMEOUT": "12.5",
            "KOMMO_DUCKDB_MEMORY_LIMIT": "1GB",
            "KOMMO_STAGING_DIR": str(tmp_path / "stage"),
        }
    )
    assert settings.start_date == date(2026, 10, 1)
    assert settings.duckdb_path == tmp_path / "crm.duckdb"
    assert settings.lock_timeout == 12.5
    assert settings.memory_limit == "1GB"
    assert settings.staging_dir == tmp_path / "stage"


@pytest.mark.parametrize("value", ["2026-13-01", "01/10/2026", "20261001", "yesterday"])
def test_a_bad_start_date_names_the_variable(value: str):
    with pytest.raises(SettingsError, match="KOMMO_START_DATE must be a date written YYYY-MM-DD"):
        Settings.from_env({"KOMMO_START_DATE": value})


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_bad_lock_timeout_names_the_variable(value: str):
    with pytest.raises(SettingsError, match="KOMMO_DUCKDB_LOCK_TIMEOUT"):
        Settings.from_env({"KOMMO_DUCKDB_LOCK_TIMEOUT": value})


@pytest.mark.parametrize("name", ["kommo.duckdb", "KOMMO.db", "sub/kommo.duckdb"])
def test_a_database_named_like_the_schema_is_refused(tmp_path: Path, name: str):
    with pytest.raises(SettingsError, match="Ambiguous reference"):
        Settings.from_env({"KOMMO_DUCKDB_PATH": str(tmp_path / name)})
