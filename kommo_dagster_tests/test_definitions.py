"""The code location: what it defines, and that it loads with and without credentials."""

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, STREAMS
from kommo_dagster.orchestration.assets import GROUP_NAME
from kommo_dagster.orchestration.derived_selection import all_derived_keys
from kommo_dagster.orchestration.io_manager import KommoDuckDBIOManager, KommoDuckDBResource
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.settings import Settings

REPO = Path(__file__).resolve().parents[1]
# The streams, the tables and views derived from them (the activity tables and leads_enriched
# included), and the link tables
ASSET_COUNT = len(STREAMS) + len(all_derived_keys(Settings())) + len(LINK_TABLES)


@pytest.fixture
def defs(tmp_path: Path) -> dg.Definitions:
    settings = Settings(start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb")
    return build_definitions(settings)


def _assets(defs: dg.Definitions) -> dict[str, dg.AssetsDefinition]:
    """The extracted streams' assets (the derived ones: kommo_dagster_tests/derived)."""
    return {
        a.key.path[-1]: a
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.key.path[-1] in STREAMS
    }


def test_one_asset_per_declared_stream(defs: dg.Definitions):
    assets = _assets(defs)
    assert list(assets) == list(STREAMS)
    for stream, asset in assets.items():
        assert asset.key == dg.AssetKey(["kommo", stream])
        spec = next(iter(asset.specs))
        assert spec.group_name == GROUP_NAME
        assert spec.kinds == {"kommo", "duckdb"}
        assert spec.description and spec.description.startswith(STREAMS[stream].holds)
        assert STREAMS[stream].path in spec.description
        schema = spec.metadata["dagster/column_schema"]
        assert [(c.name, c.type, c.description) for c in schema.columns] == [
            (c.name, c.duckdb_type, c.description) for c in STREAMS[stream].columns
        ]
        assert spec.metadata["dagster/table_name"] == f"crm.kommo.{stream}"


def test_incremental_assets_are_daily_utc_partitions_with_single_run_backfills(
    defs: dg.Definitions,
):
    for stream, asset in _assets(defs).items():
        if stream in INCREMENTAL_STREAMS:
            partitions = asset.partitions_def
            assert isinstance(partitions, dg.DailyPartitionsDefinition)
            assert partitions.timezone == "UTC"
            assert partitions.get_first_partition_key() == "2026-10-01"
            assert partitions.end_offset == 1
            assert asset.backfill_policy == dg.BackfillPolicy.single_run()
        else:
            assert asset.partitions_def is None


def test_statuses_depend_on_pipelines(defs: dg.Definitions):
    assert _assets(defs)["statuses"].dependency_keys == {dg.AssetKey(["kommo", "pipelines"])}


def test_resources_and_executor(defs: dg.Definitions, tmp_path: Path):
    resources = defs.resources or {}
    assert isinstance(resources["kommo"], KommoResource)
    io_manager = resources["io_manager"]
    assert isinstance(io_manager, KommoDuckDBIOManager)
    assert io_manager.schema_name == "kommo"
    assert io_manager.duckdb.database == str(tmp_path / "crm.duckdb")
    assert isinstance(resources["duckdb"], KommoDuckDBResource)
    assert defs.executor == dg.in_process_executor
    dg.Definitions.validate_loadable(defs)


def _load(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the code location in a fresh interpreter with exactly ``env`` (plus PATH)."""
    code = (
        "import json, dagster as dg\n"
        "from kommo_dagster.definitions import defs\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "leads = defs.resolve_assets_def(dg.AssetKey(['kommo', 'leads']))\n"
        "print(json.dumps({'assets': len(list(defs.resolve_asset_graph().get_all_asset_keys())),"
        " 'first': leads.partitions_def.get_first_partition_key(),"
        " 'database': defs.resources['io_manager'].duckdb.database}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_location_loads_without_any_kommo_variable(tmp_path: Path):
    result = _load({"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {
        "assets": ASSET_COUNT,
        "first": "2024-01-01",
        "database": str(REPO / "data" / "kommo_crm.duckdb"),
    }


def test_the_location_loads_with_the_variables(tmp_path: Path):
    result = _load(
        {
            "HOME": str(tmp_path),
            "KOMMO_API_TOKEN": "token",
            "KOMMO_SUBDOMAIN": "mycompany",
            "KOMMO_START_DATE": "2025-06-01",
            "KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"),
        }
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {
        "assets": ASSET_COUNT,
        "first": "2025-06-01",
        "database": str(tmp_path / "crm.duckdb"),
    }


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KOMMO_START_DATE", "1 Oct 2026", "KOMMO_START_DATE must be a date written YYYY-MM-DD"),
        # A typo for 2026-01-01: it loaded with no partition, and nothing ever ran.
        ("KOMMO_START_DATE", "2062-01-01", "must be a date on or before"),
        ("KOMMO_DUCKDB_PATH", "data/kommo.duckdb", "Ambiguous reference"),
    ],
)
def test_a_bad_setting_fails_the_load_naming_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
):
    result = _load({"HOME": str(tmp_path), variable: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_a_run_without_a_token_fails_at_start_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("KOMMO_API_TOKEN", "KOMMO_SUBDOMAIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOMMO_BASE_URL", "http://127.0.0.1:9")
    settings = Settings(start_date=date(2026, 10, 1), duckdb_path=tmp_path / "crm.duckdb")
    defs = build_definitions(settings)
    # Dagster refuses the run's config before any step starts
    with pytest.raises(dg.DagsterInvalidConfigError, match="KOMMO_API_TOKEN"):
        dg.materialize(
            list(defs.assets or []),
            selection=[dg.AssetKey(["kommo", "users"])],
            resources=defs.resources,
            instance=dg.DagsterInstance.ephemeral(),
        )
    assert not (tmp_path / "crm.duckdb").exists()


def test_one_named_account_s_settings_reach_that_account(
    sandbox: KommoSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``build_definitions(settings)`` of account ``acc`` extracts with KOMMO_ACC_*, not with
    the unprefixed variables, which here name another host and token."""
    monkeypatch.setenv("KOMMO_API_TOKEN", "token-of-another-account")
    monkeypatch.setenv("KOMMO_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("KOMMO_SUBDOMAIN", raising=False)
    monkeypatch.setenv("KOMMO_ACC_API_TOKEN", sandbox.token)
    monkeypatch.setenv("KOMMO_ACC_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("KOMMO_RATE_LIMIT_DIR", str(tmp_path / "rate-limit"))
    monkeypatch.setenv("KOMMO_DUCKDB_PATH", str(tmp_path / "crm.duckdb"))
    settings = Settings.from_env(account="acc")
    defs = build_definitions(settings)

    dg.materialize(
        list(defs.assets or []),
        selection=[dg.AssetKey(["kommo", "acc", "users"])],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )

    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        [(rows,)] = con.execute("SELECT count(*) FROM kommo_acc.users").fetchall()
    assert rows == len(sandbox.expected_rows("users")) > 0


def test_settings_made_in_python_reach_the_account_they_describe(
    sandbox: KommoSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``build_definitions(Settings(...))`` of the single account extracts from the settings'
    host, not from the unprefixed variables (here another, dead one); only the token stays a
    variable."""
    monkeypatch.setenv("KOMMO_API_TOKEN", sandbox.token)
    monkeypatch.setenv("KOMMO_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("KOMMO_SUBDOMAIN", raising=False)
    settings = Settings(
        base_url=sandbox.base_url,
        allow_any_host=True,
        requests_per_second=5,
        rate_limit_dir=tmp_path / "rate-limit",
        duckdb_path=tmp_path / "crm.duckdb",
    )
    defs = build_definitions(settings)
    resource = defs.resources["kommo"]
    assert (resource.base_url, resource.requests_per_second) == (sandbox.base_url, 5)

    dg.materialize(
        list(defs.assets or []),
        selection=[dg.AssetKey(["kommo", "users"])],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )

    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        [(rows,)] = con.execute("SELECT count(*) FROM kommo.users").fetchall()
    assert rows == len(sandbox.expected_rows("users")) > 0


def test_loading_the_definitions_does_not_import_pandas(tmp_path: Path):
    """Every run, sensor tick and webserver reload loads the definitions; pandas costs that
    half a second and is only needed for DataFrames (a child stream's parent, user assets)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    env |= {"KOMMO_START_DATE": "2026-10-01", "KOMMO_DUCKDB_PATH": str(tmp_path / "x.duckdb")}
    code = "import sys, kommo_dagster.definitions; print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_loading_the_definitions_leaves_the_client_s_libraries_to_the_run(tmp_path: Path):
    """A CLI run loads the definitions before its first request; the client's libraries
    (PyArrow and NumPy, msgspec, orjson, urllib3, requests) are imported when a run's client
    starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    env |= {"KOMMO_START_DATE": "2026-10-01", "KOMMO_DUCKDB_PATH": str(tmp_path / "x.duckdb")}
    heavy = ["pyarrow", "numpy", "msgspec", "orjson", "urllib3", "requests"]
    heavy.append("kommo_dagster.kommo.client")
    code = (
        "import sys, kommo_dagster.definitions; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", out.stderr[-2000:]


def test_the_loaded_definitions_are_frozen_out_of_the_collector(tmp_path: Path):
    """A run's full collections (while Dagster stores its planned events) do not walk the
    definitions and Dagster's modules again: they are in the collector's permanent generation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    env |= {"KOMMO_START_DATE": "2026-10-01", "KOMMO_DUCKDB_PATH": str(tmp_path / "x.duckdb")}
    code = (
        "import gc; from kommo_dagster.definitions import defs; "
        "print(gc.get_freeze_count() > 10_000, any(o is defs for o in gc.get_objects()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]
