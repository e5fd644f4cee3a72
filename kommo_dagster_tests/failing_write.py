"""Staged rows whose write fails midway, for the tests that a failed write changes nothing."""

from __future__ import annotations

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
