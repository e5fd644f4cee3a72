"""The DuckDB path setting: a file named like the schema, a schema named like one of DuckDB's own
catalogs, a path DuckDB cannot open or make, and a MotherDuck path carrying its token are
refused when the definitions load, naming the variable."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from kommo_dagster.component import KommoComponent
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import Settings
from kommo_dagster_tests.env_loading import TOKEN
from kommo_dagster_tests.env_loading import load_env as _load_env
from kommo_dagster_tests.env_loading import refused as _refused

TEMPLATE = "{{ env.KOMMO_BR_API_TOKEN }}"


@pytest.mark.parametrize("name", ["kommo.duckdb", "KOMMO.db", "sub/kommo.duckdb"])
def test_a_database_named_like_the_schema_is_refused(tmp_path: Path, name: str):
    # the file's name, not the schema's: both refusals end in "Ambiguous reference"
    match = r"KOMMO_DUCKDB_PATH points at .* collides with the schema 'kommo'"
    with pytest.raises(SettingsError, match=match):
        Settings.from_env({"KOMMO_DUCKDB_PATH": str(tmp_path / name)})


def _not_a_database(tmp_path: Path, case: str) -> Path:
    """A KOMMO_DUCKDB_PATH DuckDB cannot open or make: every run failed at its first write."""
    if case == "a folder":
        return tmp_path
    if case == "under a file":
        (tmp_path / "notes.txt").write_text("x")
        return tmp_path / "notes.txt" / "crm.duckdb"
    (tmp_path / "leads.csv").write_text("id,name\n1,first lead\n")
    return tmp_path / "leads.csv"


@pytest.mark.parametrize("case", ["a folder", "under a file", "another file"])
def test_a_database_path_duckdb_cannot_use_fails_the_load(
    environ, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
):
    message = _refused(monkeypatch, "KOMMO_DUCKDB_PATH", str(_not_a_database(tmp_path, case)))
    assert message.startswith("KOMMO_DUCKDB_PATH must be a DuckDB database file")
    # A DuckDB file written before, and one still to be made, load.
    database = tmp_path / "new" / "crm.duckdb"
    _load_env(monkeypatch, {"KOMMO_DUCKDB_PATH": str(database)})
    database.parent.mkdir()
    duckdb.connect(str(database)).close()
    _load_env(monkeypatch, {"KOMMO_DUCKDB_PATH": str(database)})


@pytest.mark.parametrize("schema", ["temp", "system", "Memory"])
def test_a_schema_named_like_a_duckdb_catalog_is_refused(schema: str):
    with pytest.raises(SettingsError, match=rf"schema '{schema}' .* DuckDB's own catalogs"):
        Settings.from_env({"KOMMO_SCHEMA": schema})


@pytest.mark.parametrize("schema", ["information_schema", "PG_Catalog"])
def test_a_schema_named_like_a_duckdb_system_schema_is_refused(tmp_path: Path, schema: str):
    """DuckDB keeps these schemas in its system catalog: no table of a run could be written."""
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    with con, pytest.raises(duckdb.Error, match="system catalog"):
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    with pytest.raises(SettingsError, match=rf"KOMMO_SCHEMA .* got '{schema}'"):
        Settings.from_env({"KOMMO_SCHEMA": schema})


@pytest.mark.parametrize(
    "path",
    [
        "md:crm?motherduck_token=SECRET-md-1",
        "MD:crm?attach_mode=single&MotherDuck_Token=SECRET-md-1",
    ],
)
def test_a_motherduck_token_in_the_database_path_fails_the_load_without_showing_it(
    environ, monkeypatch: pytest.MonkeyPatch, path: str
):
    """The path is the resource's configuration, shown in the UI, and run metadata: a token
    belongs in the motherduck_token variable."""
    variables = {"KOMMO_API_TOKEN": TOKEN, "KOMMO_SUBDOMAIN": "acme", "KOMMO_DUCKDB_PATH": path}
    with pytest.raises(SettingsError) as failure:
        _load_env(monkeypatch, variables)
    message = str(failure.value)
    assert "KOMMO_DUCKDB_PATH" in message and "motherduck_token variable" in message
    assert "SECRET" not in message
    defs = _load_env(monkeypatch, variables | {"KOMMO_DUCKDB_PATH": "md:crm?attach_mode=single"})
    assert defs.resources["duckdb"].database == "md:crm?attach_mode=single"


def test_an_in_memory_database_fails_the_load(environ, monkeypatch: pytest.MonkeyPatch):
    """Every connection to ``:memory:`` is a new, empty database: a run would write its rows
    into one that is gone at the end of the step, and the next step (statuses reading the
    pipelines) would ask to materialize what was just materialized."""
    message = _refused(monkeypatch, "KOMMO_DUCKDB_PATH", ":memory:")
    assert message.startswith("KOMMO_DUCKDB_PATH must be a DuckDB database file")
    assert "e.g. data/kommo_crm.duckdb" in message


@pytest.mark.parametrize("path", ["md:crm", "MD:crm", "motherduck:crm", "MotherDuck:crm"])
def test_defs_yaml_reaches_a_motherduck_database_as_the_variable_does(tmp_path: Path, path: str):
    """A database that is no local file is not put under the project root: ``motherduck:crm``
    became a local file named so."""
    component = KommoComponent.resolve_from_yaml(
        yaml.safe_dump({"duckdb_path": path, "accounts": [{"name": "br", "api_token": TEMPLATE}]})
    )
    [from_yaml] = component.build_settings(project_root=tmp_path)
    from_env = Settings.from_env({"KOMMO_DUCKDB_PATH": path})
    assert from_yaml.duckdb_path == from_env.duckdb_path == path


@pytest.mark.parametrize("path", [None, 5, "", "   "])
def test_no_path_at_all_is_refused_naming_the_field_and_the_value(path: object):
    """None and a number failed with a bare TypeError; blanks made a file named '   ', or named
    the working directory as the database."""
    with pytest.raises(SettingsError, match=rf"^duckdb_path must be .*, got {path!r}$"):
        Settings(duckdb_path=path)  # type: ignore[arg-type]


def test_a_blank_defs_yaml_database_path_is_refused_naming_the_field(tmp_path: Path):
    attributes = {"duckdb_path": "  ", "accounts": [{"name": "br", "api_token": TEMPLATE}]}
    component = KommoComponent.resolve_from_yaml(yaml.safe_dump(attributes))
    with pytest.raises(SettingsError, match=r"^defs.yaml duckdb_path must be .*, got '  '$"):
        component.build_settings(project_root=tmp_path)
