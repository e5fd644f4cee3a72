"""The table registry: every relation of an account's schema, declared once, in one mapping.

`TABLES` holds, in this order, per extracted stream (`kommo_dagster.kommo.streams`): its table,
its ``<stream>_current`` view (incremental streams), its ``<stream>_history`` snapshots and its
``kommo_all`` views over the accounts; then the link tables read from the streams' pages
(`kommo_dagster.kommo.links`), written by the writes of their parents, and their ``kommo_all``
views; then the derived tables and views
(`kommo_dagster.derived.declaration`), and the ``kommo_all`` views of those declared
``all_accounts``. A write asks `refresh_after_write` what follows it, in
its own transaction: the relations whose triggers it wrote, each after what it reads.

Plain Python on the warehouse side, below every Dagster module: the IO manager and the derived
assets import it, and it imports nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import duckdb

from kommo_dagster.derived import declaration
from kommo_dagster.kommo.links import LINK_TABLES, LinkTable
from kommo_dagster.kommo.relinks import LINK_EVENTS_STREAM
from kommo_dagster.kommo.streams import STREAMS, Stream
from kommo_dagster.warehouse.all_accounts import (
    ALL_ACCOUNTS_SCHEMA,
    refresh_cross_account_view,
    relation_names,
)
from kommo_dagster.warehouse.link_write import write_link_table
from kommo_dagster.warehouse.tables import Partitioning, RefreshContext, Table, refresh_order
from kommo_dagster.warehouse.views import (
    append_history,
    current_view_inputs,
    current_view_name,
    ensure_current_view,
    has_current_view,
    history_table_name,
)

NO_HISTORY = {"rows": 0, "purged": 0}


def _stream_table(stream: Stream) -> Table:
    incremental = stream.is_incremental and stream.cursor is not None
    return Table(
        name=stream.name,
        kind="stream",
        description=stream.description,
        inputs=(stream.parent,) if stream.parent else (),
        key=stream.key,
        partitioning=Partitioning(stream.cursor) if incremental and stream.cursor else None,
        columns=stream.columns,
    )


def _current_view(stream: Stream) -> Table:
    return Table(
        name=current_view_name(stream),
        kind="current_view",
        description=f"The latest version of each live record of {stream.name}.",
        inputs=current_view_inputs(stream),
        key=("id",),
        refresh_on=(stream.name,),
        refresh=lambda ctx: ensure_current_view(
            ctx.con, stream, schema=ctx.schema, catalog=ctx.catalog
        ),
    )


def _history(stream: Stream) -> Table:
    def refresh(ctx: RefreshContext) -> dict[str, int]:
        if not ctx.full_table or ctx.snapshot_at is None or ctx.retention_days is None:
            return dict(NO_HISTORY)
        return append_history(
            ctx.con,
            stream,
            schema=ctx.schema,
            snapshot_at=ctx.snapshot_at,
            retention_days=ctx.retention_days,
            catalog=ctx.catalog,
        )

    return Table(
        name=history_table_name(stream),
        kind="history",
        description=f"Snapshots of {stream.name} taken at each full-table write.",
        inputs=(stream.name,),
        refresh=refresh,
    )


def _cross_account_view(relation: str) -> Table:
    return Table(
        name=f"{ALL_ACCOUNTS_SCHEMA}.{relation}",
        kind="all_accounts_view",
        description=f"{relation} of every account, with the account's name.",
        inputs=(relation,),
        refresh=lambda ctx: refresh_cross_account_view(
            ctx.con, relation, schemas=ctx.account_schemas, catalog=ctx.catalog
        ),
    )


def _stream_relations(stream: Stream) -> list[Table]:
    tables = [_stream_table(stream)]
    if has_current_view(stream):
        tables.append(_current_view(stream))
    tables.append(_history(stream))
    return tables + [_cross_account_view(name) for name in relation_names(stream)]


def link_table(link: LinkTable) -> Table:
    """A link table's declaration: its rows are read with its parent's pages (and, for the
    records the day's link events name, with the events), staged beside the write's rows; a
    write of either writes them in its transaction (`kommo_dagster.warehouse.link_write`)."""

    def refresh(ctx: RefreshContext) -> int | None:
        return write_link_table(
            ctx.con,
            link,
            ctx.links,
            schema=ctx.schema,
            written=ctx.written,
            full_table=ctx.full_table,
        )

    return Table(
        name=link.name,
        kind="link",
        description=link.description,
        inputs=(link.parent,),
        key=link.key,
        columns=link.columns,
        # Every link table's key is checked for duplicates; its declaration names the rest.
        checks=(declaration.NO_DUPLICATE_KEYS, *link.checks),
        references=link.references,
        # The events' write refreshes the links a /links answer holds (not the sources).
        refresh_on=(link.parent, LINK_EVENTS_STREAM) if link.to_entity_type else (link.parent,),
        refresh=refresh,
    )


def _link_relations() -> list[Table]:
    links = [link_table(t) for t in LINK_TABLES.values()]
    return links + [_cross_account_view(t.name) for t in links]


@cache
def _build(streams: tuple[Stream, ...], derived: tuple[Table, ...]) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    united = [_cross_account_view(t.name) for t in derived if t.all_accounts]
    relations = [*(t for s in streams for t in _stream_relations(s)), *_link_relations()]
    for table in [*relations, *derived, *united]:
        if table.name in tables:
            raise RuntimeError(f"the table {table.name!r} is declared twice")
        tables[table.name] = table
    for table in tables.values():
        unknown = [name for name in (*table.inputs, *table.also_reads) if name not in tables]
        if unknown:
            raise RuntimeError(f"{table.name} reads undeclared relations {unknown}")
    return tables


_last: tuple[tuple[Stream, ...], tuple[Table, ...], dict[str, Table]] | None = None


def _current() -> dict[str, Table]:
    """The relations of the declarations now. Asked thousands of times while definitions load:
    the last answer is kept while the same declarations (by identity) are in place, since hashing
    every declaration for `_build`'s cache cost more than all the rest of a lookup."""
    global _last
    streams, derived = tuple(STREAMS.values()), declaration.DECLARATIONS
    last = _last
    if (
        last is not None
        and last[1] is derived
        and len(last[0]) == len(streams)
        and all(a is b for a, b in zip(last[0], streams, strict=True))
    ):
        return last[2]
    tables = _build(streams, derived)
    _last = (streams, derived, tables)
    return tables


def link_relations() -> list[Table]:
    """The link tables (`kommo_dagster.kommo.links`), in their order."""
    return [TABLES[name] for name in LINK_TABLES]


def derived_relations() -> list[Table]:
    """The derived tables and views (`kommo_dagster.derived.declaration`), in their order."""
    return list(declaration.DECLARATIONS)


class _Registry(Mapping[str, Table]):
    """The relations of the tables declared now (one declared at run time included)."""

    def _tables(self) -> dict[str, Table]:
        return _current()

    def __getitem__(self, name: str) -> Table:
        return self._tables()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables())

    def __len__(self) -> int:
        return len(self._tables())


TABLES: Mapping[str, Table] = _Registry()


def get_table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None


def refreshed_after(written: str) -> list[Table]:
    """What a write of ``written`` rebuilds, in the order it is rebuilt."""
    return refresh_order(_current(), written)


def refresh_after_write(
    con: duckdb.DuckDBPyConnection, written: str, *, schema: str, **write: Any
) -> dict[str, Any]:
    """Rebuild, in the caller's transaction, every relation that follows a write of
    ``written`` into ``schema``; ``write`` fills the rest of the `RefreshContext`. Returns each
    refresh's result by relation name."""
    ctx = RefreshContext(con=con, schema=schema, written=written, **write)
    return {t.name: t.refresh(ctx) for t in refreshed_after(written) if t.refresh is not None}


_current()  # a declaration error fails the import, not the first write


__all__ = [
    "TABLES",
    "derived_relations",
    "get_table",
    "link_relations",
    "link_table",
    "refresh_after_write",
    "refreshed_after",
]
