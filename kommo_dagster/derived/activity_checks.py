"""Data checks of the conversation and activity tables.

| check | on | fails when |
|---|---|---|
| ``contract_columns`` (blocking) | every activity table | no table, or other columns |
| ``no_duplicate_keys`` | every activity table | a key appears twice |
| ``no_negative_response_seconds`` | ``chat_response_times`` | a reply precedes its run |
| ``unanswered_over_24_hours`` (warning) | ``chat_response_times`` | a run waits over 24 h |

Unanswered runs are not wrong data but customers waiting: the warning counts those whose first
message is more than 24 hours old (by the clock of the check) and shows the oldest.
"""

import time
from collections.abc import Callable, Iterator

import dagster as dg
import duckdb as duckdb_lib

from kommo_dagster.accounts import AccountScope
from kommo_dagster.checks import CONTRACT_COLUMNS, SAMPLE, Outcome, check_results, contract_columns
from kommo_dagster.derived.activity import CHAT_RESPONSE_TIMES, ActivityTable
from kommo_dagster.derived.activity_assets import activity_tables
from kommo_dagster.derived.checks import NO_DUPLICATE_KEYS, no_duplicate_keys
from kommo_dagster.io_manager import KommoDuckDBResource
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse import table_ref

NO_NEGATIVE_RESPONSE_SECONDS = "no_negative_response_seconds"
UNANSWERED_OVER_24_HOURS = "unanswered_over_24_hours"
WAIT_LIMIT_SECONDS = 24 * 3600


def no_negative_response_seconds(con: duckdb_lib.DuckDBPyConnection, *, schema: str) -> Outcome:
    rows = con.execute(
        f"SELECT first_message_id, response_seconds FROM {table_ref(schema, CHAT_RESPONSE_TIMES)}"
        f" WHERE response_seconds < 0 ORDER BY response_seconds"
    ).fetchall()
    return Outcome(
        not rows,
        f"{len(rows)} runs have a reply before their first message",
        {"negative_runs": len(rows), "sample": [str(r) for r in rows[:SAMPLE]]},
    )


def unanswered_over_24_hours(
    con: duckdb_lib.DuckDBPyConnection, *, schema: str, now: int | None = None
) -> Outcome:
    cutoff = int(time.time() if now is None else now) - WAIT_LIMIT_SECONDS
    count, oldest_id, oldest_at, entity = con.execute(
        f"SELECT count(*), arg_min(first_message_id, first_message_at), min(first_message_at), "
        f"arg_min(entity_type || ' ' || entity_id, first_message_at) "
        f"FROM {table_ref(schema, CHAT_RESPONSE_TIMES)} "
        f"WHERE replied_at IS NULL AND first_message_at < ?",
        [cutoff],
    ).fetchone() or (0, None, None, None)
    metadata = {"unanswered_runs_over_24_hours": int(count)}
    if count:
        metadata |= {"oldest_first_message_id": oldest_id, "oldest_first_message_at": oldest_at}
        metadata["oldest_entity"] = entity
    return Outcome(not count, f"{count} runs have waited more than 24 hours for a reply", metadata)


def evaluate_activity_table(
    con: duckdb_lib.DuckDBPyConnection, table: ActivityTable, *, schema: str
) -> dict[str, Outcome]:
    results = {CONTRACT_COLUMNS: contract_columns(con, table, schema=schema)}  # type: ignore[arg-type]
    checks: dict[str, Callable[[], Outcome]] = {
        NO_DUPLICATE_KEYS: lambda: no_duplicate_keys(con, table, schema=schema),  # type: ignore[arg-type]
    }
    if table.name == CHAT_RESPONSE_TIMES:
        checks[NO_NEGATIVE_RESPONSE_SECONDS] = lambda: no_negative_response_seconds(
            con, schema=schema
        )
        checks[UNANSWERED_OVER_24_HOURS] = lambda: unanswered_over_24_hours(con, schema=schema)
    if not results[CONTRACT_COLUMNS].passed:
        reason = f"not evaluated: {results[CONTRACT_COLUMNS].description}"
        return results | {n: Outcome(False, reason, {}) for n in checks}
    return results | {n: check() for n, check in checks.items()}


_DESCRIPTIONS = {
    CONTRACT_COLUMNS: "The table's columns and DuckDB types are the contract's, in order.",
    NO_DUPLICATE_KEYS: "No key twice.",
    NO_NEGATIVE_RESPONSE_SECONDS: "No reply is sent before the run's first message.",
    UNANSWERED_OVER_24_HOURS: "No customer has waited more than 24 hours for a reply "
    "(a warning, with the oldest run in the metadata).",
}


def build_activity_table_checks(
    table: ActivityTable, *, settings: Settings
) -> dg.AssetChecksDefinition:
    scope = AccountScope.of(settings)
    key = scope.asset_key(table.name)
    schema = settings.schema
    names = [CONTRACT_COLUMNS, NO_DUPLICATE_KEYS]
    if table.name == CHAT_RESPONSE_TIMES:
        names += [NO_NEGATIVE_RESPONSE_SECONDS, UNANSWERED_OVER_24_HOURS]
    specs = [
        dg.AssetCheckSpec(
            n, asset=key, description=_DESCRIPTIONS[n], blocking=n == CONTRACT_COLUMNS
        )
        for n in names
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
            outcomes = evaluate_activity_table(con, table, schema=schema)
        yield from check_results(
            context,
            key,
            outcomes,
            label=key.to_user_string(),
            warn_only={UNANSWERED_OVER_24_HOURS},
        )

    return table_checks


def build_activity_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    return [build_activity_table_checks(t, settings=settings) for t in activity_tables(settings)]


__all__ = [
    "NO_NEGATIVE_RESPONSE_SECONDS",
    "UNANSWERED_OVER_24_HOURS",
    "build_activity_checks",
    "evaluate_activity_table",
    "no_negative_response_seconds",
    "unanswered_over_24_hours",
]
