"""What a table declaration says: one relation of the warehouse, its inputs, key and build.

Every relation the project writes is one `Table`: an extracted stream, a long table, a link table, a
derived table, a view. The registry (`kommo_dagster.warehouse.registry`) holds them all; assets,
checks, column schemas, the README's table reference and the refresh after each write are read from
there, never wired by hand.

* ``inputs``: the relations it reads; ``refresh_on`` narrows them to the ones whose writes must
  rebuild it (a wide view follows its definitions, not every write of the leads).
* ``key``: the columns that identify a row (what the duplicate checks group by).
* ``partitioning``: a daily cursor range of its own (streams), the same slices as another
  table (``like``: a derived table is sliced exactly as its parent), or None (whole).
* How it is built: ``select`` (the SELECT of one slice, for derived tables, written by
  `kommo_dagster.derived.write.replace_slice`) or ``refresh`` (a function (re)creating it inside
  the transaction of a write of what it reads: views, snapshots). A stream is built by its
  extraction.

Plain Python, no Dagster: the IO manager and the SQL modules import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import duckdb

from kommo_dagster.contract import contract_streams
from kommo_dagster.kommo.streams import Column

Kind = Literal[
    "stream", "current_view", "history", "all_accounts_view", "long", "link", "derived", "view"
]
# The kinds computed inside DuckDB from a slice of their parent (assets of their own).
SLICED_KINDS = frozenset({"long", "derived", "link"})
# The kinds (re)created in the transaction of the writes they follow.
VIEW_KINDS = frozenset({"current_view", "all_accounts_view", "view"})


@dataclass(frozen=True)
class Partitioning:
    """Slices are ranges of ``cursor``: daily of its own, or exactly ``like``'s slices."""

    cursor: str
    like: str | None = None


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


Select = Callable[..., str]  # (schema=, window=) -> SELECT of the slice
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
    # A count of the input rows the select had to skip (reported, never an error).
    skipped: Select | None = None
    refresh: Refresh | None = None
    refresh_on: tuple[str, ...] | None = None
    # Column descriptions of a view whose columns are declared here rather than in the contract.
    column_descriptions: Mapping[str, str] = field(default_factory=dict)
    # Data checks beyond the ones every table of its kind gets, by name.
    checks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind in SLICED_KINDS and (self.select is None or self.partitioning is None):
            raise ValueError(f"{self.name}: a {self.kind} table declares select and partitioning")
        if self.kind in VIEW_KINDS and self.refresh is None:
            raise ValueError(f"{self.name}: a {self.kind} declares refresh")
        names = {c.name for c in self.columns}
        missing = [k for k in self.key if names and k not in names]
        if missing:
            raise ValueError(f"{self.name}: key columns {missing} are not among its columns")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

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


def contract_table(name: str, *, kind: Kind, key: tuple[str, ...], **declared: Any) -> Table:
    """A table whose description, parent, cursor and columns are the contract's entry (the
    entries with ``derived_from``); the declaration adds what the contract leaves to code."""
    spec = _contract_entry(name)
    parent = spec["derived_from"]
    declared.setdefault("inputs", (parent,))
    return Table(
        name=name,
        kind=kind,
        description=spec["description"],
        key=key,
        partitioning=Partitioning(spec["cursor"], like=parent),
        columns=contract_columns(name),
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
    "RefreshContext",
    "Table",
    "contract_columns",
    "contract_table",
    "refresh_order",
    "sql_text",
]
