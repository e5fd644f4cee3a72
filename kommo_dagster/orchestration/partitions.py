"""The daily partitions of the incremental streams (see `kommo_dagster.warehouse.windows` for
how a partition maps to Kommo's cursor, a window of Unix seconds).

``end_offset=1`` makes today's still-open day a partition too. Materializing it extracts what has
changed so far today; the schedules re-run it during the day and once more after midnight to
finalize it. A range (a backfill) is one run over the whole range
(``BackfillPolicy.single_run()``), so it costs the same requests as one unpartitioned
extraction of that range, and a quiet range costs one request per stream, not one per day.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

import dagster as dg

from kommo_dagster.warehouse.windows import PARTITION_FORMAT, EpochWindow


def build_daily_partitions(start_date: date) -> dg.DailyPartitionsDefinition:
    """Daily partitions in UTC from ``start_date`` through today (``end_offset=1``)."""
    return dg.DailyPartitionsDefinition(
        start_date=start_date.strftime(PARTITION_FORMAT),
        timezone="UTC",
        fmt=PARTITION_FORMAT,
        end_offset=1,
    )


def run_window(context: dg.AssetExecutionContext, *, partitioned: bool) -> EpochWindow | None:
    """The window of Unix seconds a run of a partitioned asset covers (its partition or range);
    None for an unpartitioned one."""
    return EpochWindow.from_time_window(context.partition_time_window) if partitioned else None


def utc_day_sql(column: str) -> str:
    """SQL for the UTC day (a DATE) of a column of Unix seconds, whatever the session's time
    zone: the day a partition key names."""
    return f"(DATE '1970-01-01' + CAST({column} // 86400 AS INTEGER))"


def report_rows_by_day(
    context: dg.AssetExecutionContext, by_day: Mapping[date, int], *, default: int = 0
) -> None:
    """Give each partition of the run its own ``dagster/row_count``: the rows of its UTC day
    (``by_day``; a day it lacks counts ``default``). A range is one write, but each day is its
    own partition and reports what a run of that day alone would."""
    for key in context.partition_keys:
        day = datetime.strptime(key, PARTITION_FORMAT).date()
        context.add_asset_metadata(
            {"dagster/row_count": dg.MetadataValue.int(by_day.get(day, default))},
            partition_key=key,
        )


__all__ = [
    "PARTITION_FORMAT",
    "EpochWindow",
    "build_daily_partitions",
    "report_rows_by_day",
    "run_window",
    "utc_day_sql",
]
