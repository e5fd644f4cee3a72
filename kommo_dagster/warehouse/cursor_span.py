"""The cursor values of rows staged batch by batch: their span, the rows without one and the rows
per UTC day, kept as running totals so that nothing needs the rows again to know them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from kommo_dagster.warehouse.windows import EpochWindow

_DAY = 86_400
_EPOCH = date(1970, 1, 1)


class CursorSpan:
    """Lowest and highest cursor seen (``None`` before the first), rows whose cursor was null,
    and rows per UTC day of their cursor.

    `StagedRows` keeps one so that the write can refuse rows outside its window before anything
    is deleted, and so that a range run can report each day's partition; a batch costs one
    ``min``, one ``max`` and one ``unique`` over its cursor array, whatever its size.
    """

    __slots__ = ("_by_day", "high", "low", "nulls")

    def __init__(self) -> None:
        self.low: int | None = None
        self.high: int | None = None
        self.nulls = 0
        self._by_day: dict[int, int] = {}

    def add(self, cursors: np.ndarray, nulls: int) -> None:
        """Count a batch: its non-null cursor values (Unix seconds) and how many were null."""
        self.nulls += nulls
        if not len(cursors):
            return
        low, high = int(cursors.min()), int(cursors.max())
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        import numpy as np

        days, counts = np.unique(cursors // _DAY, return_counts=True)
        for day, count in zip(days.tolist(), counts.tolist(), strict=True):
            self._by_day[day] = self._by_day.get(day, 0) + count

    def drop(self, cursors: list[int | None]) -> None:
        """Uncount rows dropped as repeats of a key (their cursor values, None for null): their
        days' counts shrink. The span stays, since a repeat of a key keeps a row at its cursor."""
        for cursor in cursors:
            if cursor is None:
                self.nulls -= 1
                continue
            day = cursor // _DAY
            self._by_day[day] -= 1
            if not self._by_day[day]:
                del self._by_day[day]

    def within(self, window: EpochWindow) -> bool:
        """Whether every counted cursor lies in ``window`` (true when none was counted)."""
        if self.low is None or self.high is None:
            return True
        return window.contains(self.low) and window.contains(self.high)

    def rows_by_day(self) -> dict[date, int]:
        """Rows per UTC day of their cursor, in day order (days without rows are absent)."""
        return {_EPOCH + timedelta(days=d): n for d, n in sorted(self._by_day.items())}


__all__ = ["CursorSpan"]
