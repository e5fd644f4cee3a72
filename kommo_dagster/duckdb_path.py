"""The DuckDB path setting (``KOMMO_DUCKDB_PATH``): where it points, and the checks that refuse,
when the definitions load, a path every run would otherwise fail on.

A local file is made absolute; a file named like the schema, a schema named like one of
DuckDB's own catalogs or system schemas, a path DuckDB cannot open or make, and a MotherDuck
path carrying its token are refused with a `SettingsError` naming where the path came from
(``label``).
"""

from __future__ import annotations

import os
from pathlib import Path

from kommo_dagster.kommo import config as client
from kommo_dagster.setting_values import SettingsError, invalid
from kommo_dagster.warehouse.sql import catalog_name, is_file_database


def parse_database_path(value: object, label: str) -> Path | str:
    """The setting's parser: a path (a MotherDuck database as text), as `database_path` puts
    it; none at all, or a blank one, fails naming ``label`` and the value."""
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise invalid(label, "a DuckDB database file or md:<database>", value)
    return database_path(value.strip() if isinstance(value, str) else value)


def database_path(database: str | Path) -> Path | str:
    """A local file as an absolute path (runs may start in another directory); a MotherDuck
    or in-memory database as written."""
    if not is_file_database(database):
        return str(database)
    return Path(database).expanduser().absolute()


# Catalogs DuckDB always has (``memory``: the in-memory instance a write stages its rows in).
DUCKDB_CATALOGS = ("memory", "system", "temp")
# Schemas of DuckDB's system catalog: no table can be made in them.
DUCKDB_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")


def check_database_name(path: str | Path, *, schema: str, label: str, schema_label: str) -> None:
    """Refuse a DuckDB file whose name equals the schema, and a schema named like a catalog
    DuckDB always has or one of its system schemas; ``label`` and ``schema_label`` name where
    the path and the schema are set.

    DuckDB names the catalog of an attached file after the file's stem, so ``kommo.duckdb``
    holding schema ``kommo`` makes ``kommo.leads`` ambiguous (catalog ``kommo`` or schema
    ``kommo``?) and every statement fails with "Ambiguous reference".
    """
    if schema.lower() in DUCKDB_CATALOGS:
        raise SettingsError(
            f"the schema {schema!r} is named like one of DuckDB's own catalogs "
            f"({', '.join(DUCKDB_CATALOGS)}), which makes every query of it fail with 'Ambiguous "
            f"reference'. Choose another schema ({schema_label})."
        )
    if schema.lower() in DUCKDB_SYSTEM_SCHEMAS:
        raise SettingsError(
            f"{schema_label} names one of DuckDB's own schemas "
            f"({', '.join(DUCKDB_SYSTEM_SCHEMAS)}), in which no table can be made, got "
            f"{schema!r}. Choose another schema."
        )
    stem = catalog_name(path)
    if stem.lower() == schema.lower():
        raise SettingsError(
            f"{label} points at {str(path)!r}: DuckDB names the catalog after the file "
            f"({stem!r}), which collides with the schema {schema!r} and makes every query fail "
            f"with 'Ambiguous reference'. Use another file name, e.g. data/kommo_crm.duckdb."
        )


# Where every DuckDB database file says what it is (after an 8-byte checksum).
_DUCKDB_MAGIC = (8, b"DUCK")


def check_database_file(path: str | Path, *, label: str) -> None:
    """Refuse a local database path DuckDB cannot open or make (a folder, a path under a file,
    another kind of file), and an in-memory database, which every connection makes anew:
    every run would otherwise fail at its first write (or lose it), long after the definitions
    loaded."""
    if str(path) == ":memory:":
        raise SettingsError(
            f"{label} must be a DuckDB database file, got {str(path)!r}: each connection to it "
            "is a new, empty database, so a run's rows would be gone when its step ends. Point "
            "it at a file, e.g. data/kommo_crm.duckdb."
        )
    if not is_file_database(path):
        return
    path = Path(path)
    problem = "it is a folder" if path.is_dir() else client.directory_problem(path.parent)
    if problem is None and path.is_file() and not _is_duckdb_file(path):
        problem = "the file is not a DuckDB database"
    if problem:
        raise SettingsError(f"{label} must be a DuckDB database file, got {str(path)!r}: {problem}")


def _is_duckdb_file(path: Path) -> bool:
    offset, magic = _DUCKDB_MAGIC
    try:
        with path.open("rb") as file:
            head = file.read(offset + len(magic))
    except OSError:
        return True  # unreadable here (held by another program): the run will tell
    # Shorter: being made by another process right now, or empty; DuckDB tells at the run.
    return len(head) < offset + len(magic) or head[offset:] == magic


def check_no_database_token(path: str | Path, *, label: str) -> None:
    """Refuse a MotherDuck path carrying its token (``md:db?motherduck_token=...``): the path is
    the DuckDB resource's configuration, shown in the UI, and part of each run's metadata and
    messages. The message does not repeat the path."""
    if is_file_database(path):
        return
    query = str(path).partition("?")[2]
    names = [part.partition("=")[0].strip().lower() for part in query.split("&")]
    if "motherduck_token" in names:
        raise SettingsError(
            f"{label} holds a MotherDuck token (motherduck_token=...), which would be shown in "
            f"the UI's resource configuration and in run metadata: set the motherduck_token "
            f"variable to the token instead and leave {label} as md:<database>"
        )
