"""A new derived table and a view over it are one declaration each: the asset, its slices,
its checks, its place in the jobs, the refresh of the view after its writes and the README's
reference all follow, with no other module knowing about them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.derived import declaration
from kommo_dagster.derived.write import window_condition
from kommo_dagster.kommo.streams import Column
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.settings import Settings
from kommo_dagster.stream_docs import derived_table
from kommo_dagster.warehouse.registry import refreshed_after
from kommo_dagster.warehouse.tables import Partitioning, RefreshContext, Table
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.derived.tables import SCHEMA, insert


def _prices_select(*, schema: str, window: EpochWindow | None) -> str:
    return (
        f"SELECT id AS lead_id, updated_at, price FROM {schema}.leads "
        f"WHERE price IS NOT NULL AND {window_condition('updated_at', window)}"
    )


def _totals(ctx: RefreshContext) -> dict[str, str]:
    ctx.con.execute(
        f"CREATE OR REPLACE VIEW {ctx.schema}.lead_price_totals AS "
        f"SELECT count(*) AS versions, sum(price) AS total FROM {ctx.schema}.lead_prices"
    )
    return {"total": "Sum of the prices"}


PRICES = Table(
    name="lead_prices",
    kind="derived",
    description="The price of each stored version of a lead.",
    inputs=("leads",),
    key=("lead_id", "updated_at"),
    partitioning=Partitioning("updated_at", like="leads"),
    columns=tuple(
        Column.from_contract({"name": n, "type": "integer", "description": d})
        for n, d in (("lead_id", "Lead"), ("updated_at", "Version"), ("price", "Price"))
    ),
    select=_prices_select,
    checks=(declaration.NO_DUPLICATE_KEYS,),
)
# A table sliced like another derived table: its slices are the leads' too.
DOUBLED = Table(
    name="lead_prices_doubled",
    kind="derived",
    description="Twice each price.",
    inputs=("lead_prices",),
    key=("lead_id", "updated_at"),
    partitioning=Partitioning("updated_at", like="lead_prices"),
    columns=PRICES.columns,
    select=lambda *, schema, window: (
        f"SELECT lead_id, updated_at, 2 * price AS price FROM {schema}.lead_prices "
        f"WHERE {window_condition('updated_at', window)}"
    ),
)
TOTALS = Table(
    name="lead_price_totals",
    kind="view",
    description="The prices' total.",
    inputs=("lead_prices",),
    refresh=_totals,
)


@pytest.fixture
def declared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        declaration, "DECLARATIONS", (*declaration.DECLARATIONS, PRICES, DOUBLED, TOTALS)
    )


def _day(d: int) -> int:
    return int(datetime(2026, 10, d, 12, tzinfo=UTC).timestamp())


def test_a_declared_table_gets_an_asset_checks_jobs_and_its_views_refresh(
    declared: None, tmp_path: Path
):
    settings = Settings(
        start_date=date(2026, 10, 1),
        duckdb_path=tmp_path / "crm.duckdb",
        streams=("pipelines", "statuses", "leads"),
    )
    defs = build_definitions(settings, kommo=KommoResource(api_token="t", base_url="http://x"))
    prices = defs.resolve_assets_def(dg.AssetKey(["kommo", "lead_prices"]))
    leads = defs.resolve_assets_def(dg.AssetKey(["kommo", "leads"]))
    assert prices.partitions_def == leads.partitions_def
    assert prices.dependency_keys == {leads.key}
    doubled = defs.resolve_assets_def(dg.AssetKey(["kommo", "lead_prices_doubled"]))
    assert doubled.partitions_def == leads.partitions_def
    assert doubled.dependency_keys == {prices.key}
    totals = defs.resolve_assets_def(dg.AssetKey(["kommo", "lead_price_totals"]))
    assert totals.dependency_keys == {prices.key}
    checks = {
        k.name for c in defs.asset_checks or [] for k in c.check_keys if k.asset_key == prices.key
    }
    assert checks == {"contract_columns", "no_duplicate_keys"}
    job = defs.resolve_job_def("kommo_incremental_job")
    assert prices.key in job.asset_layer.executable_asset_keys
    assert [t.name for t in refreshed_after("lead_prices")] == ["lead_price_totals"]
    assert "`kommo.lead_prices` | derived | `leads`" in derived_table()

    with duckdb.connect(str(settings.duckdb_path)) as con:
        insert(con, "leads", [{"id": 1, "updated_at": _day(5), "price": 100}])
        insert(con, "leads", [{"id": 2, "updated_at": _day(5), "price": 50}])
        insert(con, "leads", [{"id": 1, "updated_at": _day(6), "price": 70}])
    # The definitions' own DuckDB resource, bound to the asset, writes settings.duckdb_path.
    result = dg.materialize([prices, doubled], partition_key="2026-10-05")
    assert result.success
    with duckdb.connect(str(settings.duckdb_path)) as con:
        rows = con.execute(f"SELECT * FROM {SCHEMA}.lead_prices ORDER BY lead_id").fetchall()
        assert rows == [(1, _day(5), 100), (2, _day(5), 50)]  # the 5th's slice only
        doubled_rows = con.execute(
            f"SELECT * FROM {SCHEMA}.lead_prices_doubled ORDER BY lead_id"
        ).fetchall()
        assert doubled_rows == [(1, _day(5), 200), (2, _day(5), 100)]
        # The view was created in the transaction of the write.
        assert con.execute(f"FROM {SCHEMA}.lead_price_totals").fetchone() == (2, 150)
