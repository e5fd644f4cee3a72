"""Schedules that keep the warehouse following the CRM (cron times in the location's
``KOMMO_TIMEZONE``, UTC by default; the partitions they pick are UTC days).

| schedule | cron | what it runs |
|---|---|---|
| ``kommo_incremental_today_schedule`` | ``10 * * * *`` | today's incremental partition |
| ``kommo_incremental_finalize_schedule`` | ``30 0 * * *`` | yesterday's, once it is over |
| ``kommo_full_tables_schedule`` | ``0 1 * * *`` | the full-table streams |
| ``kommo_full_sync_schedule`` | ``0 3 * * 0`` | the full sync: every partition, one run |

With several accounts each account has its own four, named ``kommo_<account>_...``, and each
account's start a few minutes after the previous one's (`stagger_offsets`: up to 6 accounts 5
minutes apart, 10 accounts 3 apart), shown in the schedule's description and its metadata
``kommo/schedule_offset_minutes``, so that their runs do not all start at one minute.

They start stopped (Dagster's convention: nothing talks to the account until someone decides
it should), unless ``KOMMO_SCHEDULES_DEFAULT_ON=true``. Turn one on in the UI (Automation ->
the schedule -> toggle) or with ``dagster schedule start <name>``.

Every tick requests its run whatever happened to the previous one, so a failed run (Kommo down,
token expired, file locked) is retried by the next tick; a partition's re-run replaces its rows,
so a retry never duplicates anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg

from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.jobs import KommoJobs, partition_key, range_tags
from kommo_dagster.settings import Settings

if TYPE_CHECKING:  # what `dg.define_asset_job` returns; Dagster exports no public name for it
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

TODAY_SCHEDULE = "kommo_incremental_today_schedule"
FINALIZE_SCHEDULE = "kommo_incremental_finalize_schedule"
FULL_TABLES_SCHEDULE = "kommo_full_tables_schedule"
FULL_SYNC_SCHEDULE = "kommo_full_sync_schedule"

TODAY_CRON = "10 * * * *"
FINALIZE_CRON = "30 0 * * *"
FULL_TABLES_CRON = "0 1 * * *"
FULL_SYNC_CRON = "0 3 * * 0"


_Status = TypeVar("_Status", dg.DefaultScheduleStatus, dg.DefaultSensorStatus)


def default_status(settings: Settings, status: type[_Status]) -> _Status:
    """Whether the account's schedules and change sensor start running (``status`` is the
    schedules' or the sensors' enum; both name the same two states)."""
    return status.RUNNING if settings.schedules_default_on else status.STOPPED


def _tick_time(context: dg.ScheduleEvaluationContext) -> datetime:
    scheduled = context.scheduled_execution_time
    if scheduled is None:  # evaluated outside a tick (a test, the UI's preview)
        return datetime.now(UTC)
    return scheduled


def _day_request(
    context: dg.ScheduleEvaluationContext, *, days_back: int, plan: _Plan
) -> dg.RunRequest | dg.SkipReason:
    """A run of the partition ``days_back`` days before the tick's UTC day; the run key names
    the tick, so each tick asks once and a failed run is asked for again at the next tick."""
    tick = _tick_time(context)
    day = tick.astimezone(UTC).date() - timedelta(days=days_back)
    if day < plan.first_day:
        return plan.before_start(day)
    key = partition_key(day)
    return dg.RunRequest(partition_key=key, run_key=f"{key}@{tick.isoformat()}")


# Accounts of one code location fire apart: account i of n starts i * step minutes after the
# table's times, step = 30 // n minutes (at most 5, at least 1), so every offset stays within the
# half hour and the minutes never roll into the next hour. Distinct for up to 30 accounts.
STAGGER_SPAN_MINUTES = 30
STAGGER_STEP_MAX = 5
OFFSET_METADATA = "kommo/schedule_offset_minutes"


def stagger_offsets(accounts: int) -> list[int]:
    """Each account's minute offset, by its place in ``KOMMO_ACCOUNTS``: runs of several
    accounts started at one minute compete for the machine's CPU (each is its own process)
    and send late, so they start a few minutes apart instead."""
    step = max(1, min(STAGGER_STEP_MAX, STAGGER_SPAN_MINUTES // max(accounts, 1)))
    return [(i * step) % STAGGER_SPAN_MINUTES for i in range(accounts)]


def shifted(cron: str, minutes: int) -> str:
    """``cron`` (whose minute field is a number) ``minutes`` later within its hour."""
    minute, rest = cron.split(" ", 1)
    return f"{int(minute) + minutes} {rest}"


@dataclass(frozen=True)
class _Plan:
    """What every schedule of one account shares: names, first day, status and offset."""

    scope: AccountScope
    first_day: date
    status: dg.DefaultScheduleStatus
    offset: int
    timezone: str
    # Where the first day was set: KOMMO_START_DATE, an account's own variable, a defs.yaml field.
    start_label: str

    def before_start(self, day: date) -> dg.SkipReason:
        return dg.SkipReason(f"{day} is before {self.start_label} {self.first_day}")

    def kwargs(self, name: str, cron: str, description: str) -> dict[str, Any]:
        note = f" Starts {self.offset} min after the base time, apart from the other accounts."
        return {
            "name": self.scope.qualify(name),
            "cron_schedule": shifted(cron, self.offset),
            "execution_timezone": self.timezone,
            "default_status": self.status,
            "description": description + (note if self.offset else ""),
            "metadata": {OFFSET_METADATA: self.offset},
        }


def build_schedules(
    settings: Settings, jobs: KommoJobs, *, offset_minutes: int = 0
) -> list[dg.ScheduleDefinition]:
    """The account's schedules, ``offset_minutes`` after the table's times
    (`stagger_offsets`)."""
    plan = _Plan(
        AccountScope.of(settings),
        settings.start_date,
        default_status(settings, dg.DefaultScheduleStatus),
        offset_minutes,
        settings.timezone,
        settings.label("start_date"),
    )
    schedules: list[dg.ScheduleDefinition] = []
    if jobs.incremental is not None:
        schedules += _day_schedules(plan, jobs.incremental)
    if jobs.full_sync is not None:
        schedules.append(_full_sync_schedule(plan, jobs.full_sync))
    if jobs.full_tables is not None:
        schedules.append(
            dg.ScheduleDefinition(
                job=jobs.full_tables,
                **plan.kwargs(
                    FULL_TABLES_SCHEDULE,
                    FULL_TABLES_CRON,
                    f"Refreshes the full-table streams{plan.scope.whose} once a day.",
                ),
            )
        )
    return schedules


def _day_schedules(plan: _Plan, job: UnresolvedAssetJobDefinition) -> list[dg.ScheduleDefinition]:
    """Today's partition every hour, and yesterday's once after midnight."""

    @dg.schedule(
        job=job,
        **plan.kwargs(
            TODAY_SCHEDULE,
            TODAY_CRON,
            f"Refreshes today's partition of the incremental streams{plan.scope.whose} every hour.",
        ),
    )
    def today(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return _day_request(context, days_back=0, plan=plan)

    @dg.schedule(
        job=job,
        **plan.kwargs(
            FINALIZE_SCHEDULE,
            FINALIZE_CRON,
            f"Finalizes the last whole UTC day's partition of the incremental streams"
            f"{plan.scope.whose} at 00:30 ({plan.timezone}), picking up what changed after the "
            "day's last hourly refresh.",
        ),
    )
    def finalize(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return _day_request(context, days_back=1, plan=plan)

    return [today, finalize]


def _full_sync_schedule(plan: _Plan, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    first_day = plan.first_day

    @dg.schedule(
        job=job,
        **plan.kwargs(
            FULL_SYNC_SCHEDULE,
            FULL_SYNC_CRON,
            f"Weekly full sync: re-extracts every partition of the incremental streams"
            f"{plan.scope.whose}, from {plan.start_label} ({plan.first_day}) through today, as "
            "ONE run (a single-run backfill).",
        ),
    )
    def full_sync(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        tick = _tick_time(context)
        last = tick.astimezone(UTC).date()
        if last < first_day:
            return plan.before_start(last)
        tags = range_tags(first_day, last)
        return dg.RunRequest(run_key=f"full-sync@{tick.isoformat()}", tags=tags)

    return full_sync


__all__ = [
    "FINALIZE_SCHEDULE",
    "FULL_SYNC_SCHEDULE",
    "FULL_TABLES_SCHEDULE",
    "OFFSET_METADATA",
    "TODAY_SCHEDULE",
    "build_schedules",
    "default_status",
    "stagger_offsets",
]
