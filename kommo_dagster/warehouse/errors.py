"""What goes wrong in the warehouse: one base error, so a caller can catch them all."""

from __future__ import annotations


class WarehouseError(RuntimeError):
    """A write to the DuckDB warehouse could not be done as asked."""


class TableSchemaMismatch(WarehouseError):
    """An existing table's columns differ from the contract."""


__all__ = [
    "TableSchemaMismatch",
    "WarehouseError",
]
