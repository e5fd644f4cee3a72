"""A ``KOMMO_`` variable nothing reads is named at load, with what to set instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import Location
from kommo_dagster.unread_variables import read_variables, unread_variables

TOKEN = "unread-test-token-0123456789"
SINGLE = {"KOMMO_API_TOKEN": TOKEN, "KOMMO_BASE_URL": "http://127.0.0.1:1"}
TWO = {
    "KOMMO_ACCOUNTS": "br,ru",
    "KOMMO_BR_API_TOKEN": TOKEN,
    "KOMMO_BR_BASE_URL": "http://127.0.0.1:1",
    "KOMMO_RU_API_TOKEN": TOKEN,
    "KOMMO_RU_SUBDOMAIN": "acme",
}


def _unread(env: dict[str, str]) -> dict[str, str]:
    return unread_variables(Location.from_env(env), env)


def test_every_variable_of_a_working_set_up_is_read():
    both = TWO | {
        "KOMMO_START_DATE": "2026-01-01",  # shared fallback of a per-account setting
        "KOMMO_BR_START_DATE": "2026-02-01",
        "KOMMO_BR_FULL_TABLE_STREAMS": "tasks",  # not taken for STREAMS of account br_full_table
        "KOMMO_DUCKDB_PATH": "data/x.duckdb",
        "KOMMO_VENV": "/tmp/venv",
    }
    assert _unread(SINGLE | {"KOMMO_REQUESTS_PER_SECOND": "3", "KOMMO_SCHEMA": "crm"}) == {}
    assert _unread(both) == {}


@pytest.mark.parametrize(
    ("env", "name", "why"),
    [
        (SINGLE, "KOMMO_REQUEST_PER_SECOND", "did you mean KOMMO_REQUESTS_PER_SECOND?"),
        (TWO, "KOMMO_BR_REQUEST_PER_SECOND", "did you mean KOMMO_BR_REQUESTS_PER_SECOND?"),
        (TWO, "KOMMO_BR_DUCKDB_PATH", "DUCKDB_PATH is one setting for every account: set "
         "KOMMO_DUCKDB_PATH"),
        # KOMMO_SCHEMA fails the load with KOMMO_ACCOUNTS: it is not what to set instead.
        (TWO, "KOMMO_BR_SCHEMA", "with KOMMO_ACCOUNTS no SCHEMA applies: each account's follows "
         "its name"),
        (SINGLE, "KOMMO_BR_SCHEMA", "SCHEMA is one setting for every account: set KOMMO_SCHEMA"),
        (TWO, "KOMMO_API_TOKEN", "with KOMMO_ACCOUNTS each account reads its own "
         "KOMMO_<ACCOUNT>_API_TOKEN"),
        (TWO, "KOMMO_MX_START_DATE", "account 'mx' is not in KOMMO_ACCOUNTS (br, ru)"),
        (SINGLE, "KOMMO_BR_API_TOKEN", "account 'br' is not in KOMMO_ACCOUNTS (not set)"),
        (SINGLE, "KOMMO_CLIENT_SECRET", "no setting of kommo-dagster has this name (see the "
         "README's settings table)"),
    ],
)  # fmt: skip
def test_an_unread_variable_says_what_was_meant(env: dict[str, str], name: str, why: str):
    assert _unread(env | {name: "3"}) == {name: why}


def test_no_advice_for_several_accounts_names_a_variable_that_fails_the_load():
    """What a warning says to set instead must load: KOMMO_SCHEMA does not with accounts."""
    with pytest.raises(SettingsError, match="KOMMO_SCHEMA does not apply"):
        Location.from_env(TWO | {"KOMMO_SCHEMA": "3"})
    for name, why in _unread(TWO | {"KOMMO_BR_SCHEMA": "3", "KOMMO_RU_SCHEMA": "3"}).items():
        assert "set KOMMO_" not in why, (name, why)


def test_the_variables_read_follow_the_accounts():
    single, two = (read_variables(Location.from_env(e)) for e in (SINGLE, TWO))
    assert {"KOMMO_API_TOKEN", "KOMMO_SUBDOMAIN", "KOMMO_SCHEMA"} <= single
    assert not any(n.startswith(("KOMMO_BR_", "KOMMO_RU_")) for n in single)
    assert {"KOMMO_BR_API_TOKEN", "KOMMO_RU_MAX_WORKERS", "KOMMO_MAX_WORKERS"} <= two
    assert not {"KOMMO_API_TOKEN", "KOMMO_SCHEMA", "KOMMO_BR_DUCKDB_PATH"} & two


def test_loading_the_definitions_warns_without_showing_the_value(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    secret = "value-of-a-misspelt-token-variable"
    env |= SINGLE | {
        "KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"),
        "KOMMO_APITOKEN": secret,
        "DAGSTER_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import kommo_dagster.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "UnreadVariableWarning: KOMMO_APITOKEN is set but not read by kommo-dagster: did you "
        "mean KOMMO_API_TOKEN?" in done.stderr
    )
    assert secret not in done.stderr + done.stdout and TOKEN not in done.stderr + done.stdout
