"""The Kommo streams as Dagster assets, built from the one stream declaration.

`build_kommo_assets` makes one asset per stream of `kommo_dagster.kommo.streams.STREAMS`, keyed
``kommo/<stream>`` (``kommo/<account>/<stream>`` with several accounts: `AccountScope`). Each
extracts through the account's `KommoResource` (resource key ``kommo``, or ``kommo_<account>``)
and returns `StagedRows`, which the IO manager (`KommoDuckDBIOManager`) writes to
``<schema>.<stream>`` in one transaction. Every extraction declares the account's concurrency
pool (``kommo``, or ``kommo_<account>``), so a Dagster instance with a pool limit runs one
extraction per account at a time, on whatever machines its runs are launched.

* Incremental streams (by their declared cursor) are daily partitioned in UTC
  (`kommo_dagster.orchestration.partitions`). A run, whether of one partition or of a range
  (``BackfillPolicy.single_run()``), makes ONE extraction over ``context.partition_time_window``
  and replaces exactly that window's rows.
* Full-table streams replace their table on every run; a stream with a parent (statuses of
  each pipeline, elements of each catalog) reads the parent ids from the parent's table.

This module deliberately has no ``from __future__ import annotations``: Dagster reads the
asset functions' annotations (context and resource types) at definition time.
"""

import contextlib
import gc
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from kommo_dagster.kommo.relinks import LINK_EVENTS_STREAM, LinkEvents
from kommo_dagster.kommo.stats import ClientStats, Progress, retries_text
from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.orchestration.accounts import KEY_PREFIX, AccountScope
from kommo_dagster.orchestration.freshness import freshness_policy
from kommo_dagster.orchestration.io_manager import (
    SCHEMA_METADATA_KEY,
    STREAM_METADATA_KEY,
    table_schema,
)
from kommo_dagster.orchestration.link_assets import rewritten_link_metadata
from kommo_dagster.orchestration.partitions import (
    build_daily_partitions,
    report_rows_by_day,
    run_window,
)
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.orchestration.translator import KINDS as TRANSLATOR_KINDS
from kommo_dagster.orchestration.translator import AccountSpecs, asset_arguments
from kommo_dagster.settings import Settings
from kommo_dagster.warehouse.registry import get_table
from kommo_dagster.warehouse.slices import noting_left_as_it_was
from kommo_dagster.warehouse.sql import qualified_table_name
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.windows import EpochWindow

if TYPE_CHECKING:
    # Imported by the resource's `get_client` when a run needs it, not by loading definitions.
    from kommo_dagster.kommo.client import KommoClient


GROUP_NAME = KEY_PREFIX  # the single account's group; several accounts: kommo_<account>
KINDS = set(TRANSLATOR_KINDS["stream"])


def asset_key(stream: str) -> dg.AssetKey:
    """The key of ``stream`` in a single-account code location (`AccountScope.asset_key`)."""
    return AccountScope(None).asset_key(stream)


def build_kommo_assets(
    settings: Settings,
    *,
    streams: Iterable[str] | None = None,
    specs: AccountSpecs | None = None,
) -> list[dg.AssetsDefinition]:
    """One asset per stream (``settings.streams`` by default), in declaration order.

    Incremental streams are daily partitioned unless ``settings.full_table_streams`` switches
    them to an unpartitioned full-table sync.
    """
    partitions_def = build_daily_partitions(settings.start_date)
    names = list(settings.streams) if streams is None else list(streams)
    return [
        build_stream_asset(
            get_stream(name),
            settings=settings,
            partitions_def=partitions_def if settings.is_partitioned(name) else None,
            specs=specs,
        )
        for name in names
    ]


def build_stream_asset(
    stream: Stream,
    *,
    settings: Settings,
    partitions_def: dg.TimeWindowPartitionsDefinition | None,
    specs: AccountSpecs | None = None,
) -> dg.AssetsDefinition:
    """The asset of one stream.

    With ``partitions_def`` the stream is extracted by cursor window and written by slice; with
    ``None`` it is extracted whole and replaces its table (the only choice for full-table
    streams, and possible for incremental ones).
    """
    if partitions_def is not None and not stream.is_incremental:
        raise ValueError(f"{stream.name} is a full-table stream and cannot be partitioned")
    specs = specs or AccountSpecs(settings)
    partitioned = partitions_def is not None
    scope = AccountScope.of(settings)
    spec = specs.spec(
        get_table(stream.name),
        description=_description(stream, settings=settings, partitioned=partitioned),
        metadata=_definition_metadata(stream, settings=settings, specs=specs),
    )
    freshness = freshness_policy(partitioned=partitioned)
    arguments: dict[str, Any] = asset_arguments(spec, freshness=freshness) | dict(
        pool=scope.pool,
        required_resource_keys={scope.resource_key},
        partitions_def=partitions_def,
    )
    if partitioned:
        arguments["backfill_policy"] = dg.BackfillPolicy.single_run()
    if stream.parent:
        arguments["ins"] = {"parent": dg.AssetIn(key=specs.key(stream.parent))}
    compute = _compute(stream, settings=settings, partitioned=partitioned, specs=specs)
    compute.__name__ = stream.name
    with warnings.catch_warnings():
        # backfill_policy is still marked beta in Dagster 1.13, though the CLI relies on it.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(**arguments)(compute)


def _compute(
    stream: Stream, *, settings: Settings, partitioned: bool, specs: AccountSpecs
) -> Callable[..., Any]:
    """The asset's function: extract the stream, or (a child stream) extract it per parent id
    read from the parent's table. Its logs name the stream by its asset key, which a translator
    may have renamed."""
    scope = AccountScope.of(settings)
    name = specs.key(stream.name).to_user_string()
    if stream.parent is None:

        def extract_stream(context: dg.AssetExecutionContext) -> dg.Output[StagedRows]:
            kommo = getattr(context.resources, scope.resource_key)
            return _extract(
                context, kommo, stream, settings=settings, partitioned=partitioned, name=name
            )

        return extract_stream
    parent_name = stream.parent

    def extract_children(context: dg.AssetExecutionContext, parent: Any) -> dg.Output[StagedRows]:
        # ``parent``: the parent's table as a pandas DataFrame (the IO manager's load_input);
        # typed Any so that loading the definitions does not import pandas.
        kommo = getattr(context.resources, scope.resource_key)
        parent_ids = [int(i) for i in parent["id"].dropna()]
        context.log.info(f"{name}: {len(parent_ids)} {parent_name} in the table")
        return _extract(
            context,
            kommo,
            stream,
            settings=settings,
            partitioned=partitioned,
            name=name,
            parent_ids=parent_ids,
        )

    return extract_children


def _extract(
    context: dg.AssetExecutionContext,
    kommo: KommoResource,
    stream: Stream,
    *,
    settings: Settings,
    partitioned: bool,
    name: str,
    parent_ids: Sequence[int] | None = None,
) -> dg.Output[StagedRows]:
    window = run_window(context, partitioned=partitioned)
    label = "full table" if window is None else window.label()
    context.log.info(f"{name} {label}: extracting from {stream.path}")
    staged = StagedRows(
        stream,
        window=window,
        staging_dir=settings.staging_dir,
        memory_limit=settings.memory_limit,
    )
    # Kommo's values reach errors outside the client too (the staging, the link events, the
    # IO manager's write): one scrubber masks the account's token in all of them.
    staged.scrubber = scrubber = kommo.scrubber()
    # The IO manager writes only what this returns: nothing of the slice reached DuckDB.
    with noting_left_as_it_was(_table_name(stream, settings=settings), window):
        return scrubber.call(
            _extract_staged,
            context,
            kommo,
            staged,
            settings=settings,
            name=name,
            parent_ids=parent_ids,
        )


def _extract_staged(
    context: dg.AssetExecutionContext,
    kommo: KommoResource,
    staged: StagedRows,
    *,
    settings: Settings,
    name: str,
    parent_ids: Sequence[int] | None,
) -> dg.Output[StagedRows]:
    stream, window = staged.stream, staged.window

    def log_progress(progress: Progress) -> None:
        context.log.info(f"{name} progress: {progress}")

    with staged, _collector_paused():  # discards the staging file if anything below fails
        with kommo.get_client(progress=log_progress) as client:
            _stage_batches(
                client,
                staged,
                parent_ids=parent_ids,
                name=name,
                log=context.log.info,
                selected=settings.streams,
            )
            stats = client.stats()
        staged.note = (
            f"{stats.requests} requests, {retries_text(stats.retries, unsent=stats.unsent)}, "
            f"{stats.throttled} throttled, "
            f"{stats.elapsed:.1f} s"
        )
        if window is not None:
            _report_partitions(context, staged)
        metadata = _extraction_metadata(stream, window, stats)
        return dg.Output(staged, metadata=metadata | _why_empty(context, staged, name=name))


def _stage_batches(
    client: "KommoClient",
    staged: StagedRows,
    *,
    parent_ids: Sequence[int] | None,
    name: str,
    log: Callable[[str], None],
    selected: Collection[str],
) -> None:
    """Stage the stream's batches of ``staged.window`` as they arrive, with the rows of the link
    tables read from the same pages; for the link events, the links of the records they name
    re-read once the batches are in (links change without ``updated_at``), for the ``selected``
    streams only: another's link table would hold just the few records the events name, with
    no asset of its own."""
    from kommo_dagster.kommo.link_rows import LinkRows  # a run's: msgspec, PyArrow

    stream, window = staged.stream, staged.window
    links = LinkRows(stream.name)  # the link tables read from the same pages, if any
    relinks = LinkEvents(selected) if stream.name == LINK_EVENTS_STREAM else None
    batches = client.iter_batches(
        stream.name,
        start=window.start_datetime if window else None,
        end=window.end_datetime if window else None,
        parent_ids=parent_ids,
        links=links or None,
    )
    for table in batches:
        staged.append(table)
        if relinks is not None:
            relinks.add(table)
        # The batch's values are freed: a young collection now finds little to scan.
        gc.collect(1)
    if links:
        staged.links.append(links)
    if relinks is not None:
        staged.links += relinks.refresh(client)
        log(f"{name}: {relinks.summary()}")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep Python's cyclic collector from running on its own while pages stream in.

    Parsed pages are trees (no cycles), yet every few hundred new containers the collector
    rescans the young ones, pages still being parsed included: a third of the parsing cost, and
    pauses between taking a rate-limit slot and sending the request. Dagster's large, long-lived
    heap is frozen out of it first. The batch loop collects young garbage itself once a batch
    is staged, when its records are already freed.
    """
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _report_partitions(context: dg.AssetExecutionContext, staged: StagedRows) -> None:
    """Per-partition row counts: a range is one write, but each day is its own partition."""
    if len(context.partition_keys) < 2:
        return
    report_rows_by_day(context, staged.rows_by_day())


def _why_empty(
    context: dg.AssetExecutionContext, staged: StagedRows, *, name: str
) -> dict[str, dg.MetadataValue]:
    """Why a stream whose emptiness can be normal (the inbox) landed no rows, said in its log
    and metadata."""
    reason = staged.stream.empty_reason
    if not reason or staged.rows:
        return {}
    context.log.info(f"{name}: no rows. {reason}")
    return {"kommo/empty_reason": dg.MetadataValue.text(reason)}


def _extraction_metadata(
    stream: Stream, window: EpochWindow | None, stats: ClientStats
) -> dict[str, dg.MetadataValue]:
    metadata: dict[str, dg.MetadataValue] = {
        "kommo/requests": dg.MetadataValue.int(stats.requests),
        "kommo/pages": dg.MetadataValue.int(stats.pages),
        "kommo/retries": dg.MetadataValue.int(stats.retries),
        "kommo/throttled": dg.MetadataValue.int(stats.throttled),
        "kommo/extract_seconds": dg.MetadataValue.float(round(stats.elapsed, 3)),
    }
    if stats.unsent:
        # Said where there were some, as the progress line does (`retries_text`): retries that
        # sent no request, without which "0 requests, 3 retries" reads as a contradiction.
        metadata["kommo/retries_not_connected"] = dg.MetadataValue.int(stats.unsent)
    if window is not None:
        metadata["kommo/window_start"] = dg.MetadataValue.timestamp(window.start_datetime)
        metadata["kommo/window_end"] = dg.MetadataValue.timestamp(window.end_datetime)
    return metadata


def _table_name(stream: Stream, *, settings: Settings) -> str:
    return qualified_table_name(settings.duckdb_path, schema=settings.schema, name=stream.name)


def _definition_metadata(
    stream: Stream, *, settings: Settings, specs: AccountSpecs
) -> dict[str, Any]:
    """What the IO manager reads (stream, schema, the link assets its writes rewrite) and what
    the UI shows."""
    table = _table_name(stream, settings=settings)
    links = rewritten_link_metadata(stream.name, settings=settings, specs=specs)
    return links | {
        STREAM_METADATA_KEY: stream.name,
        SCHEMA_METADATA_KEY: settings.schema,
        "dagster/column_schema": table_schema(stream),
        "dagster/table_name": table,
        "kommo/endpoint": f"GET {stream.path}",
        "kommo/sync": stream.sync,
        "kommo/cursor": stream.cursor or "none",
    }


def _description(stream: Stream, *, settings: Settings, partitioned: bool) -> str:
    where = "the response body" if stream.list_key is None else f"`_embedded.{stream.list_key}`"
    query = f"?with={','.join(stream.with_)}" if stream.with_ else ""
    source = f"Kommo `GET {stream.path}{query}` ({where})"
    table = f"DuckDB table `{settings.schema}.{stream.name}`"
    if partitioned:
        how = (
            f"Daily partitions by `{stream.cursor}` in UTC: partition D holds the records whose "
            f"`{stream.cursor}` was in [D, D+1) when extracted; a run replaces exactly its "
            f"window, and a range is one extraction."
        )
        if stream.has_deleted_list:
            how += " Deleted records of the window are included with `is_deleted = true`."
    elif stream.parent:
        how = (
            f"Full table, read once per `{stream.parent}.id` (as `{stream.parent_column}`) from "
            f"the `{stream.parent}` table; each run replaces it."
        )
    else:
        how = "Full table: each run replaces it."
    return f"{stream.holds}\n\n{source} → {table}. {how}"


__all__ = [
    "GROUP_NAME",
    "KINDS",
    "asset_key",
    "build_kommo_assets",
    "build_stream_asset",
]
