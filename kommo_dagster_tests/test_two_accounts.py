"""Two accounts end to end: two sandboxes, one code location (``KOMMO_ACCOUNTS=br,ru``), one DuckDB
file, the accounts' runs side by side as `dagster asset materialize` processes.

Each sandbox serves one account with its own token and enforces its own request limit, so its
counters are the ground truth: no request over the account's budget (no 429, no violation), no
request with a token other than the account's (the sandbox answers 401 to any other), and every
table equals what its account served.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import FULL_TABLE_STREAMS, INCREMENTAL_STREAMS, STREAMS
from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.sandbox.activity_truth import call_rows, response_rows
from kommo_dagster.sandbox.links import expected_link_rows
from kommo_dagster_tests.rows import canonical
from kommo_dagster_tests.wiring import accounts_env, finish, materialize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RANGE = "2026-10-01...2026-10-31"  # the sandboxes' data window, as partitions
# Each account's budget is its sandbox's limit: one request more in any second is a 429.
BUDGETS = {"br": 3.0, "ru": 2.0}
CONFIGS = {
    "br": SandboxConfig(seed=3, leads=60, token="token-of-br", requests_per_second=BUDGETS["br"]),
    "ru": SandboxConfig(seed=4, leads=40, token="token-of-ru", requests_per_second=BUDGETS["ru"]),
}


class TwoAccounts:
    """The code location of ``KOMMO_ACCOUNTS=br,ru`` and the DuckDB file its runs write."""

    def __init__(self, sandboxes: dict[str, KommoSandbox], directory: Path) -> None:
        self.sandboxes = sandboxes
        self.env = accounts_env(sandboxes, directory, **BUDGETS)
        self.db = directory / "kommo_crm.duckdb"

    def load(self) -> None:
        """Both accounts' whole window, the accounts side by side: their full tables in two
        processes at once, then their incremental streams (one range each) in two at once."""
        full = {a: [f"kommo/{a}/{s}" for s in FULL_TABLE_STREAMS] for a in self.sandboxes}
        incremental = {a: [f"kommo/{a}/{s}" for s in INCREMENTAL_STREAMS] for a in self.sandboxes}
        for selection, extra in ((full, []), (incremental, ["--partition-range", RANGE])):
            processes = [
                materialize(self.env, "--select", ",".join(keys), *extra)
                for keys in selection.values()
            ]
            for process in processes:
                finish(process)

    def sql(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()

    def rows(self, relation: str) -> list[dict[str, Any]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            cursor = con.execute(f"SELECT * FROM {relation}")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoAccounts]:
    with KommoSandbox(CONFIGS["br"]) as br, KommoSandbox(CONFIGS["ru"]) as ru:
        two = TwoAccounts({"br": br, "ru": ru}, tmp_path_factory.mktemp("two"))
        two.load()
        two.stats = {name: sb.stats() for name, sb in two.sandboxes.items()}
        with dg.DagsterInstance.from_config(two.env["DAGSTER_HOME"]) as instance:
            two.materializations = [
                event.asset_materialization
                for run in instance.get_runs()
                for event in instance.all_logs(run.run_id)
                if event.asset_materialization is not None
            ]
        yield two


@pytest.mark.parametrize("account", ["br", "ru"])
@pytest.mark.parametrize("stream", list(STREAMS))
def test_every_table_equals_its_accounts_ground_truth(
    loaded: TwoAccounts, account: str, stream: str
):
    expected = loaded.sandboxes[account].expected_rows(stream)
    assert expected
    got = loaded.rows(f"kommo_{account}.{stream}")
    assert canonical(stream, got) == canonical(stream, expected)


def test_the_accounts_hold_different_data(loaded: TwoAccounts):
    br = canonical("leads", loaded.rows("kommo_br.leads"))
    ru = canonical("leads", loaded.rows("kommo_ru.leads"))
    assert br != ru


@pytest.mark.parametrize("account", ["br", "ru"])
def test_each_account_stayed_under_its_own_budget_with_its_own_token(
    loaded: TwoAccounts, account: str
):
    stats = loaded.stats[account]
    assert stats["requests"] > 0
    assert stats["violations"] == 0
    assert stats["rate_limited"] == 0
    assert stats["peak_requests_per_second"] <= BUDGETS[account]
    # Any other token is answered 401: none came.
    assert "401" not in stats["by_status"]
    print(account, {k: stats[k] for k in ("requests", "peak_requests_per_second")})


@pytest.mark.parametrize("stream", list(STREAMS))
def test_kommo_all_unites_the_accounts_with_an_account_column(loaded: TwoAccounts, stream: str):
    [first_column] = loaded.sql(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'kommo_all' "
        f"AND table_name = '{stream}' AND column_index = 1"
    )
    assert first_column == ("account",)
    for account in ("br", "ru"):
        united = loaded.rows(f"kommo_all.{stream}")
        mine = [
            {k: v for k, v in row.items() if k != "account"}
            for row in united
            if row["account"] == account
        ]
        assert canonical(stream, mine) == canonical(
            stream, loaded.rows(f"kommo_{account}.{stream}")
        )
    accounts = loaded.sql(f"SELECT DISTINCT account FROM kommo_all.{stream} ORDER BY 1")
    assert accounts == [("br",), ("ru",)]


def test_kommo_all_has_the_current_views_too(loaded: TwoAccounts):
    for stream in INCREMENTAL_STREAMS:
        counts = [
            loaded.sql(f"SELECT count(*) FROM kommo_{a}.{stream}_current")[0][0]
            for a in ("br", "ru")
        ]
        assert all(counts), (stream, counts)  # both accounts have current rows to unite
        union = loaded.sql(f"SELECT count(*) FROM kommo_all.{stream}_current")
        assert union == [(sum(counts),)], stream


def test_materializations_name_the_accounts_tables(loaded: TwoAccounts):
    keys = set()
    for materialization in loaded.materializations:
        key = materialization.asset_key
        keys.add(key)
        table = materialization.metadata["dagster/table_name"].value
        assert table == f"kommo_crm.kommo_{key.path[1]}.{key.path[-1]}"
    assert keys == {dg.AssetKey(["kommo", a, s]) for a in ("br", "ru") for s in STREAMS}


def test_kommo_all_unites_the_accounts_activity_tables(loaded: TwoAccounts):
    names = ("chat_response_times", "calls", "response_time_by_manager")
    for account in loaded.sandboxes:
        finish(materialize(loaded.env, "--select", ",".join(f"kommo/{account}/{n}" for n in names)))
    for account, sandbox in loaded.sandboxes.items():

        def mine(relation: str, account: str = account) -> list[dict[str, Any]]:
            rows = [r for r in loaded.rows(f"kommo_all.{relation}") if r["account"] == account]
            return [{k: v for k, v in r.items() if k != "account"} for r in rows]

        runs = sorted(mine("chat_response_times"), key=lambda r: r["first_message_id"])
        assert runs and runs == response_rows(sandbox.account.records("events"))
        calls = sorted(mine("calls"), key=lambda r: (r["entity_type"], r["note_id"]))
        assert calls and calls == call_rows(sandbox.account)
    accounts = loaded.sql("SELECT DISTINCT account FROM kommo_all.response_time_by_manager")
    assert sorted(accounts) == [("br",), ("ru",)]


@pytest.mark.parametrize("table", list(LINK_TABLES))
def test_link_tables_are_each_accounts_and_united_in_kommo_all(loaded: TwoAccounts, table: str):
    key = ", ".join(LINK_TABLES[table].key)
    counts = 0
    for account in ("br", "ru"):
        got = loaded.sql(f"SELECT * FROM kommo_{account}.{table} ORDER BY {key}")
        truth = expected_link_rows(loaded.sandboxes[account].account, table)
        assert got == [tuple(r.values()) for r in truth]
        counts += len(got)
    assert loaded.sql(f"SELECT count(*) FROM kommo_all.{table}") == [(counts,)]
