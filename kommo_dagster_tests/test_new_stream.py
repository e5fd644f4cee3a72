"""A new stream is one declaration entry (contract + endpoint) plus the sandbox's data for it.

The test declares a stream the project does not have (Kommo's lead sources), serves its data
from the sandbox, and gets an asset, a typed table equal to what was served, and the derived
checks (the contract's columns, ids, and the reference its declaration names), without any
other module knowing about it.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from kommo_dagster.contract import contract_streams
from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo import streams as declaration
from kommo_dagster.kommo.streams import ENDPOINTS, STREAMS, Reference, build_streams
from kommo_dagster.sandbox.dictionaries import add_collection
from kommo_dagster.settings import Settings
from kommo_dagster_tests.wiring import sandbox_kommo

CONTRACT_ENTRY = {
    "description": "Lead sources (integrations that create leads). GET /api/v4/sources.",
    "sync": "full_table",
    "cursor": None,
    "columns": [
        {"name": "id", "type": "integer", "description": "Source identifier"},
        {"name": "name", "type": "string", "description": "Source name"},
        {"name": "pipeline_id", "type": "integer", "description": "Pipeline new leads enter"},
        {"name": "default", "type": "boolean", "description": "Whether it is the default"},
        {"name": "services", "type": "string", "description": "Services it offers (JSON)"},
    ],
}
ENDPOINT = dict(
    path="/api/v4/sources",
    list_key="sources",
    page_size=250,
    references=(Reference(columns=("pipeline_id",), stream="pipelines"),),
)


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> declaration.Stream:
    declared = build_streams(
        {**contract_streams(), "sources": CONTRACT_ENTRY}, {**ENDPOINTS, "sources": ENDPOINT}
    )
    monkeypatch.setitem(STREAMS, "sources", declared["sources"])  # type: ignore[index]
    return declared["sources"]


def _served(pipeline_ids: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "id": 11_001 + k,
            "name": ["Site «Главная»", "WhatsApp 📱", "Formulário"][k % 3],
            "pipeline_id": pipeline_ids[k % len(pipeline_ids)],
            "default": k == 0,
            "external_id": f"ext-{k}",
            **({"services": [{"type": "whatsapp", "params": {"waba": k % 2 == 0}}]} if k else {}),
        }
        for k in range(300)  # over one page
    ]


@pytest.mark.timeout(120)
def test_a_declared_stream_gets_an_asset_a_table_and_checks(
    sources: declaration.Stream, sandbox_factory, tmp_path: Path
):
    sandbox = sandbox_factory(leads=20, requests_per_second=None)
    pipeline_ids = [p["id"] for p in sandbox.records("pipelines")]
    served = _served(pipeline_ids)
    add_collection(sandbox.account.catalog, "/api/v4/sources", "sources", served)

    settings = Settings(
        start_date=date(2026, 10, 1),
        duckdb_path=tmp_path / "crm.duckdb",
        streams=("pipelines", "sources"),
    )
    defs = build_definitions(settings, kommo=sandbox_kommo(sandbox, tmp_path))
    keys = [dg.AssetKey(["kommo", s]) for s in settings.streams]
    result = dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        selection=keys,
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success

    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        columns = con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'kommo' AND table_name = 'sources' ORDER BY column_index"
        ).fetchall()
        rows = con.execute("SELECT * FROM kommo.sources ORDER BY id").fetchall()
    assert columns == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("pipeline_id", "BIGINT"),
        ("default", "BOOLEAN"),
        ("services", "VARCHAR"),
    ]
    expected = [
        (s["id"], s["name"], s["pipeline_id"], s["default"], s.get("services")) for s in served
    ]
    got = [(*r[:4], None if r[4] is None else json.loads(r[4])) for r in rows]
    assert got == expected

    checks = {
        e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == keys[1]
    }
    assert set(checks) == {"contract_columns", "no_null_ids", "pipeline_id_in_pipelines"}
    assert all(e.passed for e in checks.values())
    [materialization] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == keys[1]
    ]
    assert materialization.metadata["dagster/row_count"].value == len(served)
