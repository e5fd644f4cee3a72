"""Schedules that keep the warehouse following the CRM (all times UTC).

| schedule | cron | what it runs |
|---|---|---|
| ``kommo_incremental_today_schedule`` | ``10 * * * *`` | today's incremental partition |
| ``kommo_incremental_finalize_schedule`` | ``30 0 * * *`` | yesterday's, once it is over |
| ``kommo_full_tables_schedule`` | ``0 1 * * *`` | the full-table streams |
| ``kommo_full_sync_schedule`` | ``0 3 * * 0`` | the full sync: every partition, one run |

With several accounts each account has its own four, named ``kommo_<account>_...``.

They start stopped (Dagster's convention: nothing talks to the account until someone decides
it should), unless ``KOMMO_SCHEDULES_DEFAULT_ON=true``. Turn one on in the UI (Automation ->
the schedule -> toggle) or with ``dagster schedule start <name>``.

Every tick requests its run whatever happened to the previous one, so a failed run (Kommo down,
token expired, file locked) is retried by the next tick; a partition's re-run replaces its rows,
so a retry never duplicates anything.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.jobs import KommoJobs, partition_key, range_tags
from kommo_dagster.settings import Settings

TODAY_SCHEDULE = "kommo_incremental_today_schedule"
FINALIZE_SCHEDULE = "kommo_incremental_finalize_schedule"
FULL_TABLES_SCHEDULE = "kommo_full_tables_schedule"
FULL_SYNC_SCHEDULE = "kommo_full_sync_schedule"

TODAY_CRON = "10 * * * *"
FINALIZE_CRON = "30 0 * * *"
FULL_TABLES_CRON = "0 1 * * *"
FULL_SYNC_CRON = "0 3 * * 0"


def default_status(settings: Settings) -> dg.DefaultScheduleStatus:
    return (
        dg.DefaultScheduleStatus.RUNNING
        if settings.schedules_default_on
        else dg.DefaultScheduleStatus.STOPPED
    )


def _tick_time(context: dg.ScheduleEvaluationContext) -> datetime:
    scheduled = context.scheduled_execution_time
    if scheduled is None:  # evaluated outside a tick (a test, the UI's preview)
        return datetime.now(UTC)
    return scheduled


def _day_request(
    context: dg.ScheduleEvaluationContext, *, days_back: int, first_day: date
) -> dg.RunRequest | dg.SkipReason:
    """A run of the partition ``days_back`` days before the tick's UTC day; the run key names
    the tick, so each tick asks once and a failed run is asked for again at the next tick."""
    tick = _tick_time(context)
    day = tick.astimezone(UTC).date() - timedelta(days=days_back)
    if day < first_day:
        return dg.SkipReason(f"{day} is before KOMMO_START_DATE {first_day}")
    key = partition_key(day)
    return dg.RunRequest(partition_key=key, run_key=f"{key}@{tick.isoformat()}")


def build_schedules(settings: Settings, jobs: KommoJobs) -> list[dg.ScheduleDefinition]:
    status = default_status(settings)
    schedules: list[dg.ScheduleDefinition] = []
    first_day = settings.start_date
    scope = AccountScope.of(settings)

    if jobs.incremental is not None:

        @dg.schedule(
            name=scope.qualify(TODAY_SCHEDULE),
            job=jobs.incremental,
            cron_schedule=TODAY_CRON,
            execution_timezone="UTC",
            default_status=status,
            description="Refreshes today's partition of the incremental streams every hour.",
        )
        def today(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            return _day_request(context, days_back=0, first_day=first_day)

        @dg.schedule(
            name=scope.qualify(FINALIZE_SCHEDULE),
            job=jobs.incremental,
            cron_schedule=FINALIZE_CRON,
            execution_timezone="UTC",
            default_status=status,
            description=(
                "Finalizes yesterday's partition of the incremental streams after midnight UTC, "
                "picking up what changed after the day's last hourly refresh."
            ),
        )
        def finalize(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            return _day_request(context, days_back=1, first_day=first_day)

        schedules += [today, finalize]

    if jobs.full_sync is not None:

        @dg.schedule(
            name=scope.qualify(FULL_SYNC_SCHEDULE),
            job=jobs.full_sync,
            cron_schedule=FULL_SYNC_CRON,
            execution_timezone="UTC",
            default_status=status,
            description=(
                "Weekly full sync: re-extracts every partition of the incremental streams, from "
                "KOMMO_START_DATE through today, as ONE run (a single-run backfill)."
            ),
        )
        def full_sync(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            tick = _tick_time(context)
            last = tick.astimezone(UTC).date()
            if last < first_day:
                return dg.SkipReason(f"{last} is before KOMMO_START_DATE {first_day}")
            tags = range_tags(first_day, last)
            return dg.RunRequest(run_key=f"full-sync@{tick.isoformat()}", tags=tags)

        schedules.append(full_sync)

    if jobs.full_tables is not None:
        schedules.append(
            dg.ScheduleDefinition(
                name=scope.qualify(FULL_TABLES_SCHEDULE),
                job=jobs.full_tables,
                cron_schedule=FULL_TABLES_CRON,
                execution_timezone="UTC",
                default_status=status,
                description="Refreshes the full-table streams once a day.",
            )
        )
    return schedules


__all__ = [
    "FINALIZE_SCHEDULE",
    "FULL_SYNC_SCHEDULE",
    "FULL_TABLES_SCHEDULE",
    "TODAY_SCHEDULE",
    "build_schedules",
    "default_status",
]
