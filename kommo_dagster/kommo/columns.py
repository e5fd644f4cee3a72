"""Pages of records as contract columns, gathered into batches for staging.

`columns_of` is what `KommoClient.iter_columns` yields for each page: typed pages transposed
(`kommo_dagster.kommo.decoding`), dict pages by the general rules (`kommo_dagster.kommo.records`),
both in the representation of `to_columns`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kommo_dagster.kommo.decoding import TypedRecord, typed_to_columns
from kommo_dagster.kommo.records import to_columns


def columns_of(stream: str, records: Sequence[Any]) -> dict[str, list]:
    """The contract columns of one page of records, typed or dicts."""
    if records and isinstance(records[0], TypedRecord):
        return typed_to_columns(stream, records)
    return to_columns(stream, records)


class ColumnBatch:
    """Pages of columns gathered into one batch: staging takes thousands of rows at a time."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.rows = 0
        self._columns: dict[str, list] = {name: [] for name in self.names}

    def extend(self, page: Mapping[str, list]) -> None:
        """Append one page's columns (each of the batch's names, all of one length)."""
        for name, column in self._columns.items():
            column.extend(page[name])
        if self.names:
            self.rows += len(page[self.names[0]])

    def take(self) -> dict[str, list]:
        """The batch's columns; the batch starts empty again."""
        columns, self._columns = self._columns, {name: [] for name in self.names}
        self.rows = 0
        return columns


__all__ = ["ColumnBatch", "columns_of"]
