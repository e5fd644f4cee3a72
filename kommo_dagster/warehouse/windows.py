"""Windows of Kommo's cursor (Unix seconds), and how a daily UTC partition maps to one.

Partition ``D`` holds the records whose cursor (``updated_at``; ``created_at`` for events) was in
``[D 00:00, D+1 00:00)`` UTC when they were extracted. Kommo's timestamps are Unix seconds, so a
partition is the integer range ``[epoch(D), epoch(D+1))`` and every comparison is on integers:
no time zone, no formatting, nothing to drift between the extraction and the delete of a re-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

PARTITION_FORMAT = "%Y-%m-%d"


class TimeSpan(Protocol):
    """What `EpochWindow.from_time_window` reads of a window (a Dagster ``TimeWindow`` has it)."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


@dataclass(frozen=True)
class EpochWindow:
    """A half-open window ``[start, end)`` of Unix seconds, the unit of Kommo's cursors."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty window [{self.start}, {self.end})")

    @classmethod
    def from_datetimes(cls, start: datetime, end: datetime) -> EpochWindow:
        for value in (start, end):
            if value.tzinfo is None:
                raise ValueError(f"window bounds must be time-zone aware, got {value!r}")
        return cls(_exact_epoch(start), _exact_epoch(end))

    @classmethod
    def from_time_window(cls, window: TimeSpan) -> EpochWindow:
        return cls.from_datetimes(window.start, window.end)

    @property
    def start_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.start, tz=UTC)

    @property
    def end_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.end, tz=UTC)

    def contains(self, epoch: int) -> bool:
        return self.start <= epoch < self.end

    def label(self) -> str:
        """``2026-10-01..2026-10-31`` (inclusive days) for whole-day windows, else ISO bounds."""
        start, end = self.start_datetime, self.end_datetime
        if start.time() == end.time() == datetime.min.time():
            last = end - timedelta(days=1)
            if last.date() == start.date():
                return start.strftime(PARTITION_FORMAT)
            return f"{start.strftime(PARTITION_FORMAT)}..{last.strftime(PARTITION_FORMAT)}"
        return f"[{start.isoformat()}, {end.isoformat()})"


def _exact_epoch(value: datetime) -> int:
    seconds = value.timestamp()
    if seconds != int(seconds):
        raise ValueError(f"window bound {value.isoformat()} is not a whole second")
    return int(seconds)


__all__ = ["PARTITION_FORMAT", "EpochWindow", "TimeSpan"]
