"""The daily partitions of the incremental streams (see `kommo_dagster.warehouse.windows` for
how a partition maps to Kommo's cursor, a window of Unix seconds).

``end_offset=1`` makes today's still-open day a partition too. Materializing it extracts what has
changed so far today; the schedules re-run it during the day and once more after midnight to
finalize it. A range (a backfill) is one run over the whole range
(``BackfillPolicy.single_run()``), so it costs the same requests as one unpartitioned
extraction of that range, and a quiet range costs one request per stream, not one per day.
"""

from __future__ import annotations

from datetime import date

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


__all__ = ["PARTITION_FORMAT", "EpochWindow", "build_daily_partitions", "run_window"]
