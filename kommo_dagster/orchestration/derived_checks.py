"""Data checks of the declared tables (derived tables and views, link tables), from their
registry declarations (`kommo_dagster.warehouse.tables.Table`).

One `multi_asset_check` per table (``kommo_<table>_checks``, account-qualified). Every table
with contract columns gets ``contract_columns`` (blocking; when it fails, the others say
"not evaluated" and why); the others are named by the declaration's ``checks`` and defined here
(`CHECKS`), then one per declared reference into a selected stream. Each is a `Check`
declaration; specs, severities and the run come from `kommo_dagster.orchestration.data_checks`,
as for the streams.

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
from collections.abc import Collection

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
from kommo_dagster.orchestration.derived_selection import selected_declarations
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
        # A timestamp, which the UI shows as a date, as it does the windows' bounds.
        oldest = dg.MetadataValue.timestamp(float(oldest_at))
        metadata |= {"oldest_first_message_id": oldest_id, "oldest_first_message_at": oldest}
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
# Why a declared table's reference check only warns (its description ends with it).
REFERENCE_WARNS = "warns: a link to a record not (yet) in the warehouse is kept and counted."


def table_checks(table: Table, *, streams: Collection[str] | None = None) -> dict[str, Check]:
    """The checks of ``table`` by name: ``contract_columns`` when it has contract columns, those
    its declaration names, then one per reference into ``streams`` (None: all)."""
    contract = {CONTRACT_COLUMNS: CONTRACT_CHECK} if table.columns else {}
    named = {n: CHECKS[n] for n in table.checks}
    references = reference_checks(table.references, streams=streams, why=REFERENCE_WARNS)
    return contract | named | references


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
    return evaluate_checks(con, table, table_checks(table, streams=streams), schema=schema)


def build_table_checks(
    table: Table, *, settings: Settings, specs: AccountSpecs | None = None
) -> dg.AssetChecksDefinition:
    """One `multi_asset_check` (``kommo_<table>_checks``, account-qualified) for every check of
    a declared table: ``contract_columns`` blocking, the warnings with WARN severity."""
    checks = table_checks(table, streams=settings.streams)
    return build_checks(table, checks, settings=settings, specs=specs or AccountSpecs(settings))


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
    "REFERENCE_WARNS",
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
    "table_checks",
    "unanswered_over_24_hours",
]
