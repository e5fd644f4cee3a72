"""Data checks of the derived tables and views, derived from their declarations.

| check | on | fails when |
|---|---|---|
| ``contract_columns`` (blocking) | derived tables | no table, or columns unlike the contract |
| ``no_duplicate_keys`` | derived tables | a key appears twice |
| ``field_ids_defined`` (warning) | custom-field values | a field_id is not among the definitions |
| ``no_negative_durations`` | ``lead_stage_durations`` | a stay ends before it starts |

The keys are (entity_id, updated_at, field_id, value_index) for the values, event_id for the
status changes.

``field_ids_defined`` is a warning: a field deleted in Kommo leaves its old values behind, which
is worth knowing but not wrong. Without a definitions table (its stream not extracted) it warns
that it could not look.
"""

from collections.abc import Callable, Iterator

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.accounts import AccountScope
from kommo_dagster.checks import (
    CONTRACT_COLUMNS,
    SAMPLE,
    Outcome,
    check_results,
    contract_columns,
)
from kommo_dagster.derived.assets import derived_tables
from kommo_dagster.derived.declaration import STATUS_CHANGES, DerivedTable, custom_field_entity
from kommo_dagster.derived.stages import DURATIONS_VIEW
from kommo_dagster.io_manager import KommoDuckDBResource
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse import quote, table_exists, table_ref

NO_DUPLICATE_KEYS = "no_duplicate_keys"
FIELD_IDS_DEFINED = "field_ids_defined"
NO_NEGATIVE_DURATIONS = "no_negative_durations"


def no_duplicate_keys(
    con: duckdb_lib.DuckDBPyConnection, table: DerivedTable, *, schema: str
) -> Outcome:
    key = ", ".join(quote(k) for k in table.key)
    rows = con.execute(
        f"SELECT {key} FROM {table_ref(schema, table.name)} GROUP BY ALL HAVING count(*) > 1"
    ).fetchall()
    return Outcome(
        not rows,
        f"{len(rows)} ({', '.join(table.key)}) keys appear more than once",
        {"duplicate_keys": len(rows), "sample": [str(r) for r in rows[:SAMPLE]]},
    )


def field_ids_defined(
    con: duckdb_lib.DuckDBPyConnection, table: DerivedTable, *, schema: str
) -> Outcome:
    definitions = custom_field_entity(table.name).definitions
    if not table_exists(con, schema=schema, table=definitions):
        return Outcome(False, f"{schema}.{definitions} does not exist: nothing to compare", {})
    rows = con.execute(
        f"SELECT DISTINCT field_id FROM {table_ref(schema, table.name)} AS v "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table_ref(schema, definitions)} AS d "
        f"WHERE d.id = v.field_id) ORDER BY 1"
    ).fetchall()
    return Outcome(
        not rows,
        f"{len(rows)} field ids of {table.name} are not in {definitions}",
        {"undefined_fields": len(rows), "sample": [int(r[0]) for r in rows[:SAMPLE]]},
    )


def no_negative_durations(con: duckdb_lib.DuckDBPyConnection, *, schema: str) -> Outcome:
    try:
        rows = con.execute(
            f"SELECT lead_id, status_id, seconds_in_stage FROM {table_ref(schema, DURATIONS_VIEW)} "
            f"WHERE seconds_in_stage < 0 ORDER BY lead_id"
        ).fetchall()
    except duckdb_lib.CatalogException as exc:
        return Outcome(False, f"{schema}.{DURATIONS_VIEW} cannot be read: {exc}", {})
    return Outcome(
        not rows,
        f"{len(rows)} stays end before they start",
        {"negative_stays": len(rows), "sample": [str(r) for r in rows[:SAMPLE]]},
    )


def evaluate_table(
    con: duckdb_lib.DuckDBPyConnection, table: DerivedTable, *, schema: str
) -> dict[str, Outcome]:
    results = {CONTRACT_COLUMNS: contract_columns(con, table, schema=schema)}  # type: ignore[arg-type]
    checks: dict[str, Callable[..., Outcome]] = {NO_DUPLICATE_KEYS: no_duplicate_keys}
    if _has_definitions(table):
        checks[FIELD_IDS_DEFINED] = field_ids_defined
    if not results[CONTRACT_COLUMNS].passed:
        reason = f"not evaluated: {results[CONTRACT_COLUMNS].description}"
        return results | {n: Outcome(False, reason, {}) for n in checks}
    return results | {n: check(con, table, schema=schema) for n, check in checks.items()}


def _has_definitions(table: DerivedTable) -> bool:
    try:
        custom_field_entity(table.name)
    except KeyError:
        return False
    return True


def build_table_checks(table: DerivedTable, *, settings: Settings) -> dg.AssetChecksDefinition:
    scope = AccountScope.of(settings)
    key = scope.asset_key(table.name)
    schema = settings.schema
    descriptions = {
        CONTRACT_COLUMNS: "The table's columns and DuckDB types are the contract's, in order.",
        NO_DUPLICATE_KEYS: f"No ({', '.join(table.key)}) key twice.",
    }
    reads: dict[str, list[dg.AssetKey]] = {}
    if _has_definitions(table):
        definitions = custom_field_entity(table.name).definitions
        descriptions[FIELD_IDS_DEFINED] = (
            f"Every field_id is defined in {schema}.{definitions} (a warning: deleted fields "
            f"leave values behind)."
        )
        if definitions in settings.streams:
            reads[FIELD_IDS_DEFINED] = [scope.asset_key(definitions)]
    specs = [
        dg.AssetCheckSpec(
            name,
            asset=key,
            description=description,
            blocking=name == CONTRACT_COLUMNS,
            additional_deps=reads.get(name),
        )
        for name, description in descriptions.items()
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=scope.qualify(f"kommo_{table.name}_checks"),
        description=f"Data checks of {schema}.{table.name}.",
    )
    def table_checks(
        context: dg.AssetCheckExecutionContext, duckdb: KommoDuckDBResource
    ) -> Iterator[dg.AssetCheckResult]:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            outcomes = evaluate_table(con, table, schema=schema)
        yield from check_results(
            context, key, outcomes, label=key.to_user_string(), warn_only={FIELD_IDS_DEFINED}
        )

    return table_checks


def build_durations_check(settings: Settings) -> dg.AssetChecksDefinition:
    scope = AccountScope.of(settings)
    key = scope.asset_key(DURATIONS_VIEW)
    schema = settings.schema
    spec = dg.AssetCheckSpec(
        NO_NEGATIVE_DURATIONS,
        asset=key,
        description=f"No stay in {schema}.{DURATIONS_VIEW} ends before it starts.",
    )

    @dg.multi_asset_check(
        specs=[spec],
        name=scope.qualify(f"kommo_{DURATIONS_VIEW}_checks"),
        description=f"Data checks of {schema}.{DURATIONS_VIEW}.",
    )
    def durations_checks(
        context: dg.AssetCheckExecutionContext, duckdb: KommoDuckDBResource
    ) -> Iterator[dg.AssetCheckResult]:
        with duckdb.get_connection(on_wait=context.log.info) as con:
            outcome = no_negative_durations(con, schema=schema)
        yield from check_results(
            context,
            key,
            {NO_NEGATIVE_DURATIONS: outcome},
            label=key.to_user_string(),
            warn_only=(),
        )

    return durations_checks


def build_derived_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    tables = derived_tables(settings)
    checks = [build_table_checks(t, settings=settings) for t in tables]
    if any(t.name == STATUS_CHANGES for t in tables):
        checks.append(build_durations_check(settings))
    return checks


__all__ = [
    "FIELD_IDS_DEFINED",
    "NO_DUPLICATE_KEYS",
    "NO_NEGATIVE_DURATIONS",
    "build_derived_checks",
    "evaluate_table",
    "field_ids_defined",
    "no_duplicate_keys",
    "no_negative_durations",
]
