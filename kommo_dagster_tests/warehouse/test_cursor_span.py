"""The running cursor totals of staged rows: span, null cursors, rows per UTC day, and whether
the span lies in a window (its end excluded)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np

from kommo_dagster.warehouse.cursor_span import CursorSpan
from kommo_dagster.warehouse.windows import EpochWindow


def _at(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())


def test_a_fresh_span_has_counted_nothing():
    span = CursorSpan()
    assert (span.low, span.high, span.nulls, span.rows_by_day()) == (None, None, 0, {})
    assert span.within(EpochWindow(_at(2026, 10, 1), _at(2026, 10, 2)))


def test_batches_add_up_across_days_and_nulls():
    span = CursorSpan()
    # 23:59:59 on Oct 1 and midnight of Oct 2 fall on different UTC days.
    span.add(np.array([_at(2026, 10, 1, 23, 59, 59), _at(2026, 10, 2)], dtype=np.int64), 1)
    span.add(np.array([], dtype=np.int64), 3)  # a batch whose cursors were all null
    span.add(
        np.array([_at(2026, 10, 2, 12), _at(2026, 9, 30, 6), _at(2026, 10, 2, 1)], dtype=np.int64),
        0,
    )
    assert (span.low, span.high) == (_at(2026, 9, 30, 6), _at(2026, 10, 2, 12))
    assert span.nulls == 4
    assert span.rows_by_day() == {
        date(2026, 9, 30): 1,
        date(2026, 10, 1): 1,
        date(2026, 10, 2): 3,
    }
    assert list(span.rows_by_day()) == sorted(span.rows_by_day())


def test_within_holds_the_window_start_and_excludes_its_end():
    oct1 = EpochWindow(_at(2026, 10, 1), _at(2026, 10, 2))
    inside = CursorSpan()
    inside.add(np.array([_at(2026, 10, 1), _at(2026, 10, 1, 23, 59, 59)], dtype=np.int64), 0)
    assert inside.within(oct1)
    at_end = CursorSpan()
    at_end.add(np.array([_at(2026, 10, 1, 12), _at(2026, 10, 2)], dtype=np.int64), 0)
    assert not at_end.within(oct1)
    before = CursorSpan()
    before.add(np.array([_at(2026, 9, 30, 23, 59, 59)], dtype=np.int64), 0)
    assert not before.within(oct1)
