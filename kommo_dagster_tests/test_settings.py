"""Settings read from KOMMO_* variables: defaults and values; and the one model from every
source: each bad value fails the definitions load naming its variable or defs.yaml field and the
value, and the environment and defs.yaml reach the same fields.

A value parser's own refusals are in test_setting_values.py, the DuckDB path's in
test_duckdb_path.py."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from kommo_dagster.component import KommoAccountConfig, KommoComponent
from kommo_dagster.definitions import build_definitions
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import (
    DEFAULT_DUCKDB_PATH,
    DEFAULT_START_DATE,
    SETTING,
    SETTINGS,
    Location,
    Settings,
)
from kommo_dagster_tests.env_loading import TOKEN
from kommo_dagster_tests.env_loading import load_env as _load_env


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


# --- one model, validated when the definitions load, from every source ------------------------

# A bad value of each kind: (suffix of the variable, defs.yaml field, value, words of the error).
BAD_VALUES = {
    "non-numeric rate": ("REQUESTS_PER_SECOND", "requests_per_second", "abc", "number"),
    "non-numeric workers": ("MAX_WORKERS", "max_workers", "lots", "integer"),
    "rate above 7": ("REQUESTS_PER_SECOND", "requests_per_second", "50", "above Kommo's limit"),
    "workers out of range": ("MAX_WORKERS", "max_workers", "65", "between 1 and 64"),
    "sensor interval out of range": (
        "SENSOR_INTERVAL_SECONDS",
        "sensor_interval_seconds",
        "0",
        "at least 1",
    ),
    # Dagster's UI shows the interval as a 32-bit GraphQL Int: a larger one broke the sensor's page.
    "sensor interval above a day": (
        "SENSOR_INTERVAL_SECONDS",
        "sensor_interval_seconds",
        "99999999999",
        "at most 86400",
    ),
    "negative ban cool-down": ("BAN_COOLDOWN_SECONDS", "ban_cooldown_seconds", "-5", "0 or more"),
    # The block's message names the cool-down's end: year 33000 failed the run that met it.
    "ban cool-down past 100 years": (
        "BAN_COOLDOWN_SECONDS",
        "ban_cooldown_seconds",
        "999999999999",
        "at most",
    ),
    "unknown stream": ("STREAMS", "streams", "leads,deals", "names unknown streams"),
    "bad start date": ("START_DATE", "start_date", "March", "YYYY-MM-DD"),
    # Kommo's cursors are Unix seconds; Dagster cannot even build partitions from year 1.
    "start date before 1970": ("START_DATE", "start_date", "0001-01-01", "on or after 1970-01-01"),
    # A typo for 2026-01-01: it loaded with no partition, so nothing ever ran.
    "start date in the future": ("START_DATE", "start_date", "2062-01-01", "on or before"),
    "bad flag": ("SCHEDULES_DEFAULT_ON", "schedules", "maybe", "true or false"),
    "bad subdomain": ("SUBDOMAIN", "subdomain", "acme.kommo.com", "bare subdomain"),
    # A YAML flag where a number goes: no number (pydantic would have read true as 1).
    "flag as workers": ("MAX_WORKERS", "max_workers", "true", "integer"),
    "flag as rate": ("REQUESTS_PER_SECOND", "requests_per_second", "true", "number"),
    "flag as ban cool-down": ("BAN_COOLDOWN_SECONDS", "ban_cooldown_seconds", "false", "number"),
    "flag as interval": ("SENSOR_INTERVAL_SECONDS", "sensor_interval_seconds", "true", "whole"),
}


def _load_yaml(tmp_path: Path, account: dict[str, object]) -> dg.Definitions:
    attributes = {"duckdb_path": str(tmp_path / "crm.duckdb"), "accounts": [account]}
    component = KommoComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    return component.build_defs(dg.ComponentTree.for_test().load_context)  # what `dg` does


def _shown(case: str, value: object) -> str:
    """How the message shows the value: the unknown names of a list of streams, a date YAML
    read as written, else as given."""
    if isinstance(value, date):
        return repr(value.isoformat())
    return "['deals']" if case == "unknown stream" else repr(value)


def _yaml_value(field: str, value: str) -> object:
    """The value as a user writes it in YAML: a list of streams, a number when it is one."""
    if field == "streams":
        return value.split(",")
    return yaml.safe_load(value)


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_unprefixed_variable_fails_the_load_naming_it_and_the_value(
    environ, monkeypatch: pytest.MonkeyPatch, case: str
):
    suffix, _, value, words = BAD_VALUES[case]
    variables = {"KOMMO_API_TOKEN": TOKEN, "KOMMO_SUBDOMAIN": "acme", f"KOMMO_{suffix}": value}
    with pytest.raises(SettingsError) as failure:
        _load_env(monkeypatch, variables)
    message = str(failure.value)
    assert f"KOMMO_{suffix}" in message and _shown(case, value) in message and words in message
    assert TOKEN not in message


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_account_variable_fails_the_load_naming_it_and_the_value(
    environ, monkeypatch: pytest.MonkeyPatch, case: str
):
    suffix, _, value, words = BAD_VALUES[case]
    variables = {
        "KOMMO_ACCOUNTS": "a1,b2",
        "KOMMO_A1_API_TOKEN": TOKEN,
        "KOMMO_A1_SUBDOMAIN": "acme",
        "KOMMO_B2_API_TOKEN": TOKEN,
        "KOMMO_B2_SUBDOMAIN": "brazil",
        f"KOMMO_A1_{suffix}": value,
    }
    with pytest.raises(SettingsError) as failure:
        _load_env(monkeypatch, variables)
    message = str(failure.value)
    assert f"KOMMO_A1_{suffix}" in message and words in message
    assert _shown(case, value) in message


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_defs_yaml_field_fails_the_load_naming_it_and_the_value(
    environ, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
):
    _, field, value, words = BAD_VALUES[case]
    monkeypatch.setenv("BR_TOKEN", TOKEN)
    account = {"name": "br", "api_token": "{{ env.BR_TOKEN }}", "subdomain": "acme"}
    written = _yaml_value(field, value)
    with pytest.raises(SettingsError) as failure:
        _load_yaml(tmp_path, account | {field: written})
    message = str(failure.value)
    assert f"defs.yaml accounts[0].{field}" in message and words in message
    shown = _shown(case, written).removesuffix("'").removeprefix("'")
    assert shown in message and TOKEN not in message


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_given_in_python_fails_naming_the_field_and_the_value(case: str):
    suffix, _, value, words = BAD_VALUES[case]
    [field] = [s.field for s in SETTINGS if s.variable == suffix]
    with pytest.raises(SettingsError) as failure:
        Settings(**{field: value})
    message = str(failure.value)
    assert message.startswith(field) and words in message and _shown(case, value) in message


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lock_timeout", "soon", "a positive number of seconds"),
        ("history_retention_days", -1, "a whole number of at least 0"),
        # The purge's cutoff (now - days) overflowed at the first full-table write.
        ("history_retention_days", 800_000, r"a whole number of at most 36500 \(100 years\)"),
        ("timezone", "Mars/Base", "an IANA time zone name"),
        ("rate_limit_dir", str(Path(__file__)), "a directory"),
        ("staging_dir", str(Path(__file__)), "a directory"),
        ("staging_dir", str(Path(__file__) / "stage"), "a directory"),
        ("memory_limit", "lots", "a DuckDB memory size like 512MB, 2GiB or 80%"),
        ("memory_limit", "512 MiBs", "a DuckDB memory size like 512MB, 2GiB or 80%"),
        # A YAML flag is no number: true was read as 1 (a day of history, a second's wait).
        ("history_retention_days", True, "a whole number of at least 0"),
        ("lock_timeout", True, "a positive number of seconds"),
    ],
)
def test_a_bad_top_level_field_fails_the_load_naming_it(
    environ, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field, value, words
):
    monkeypatch.setenv("BR_TOKEN", TOKEN)
    attributes = {
        "duckdb_path": str(tmp_path / "crm.duckdb"),
        field: value,
        "accounts": [{"name": "br", "api_token": "{{ env.BR_TOKEN }}", "subdomain": "acme"}],
    }
    component = KommoComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    with pytest.raises(SettingsError, match=f"defs.yaml {field} must be {words}, got {value!r}"):
        component.build_defs(dg.ComponentTree.for_test().load_context)


def test_the_issues_examples_fail_the_load(environ, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(SettingsError, match=r"KOMMO_REQUESTS_PER_SECOND is above .* got '50'"):
        _load_env(monkeypatch, {"KOMMO_REQUESTS_PER_SECOND": "50"})
    monkeypatch.delenv("KOMMO_REQUESTS_PER_SECOND")
    with pytest.raises(
        SettingsError, match=r"KOMMO_A1_REQUESTS_PER_SECOND must be a number .*'abc'"
    ):
        _load_env(
            monkeypatch,
            {
                "KOMMO_ACCOUNTS": "a1",
                "KOMMO_A1_API_TOKEN": TOKEN,
                "KOMMO_A1_SUBDOMAIN": "acme",
                "KOMMO_A1_REQUESTS_PER_SECOND": "abc",
            },
        )


@pytest.mark.parametrize(
    ("allow", "account_allow"),
    [("KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT", None), (None, "true")],
)
def test_a_rate_above_7_loads_only_when_allowed(
    environ, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, allow, account_allow
):
    variables = {
        "KOMMO_ACCOUNTS": "a1",
        "KOMMO_A1_API_TOKEN": TOKEN,
        "KOMMO_A1_SUBDOMAIN": "acme",
        "KOMMO_A1_REQUESTS_PER_SECOND": "20",
    }
    if allow:
        variables[allow] = "true"
    if account_allow:
        variables["KOMMO_A1_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT"] = account_allow
    defs = _load_env(monkeypatch, variables)
    assert defs.resources["kommo_a1"].requests_per_second == 20.0

    monkeypatch.setenv("BR_TOKEN", TOKEN)
    account = {"name": "br", "api_token": "{{ env.BR_TOKEN }}", "subdomain": "acme"}
    with pytest.raises(SettingsError, match=r"accounts\[0\].requests_per_second is above"):
        _load_yaml(tmp_path, account | {"requests_per_second": 20})
    defs = _load_yaml(
        tmp_path,
        account | {"requests_per_second": 20, "allow_requests_per_second_above_limit": True},
    )
    assert defs.resources["kommo_br"].requests_per_second == 20.0
    with pytest.raises(SettingsError, match=r"requests_per_second is above .* got 20"):
        Settings(requests_per_second=20)
    assert Settings(requests_per_second=20, allow_requests_per_second_above_limit=True)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"KOMMO_ACCOUNTS": "Br-1"}, "KOMMO_ACCOUNTS names an account 'Br-1'"),
        ({"KOMMO_ACCOUNTS": "a1", "KOMMO_A1_SUBDOMAIN": "acme"}, "KOMMO_A1_API_TOKEN is not set"),
        ({"KOMMO_SUBDOMAIN": "acme"}, "KOMMO_API_TOKEN is not set"),
        (
            {"KOMMO_ACCOUNTS": "a1", "KOMMO_A1_BASE_URL": "https://a1.amocrm.ru"},
            "KOMMO_A1_API_TOKEN is not set",
        ),
        ({"KOMMO_SUBDOMAIN": "acme", "KOMMO_API_TOKEN": " "}, "KOMMO_API_TOKEN is not set"),
        ({"KOMMO_SUBDOMAIN": "acme", "KOMMO_API_TOKEN": "a b\n"}, "KOMMO_API_TOKEN has leading"),
    ],
    ids=[
        "malformed-account-name",
        "account-token",
        "unprefixed-token",
        "account-token-amocrm",
        "blank-token",
        "token-with-line-break",
    ],
)
def test_a_bad_account_name_or_missing_token_fails_the_load(
    environ, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
):
    with pytest.raises(SettingsError, match=named):
        _load_env(monkeypatch, variables)


@pytest.mark.parametrize(
    ("account", "named"),
    [
        ({"name": "Br-1", "api_token": "{{ env.BR_TOKEN }}"}, r"accounts\[0\].name .*'Br-1'"),
        ({"name": "br", "subdomain": "acme"}, r"accounts\[0\].api_token is not set"),
        (
            {"name": "br", "api_token": "{{ env.UNSET_TOKEN }}", "subdomain": "acme"},
            r"accounts\[0\].api_token names UNSET_TOKEN, which is not set",
        ),
    ],
    ids=["malformed-account-name", "no-token-field", "token-variable-unset"],
)
def test_a_bad_account_name_or_missing_token_in_defs_yaml_fails_the_load(
    environ, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, account: dict, named: str
):
    monkeypatch.setenv("BR_TOKEN", TOKEN)
    with pytest.raises(SettingsError, match=named):
        _load_yaml(tmp_path, account | {"subdomain": "acme"})


def test_accounts_without_a_host_load_to_be_browsed(environ, monkeypatch: pytest.MonkeyPatch):
    # Their runs fail at their start, naming the variable (test_definitions, test_accounts).
    assert build_definitions().resources["kommo"].subdomain is None
    defs = _load_env(monkeypatch, {"KOMMO_ACCOUNTS": "br,ru"})
    assert {"kommo_br", "kommo_ru"} <= set(defs.resources)


# --- the environment and defs.yaml reach the same fields ---------------------------------------


class _Recording(dict):
    """An environment that records which variables are read."""

    def __init__(self, values: dict[str, str]):
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_every_setting_is_a_variable_and_a_defs_yaml_field_and_nothing_else():
    single, named = _Recording({}), _Recording({"KOMMO_ACCOUNTS": "br"})
    Location.from_env(single)
    Location.from_env(named)
    variables = {s.env for s in SETTINGS}
    assert single.read == variables | {"KOMMO_ACCOUNTS"}
    own = {f"KOMMO_BR_{s.variable}" for s in SETTINGS if s.scope in ("own", "account")}
    # A named account reads its own variables, falls back to the shared ones but for the token
    # and the host, and reads KOMMO_SCHEMA only to refuse it.
    shared = {s.env for s in SETTINGS if s.scope != "own"}
    assert named.read == shared | own | {"KOMMO_ACCOUNTS"}

    account_fields = set(KommoAccountConfig.model_fields)
    top_fields = set(KommoComponent.model_fields)
    assert account_fields == {"name"} | {
        s.yaml_field for s in SETTINGS if s.scope in ("own", "account")
    }
    # The top level holds the warehouse, (as KOMMO_RATE_LIMIT_DIR) the accounts' default, and
    # the asset specs' translation, which is code location wiring rather than a setting.
    assert top_fields == {"accounts", "rate_limit_dir", "translation"} | {
        s.yaml_field for s in SETTINGS if s.scope == "shared"
    }
    # Every field of the model is set by a variable and by a defs.yaml field, except the
    # single account's schema (a named account's is kommo_<name>) and the account's name.
    assert {s.field for s in SETTINGS} | {"account", "sources"} == {
        f.name for f in dataclasses.fields(Settings)
    }
    assert [s.field for s in SETTINGS if s.scope == "single"] == ["schema"]


# A value other than the default for every setting of an account, as text and as YAML.
EVERY_SETTING = {
    "subdomain": "acme",
    "allow_any_host": "true",
    "requests_per_second": "20",
    "allow_requests_per_second_above_limit": "true",
    "max_workers": "3",
    "rate_limit_dir": "/tmp/kommo-rate",
    "ban_cooldown_seconds": "60",
    "start_date": "2025-02-03",
    "lock_timeout": "30",
    "memory_limit": "1GB",
    "staging_dir": "/tmp/kommo-staging",
    "streams": "pipelines,statuses,leads,tasks",
    "full_table_streams": "tasks",
    "history_retention_days": "9",
    "timezone": "America/Sao_Paulo",
    "schedules_default_on": "true",
    "sensor_interval_seconds": "45",
}


def test_the_environment_and_defs_yaml_build_the_same_account(tmp_path: Path):
    database = tmp_path / "crm.duckdb"
    assert set(EVERY_SETTING) | {"token_variable", "base_url", "duckdb_path", "schema"} == set(
        SETTING
    )
    env = {"KOMMO_ACCOUNTS": "br", "KOMMO_DUCKDB_PATH": str(database)}
    for field, value in EVERY_SETTING.items():
        setting = SETTING[field]
        prefix = "KOMMO_" if setting.scope == "shared" else "KOMMO_BR_"
        env[prefix + setting.variable] = value
    [from_env] = Location.from_env(env).accounts

    account: dict[str, object] = {"name": "br", "api_token": "{{ env.KOMMO_BR_API_TOKEN }}"}
    attributes: dict[str, object] = {"duckdb_path": str(database), "accounts": [account]}
    for field, value in EVERY_SETTING.items():
        setting = SETTING[field]
        target = attributes if setting.scope == "shared" else account
        target[setting.yaml_field] = _yaml_value(field, value)
    component = KommoComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    [from_yaml] = component.build_settings()

    assert from_env == from_yaml
    for field in EVERY_SETTING:
        assert getattr(from_env, field) != getattr(Settings(), field), field
