"""The conversation and activity tables and the response-time view as Dagster assets.

``kommo/chat_response_times``, ``kommo/calls`` and ``kommo/manager_activity_daily`` are
unpartitioned assets downstream of what they read (the events, the note streams, the status
changes): each materialization rebuilds the whole table from everything extracted so far in one
transaction (`kommo_dagster.derived.activity`), so a run answered in a later partition gets its
reply. ``kommo/response_time_by_manager`` is a view, rebuilt with ``chat_response_times``.
The jobs run them with the full tables and the views. With several accounts each write also
refreshes ``kommo_all.<table>`` over the accounts that have it.

Bad input never fails a run: it is kept or skipped as each module says, and counted in the
materialization's metadata (``kommo/messages_without_message_id``...).

No ``from __future__ import annotations``: Dagster reads the asset functions' annotations.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import duckdb

from kommo_dagster.accounts import AccountScope
from kommo_dagster.all_accounts import ALL_ACCOUNTS_SCHEMA, cross_account_view_sql
from kommo_dagster.derived import calls, chats
from kommo_dagster.derived.activity import (
    ACTIVITY_TABLES,
    CALLS,
    CHAT_RESPONSE_TIMES,
    MANAGER_ACTIVITY_DAILY,
    NOTE_STREAMS,
    ActivityTable,
    account_time_zone,
    existing,
)
from kommo_dagster.derived.assets import _view_asset
from kommo_dagster.derived.declaration import with_derived
from kommo_dagster.derived.manager_activity import activity_select_sql
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.freshness import freshness_policy
from kommo_dagster.io_manager import table_schema
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse import WriteResult, catalog_name, quote

KINDS = {"duckdb", "sql"}


@dataclass
class Plan:
    """How one write goes: its query, what runs after it in the transaction, its metadata."""

    select_sql: str
    metadata: dict[str, Any] = field(default_factory=dict)
    after: Callable[[duckdb.DuckDBPyConnection], None] | None = None


def activity_tables(settings: Settings) -> list[ActivityTable]:
    """The activity tables with at least one input the settings define, in declaration order
    (a table's inputs are declared before it)."""
    defined = with_derived(set(settings.streams))
    tables = []
    for table in ACTIVITY_TABLES.values():
        if defined & set(table.reads):
            tables.append(table)
            defined.add(table.name)
    return tables


def activity_keys(settings: Settings) -> list[dg.AssetKey]:
    """The activity tables and the response-time view (all unpartitioned)."""
    key = AccountScope.of(settings).asset_key
    names = [t.name for t in activity_tables(settings)]
    if CHAT_RESPONSE_TIMES in names:
        names.append(chats.RESPONSE_VIEW)
    return [key(n) for n in names]


def _inputs(table: ActivityTable, settings: Settings) -> list[str]:
    """The tables ``table`` reads that the settings define."""
    defined = with_derived(set(settings.streams)) | {t.name for t in activity_tables(settings)}
    return [n for n in table.reads if n in defined]


def _require(con: duckdb.DuckDBPyConnection, names: list[str], *, settings: Settings) -> None:
    if not existing(con, tuple(names), schema=settings.schema):
        scope = AccountScope.of(settings)
        raise RuntimeError(
            f"none of {', '.join(f'{settings.schema}.{n}' for n in names)} exists yet: "
            f"materialize {' or '.join(scope.label(n) for n in names)} first"
        )


def _chat_plan(con: duckdb.DuckDBPyConnection, settings: Settings) -> Plan:
    schema = settings.schema
    _require(con, ["events"], settings=settings)
    row = con.execute(chats.input_counts_sql(schema=schema)).fetchone() or (0, 0, 0, 0)
    zone, why = account_time_zone(con, schema=schema)

    def after(con: duckdb.DuckDBPyConnection) -> None:
        present = set(existing(con, ("leads_current", "contacts_current"), schema=schema))
        con.execute(chats.response_view_sql(schema=schema, time_zone=zone, present=present))

    names = ("message_events", "messages_without_message_id", "messages_on_unknown_entity_types")
    metadata = dict(zip(names, row[:3], strict=True)) | {"repeated_message_events": row[3]}
    return Plan(chats.response_times_select_sql(schema=schema), _counts(metadata, zone, why), after)


def _calls_plan(con: duckdb.DuckDBPyConnection, settings: Settings) -> Plan:
    schema = settings.schema
    notes = _inputs(ACTIVITY_TABLES[CALLS], settings)
    _require(con, notes, settings=settings)
    streams = {n: NOTE_STREAMS[n] for n in existing(con, tuple(notes), schema=schema)}
    row = con.execute(calls.input_counts_sql(schema=schema, streams=streams)).fetchone()
    names = ("call_notes", "params_not_json", "durations_not_a_number", "durations_absent")
    metadata = dict(zip(names, row or (0, 0, 0, 0), strict=True))
    return Plan(calls.calls_select_sql(schema=schema, streams=streams), _counts(metadata))


def _activity_plan(con: duckdb.DuckDBPyConnection, settings: Settings) -> Plan:
    schema = settings.schema
    reads = _inputs(ACTIVITY_TABLES[MANAGER_ACTIVITY_DAILY], settings)
    present = set(existing(con, tuple(reads), schema=schema))
    zone, why = account_time_zone(con, schema=schema)
    metadata = _counts({}, zone, why)
    metadata["kommo/missing_inputs"] = dg.MetadataValue.text(
        ", ".join(n for n in reads if n not in present) or "none"
    )
    return Plan(activity_select_sql(schema=schema, time_zone=zone, present=present), metadata)


def _counts(counts: dict[str, Any], zone: str | None = None, why: str | None = None) -> dict:
    metadata: dict[str, Any] = {
        f"kommo/{k}": dg.MetadataValue.int(int(v)) for k, v in counts.items()
    }
    if zone is not None:
        metadata["kommo/time_zone"] = dg.MetadataValue.text(zone + (f" ({why})" if why else ""))
    return metadata


_PLANS: dict[str, Callable[[duckdb.DuckDBPyConnection, Settings], Plan]] = {
    CHAT_RESPONSE_TIMES: _chat_plan,
    CALLS: _calls_plan,
    MANAGER_ACTIVITY_DAILY: _activity_plan,
}


def refresh_all_accounts(
    con: duckdb.DuckDBPyConnection, names: list[str], *, accounts: dict[str, str]
) -> None:
    """``kommo_all.<name>`` over the accounts ({account: schema}) that have ``name``."""
    for name in names:
        present = {a: s for a, s in accounts.items() if existing(con, (name,), schema=s)}
        if present:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ALL_ACCOUNTS_SCHEMA)}")
            con.execute(cross_account_view_sql(name, present, catalog=None))


def _table_asset(table: ActivityTable, *, settings: Settings) -> dg.AssetsDefinition:
    schema = settings.schema
    scope = AccountScope.of(settings)
    full_name = f"{catalog_name(settings.duckdb_path)}.{schema}.{table.name}"
    reads = _inputs(table, settings)
    relations = [table.name] + ([chats.RESPONSE_VIEW] if table.name == CHAT_RESPONSE_TIMES else [])

    @dg.asset(
        key=scope.asset_key(table.name),
        deps=[scope.asset_key(n) for n in reads],
        description=(
            f"{table.description}\n\nDuckDB table `{schema}.{table.name}`, rebuilt whole from "
            f"{', '.join(f'`{schema}.{n}`' for n in reads)} in one transaction: the current "
            f"truth over everything extracted so far, however the partitions arrived."
        ),
        group_name=scope.group_name,
        kinds=KINDS,
        metadata={
            "dagster/column_schema": table_schema(table),  # type: ignore[arg-type]
            "dagster/table_name": full_name,
            "kommo/key": ", ".join(table.key),
        },
        freshness_policy=freshness_policy(partitioned=False),
        required_resource_keys={"duckdb", "io_manager"},
    )
    def rebuild(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        accounts = dict(getattr(context.resources.io_manager, "account_schemas", {}) or {})
        with context.resources.duckdb.get_connection(on_wait=context.log.info) as con:
            plan = _PLANS[table.name](con, settings)

            def after(con: duckdb.DuckDBPyConnection) -> None:
                if plan.after is not None:
                    plan.after(con)
                refresh_all_accounts(con, relations, accounts=accounts)

            result = replace_slice(
                con,
                table,  # type: ignore[arg-type]
                schema=schema,
                window=None,
                select_sql=plan.select_sql,
                after=after,
                recreate=True,
            )
        _log_bad_input(context, table, plan.metadata)
        context.log.info(f"{full_name}: {result.rows} rows (replaced {result.deleted})")
        return dg.MaterializeResult(metadata=plan.metadata | _written(table, result, full_name))

    return rebuild


def _written(table: ActivityTable, result: WriteResult, full_name: str) -> dict[str, Any]:
    return {
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "dagster/table_name": dg.MetadataValue.text(full_name),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            table_schema(table, actual=list(result.columns))  # type: ignore[arg-type]
        ),
        "kommo/replaced_rows": dg.MetadataValue.int(result.deleted),
    }


_BAD_INPUT = {
    "kommo/messages_without_message_id": "message events without a message id (kept)",
    "kommo/messages_on_unknown_entity_types": "message events on an entity type that is not "
    "lead, contact or customer (skipped)",
    "kommo/params_not_json": "call notes whose params are not JSON (kept, params NULL)",
    "kommo/durations_not_a_number": "call notes whose duration is no integer (kept, NULL)",
}


def _log_bad_input(
    context: dg.AssetExecutionContext, table: ActivityTable, metadata: dict[str, Any]
) -> None:
    for key, what in _BAD_INPUT.items():
        value = metadata.get(key)
        if value is not None and value.value:
            context.log.warning(f"{table.name}: {value.value} {what}")


def _response_view_asset(settings: Settings) -> dg.AssetsDefinition:
    schema = settings.schema
    key = AccountScope.of(settings).asset_key
    deps = [
        key(CHAT_RESPONSE_TIMES),
        *(key(s) for s in ("leads", "contacts") if s in settings.streams),
    ]

    def rebuild(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        zone, _ = account_time_zone(con, schema=schema)
        present = set(existing(con, ("leads_current", "contacts_current"), schema=schema))
        con.execute(chats.response_view_sql(schema=schema, time_zone=zone, present=present))
        return {c.name: c.description for c in chats.RESPONSE_COLUMNS}

    return _view_asset(
        chats.RESPONSE_VIEW,
        settings=settings,
        deps=deps,
        description=(
            "Per user and ISO week of the customers' first message: replies, median and 90th "
            "percentile response seconds, share answered within 5 minutes, unanswered runs."
        ),
        rebuild=rebuild,
    )


def build_activity_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The activity tables of the selected streams, and the response-time view."""
    tables = activity_tables(settings)
    assets = [_table_asset(t, settings=settings) for t in tables]
    if any(t.name == CHAT_RESPONSE_TIMES for t in tables):
        assets.append(_response_view_asset(settings))
    return assets


__all__ = [
    "activity_keys",
    "activity_tables",
    "build_activity_assets",
    "refresh_all_accounts",
]
