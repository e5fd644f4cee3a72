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
| ``<column>_in_<table>`` (warns) | streams with references | a row points to no row of the table |

The references are declared in `kommo_dagster.kommo.streams` (``leads.loss_reason_id`` ->
``loss_reasons.id``, a child's parent id, ...). Their checks warn rather than fail, and never
block: a record may well point to something deleted since. Their metadata counts the dangling
rows and distinct keys and shows a few; a reference to a table that is not selected
(``KOMMO_STREAMS``) has no check.

A partition is a cursor range, so a duplicate (id, cursor) pair is always inside one partition;
the check reports the partitions (UTC days) holding duplicates. ``contract_columns`` is blocking:
when it fails, the run does not go on to materialize assets downstream of that table.

Each check is declared once, a `Check` (`STREAM_CHECKS`, and one per reference); which of them a
stream gets is `stream_checks`. The specs, severities, the "not evaluated" rule and the run on
one connection come from `kommo_dagster.orchestration.data_checks`, as for the declared tables.

The checks run with their asset (a materialization from the UI, a schedule or the sensor runs
them afterwards) or alone (``Checks`` in the UI, or ``dagster asset check``).
"""

from collections.abc import Collection

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.orchestration.data_checks import (
    CONTRACT_CHECK,
    CONTRACT_COLUMNS,
    SAMPLE,
    Check,
    Outcome,
    build_checks,
    evaluate_checks,
    reference_checks,
)
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.sql import quote, table_ref
from kommo_dagster.warehouse.views import current_view_name, has_current_view

NO_NULL_IDS = "no_null_ids"
NO_DUPLICATE_VERSIONS = "no_duplicate_versions"
CURRENT_IDS_UNIQUE = "current_ids_unique"


# --- the checks, plain SQL on a connection ------------------------------------------------------


def no_null_ids(con: duckdb_lib.DuckDBPyConnection, stream: Stream, *, schema: str) -> Outcome:
    # The key column naming the record: not its cursor nor its parent's id (uid for the inbox).
    ident = next(c for c in stream.key if c not in (stream.cursor, stream.parent_column))
    (count,) = con.execute(
        f"SELECT count(*) FROM {table_ref(schema, stream.name)} WHERE {quote(ident)} IS NULL"
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


STREAM_CHECKS: dict[str, Check] = {
    CONTRACT_COLUMNS: CONTRACT_CHECK,
    NO_NULL_IDS: Check(no_null_ids, lambda stream, schema: "Every row has an id."),
    NO_DUPLICATE_VERSIONS: Check(
        no_duplicate_versions,
        lambda stream, schema: f"No (id, {stream.cursor}) pair twice in any partition.",
    ),
    CURRENT_IDS_UNIQUE: Check(
        current_ids_unique,
        lambda stream, schema: f"Each id once in {schema}.{current_view_name(stream)}.",
    ),
}
# Why a stream's reference check only warns (its description ends with it).
REFERENCE_WARNS = "warns, never blocks: a record may point to one deleted since."


def stream_checks(stream: Stream, *, streams: Collection[str] | None = None) -> dict[str, Check]:
    """The checks of ``stream`` by name, as its declaration implies: every stream's, the
    versions' with a cursor, the current view's with one, then one per reference into
    ``streams`` (None: all)."""
    names = [CONTRACT_COLUMNS, NO_NULL_IDS]
    if stream.cursor is not None:
        names.append(NO_DUPLICATE_VERSIONS)
    if has_current_view(stream):
        names.append(CURRENT_IDS_UNIQUE)
    references = reference_checks(stream.all_references, streams=streams, why=REFERENCE_WARNS)
    return {n: STREAM_CHECKS[n] for n in names} | references


def check_names(stream: Stream, *, streams: Collection[str] | None = None) -> list[str]:
    """The checks of ``stream``; reference checks only for tables in ``streams`` (None: all)."""
    return list(stream_checks(stream, streams=streams))


def evaluate(
    con: duckdb_lib.DuckDBPyConnection,
    stream: Stream,
    *,
    schema: str,
    streams: Collection[str] | None = None,
) -> dict[str, Outcome]:
    """Every check of ``stream`` by name (references to ``streams`` only; None: all). Without
    the table (or with columns the other checks cannot read) only the contract check says why;
    the others fail saying it blocks them."""
    return evaluate_checks(con, stream, stream_checks(stream, streams=streams), schema=schema)


# --- Dagster --------------------------------------------------------------------------------


def build_stream_checks(
    stream: Stream, *, settings: Settings, specs: AccountSpecs | None = None
) -> dg.AssetChecksDefinition:
    """The stream's checks, logged under its asset key (a translator's, if it renamed it), as
    its asset's logs are."""
    return build_checks(
        stream,
        stream_checks(stream, streams=settings.streams),
        settings=settings,
        specs=specs or AccountSpecs(settings),
    )


def build_kommo_checks(
    settings: Settings, *, specs: AccountSpecs | None = None
) -> list[dg.AssetChecksDefinition]:
    specs = specs or AccountSpecs(settings)
    return [
        build_stream_checks(get_stream(s), settings=settings, specs=specs) for s in settings.streams
    ]


__all__ = [
    "CURRENT_IDS_UNIQUE",
    "NO_DUPLICATE_VERSIONS",
    "NO_NULL_IDS",
    "REFERENCE_WARNS",
    "STREAM_CHECKS",
    "build_kommo_checks",
    "build_stream_checks",
    "check_names",
    "current_ids_unique",
    "evaluate",
    "no_duplicate_versions",
    "no_null_ids",
    "stream_checks",
]
