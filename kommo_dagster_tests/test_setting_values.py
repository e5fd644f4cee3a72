"""The settings' value parsers, met through the variables they read: a bad date, number of
seconds, retention or memory size fails naming the variable, and a good one reaches the
resources."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from kommo_dagster.setting_values import SettingsError, latest_start_date, parse_date
from kommo_dagster.settings import Settings
from kommo_dagster_tests.env_loading import load_env as _load_env
from kommo_dagster_tests.env_loading import refused as _refused
from kommo_dagster_tests.kommo.conftest import NOT_PLAIN


@pytest.mark.parametrize("value", ["2026-13-01", "01/10/2026", "20261001", "yesterday"])
def test_a_bad_start_date_names_the_variable(value: str):
    with pytest.raises(SettingsError, match="KOMMO_START_DATE must be a date written YYYY-MM-DD"):
        Settings.from_env({"KOMMO_START_DATE": value})


@pytest.mark.parametrize("value", [datetime(2026, 10, 1), datetime(2026, 10, 1, 15, 30)])
def test_a_start_date_given_as_a_datetime_names_the_field(value: datetime):
    """A datetime is a date to Python, but not the day a partition starts (which hour, what
    zone?); it failed with a TypeError that named nothing."""
    with pytest.raises(
        SettingsError, match=rf"start_date must be a date .* got {re.escape(repr(value))}$"
    ):
        Settings(start_date=value)


@pytest.mark.parametrize("days", [0, 1])
def test_todays_and_tomorrows_utc_date_load_as_the_start_date(days: int):
    """Today starts with today's partition; tomorrow in UTC is today in a zone ahead of it."""
    day = datetime.now(UTC).date() + timedelta(days=days)
    assert Settings.from_env({"KOMMO_START_DATE": day.isoformat()}).start_date == day


def test_a_start_date_after_tomorrow_names_the_variable_the_value_and_the_last_day():
    today = date(2026, 12, 31)
    assert latest_start_date(today) == date(2027, 1, 1)
    assert parse_date("2027-01-01", "KOMMO_START_DATE", today=today) == date(2027, 1, 1)
    with pytest.raises(SettingsError) as failure:
        parse_date("2027-01-02", "KOMMO_START_DATE", today=today)
    message = str(failure.value)
    assert message.startswith("KOMMO_START_DATE must be a date on or before 2027-01-01")
    assert "no daily partition" in message and message.endswith("got '2027-01-02'")


def test_a_future_start_date_given_in_python_names_the_field_and_the_value():
    """A date object is held to the same last day as a variable's text."""
    later = datetime.now(UTC).date() + timedelta(days=30)
    with pytest.raises(SettingsError) as failure:
        Settings(start_date=later)
    message = str(failure.value)
    assert message.startswith("start_date must be a date on or before ")
    assert message.endswith(f"got {later!r}")


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_bad_lock_timeout_names_the_variable(value: str):
    with pytest.raises(SettingsError, match="KOMMO_DUCKDB_LOCK_TIMEOUT"):
        Settings.from_env({"KOMMO_DUCKDB_LOCK_TIMEOUT": value})


@pytest.mark.parametrize("value", NOT_PLAIN)
def test_numbers_not_written_plainly_are_refused_naming_the_variable_and_value(value: str):
    refusals = {
        "KOMMO_DUCKDB_LOCK_TIMEOUT": "must be a positive number of seconds",
        "KOMMO_HISTORY_RETENTION_DAYS": "must be a whole number of at least 0",
        "KOMMO_SENSOR_INTERVAL_SECONDS": "must be a whole number of at least 1",
        "KOMMO_REQUESTS_PER_SECOND": "must be a number of requests per second",
    }
    for variable, what in refusals.items():
        with pytest.raises(SettingsError, match=f"{variable} {what}") as err:
            Settings.from_env({variable: value})
        assert repr(value) in str(err.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(" 2.5 ", 2.5), ("+3", 3.0), ("5.", 5.0), (".5", 0.5), ("1E1", 10.0), ("\t6e-1\n", 0.6)],
)
def test_a_lock_timeout_written_plainly_stays_accepted(value: str, seconds: float):
    assert Settings.from_env({"KOMMO_DUCKDB_LOCK_TIMEOUT": value}).lock_timeout == seconds


@pytest.mark.parametrize(("value", "days"), [(" 7 ", 7), ("007", 7), ("0", 0)])
def test_a_whole_number_written_plainly_stays_accepted(value: str, days: int):
    assert Settings.from_env({"KOMMO_HISTORY_RETENTION_DAYS": value}).history_retention_days == days


@pytest.mark.parametrize("value", ["800000", "99999999999999999999"])
def test_a_history_retention_past_what_a_date_holds_fails_the_load(
    environ, monkeypatch: pytest.MonkeyPatch, value: str
):
    message = _refused(monkeypatch, "KOMMO_HISTORY_RETENTION_DAYS", value)
    assert "a whole number of at most 36500" in message
    defs = _load_env(monkeypatch, {"KOMMO_HISTORY_RETENTION_DAYS": "36500"})
    assert defs.resources["io_manager"].history_retention_days == 36500


@pytest.mark.parametrize("value", ["lots", "512", "1 GBs"])
def test_a_memory_limit_duckdb_cannot_read_fails_the_load_not_the_runs(
    environ, monkeypatch: pytest.MonkeyPatch, value: str
):
    message = _refused(monkeypatch, "KOMMO_DUCKDB_MEMORY_LIMIT", value)
    assert message.startswith("KOMMO_DUCKDB_MEMORY_LIMIT must be a DuckDB memory size")
    for good in ("512MB", "2GiB", "80%"):
        defs = _load_env(monkeypatch, {"KOMMO_DUCKDB_MEMORY_LIMIT": good})
        assert defs.resources["duckdb"].connection_config == {"memory_limit": good}


@pytest.mark.parametrize("value", ["0MB", "1KB", "0%"])
def test_a_memory_limit_no_query_fits_in_fails_the_load_not_the_runs(
    environ, monkeypatch: pytest.MonkeyPatch, value: str
):
    """DuckDB reads these, then every statement of every run ran out of memory."""
    message = _refused(monkeypatch, "KOMMO_DUCKDB_MEMORY_LIMIT", value)
    assert message == (
        f"KOMMO_DUCKDB_MEMORY_LIMIT must be a memory size DuckDB can run a small query in, "
        f"got {value!r}"
    )
