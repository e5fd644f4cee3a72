"""Staged rows whose write fails midway, for the tests that a failed write changes nothing."""

from __future__ import annotations

from typing import Any

import duckdb

from kommo_dagster.warehouse.staging import StagedRows

MISSING = "relation_that_does_not_exist"


class FailingStagedRows(StagedRows):
    """Stages rows like the real thing; the write then meets a relation that does not exist
    after its DELETE and a first INSERT have run, so only the transaction can undo them.

    The relation joins the sources only once the repeats are dropped: that step reads every
    source before the write begins, and failing there would test nothing."""

    _repeats_dropped = False

    def _drop_repeats(self, con: duckdb.DuckDBPyConnection) -> None:
        super()._drop_repeats(con)
        self._repeats_dropped = True

    def sources(self) -> list[str]:
        return [*super().sources(), *([MISSING] if self._repeats_dropped else [])]


DETACH_FAILED = "the database file could not be detached"
COMMIT_FAILED = "the checkpoint after the commit failed"


class DetachFailingStagedRows(StagedRows):
    """Writes like the real thing, then fails at the DETACH that follows the COMMIT: an error
    raised once the rows are in."""

    def _connection(self) -> duckdb.DuckDBPyConnection:
        return _FailsAfter(super()._connection(), "DETACH", DETACH_FAILED)  # type: ignore[return-value]


class CommitFailingStagedRows(StagedRows):
    """Writes like the real thing, and its COMMIT is applied, then raises: what DuckDB does when
    the checkpoint it runs in place of the WAL write fails after the commit (its error is the
    COMMIT's)."""

    def _connection(self) -> duckdb.DuckDBPyConnection:
        return _FailsAfter(super()._connection(), "COMMIT", COMMIT_FAILED)  # type: ignore[return-value]


class _FailsAfter:
    """A connection that runs ``statement`` (its first word), then raises ``message``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, statement: str, message: str) -> None:
        self._con = con
        self._statement = statement
        self._message = message

    def execute(self, sql: str, *args: Any) -> duckdb.DuckDBPyConnection:
        result = self._con.execute(sql, *args)
        if sql.lstrip().upper().startswith(self._statement):
            raise duckdb.Error(self._message)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)
