"""The DuckDB IO manager of the Kommo assets, and the DuckDB resource it writes through.

`KommoDuckDBIOManager` stores each stream in ``<schema>.<stream>`` of one DuckDB file (the schema is
the asset's ``kommo/schema`` metadata: ``kommo``, or ``kommo_<account>``). A partitioned output
replaces the rows whose cursor lies in the output's time window (one partition, or a whole range for
a single-run backfill); an unpartitioned output replaces the table. Each write is one transaction
(see `kommo_dagster.warehouse` for why and how), and the table is created from the contract even
when there are no rows. In the same transaction, the write rebuilds what the table registry
(`kommo_dagster.warehouse.registry`) says follows it: the stream's current view and history
snapshot, its ``kommo_all`` views with several accounts (``account_schemas``), the wide view of a
definitions stream, the link tables whose rows were read with it. Once it committed, a write
that rewrote another asset's link table (the events' relinks) observes that link asset
(`RewrittenLinks`).

Concurrent runs: every connection goes through `KommoDuckDBResource`, which holds a lock file next
to the database (``<file>.lock``) from connect to close. DuckDB admits one writing process per
file; with the lock, a second run launched at the same time (or the parallel steps of one run
under the multiprocess executor) waits its turn, up to ``lock_timeout`` seconds, instead of
failing. Extraction happens before the lock is taken, so runs only queue for the short local
write, not for the API.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from kommo_dagster.duckdb_path import check_database_name
from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.settings import DEFAULT_HISTORY_RETENTION_DAYS, DEFAULT_SCHEMA, SETTING
from kommo_dagster.warehouse.errors import WarehouseError
from kommo_dagster.warehouse.locks import connect
from kommo_dagster.warehouse.registry import get_table, refresh_after_write
from kommo_dagster.warehouse.slices import WriteResult, noting_left_as_it_was, read_slice
from kommo_dagster.warehouse.sql import (
    ContractTable,
    catalog_name,
    declared_columns,
    qualified_table_name,
    scalar_int,
    table_exists,
    table_ref,
)
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.views import history_table_name
from kommo_dagster.warehouse.windows import EpochWindow

if TYPE_CHECKING:
    import pandas as pd

STREAM_METADATA_KEY = "kommo/stream"
SCHEMA_METADATA_KEY = "kommo/schema"
# Definition metadata ``kommo/link_asset/<table>``: the key of a link asset the writes rewrite.
LINK_ASSET_METADATA_PREFIX = "kommo/link_asset/"


class KommoDuckDBResource(DuckDBResource):
    """`dagster_duckdb.DuckDBResource` that takes turns with the project's other connections.

    Use it in your own assets and checks to query the warehouse: ``with duckdb.get_connection()
    as con: con.sql("FROM kommo.leads")``. Its connections hold the lock file next to the
    database for as long as they are open, so keep them short.
    """

    lock_timeout: float = Field(
        default=600.0,
        description="Seconds to wait for the database file (another run, or another program "
        "holding it open) before failing.",
    )

    @contextlib.contextmanager
    def get_connection(  # type: ignore[override]
        self, *, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection holding the file; ``on_wait`` hears once if it has to wait for it."""
        with connect(
            self.database,
            timeout=self.lock_timeout,
            config=self.connection_config,
            on_wait=on_wait,
        ) as con:
            yield con


class KommoDuckDBIOManager(dg.ConfigurableIOManager):
    """Writes Kommo streams into ``<schema>.<stream>`` tables, one transaction per output.

    Outputs are `kommo_dagster.warehouse.StagedRows` (what the Kommo assets return) or pandas
    DataFrames holding the contract's columns. Inputs load as DataFrames with nullable types
    (``Int64``, ``boolean``), restricted to the downstream partition's window when partitioned.
    """

    duckdb: KommoDuckDBResource
    schema_name: str = Field(
        default=DEFAULT_SCHEMA,
        description="DuckDB schema of the tables of assets without kommo/schema metadata.",
    )
    account_schemas: dict[str, str] = Field(
        default_factory=dict,
        description="{account: schema} of a code location with several accounts; their tables "
        "are united in the kommo_all views.",
    )
    history_retention_days: int = Field(
        default=DEFAULT_HISTORY_RETENTION_DAYS,
        description="Days of full-table snapshots kept in <stream>_history "
        "(KOMMO_HISTORY_RETENTION_DAYS).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        for schema in {self.schema_name, *self.account_schemas.values()}:
            check_database_name(
                self.duckdb.database,
                schema=schema,
                label=SETTING["duckdb_path"].env,
                schema_label=SETTING["schema"].env,
            )

    # -- outputs -----------------------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: StagedRows | pd.DataFrame) -> None:
        scrubber = obj.scrubber if isinstance(obj, StagedRows) else None
        if scrubber is None:
            self._handle_output(context, obj)
        else:  # the write's errors may quote staged values, which may hold the token
            scrubber.call(self._handle_output, context, obj)

    def _handle_output(self, context: dg.OutputContext, obj: StagedRows | pd.DataFrame) -> None:
        stream = _stream_of(context)
        schema = self._schema_of(context)
        window = _window_of(context)
        table_name = qualified_table_name(self.duckdb.database, schema=schema, name=stream.name)
        with noting_left_as_it_was(table_name, window):
            staged = self._as_staged(stream, obj, window=window)
        try:
            with noting_left_as_it_was(table_name, window):
                rewritten = RewrittenLinks.declared(context)
                _check_staged(context, staged, stream=stream, window=window)
            refreshed: dict[str, Any] = {}

            def refresh(con: duckdb.DuckDBPyConnection) -> None:
                # Same transaction as the rows: views and snapshots never disagree with them.
                refreshed.update(
                    refresh_after_write(
                        con,
                        stream.name,
                        schema=schema,
                        full_table=window is None,
                        snapshot_at=datetime.now(UTC),
                        retention_days=self.history_retention_days,
                        account_schemas=self.account_schemas,
                        links=tuple(staged.links),
                    )
                )
                rewritten.count(con, refreshed, schema=schema)

            result = staged.write(
                self.duckdb.database,
                schema=schema,
                timeout=self.duckdb.lock_timeout,
                on_wait=context.log.info,
                after=refresh,
            )
        finally:
            staged.discard()
        history = refreshed.get(history_table_name(stream)) or {}
        self._report(context, stream, result, schema=schema, window=window, history=history)
        _report_links(context, refreshed)
        prefix = f"{catalog_name(self.duckdb.database)}.{schema}"
        # Committed: the link assets the write rewrote for other assets may now say so.
        rewritten.observe(context, table_prefix=prefix, slice_label=_label(window))
        note = f"; {staged.note}" if staged.note else ""
        context.log.info(
            f"{context.asset_key.to_user_string()} {_label(window)}: {result.rows} rows "
            f"-> {table_name} (replaced {result.deleted}{note})"
        )

    def _report(
        self,
        context: dg.OutputContext,
        stream: Stream,
        result: WriteResult,
        *,
        schema: str,
        window: EpochWindow | None,
        history: dict[str, int],
    ) -> None:
        """The write's metadata, and a warning for the repeated rows it dropped."""
        table_name = qualified_table_name(self.duckdb.database, schema=schema, name=stream.name)
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(result.rows),
                "dagster/table_name": dg.MetadataValue.text(table_name),
                "dagster/column_schema": dg.MetadataValue.table_schema(
                    table_schema(stream, actual=list(result.columns))
                ),
                "kommo/slice": dg.MetadataValue.text(_label(window)),
                "kommo/replaced_rows": dg.MetadataValue.int(result.deleted),
                "kommo/table_row_count": dg.MetadataValue.int(result.table_rows),
                "kommo/duplicate_rows_dropped": dg.MetadataValue.int(result.duplicates),
                "kommo/database": dg.MetadataValue.path(str(self.duckdb.database)),
            }
        )
        if window is None:
            context.add_output_metadata(
                {
                    "kommo/history_table": dg.MetadataValue.text(
                        f"{schema}.{history_table_name(stream)}"
                    ),
                    "kommo/history_purged_rows": dg.MetadataValue.int(history.get("purged", 0)),
                }
            )
        if result.duplicates:
            context.log.warning(
                f"{context.asset_key.to_user_string()} {_label(window)}: dropped "
                f"{result.duplicates} repeated rows (same {', '.join(stream.key)}) before writing"
            )

    def _schema_of(self, context: dg.OutputContext | dg.InputContext) -> str:
        name = _metadata_of(context).get(SCHEMA_METADATA_KEY)
        if isinstance(name, dg.TextMetadataValue):
            name = name.value
        return str(name) if name else self.schema_name

    @staticmethod
    def _as_staged(
        stream: Stream, obj: StagedRows | pd.DataFrame, *, window: EpochWindow | None
    ) -> StagedRows:
        if isinstance(obj, StagedRows):
            return obj
        # A DataFrame exists only if pandas was imported: no need to import it to ask.
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(obj, pd.DataFrame):
            missing = [c for c in stream.column_names if c not in obj.columns]
            if missing:
                raise WarehouseError(f"{stream.name}: the DataFrame lacks columns {missing}")
            extra = [c for c in obj.columns if c not in stream.column_names]
            if extra:
                raise WarehouseError(
                    f"{stream.name}: the DataFrame has columns the contract lacks {extra}; "
                    "drop them, or keep them in a table of your own"
                )
            frame = obj[list(stream.column_names)].astype(object)
            # A batch DuckDB refuses closes the staging instance it was going into.
            with StagedRows(stream, window=window) as staged:
                staged.append(
                    {name: frame[name].where(frame[name].notna(), None).tolist() for name in frame}
                )
            return staged
        raise WarehouseError(
            f"{stream.name}: the IO manager stores StagedRows or DataFrames, got {type(obj)!r}"
        )

    # -- inputs ------------------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        stream = _stream_of(context)
        schema = self._schema_of(context)
        window = _window_of(context)
        with self.duckdb.get_connection(on_wait=context.log.info) as con:
            if not table_exists(con, schema=schema, table=stream.name):
                upstream = context.upstream_output.asset_key if context.upstream_output else None
                name = upstream.to_user_string() if upstream else stream.name
                raise WarehouseError(
                    f"{schema}.{stream.name} does not exist yet in "
                    f"{self.duckdb.database}: materialize {name} first"
                )
            return read_slice(con, stream, schema=schema, window=window)


def table_schema(
    stream: ContractTable, *, actual: list[tuple[str, str]] | None = None
) -> dg.TableSchema:
    """The table's ``dagster/column_schema``: contract descriptions, DuckDB types.

    With ``actual`` (the columns read back from DuckDB) the types are what the table really has,
    so a schema-change check compares reality, not the declaration.
    """
    descriptions = {c.name: c.description for c in stream.columns}
    pairs = actual if actual is not None else declared_columns(stream)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=data_type, description=descriptions.get(name))
            for name, data_type in pairs
        ]
    )


def _check_staged(
    context: dg.OutputContext, staged: StagedRows, *, stream: Stream, window: EpochWindow | None
) -> None:
    """The rows handed over are the asset's stream, extracted for the output's window."""
    if staged.stream.name != stream.name:
        raise WarehouseError(
            f"{context.asset_key.to_user_string()} got rows of {staged.stream.name}"
        )
    if staged.window != window:
        raise WarehouseError(
            f"{stream.name}: rows were extracted for {_label(staged.window)} but the "
            f"output is {_label(window)}"
        )


def _metadata_of(context: dg.OutputContext | dg.InputContext) -> dict[str, Any]:
    """The definition metadata of the asset written, or for an input, of the asset read."""
    metadata: dict[str, Any] = dict(context.definition_metadata or {})
    if isinstance(context, dg.InputContext) and context.upstream_output is not None:
        metadata = dict(context.upstream_output.definition_metadata or {}) | metadata
    return metadata


def _report_links(context: dg.OutputContext, refreshed: dict[str, Any]) -> None:
    """The rows the write gave each link table read with it (the registry's link refreshes)."""
    links = {n: v for n, v in refreshed.items() if v is not None and get_table(n).kind == "link"}
    if links:
        context.add_output_metadata(
            {f"kommo/link_rows/{name}": dg.MetadataValue.int(n) for name, n in links.items()}
        )


def _declared_link_keys(metadata: Mapping[str, Any]) -> dict[str, dg.AssetKey]:
    """``{table: key}`` of the link assets the written asset's metadata names."""
    keys = {}
    for name, value in metadata.items():
        if name.startswith(LINK_ASSET_METADATA_PREFIX):
            key = value.value if isinstance(value, dg.DagsterAssetMetadataValue) else value
            keys[name.removeprefix(LINK_ASSET_METADATA_PREFIX)] = dg.AssetKey.from_coercible(key)
    return keys


@dataclass
class RewrittenLinks:
    """The link tables of other assets that one write rewrote (the events' relinks).

    A link asset records its parent's writes in its parent's runs; the events' write rewrites
    link rows too, and without a record the link asset's page would show stale row counts. The
    asset written names those link assets in its definition metadata
    (``kommo/link_asset/<table>``, made through `AccountSpecs.key`, so translated and account
    keys hold). Counted inside the write's transaction, observed only once it committed: an
    observation, because a materialization would start the automation downstream.
    """

    keys: Mapping[str, dg.AssetKey]
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # (rewritten, total)

    @classmethod
    def declared(cls, context: dg.OutputContext) -> RewrittenLinks:
        return cls(_declared_link_keys(_metadata_of(context)))

    def count(
        self, con: duckdb.DuckDBPyConnection, refreshed: Mapping[str, Any], *, schema: str
    ) -> None:
        """Count the rows of each named table the write rewrote (its refresh gave a row
        count; None: no collector of the write reads it, so nothing changed)."""
        for name in self.keys:
            rewritten = refreshed.get(name)
            if rewritten is not None:
                total = scalar_int(con, f"SELECT count(*) FROM {table_ref(schema, name)}")
                self.counts[name] = (int(rewritten), total)

    def observe(self, context: dg.OutputContext, *, table_prefix: str, slice_label: str) -> None:
        """Log the observations; call only after the write committed. Unpartitioned: the rows
        rewritten belong to parents of any day, not to one partition of the link asset."""
        writer = context.asset_key.to_user_string()
        for name, (rewritten, total) in self.counts.items():
            description = (
                f"{rewritten} rows rewritten by {writer} {slice_label} in run "
                f"{context.run_id[:8]}: the current links of the records its link events name"
            )
            metadata = {
                "kommo/link_rows_rewritten": dg.MetadataValue.int(rewritten),
                "kommo/table_row_count": dg.MetadataValue.int(total),
                "dagster/table_name": dg.MetadataValue.text(f"{table_prefix}.{name}"),
                "kommo/rewritten_by": dg.MetadataValue.asset(context.asset_key),
                "kommo/rewritten_by_slice": dg.MetadataValue.text(slice_label),
            }
            context.log_event(
                dg.AssetObservation(
                    asset_key=self.keys[name], description=description, metadata=metadata
                )
            )


def _stream_of(context: dg.OutputContext | dg.InputContext) -> Stream:
    name = _metadata_of(context).get(STREAM_METADATA_KEY)
    if isinstance(name, dg.TextMetadataValue):
        name = name.value
    try:
        return get_stream(str(name) if name else context.asset_key.path[-1])
    except KeyError:
        # The definitions' io_manager is this one: an asset of the user's that returns a value
        # (None too, when not annotated) or reads another's as an input arrives here.
        raise WarehouseError(
            f"{context.asset_key.to_user_string()} is not a Kommo stream: the code location's "
            "io_manager stores only the Kommo streams' tables. An asset of yours that writes "
            "through the duckdb resource should return a dg.MaterializeResult (or be annotated "
            "-> None, and depend on others through deps); one that hands values to others needs "
            "an io_manager_key of its own."
        ) from None


def _window_of(context: dg.OutputContext | dg.InputContext) -> EpochWindow | None:
    if not context.has_asset_partitions:
        return None
    return EpochWindow.from_time_window(context.asset_partitions_time_window)


def _label(window: EpochWindow | None) -> str:
    return "full table" if window is None else window.label()


__all__ = [
    "LINK_ASSET_METADATA_PREFIX",
    "SCHEMA_METADATA_KEY",
    "STREAM_METADATA_KEY",
    "KommoDuckDBIOManager",
    "KommoDuckDBResource",
    "table_schema",
]
