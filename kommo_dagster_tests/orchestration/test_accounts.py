"""Several accounts from KOMMO_ACCOUNTS: names, per-account variables, and the definitions they
make; and that without KOMMO_ACCOUNTS the definitions are exactly the single account's."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.derived.declaration import ACTIVITY_TABLES, DERIVED_TABLES
from kommo_dagster.kommo.errors import KommoConfigError
from kommo_dagster.kommo.links import LINK_TABLES, link_tables_of
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.orchestration.accounts import (
    Account,
    AccountScope,
    accounts_from_env,
    parse_account_names,
)
from kommo_dagster.orchestration.io_manager import KommoDuckDBIOManager
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import Settings

TWO = {
    "KOMMO_ACCOUNTS": "br, ru",
    "KOMMO_BR_API_TOKEN": "token-br",
    "KOMMO_BR_SUBDOMAIN": "brazil",
    "KOMMO_RU_API_TOKEN": "token-ru",
    "KOMMO_RU_BASE_URL": "https://moscow.amocrm.ru",
    "KOMMO_RU_START_DATE": "2025-03-01",
    "KOMMO_RU_STREAMS": "pipelines,statuses,leads",
    "KOMMO_RU_REQUESTS_PER_SECOND": "3",
    "KOMMO_START_DATE": "2026-10-01",
    "KOMMO_REQUESTS_PER_SECOND": "5",
    "KOMMO_API_TOKEN": "the-shared-token-is-never-used",
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return TWO | {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb")} | extra


def _definitions(env: dict[str, str]) -> dg.Definitions:
    return build_kommo_definitions(accounts_from_env(env))


def _names(defs: dg.Definitions) -> dict[str, set[str]]:
    repo = defs.get_repository_def()
    return {
        "jobs": {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")},
        "schedules": {s.name for s in repo.schedule_defs},
        "sensors": {s.name for s in repo.sensor_defs},
        "checks": {c.node_def.name for c in defs.asset_checks or []},
    }


# --- names -------------------------------------------------------------------------------------


def test_account_names_are_parsed_in_order():
    assert parse_account_names(" acc1 , acc_2,3x ") == ("acc1", "acc_2", "3x")
    assert parse_account_names(None) == parse_account_names("  ") == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Acc1", "lower-case letters, digits and _"),
        ("acc-1", "lower-case letters, digits and _"),
        ("acc1,,acc2", "empty name"),
        ("acc1,acc1", "acc1 more than once"),
        ("all", "kommo_all holds the views over all accounts"),
    ],
)
def test_bad_account_names_are_refused_naming_the_variable(value: str, message: str):
    with pytest.raises(SettingsError, match="KOMMO_ACCOUNTS") as failure:
        parse_account_names(value)
    assert message in str(failure.value)


def test_scope_names_of_one_and_of_several_accounts():
    single, named = AccountScope(None), AccountScope("acc1", "kommo_acc1")
    assert single.asset_key("leads") == dg.AssetKey(["kommo", "leads"])
    assert named.asset_key("leads") == dg.AssetKey(["kommo", "acc1", "leads"])
    assert (single.group_name, single.pool, single.resource_key) == ("kommo",) * 3
    assert (named.group_name, named.pool, named.resource_key) == ("kommo_acc1",) * 3
    assert single.qualify("kommo_change_sensor") == "kommo_change_sensor"
    assert named.qualify("kommo_change_sensor") == "kommo_acc1_change_sensor"


# --- per-account variables ---------------------------------------------------------------------


def test_each_account_reads_its_own_variables_and_falls_back_to_the_shared_ones(tmp_path: Path):
    br, ru = accounts_from_env(_env(tmp_path))
    assert (br.settings.account, br.settings.schema) == ("br", "kommo_br")
    assert (ru.settings.account, ru.settings.schema) == ("ru", "kommo_ru")
    assert br.settings.start_date == date(2026, 10, 1)  # KOMMO_START_DATE
    assert ru.settings.start_date == date(2025, 3, 1)  # KOMMO_RU_START_DATE
    assert br.settings.streams == tuple(STREAMS)
    assert set(ru.settings.streams) == {"pipelines", "statuses", "leads"}
    assert br.settings.duckdb_path == ru.settings.duckdb_path == tmp_path / "crm.duckdb"
    assert br.kommo.requests_per_second == 5.0  # KOMMO_REQUESTS_PER_SECOND
    assert ru.kommo.requests_per_second == 3.0  # KOMMO_RU_REQUESTS_PER_SECOND


def test_tokens_and_hosts_are_each_accounts_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = _env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    br, ru = accounts_from_env(env)
    assert br.kommo.settings().token.get_secret_value() == "token-br"
    assert br.kommo.settings().base_url == "https://brazil.kommo.com"
    assert ru.kommo.settings().token.get_secret_value() == "token-ru"
    assert ru.kommo.settings().base_url == "https://moscow.amocrm.ru"


def test_an_account_without_its_token_fails_naming_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    env = _env(tmp_path)
    del env["KOMMO_RU_API_TOKEN"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KOMMO_RU_API_TOKEN", raising=False)
    _, ru = accounts_from_env(env)
    # The shared KOMMO_API_TOKEN is never a fallback; the error is the client's own setting
    # error, not whatever a lookup of the missing variable happens to raise.
    with pytest.raises(KommoConfigError, match="KOMMO_RU_API_TOKEN is empty"):
        ru.kommo.settings()


def test_a_malformed_account_setting_names_the_accounts_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("KOMMO_RU_API_TOKEN", "token-ru")
    monkeypatch.setenv("KOMMO_RU_SUBDOMAIN", "moscow.amocrm.ru")
    ru = KommoResource.from_env(
        {"KOMMO_RU_API_TOKEN": "token-ru", "KOMMO_RU_SUBDOMAIN": "moscow.amocrm.ru"}, account="ru"
    )
    with pytest.raises(KommoConfigError, match="KOMMO_RU_SUBDOMAIN must be the bare subdomain"):
        ru.settings()
    with pytest.raises(SettingsError, match="KOMMO_RU_START_DATE must be a date"):
        accounts_from_env(_env(tmp_path, KOMMO_RU_START_DATE="March"))
    with pytest.raises(SettingsError, match="KOMMO_SCHEMA does not apply with KOMMO_ACCOUNTS"):
        accounts_from_env(_env(tmp_path, KOMMO_SCHEMA="crm"))


# --- the definitions ---------------------------------------------------------------------------


def _extracted(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    """The assets that extract a stream (the derived ones make no request)."""
    return [
        a
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] in STREAMS
    ]


def _derived_keys(defs: dg.Definitions) -> set[dg.AssetKey]:
    return {
        a.key
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] not in STREAMS
    }


def test_two_accounts_make_two_namespaces(tmp_path: Path):
    defs = _definitions(_env(tmp_path))
    assets = _extracted(defs)
    keys = {a.key for a in assets}
    assert keys == {dg.AssetKey(["kommo", "br", s]) for s in STREAMS} | {
        dg.AssetKey(["kommo", "ru", s]) for s in ("pipelines", "statuses", "leads")
    }
    # ru extracts leads only: its derived assets are the leads' values and wide view, and the
    # link tables the leads pages carry
    lead_links = [t.name for t in link_tables_of("leads")]
    assert {k for k in _derived_keys(defs) if k.path[1] == "ru"} == {
        dg.AssetKey(["kommo", "ru", s])
        for s in ("lead_custom_field_values", "leads_wide", *lead_links)
    }
    for asset in assets:
        account = asset.key.path[1]
        spec = next(iter(asset.specs))
        assert spec.group_name == f"kommo_{account}"
        assert asset.op.pool == f"kommo_{account}"
        assert asset.required_resource_keys >= {f"kommo_{account}"}
        table = f"crm.kommo_{account}.{asset.key.path[-1]}"
        assert spec.metadata["dagster/table_name"] == table
    statuses = defs.resolve_assets_def(dg.AssetKey(["kommo", "ru", "statuses"]))
    assert statuses.dependency_keys == {dg.AssetKey(["kommo", "ru", "pipelines"])}

    names = _names(defs)
    assert names["sensors"] == {"kommo_br_change_sensor", "kommo_ru_change_sensor"}
    assert {"kommo_br_incremental_job", "kommo_ru_full_tables_job"} <= names["jobs"]
    assert {"kommo_br_full_sync_schedule", "kommo_ru_incremental_today_schedule"} <= names[
        "schedules"
    ]
    assert "kommo_ru_leads_checks" in names["checks"]
    assert "kommo_ru_tasks_checks" not in names["checks"]

    resources = defs.resources or {}
    assert {"kommo_br", "kommo_ru"} <= set(resources)
    assert "kommo" not in resources
    io_manager = resources["io_manager"]
    assert isinstance(io_manager, KommoDuckDBIOManager)
    assert io_manager.account_schemas == {"br": "kommo_br", "ru": "kommo_ru"}
    dg.Definitions.validate_loadable(defs)


def test_an_accounts_jobs_select_only_its_assets(tmp_path: Path):
    defs = _definitions(_env(tmp_path))
    job = defs.resolve_job_def("kommo_ru_full_tables_job")
    assert {k for k in job.asset_layer.executable_asset_keys} == {
        dg.AssetKey(["kommo", "ru", "pipelines"]),
        dg.AssetKey(["kommo", "ru", "statuses"]),
        dg.AssetKey(["kommo", "ru", "leads_wide"]),
    }


def test_without_kommo_accounts_the_definitions_are_exactly_the_single_accounts(tmp_path: Path):
    """Existing users see no change: same keys, groups, tables, jobs, schedules, sensor, checks,
    resource key; the pool is ``kommo``."""
    env = {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"), "KOMMO_START_DATE": "2026-10-01"}
    defs = _definitions(env)
    assets = _extracted(defs)
    assert [a.key for a in assets] == [dg.AssetKey(["kommo", s]) for s in STREAMS]
    assert all(k.path[0] == "kommo" and len(k.path) == 2 for k in _derived_keys(defs))
    for asset in assets:
        spec = next(iter(asset.specs))
        assert spec.group_name == "kommo"
        assert asset.op.pool == "kommo"
        assert spec.metadata["dagster/table_name"] == f"crm.kommo.{asset.key.path[-1]}"
    assert _names(defs) == {
        "jobs": {"kommo_incremental_job", "kommo_full_sync_job", "kommo_full_tables_job"},
        "schedules": {
            "kommo_incremental_today_schedule",
            "kommo_incremental_finalize_schedule",
            "kommo_full_tables_schedule",
            "kommo_full_sync_schedule",
        },
        "sensors": {"kommo_change_sensor"},
        "checks": {f"kommo_{s}_checks" for s in [*STREAMS, *LINK_TABLES]} | _derived_check_names(),
    }
    resources = defs.resources or {}
    assert {"kommo", "io_manager", "duckdb"} == set(resources)
    assert resources["io_manager"].schema_name == "kommo"
    assert resources["io_manager"].account_schemas == {}


def _derived_check_names() -> set[str]:
    tables = [*DERIVED_TABLES, *ACTIVITY_TABLES, "lead_stage_durations"]
    return {f"kommo_{t}_checks" for t in tables}


def test_accounts_must_share_one_warehouse(tmp_path: Path):
    kommo = KommoResource(api_token="t", base_url="http://127.0.0.1:9")
    one = Settings(account="a", schema="kommo_a", duckdb_path=tmp_path / "one.duckdb")
    two = Settings(account="b", schema="kommo_b", duckdb_path=tmp_path / "two.duckdb")
    with pytest.raises(SettingsError, match="every account shares one warehouse"):
        build_kommo_definitions([Account(one, kommo), Account(two, kommo)])
