"""What a Dagster user sees of every asset and check, for one account and for two.

Each test walks every asset (or check) the definitions hold, so a new stream, derived table or
view cannot land without what the others show in the catalog: a description of its own, the
table's name in its account's schema, its column schema with the contract's DuckDB types and
descriptions, the kinds of its sort of table, its account's group, and a freshness policy or a
pool where the README promises one.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.contract import PACKAGED_FILES
from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.orchestration.accounts import accounts_from_env
from kommo_dagster.warehouse.registry import TABLES, get_table
from kommo_dagster.warehouse.sql import create_table_sql, table_columns
from kommo_dagster.warehouse.tables import SLICED_KINDS, RefreshContext

KINDS = {
    "stream": {"kommo", "duckdb"},  # read from Kommo
    "link": {"kommo", "duckdb"},  # read from the streams' pages
    "view": {"duckdb", "view"},
}
COMPUTED_KINDS = {"duckdb", "sql"}  # tables computed in DuckDB


def _two_accounts_env(tmp_path: Path) -> dict[str, str]:
    return {
        "KOMMO_ACCOUNTS": "br,ru",
        "KOMMO_BR_BASE_URL": "http://127.0.0.1:1",
        "KOMMO_BR_API_TOKEN": "token-br",
        "KOMMO_RU_BASE_URL": "http://127.0.0.1:2",
        "KOMMO_RU_API_TOKEN": "token-ru",
        "KOMMO_RU_START_DATE": "2025-03-01",
        "KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"),
    }


@pytest.fixture(params=["one account", "two accounts"], scope="module")
def defs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("catalog")
    if request.param == "one account":
        env = {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"), "KOMMO_START_DATE": "2026-10-01"}
    else:
        env = _two_accounts_env(tmp_path)
    return build_kommo_definitions(accounts_from_env(env))


def _nodes(defs: dg.Definitions) -> list[tuple[str | None, str, dg.AssetSpec]]:
    """(account, table, spec) of every asset: keys are ``kommo/<table>`` or
    ``kommo/<account>/<table>``."""
    nodes = []
    for asset in defs.assets or []:
        assert isinstance(asset, dg.AssetsDefinition)
        for spec in asset.specs:
            *prefix, table = spec.key.path
            assert prefix[0] == "kommo" and len(prefix) <= 2, spec.key
            nodes.append((prefix[1] if len(prefix) == 2 else None, table, spec))
    return nodes


def _contract_descriptions() -> dict[str, dict[str, str]]:
    """Every contract file's column descriptions, by table."""
    described: dict[str, dict[str, str]] = {}
    for file in PACKAGED_FILES:
        text = resources.files("kommo_dagster.contract").joinpath(file).read_text("utf-8")
        for name, entry in json.loads(text)["streams"].items():
            described[name] = {c["name"]: c.get("description", "") for c in entry["columns"]}
    return described


def test_every_asset_has_a_description_of_its_own(defs: dg.Definitions):
    nodes = _nodes(defs)
    descriptions = Counter(spec.description for _, _, spec in nodes)
    for account, table, spec in nodes:
        # First what the table holds, a sentence, then how it is read and written.
        holds = (spec.description or "").split("\n\n")[0]
        assert len(holds.split()) >= 2 and holds.endswith("."), (spec.key, holds)
        declaration = get_table(table)
        if declaration.kind == "stream":
            # Said once, with its query: the contract's description of some streams ends
            # with the bare endpoint.
            stream = get_stream(table)
            assert holds == stream.holds, spec.key
            assert (spec.description or "").count(f"GET {stream.path}") == 1, spec.key
        else:
            assert holds == declaration.description, spec.key
        # The table's own schema, so the accounts' assets are told apart too.
        schema = "kommo" if account is None else f"kommo_{account}"
        assert f"`{schema}.{table}`" in (spec.description or ""), spec.key
        assert descriptions[spec.description] == 1, spec.key


def test_every_asset_names_its_table_in_its_account_s_schema(defs: dg.Definitions):
    for account, table, spec in _nodes(defs):
        schema = "kommo" if account is None else f"kommo_{account}"
        assert spec.metadata["dagster/table_name"] == f"crm.{schema}.{table}", spec.key


def test_every_table_s_column_schema_is_what_duckdb_creates_with_the_contract_s_words(
    defs: dg.Definitions,
):
    described = _contract_descriptions()
    con = duckdb.connect()
    con.execute("CREATE SCHEMA s")
    tables = 0
    for _, table, spec in _nodes(defs):
        declaration = get_table(table)
        if declaration.kind == "view":
            continue
        tables += 1
        con.execute(create_table_sql(declaration, schema="s"))
        created = table_columns(con, schema="s", table=table)
        columns = spec.metadata["dagster/column_schema"].columns
        assert [(c.name, c.type) for c in columns] == created, spec.key
        # The contract's words where it has them (the inbox's columns, and columns added to a
        # contract table, are described by their declaration).
        contract = described.get(table, {})
        declared = {c.name: c.description for c in declaration.columns}
        for column in columns:
            words = contract.get(column.name) or declared[column.name]
            assert column.description == words and words, (spec.key, column.name)
    assert tables


def _views_over_empty_tables() -> dict[str, list[tuple[str, str]]]:
    """Every declared view's columns and DuckDB types, built over empty tables of the contract."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA kommo")
    install_macros(con)
    for table in TABLES.values():
        if table.kind in ("stream", "link", *SLICED_KINDS):
            con.execute(create_table_sql(table, schema="kommo"))
    built = {}
    for kind in ("current_view", "view"):  # the views read the current views
        for table in (t for t in TABLES.values() if t.kind == kind):
            table.refresh(RefreshContext(con=con, schema="kommo"))  # type: ignore[misc]
            built[table.name] = table_columns(con, schema="kommo", table=table.name)
    return built


def test_a_view_whose_sql_fixes_its_columns_shows_them_before_it_is_built(
    defs: dg.Definitions,
):
    built = _views_over_empty_tables()
    views = 0
    for _, table, spec in _nodes(defs):
        declaration = get_table(table)
        if declaration.kind != "view":
            continue
        schema = spec.metadata.get("dagster/column_schema")
        if not declaration.view_columns:
            # A wide view's columns follow the custom fields: known once it is built.
            assert schema is None, spec.key
            continue
        views += 1
        assert [(c.name, c.type) for c in schema.columns] == built[table], spec.key
        assert all(c.description for c in schema.columns), spec.key
    assert views


def test_kinds_follow_what_the_table_is(defs: dg.Definitions):
    for _, table, spec in _nodes(defs):
        kind = get_table(table).kind
        assert set(spec.kinds) == KINDS.get(kind, COMPUTED_KINDS), (spec.key, kind)


def test_an_account_s_assets_share_its_group_owners_and_tags(defs: dg.Definitions):
    seen: dict[str | None, set] = {}
    for account, _, spec in _nodes(defs):
        tags = tuple(sorted((k, v) for k, v in spec.tags.items() if not k.startswith("dagster/")))
        seen.setdefault(account, set()).add((spec.group_name, tuple(spec.owners), tags))
    for account, shown in seen.items():
        group = "kommo" if account is None else f"kommo_{account}"
        assert shown == {(group, (), ())}, account


def test_extractions_take_their_account_s_pool_and_tables_a_freshness_policy(
    defs: dg.Definitions,
):
    graph = defs.resolve_asset_graph()
    for account, table, spec in _nodes(defs):
        node = graph.get(spec.key)
        kind = get_table(table).kind
        pool = "kommo" if account is None else f"kommo_{account}"
        # Only the extractions spend the account's request budget.
        assert node.pools == ({pool} if kind == "stream" else set()), spec.key
        policy = node.freshness_policy
        if kind == "view":
            assert policy is None, spec.key  # kept current by the writes of what they read
            continue
        assert isinstance(policy, dg.FreshnessPolicy), spec.key
        partitioned = node.partitions_def is not None
        assert (policy.warn_window is not None) == partitioned, spec.key


def test_every_check_says_what_it_checks_and_only_the_contract_blocks(defs: dg.Definitions):
    graph = defs.resolve_asset_graph()
    checks = list(graph.asset_check_keys)
    assert checks
    for key in checks:
        spec = graph.get_check_spec(key)
        assert spec.description and len(spec.description) > 15, key
        assert spec.blocking == (key.name == "contract_columns"), key


def _automation(defs: dg.Definitions) -> list[tuple[str, str]]:
    """(name, description) of every job, schedule and sensor."""
    repo = defs.get_repository_def()
    jobs = [j for j in repo.get_all_jobs() if not j.name.startswith("__")]
    return [(d.name, d.description or "") for d in (*jobs, *repo.schedule_defs, *repo.sensor_defs)]


def test_jobs_schedules_and_sensors_say_whose_they_are(defs: dg.Definitions):
    shown = _automation(defs)
    assert len(shown) == len({d for _, d in shown})  # told apart by more than their names
    repo = defs.get_repository_def()
    for name, description in shown:
        account = name.split("_")[1] if name.split("_")[1] in ("br", "ru") else None
        assert len(description.split()) > 5, name
        assert ("of account" in description) == (account is not None), name
        if account is not None:
            assert f"of account {account}" in description, name
    for schedule in repo.schedule_defs:
        if schedule.name.endswith("full_sync_schedule"):
            # The full sync starts at the account's own first day, and says which.
            variable = "KOMMO_RU_START_DATE (2025-03-01)"
            if "_br_" in schedule.name:
                variable = "KOMMO_START_DATE (2024-01-01)"
            elif "_ru_" not in schedule.name:
                variable = "KOMMO_START_DATE (2026-10-01)"
            assert variable in (schedule.description or ""), schedule.name
