"""Data checks of the declared tables (derived tables and views, link tables), from their
registry declarations (`kommo_dagster.warehouse.tables.Table`).

One `multi_asset_check` per table (``kommo_<table>_checks``, account-qualified). Every table
with contract columns gets ``contract_columns`` (blocking; when it fails, the others say
"not evaluated" and why); the others are named by the declaration's ``checks`` and defined here
(`CHECKS`), then one per declared reference into a selected stream.

| check | on | fails when |
|---|---|---|
| ``contract_columns`` (blocking) | derived, link tables | no table or columns unlike the contract |
| ``no_duplicate_keys`` | derived, link tables | a key appears twice |
| ``field_ids_defined`` (warning) | custom-field values | a field_id is not among the definitions |
| ``no_negative_durations`` | ``lead_stage_durations`` | a stay ends before it starts |
| ``no_negative_response_seconds`` | ``chat_response_times`` | a reply precedes its run |
| ``unanswered_over_24_hours`` (warning) | ``chat_response_times`` | a run waits over 24 h |
| ``<column>_in_<table>`` (warning) | link tables | a link's parent or target is not stored |
| ``one_main_contact`` (warning) | ``lead_contacts`` | a lead has more than one main contact |

The keys are (entity_id, updated_at, field_id, value_index) for the values, event_id for the
status changes, the link's columns for the link tables.

``unanswered_over_24_hours`` is a warning too: unanswered runs are not wrong data but customers
waiting; it counts those whose first message is more than 24 hours old (by the clock of the
check) and shows the oldest in its metadata.

``field_ids_defined`` is a warning: a field deleted in Kommo leaves its old values behind, which
is worth knowing but not wrong. Without a definitions table (its stream not extracted) it warns
that it could not look.

A reference check is a warning too: a link to a record the warehouse lacks is kept (Kommo said it
exists); it counts such rows and shows a few, and depends on the referenced stream's asset. A
reference to a stream that is not selected has no check.
"""

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.derived.declaration import (
    FIELD_IDS_DEFINED,
    NO_DUPLICATE_KEYS,
    NO_NEGATIVE_DURATIONS,
    NO_NEGATIVE_RESPONSE_SECONDS,
    UNANSWERED_OVER_24_HOURS,
    DerivedTable,
    custom_field_entity,
)
from kommo_dagster.derived.entities import DURATIONS_VIEW
from kommo_dagster.kommo.links import ONE_MAIN_CONTACT
from kommo_dagster.kommo.streams import Reference
from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.checks import (
    CONTRACT_COLUMNS,
    SAMPLE,
    Outcome,
    build_data_checks,
    contract_columns,
    references_resolve,
)
from kommo_dagster.orchestration.derived_assets import selected_declarations
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.sql import quote, table_exists, table_ref
from kommo_dagster.warehouse.tables import Table


def no_duplicate_keys(
    con: duckdb_lib.DuckDBPyConnection, table: DerivedTable, *, schema: str
) -> Outcome:
    key = ", ".join(quote(k) for k in table.key)
    rows = con.execute(
        f"SELECT {key} FROM {table_ref(schema, table.name)} GROUP BY ALL HAVING count(*) > 1 "
        f"ORDER BY ALL"
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


def no_negative_durations(
    con: duckdb_lib.DuckDBPyConnection, table: Table | None = None, *, schema: str
) -> Outcome:
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


WAIT_LIMIT_SECONDS = 24 * 3600


def no_negative_response_seconds(
    con: duckdb_lib.DuckDBPyConnection, table: Table, *, schema: str
) -> Outcome:
    rows = con.execute(
        f"SELECT first_message_id, response_seconds FROM {table_ref(schema, table.name)}"
        f" WHERE response_seconds < 0 ORDER BY response_seconds"
    ).fetchall()
    return Outcome(
        not rows,
        f"{len(rows)} runs have a reply before their first message",
        {"negative_runs": len(rows), "sample": [str(r) for r in rows[:SAMPLE]]},
    )


def unanswered_over_24_hours(
    con: duckdb_lib.DuckDBPyConnection, table: Table, *, schema: str, now: int | None = None
) -> Outcome:
    cutoff = int(time.time() if now is None else now) - WAIT_LIMIT_SECONDS
    count, oldest_id, oldest_at, entity = con.execute(
        f"SELECT count(*), arg_min(first_message_id, first_message_at), min(first_message_at), "
        f"arg_min(entity_type || ' ' || entity_id, first_message_at) "
        f"FROM {table_ref(schema, table.name)} "
        f"WHERE replied_at IS NULL AND first_message_at < ?",
        [cutoff],
    ).fetchone() or (0, None, None, None)
    metadata = {"unanswered_runs_over_24_hours": int(count)}
    if count:
        metadata |= {"oldest_first_message_id": oldest_id, "oldest_first_message_at": oldest_at}
        metadata["oldest_entity"] = entity
    return Outcome(not count, f"{count} runs have waited more than 24 hours for a reply", metadata)


def one_main_contact(con: duckdb_lib.DuckDBPyConnection, table: Table, *, schema: str) -> Outcome:
    rows = con.execute(
        f"SELECT lead_id, count(*) FROM {table_ref(schema, table.name)} WHERE is_main "
        f"GROUP BY lead_id HAVING count(*) > 1 ORDER BY lead_id"
    ).fetchall()
    return Outcome(
        not rows,
        f"{len(rows)} leads have more than one main contact",
        {"leads": len(rows), "sample": [f"lead_id={r[0]}: {r[1]}" for r in rows[:SAMPLE]]},
    )


@dataclass(frozen=True)
class Check:
    """A check a declaration names: what it says, how it runs, whether it only warns."""

    evaluate: Callable[..., Outcome]
    describe: Callable[[Table, str], str]
    warn: bool = False
    # The table whose asset it reads besides its own (its key then names a dependency).
    reads: Callable[[Table], str | None] = lambda table: None
    # A failure keeps the run from materializing the assets downstream, and the table's later
    # checks from running (``contract_columns``).
    blocking: bool = False


CHECKS: dict[str, Check] = {
    NO_DUPLICATE_KEYS: Check(
        no_duplicate_keys, lambda table, schema: f"No ({', '.join(table.key)}) key twice."
    ),
    FIELD_IDS_DEFINED: Check(
        field_ids_defined,
        lambda table, schema: (
            f"Every field_id is defined in {schema}.{custom_field_entity(table.name).definitions} "
            f"(a warning: deleted fields leave values behind)."
        ),
        warn=True,
        reads=lambda table: custom_field_entity(table.name).definitions,
    ),
    NO_NEGATIVE_DURATIONS: Check(
        no_negative_durations,
        lambda table, schema: f"No stay in {schema}.{table.name} ends before it starts.",
    ),
    NO_NEGATIVE_RESPONSE_SECONDS: Check(
        no_negative_response_seconds,
        lambda table, schema: "No reply is sent before the run's first message.",
    ),
    UNANSWERED_OVER_24_HOURS: Check(
        unanswered_over_24_hours,
        lambda table, schema: (
            "No customer has waited more than 24 hours for a reply (a warning, with the oldest "
            "run in the metadata)."
        ),
        warn=True,
    ),
    ONE_MAIN_CONTACT: Check(
        one_main_contact,
        lambda table, schema: "Each lead has at most one main contact (warns).",
        warn=True,
    ),
}
CONTRACT_CHECK = Check(
    contract_columns,
    lambda table, schema: "The table's columns and DuckDB types are the contract's, in order.",
    blocking=True,
)


def reference_check(ref: Reference) -> Check:
    """The check of one declared reference: a warning, since a row pointing to a record the
    warehouse lacks is kept (Kommo said it exists); it reads the referenced table's asset."""
    return Check(
        lambda con, table, *, schema: references_resolve(con, table, ref, schema=schema),
        lambda table, schema: (
            f"Every {table.name}.({', '.join(ref.columns)}) is a {schema}.{ref.stream}."
            f"({', '.join(ref.keys)}); warns: a link to a record not (yet) in the warehouse is "
            f"kept and counted."
        ),
        warn=True,
        reads=lambda table: ref.stream,
    )


def table_checks(table: Table, *, streams: Collection[str] | None = None) -> dict[str, Check]:
    """The checks of ``table`` by name: ``contract_columns`` when it has contract columns, those
    its declaration names, then one per reference into ``streams`` (None: all)."""
    contract = {CONTRACT_COLUMNS: CONTRACT_CHECK} if table.columns else {}
    named = {n: CHECKS[n] for n in table.checks}
    checked = [r for r in table.references if streams is None or r.stream in streams]
    return contract | named | {r.check_name: reference_check(r) for r in checked}


def check_names(table: Table, *, streams: Collection[str] | None = None) -> list[str]:
    return list(table_checks(table, streams=streams))


def evaluate_table(
    con: duckdb_lib.DuckDBPyConnection,
    table: Table,
    *,
    schema: str,
    streams: Collection[str] | None = None,
) -> dict[str, Outcome]:
    """Every check of ``table`` (references into ``streams`` only; None: all), in order. After a
    blocking check fails (no table, or columns unlike the contract) the others are not run and
    say why."""
    results: dict[str, Outcome] = {}
    blocker: Outcome | None = None
    for name, check in table_checks(table, streams=streams).items():
        if blocker is not None:
            results[name] = Outcome(False, f"not evaluated: {blocker.description}", {})
            continue
        results[name] = outcome = check.evaluate(con, table, schema=schema)
        if check.blocking and not outcome.passed:
            blocker = outcome
    return results


def _spec(
    name: str,
    check: Check,
    table: Table,
    *,
    key: dg.AssetKey,
    settings: Settings,
    specs: AccountSpecs,
) -> dg.AssetCheckSpec:
    reads = check.reads(table)
    return dg.AssetCheckSpec(
        name,
        asset=key,
        description=check.describe(table, settings.schema),
        blocking=check.blocking,
        additional_deps=[specs.key(reads)] if reads and reads in settings.streams else None,
    )


def build_table_checks(
    table: Table, *, settings: Settings, specs: AccountSpecs | None = None
) -> dg.AssetChecksDefinition:
    """One `multi_asset_check` (``kommo_<table>_checks``, account-qualified) for every check of
    a declared table: ``contract_columns`` blocking, the warnings with WARN severity."""
    specs = specs or AccountSpecs(settings)
    key, schema, streams = specs.key(table.name), settings.schema, settings.streams
    checks = table_checks(table, streams=streams)
    warn_only = {n for n, c in checks.items() if c.warn}

    return build_data_checks(
        [_spec(n, c, table, key=key, settings=settings, specs=specs) for n, c in checks.items()],
        name=AccountScope.of(settings).qualify(f"kommo_{table.name}_checks"),
        description=f"Data checks of {schema}.{table.name}.",
        key=key,
        label=key.to_user_string(),
        warn_only=warn_only,
        evaluate=lambda con: evaluate_table(con, table, schema=schema, streams=streams),
    )


def build_derived_checks(
    settings: Settings, *, specs: AccountSpecs | None = None
) -> list[dg.AssetChecksDefinition]:
    specs = specs or AccountSpecs(settings)
    return [
        build_table_checks(t, settings=settings, specs=specs)
        for t in selected_declarations(settings)
        if check_names(t)
    ]


__all__ = [
    "CHECKS",
    "FIELD_IDS_DEFINED",
    "NO_DUPLICATE_KEYS",
    "NO_NEGATIVE_DURATIONS",
    "NO_NEGATIVE_RESPONSE_SECONDS",
    "ONE_MAIN_CONTACT",
    "UNANSWERED_OVER_24_HOURS",
    "Check",
    "build_derived_checks",
    "build_table_checks",
    "check_names",
    "evaluate_table",
    "field_ids_defined",
    "no_duplicate_keys",
    "no_negative_durations",
    "no_negative_response_seconds",
    "one_main_contact",
    "reference_check",
    "table_checks",
    "unanswered_over_24_hours",
]
