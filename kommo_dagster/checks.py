"""Data checks of the Kommo tables, derived from the stream declaration.

One `multi_asset_check` per stream (``kommo_<stream>_checks``, or
``kommo_<account>_<stream>_checks`` with several accounts), one DuckDB connection for all of its
checks. Which checks a stream gets follows from `kommo_dagster.kommo.streams`:

| check | streams | fails when |
|---|---|---|
| ``contract_columns`` (blocking) | all | no table, or columns unlike the contract |
| ``no_null_ids`` | all | a row has a NULL id |
| ``no_duplicate_versions`` | streams with a cursor | an (id, cursor) pair appears twice |
| ``current_ids_unique`` | incremental streams | an id appears twice in ``<stream>_current`` |
| ``<parent>_exist`` | streams with a parent | a row's ``<parent>_id`` is not in the parent table |

A partition is a cursor range, so a duplicate (id, cursor) pair is always inside one partition;
the check reports the partitions (UTC days) holding duplicates. ``contract_columns`` is blocking:
when it fails, the run does not go on to materialize assets downstream of that table.

The checks run with their asset (a materialization from the UI, a schedule or the sensor runs
them afterwards) or alone (``Checks`` in the UI, or ``dagster asset check``).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.accounts import AccountScope
from kommo_dagster.io_manager import KommoDuckDBResource
from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.settings import Settings
from kommo_dagster.views import current_view_name, has_current_view
from kommo_dagster.warehouse import quote, table_columns, table_exists, table_ref

CONTRACT_COLUMNS = "contract_columns"
NO_NULL_IDS = "no_null_ids"
NO_DUPLICATE_VERSIONS = "no_duplicate_versions"
CURRENT_IDS_UNIQUE = "current_ids_unique"
SAMPLE = 5


@dataclass(frozen=True)
class Outcome:
    passed: bool
    description: str
    metadata: dict[str, Any]


def parent_check_name(stream: Stream) -> str:
    assert stream.parent is not None
    return f"{stream.parent}_exist"


def parent_column(stream: Stream) -> str:
    """The column of ``stream`` holding its parent's id (statuses -> pipeline_id)."""
    assert stream.parent is not None
    return f"{stream.parent.removesuffix('s')}_id"


def check_names(stream: Stream) -> list[str]:
    names = [CONTRACT_COLUMNS, NO_NULL_IDS]
    if stream.cursor is not None:
        names.append(NO_DUPLICATE_VERSIONS)
    if has_current_view(stream):
        names.append(CURRENT_IDS_UNIQUE)
    if stream.parent is not None:
        names.append(parent_check_name(stream))
    return names


# --- the checks, plain SQL on a connection ------------------------------------------------------


def contract_columns(con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str) -> Outcome:
    expected = [(c.name, c.duckdb_type) for c in stream.columns]
    if not table_exists(con, schema=schema, table=stream.name):
        return Outcome(False, f"{schema}.{stream.name} does not exist", {})
    actual = table_columns(con, schema=schema, table=stream.name)
    if actual == expected:
        return Outcome(True, f"{len(expected)} columns as in the contract", {})
    have, want = dict(actual), dict(expected)
    return Outcome(
        False,
        f"{schema}.{stream.name} differs from the contract",
        {
            "missing": [n for n in want if n not in have],
            "unexpected": [n for n in have if n not in want],
            "wrong_type": {
                n: f"{have[n]} (contract: {t})"
                for n, t in want.items()
                if have.get(n) not in (None, t)
            },
            "order_differs": [n for n, _ in actual] != [n for n, _ in expected],
        },
    )


def no_null_ids(con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str) -> Outcome:
    (count,) = con.execute(
        f"SELECT count(*) FROM {table_ref(schema, stream.name)} WHERE id IS NULL"
    ).fetchone() or (0,)
    return Outcome(count == 0, f"{count} rows without an id", {"null_ids": int(count)})


def no_duplicate_versions(
    con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str
) -> Outcome:
    cursor = quote(stream.cursor or "")
    rows = con.execute(
        f"SELECT strftime(make_timestamp({cursor} * 1000000), '%Y-%m-%d') AS day, "
        f"count(*) AS pairs, sum(n) AS rows FROM ("
        f"  SELECT id, {cursor}, count(*) AS n FROM {table_ref(schema, stream.name)} "
        f"  GROUP BY ALL HAVING count(*) > 1"
        f") GROUP BY day ORDER BY day"
    ).fetchall()
    pairs = sum(int(r[1]) for r in rows)
    return Outcome(
        pairs == 0,
        f"{pairs} (id, {stream.cursor}) pairs appear more than once",
        {
            "duplicate_pairs": pairs,
            "partitions_with_duplicates": [r[0] for r in rows][:50],
        },
    )


def current_ids_unique(
    con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str
) -> Outcome:
    view = table_ref(schema, current_view_name(stream))
    try:
        rows = con.execute(
            f"SELECT id, count(*) FROM {view} GROUP BY id HAVING count(*) > 1 ORDER BY id"
        ).fetchall()
    except duckdb_lib.CatalogException as exc:
        return Outcome(False, f"{schema}.{current_view_name(stream)} cannot be read: {exc}", {})
    return Outcome(
        not rows,
        f"{len(rows)} ids appear more than once in {schema}.{current_view_name(stream)}",
        {"duplicate_ids": len(rows), "sample": [str(r[0]) for r in rows[:SAMPLE]]},
    )


def parents_exist(con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str) -> Outcome:
    parent = get_stream(stream.parent or "")
    column = quote(parent_column(stream))
    if not table_exists(con, schema=schema, table=parent.name):
        return Outcome(False, f"{schema}.{parent.name} does not exist", {})
    rows = con.execute(
        f"SELECT DISTINCT c.{column} FROM {table_ref(schema, stream.name)} AS c "
        f"WHERE c.{column} IS NULL OR NOT EXISTS ("
        f"SELECT 1 FROM {table_ref(schema, parent.name)} AS p WHERE p.id = c.{column}) "
        f"ORDER BY 1 NULLS FIRST"
    ).fetchall()
    return Outcome(
        not rows,
        f"{len(rows)} {parent_column(stream)} values of {stream.name} are not in {parent.name}",
        {
            "orphans": len(rows),
            "sample": [None if r[0] is None else int(r[0]) for r in rows[:SAMPLE]],
        },
    )


def evaluate(
    con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str
) -> dict[str, Outcome]:
    """Every check of ``stream`` by name. Without the table (or with columns the other checks
    cannot read) only the contract check says why; the others fail saying it blocks them."""
    results = {CONTRACT_COLUMNS: contract_columns(con, stream, schema=schema)}
    names = check_names(stream)[1:]
    if not results[CONTRACT_COLUMNS].passed:
        reason = f"not evaluated: {results[CONTRACT_COLUMNS].description}"
        return results | {n: Outcome(False, reason, {}) for n in names}
    for name in names:
        if name == NO_NULL_IDS:
            results[name] = no_null_ids(con, stream, schema=schema)
        elif name == NO_DUPLICATE_VERSIONS:
            results[name] = no_duplicate_versions(con, stream, schema=schema)
        elif name == CURRENT_IDS_UNIQUE:
            results[name] = current_ids_unique(con, stream, schema=schema)
        else:
            results[name] = parents_exist(con, stream, schema=schema)
    return results


# --- Dagster --------------------------------------------------------------------------------


def build_stream_checks(stream: Stream, *, settings: Settings) -> dg.AssetChecksDefinition:
    scope = AccountScope.of(settings)
    key = scope.asset_key(stream.name)
    descriptions = {
        CONTRACT_COLUMNS: "The table's columns and DuckDB types are the contract's, in order.",
        NO_NULL_IDS: "Every row has an id.",
        NO_DUPLICATE_VERSIONS: f"No (id, {stream.cursor}) pair twice in any partition.",
        CURRENT_IDS_UNIQUE: f"Each id once in {settings.schema}.{current_view_name(stream)}.",
    }
    if stream.parent is not None:
        descriptions[parent_check_name(stream)] = (
            f"Every {parent_column(stream)} exists in {settings.schema}.{stream.parent}."
        )
    specs = [
        dg.AssetCheckSpec(
            name,
            asset=key,
            description=descriptions[name],
            blocking=name == CONTRACT_COLUMNS,
            additional_deps=[scope.asset_key(stream.parent)]
            if stream.parent is not None and name == parent_check_name(stream)
            else None,
        )
        for name in check_names(stream)
    ]
    schema = settings.schema

    @dg.multi_asset_check(
        specs=specs,
        name=scope.qualify(f"kommo_{stream.name}_checks"),
        description=f"Data checks of {schema}.{stream.name}.",
    )
    def stream_checks(
        context: dg.AssetCheckExecutionContext, duckdb: KommoDuckDBResource
    ) -> Iterator[dg.AssetCheckResult]:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            outcomes = evaluate(con, stream, schema=schema)
        for name, outcome in outcomes.items():
            if not outcome.passed:
                context.log.warning(
                    f"{scope.label(stream.name)} check {name} failed: {outcome.description}"
                )
            yield dg.AssetCheckResult(
                check_name=name,
                asset_key=key,
                passed=outcome.passed,
                description=outcome.description,
                metadata=outcome.metadata,
                severity=dg.AssetCheckSeverity.ERROR,
            )

    return stream_checks


def build_kommo_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    return [build_stream_checks(get_stream(s), settings=settings) for s in settings.streams]


__all__ = [
    "CONTRACT_COLUMNS",
    "CURRENT_IDS_UNIQUE",
    "NO_DUPLICATE_VERSIONS",
    "NO_NULL_IDS",
    "Outcome",
    "build_kommo_checks",
    "build_stream_checks",
    "check_names",
    "evaluate",
]
