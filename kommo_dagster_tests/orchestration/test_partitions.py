"""Daily UTC partitions through today, and their exact integer windows of Kommo's cursor."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import dagster as dg
import pytest

from kommo_dagster.orchestration.partitions import build_daily_partitions
from kommo_dagster.warehouse.windows import EpochWindow


def test_partitions_are_daily_in_utc_from_the_start_date_through_today():
    partitions = build_daily_partitions(date(2026, 10, 1))
    assert partitions.timezone == "UTC"
    keys = partitions.get_partition_keys()
    assert keys[0] == "2026-10-01"
    today = datetime.now(UTC).date()
    # end_offset=1: today's unfinished day is the last partition
    assert keys[-1] in {today.isoformat(), (today - timedelta(days=1)).isoformat()}
    assert keys[-1] == partitions.get_last_partition_key()
    assert len(keys) == (date.fromisoformat(keys[-1]) - date(2026, 10, 1)).days + 1


def test_a_partition_is_the_integer_range_of_its_utc_day():
    partitions = build_daily_partitions(date(2026, 10, 1))
    window = EpochWindow.from_time_window(partitions.time_window_for_partition_key("2026-10-05"))
    assert window == EpochWindow(1_791_158_400, 1_791_244_800)
    assert window.start == int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())
    assert window.contains(window.start) and not window.contains(window.end)
    assert window.label() == "2026-10-05"


def test_a_range_maps_to_one_window():
    partitions = build_daily_partitions(date(2026, 10, 1))
    first = partitions.time_window_for_partition_key("2026-10-01")
    last = partitions.time_window_for_partition_key("2026-10-31")
    window = EpochWindow.from_time_window(dg.TimeWindow(first.start, last.end))
    assert window.end - window.start == 31 * 86_400
    assert window.label() == "2026-10-01..2026-10-31"


def test_windows_are_the_same_instant_whatever_the_offset_it_is_written_in():
    plus3 = timezone(timedelta(hours=3))
    a = EpochWindow.from_datetimes(
        datetime(2026, 10, 5, 3, tzinfo=plus3), datetime(2026, 10, 6, 3, tzinfo=plus3)
    )
    assert a == EpochWindow.from_datetimes(
        datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC)
    )


def test_naive_or_empty_windows_are_refused():
    with pytest.raises(ValueError, match="aware"):
        EpochWindow.from_datetimes(datetime(2026, 10, 5), datetime(2026, 10, 6))
    with pytest.raises(ValueError, match="empty"):
        EpochWindow(10, 10)
