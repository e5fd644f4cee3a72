"""What a table declaration says: one relation of the warehouse, its inputs, key and build.

Every relation the project writes is one `Table`: an extracted stream, a long table, a link table, a
derived table, a view. The registry (`kommo_dagster.warehouse.registry`) holds them all; assets,
checks, column schemas, the README's table reference and the refresh after each write are read from
there, never wired by hand.

* ``inputs``: the relations it reads; ``refresh_on`` narrows them to the ones whose writes must
  rebuild it (a wide view follows its definitions, not every write of the leads).
* ``key``: the columns that identify a row (what the duplicate checks group by).
* ``checks`` and ``references``: its data checks beyond ``contract_columns``, by name, and the
  columns pointing into other tables (one warning check each), built by
  `kommo_dagster.orchestration.derived_checks`.
* ``partitioning``: a daily cursor range of its own (streams), the same slices as another
  table (``like``: a derived table is sliced exactly as its parent), or None (whole: a derived
  table without one is rebuilt whole from everything its inputs hold, at each write).
* How it is built: ``select`` (the SELECT of one slice, for derived tables, written by
  `kommo_dagster.derived.write.replace_slice`), ``plan`` (the same, for a table whose SELECT
  depends on what the warehouse holds: it looks first, then gives the SELECT and what to
  report), or ``refresh`` (a function (re)creating it inside the transaction of a write of what
  it reads: views, snapshots). A stream is built by its extraction.
* ``all_accounts``: a derived table or view also united over the accounts in
  ``kommo_all.<name>`` (the streams always are).

Plain Python, no Dagster: the IO manager and the SQL modules import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import duckdb

from kommo_dagster.contract import contract_streams
from kommo_dagster.kommo.streams import Column, Reference

Kind = Literal[
    "stream", "current_view", "history", "all_accounts_view", "long", "link", "derived", "view"
]
# The kinds computed inside DuckDB by a SELECT (assets of their own): from a slice of their
# parent, or whole when they declare no partitioning. A "link" table is not among them: its rows
# come from its parent's pages, and its ``refresh`` writes them in the transaction of the
# parent's slice (`kommo_dagster.warehouse.link_write`).
SLICED_KINDS = frozenset({"long", "derived"})
# The kinds (re)created in the transaction of the writes they follow.
VIEW_KINDS = frozenset({"current_view", "all_accounts_view", "view"})


@dataclass(frozen=True)
class Partitioning:
    """Slices are ranges of ``cursor``: daily of its own, or exactly ``like``'s slices."""

    cursor: str
    like: str | None = None


@dataclass(frozen=True)
class ViewColumn:
    """A column of a view whose columns are fixed by its SQL: its DuckDB type is declared with
    it, so the asset shows the view's schema before the view is first built."""

    name: str
    type: str
    description: str


@dataclass(frozen=True, kw_only=True)
class RefreshContext:
    """What a refresh sees: the write's connection and transaction, and the write itself."""

    con: duckdb.DuckDBPyConnection
    schema: str
    catalog: str | None = None
    # A full-table write takes a history snapshot at ``snapshot_at``, kept ``retention_days``.
    full_table: bool = False
    snapshot_at: datetime | None = None
    retention_days: int | None = None
    account_schemas: Mapping[str, str] = field(default_factory=dict)
    # The relation written, and the link rows read with it (`kommo_dagster.kommo.links.LinkRows`,
    # written by the link tables' declarations).
    written: str | None = None
    links: Sequence[Any] = ()


@dataclass(frozen=True, kw_only=True)
class PlanContext:
    """What a ``plan`` sees: the write's connection, its schema and slice (None: whole), and
    those of the table's inputs the code location defines (the ones it may read)."""

    con: duckdb.DuckDBPyConnection
    schema: str
    window: Any = None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class WritePlan:
    """A write worked out from what the warehouse holds: its SELECT, and what it reports
    (``counts`` and ``notes`` become ``kommo/<name>`` metadata, ``warnings`` are logged)."""

    select_sql: str
    counts: Mapping[str, int] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


Select = Callable[..., str]  # (schema=, window=) -> SELECT of the slice
Plan = Callable[[PlanContext], WritePlan]
Refresh = Callable[[RefreshContext], Any]


@dataclass(frozen=True, kw_only=True, eq=False)
class Table:
    """One relation of the warehouse, declared once (compared by identity: one object each)."""

    name: str
    kind: Kind
    description: str
    inputs: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    partitioning: Partitioning | None = None
    # The contract's columns; empty for a view whose columns follow what it reads.
    columns: tuple[Column, ...] = ()
    select: Select | None = None
    plan: Plan | None = None
    # A count of the input rows the select had to skip (reported, never an error).
    skipped: Select | None = None
    refresh: Refresh | None = None
    refresh_on: tuple[str, ...] | None = None
    # The columns of a view whose columns its SQL fixes (a wide view's follow the custom
    # fields: none declared).
    view_columns: tuple[ViewColumn, ...] = ()
    # Data checks beyond ``contract_columns``, by name (a link table's declaration adds the
    # ones every link table gets).
    checks: tuple[str, ...] = ()
    # Columns holding keys of rows of another table: each gets a check, warning when a row
    # points to a record the warehouse lacks (never enforced: the row is kept and counted).
    references: tuple[Reference, ...] = ()
    all_accounts: bool = False
    # A view defined only when the streams behind every relation it reads are selected (its
    # joins mean nothing without them); other views need only the derived tables they read.
    needs_all_inputs: bool = False
    # Relations read for a setting rather than for rows (``account``: its time zone): upstream
    # assets when selected, but never inputs, triggers, nor a reason to define the table.
    also_reads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind in SLICED_KINDS and (self.select is None) == (self.plan is None):
            raise ValueError(
                f"{self.name}: a {self.kind} table declares select and partitioning, or plan"
            )
        if self.kind in SLICED_KINDS and self.partitioning is not None and self.plan is not None:
            raise ValueError(f"{self.name}: a sliced table declares select, not plan")
        if self.kind in VIEW_KINDS and self.refresh is None:
            raise ValueError(f"{self.name}: a {self.kind} declares refresh")
        names = {c.name for c in self.columns}
        missing = [k for k in self.key if names and k not in names]
        if missing:
            raise ValueError(f"{self.name}: key columns {missing} are not among its columns")
        unknown = [c for r in self.references for c in r.columns if c not in names]
        if unknown:
            raise ValueError(f"{self.name}: reference columns {unknown} are not among its columns")

    @property
    def column_descriptions(self) -> dict[str, str]:
        """The declared view columns' descriptions, by name."""
        return {c.name: c.description for c in self.view_columns}

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def sliced(self) -> bool:
        """Computed slice by slice, as its parent (a computed table without partitioning is
        rebuilt whole)."""
        return self.kind in SLICED_KINDS and self.partitioning is not None

    @property
    def rebuilt_whole(self) -> bool:
        return self.kind in SLICED_KINDS and self.partitioning is None

    @property
    def cursor(self) -> str:
        """The column a slice is a range of (derived tables)."""
        if self.partitioning is None:
            raise ValueError(f"{self.name} is not sliced")
        return self.partitioning.cursor

    @property
    def parent(self) -> str:
        """The table whose slices this one follows."""
        if self.partitioning is None or self.partitioning.like is None:
            raise ValueError(f"{self.name} follows no parent's slices")
        return self.partitioning.like

    @property
    def triggers(self) -> tuple[str, ...]:
        """The relations whose writes rebuild this one (views, snapshots)."""
        if self.refresh is None:
            return ()
        return self.inputs if self.refresh_on is None else self.refresh_on


def _contract_entry(name: str) -> dict[str, Any]:
    try:
        return contract_streams()[name]
    except KeyError:
        raise KeyError(f"{name!r} has no entry in the contract") from None


def contract_columns(name: str) -> tuple[Column, ...]:
    """The columns the contract gives table ``name``."""
    return tuple(Column.from_contract(c) for c in _contract_entry(name)["columns"])


def contract_table(
    name: str,
    *,
    kind: Kind,
    key: tuple[str, ...],
    extra_columns: tuple[Column, ...] = (),
    **declared: Any,
) -> Table:
    """A table whose description, parent, cursor and columns are the contract's entry (the
    entries with ``derived_from``); the declaration adds what the contract leaves to code, and
    ``extra_columns`` after the contract's. A null ``cursor``: rebuilt whole, not sliced."""
    spec = _contract_entry(name)
    parent = spec["derived_from"]
    declared.setdefault("inputs", (parent,))
    cursor = spec["cursor"]
    return Table(
        name=name,
        kind=kind,
        description=spec["description"],
        key=key,
        partitioning=Partitioning(cursor, like=parent) if cursor is not None else None,
        columns=contract_columns(name) + extra_columns,
        **declared,
    )


@cache
def sql_text(package: str, file: str) -> str:
    """The text of a named ``.sql`` file shipped with ``package``."""
    return resources.files(package).joinpath(file).read_text(encoding="utf-8")


def refresh_order(tables: Mapping[str, Table], written: str) -> list[Table]:
    """The relations to rebuild after a write of ``written``, each after what it reads.

    A relation is due when one of its triggers was written or is due itself; due relations come
    in dependency order, declaration order among equals.
    """
    names = {written}
    due: list[Table] = []
    grew = True
    while grew:
        new = [t for t in tables.values() if t not in due and names.intersection(t.triggers)]
        due += new
        names |= {t.name for t in new}
        grew = bool(new)
    ordered: list[Table] = []
    while due:
        ready = [t for t in due if not {d.name for d in due if d is not t} & set(t.inputs)]
        if not ready:
            raise RuntimeError(f"the relations {[t.name for t in due]} read each other")
        ordered.append(ready[0])
        due.remove(ready[0])
    return ordered


__all__ = [
    "SLICED_KINDS",
    "VIEW_KINDS",
    "Kind",
    "Partitioning",
    "Plan",
    "PlanContext",
    "RefreshContext",
    "Table",
    "WritePlan",
    "contract_columns",
    "contract_table",
    "refresh_order",
    "sql_text",
]
