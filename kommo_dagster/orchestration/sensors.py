"""The change sensor: refresh exactly the streams Kommo says changed.

``kommo_change_sensor`` polls ``/api/v4/events`` every ``KOMMO_SENSOR_INTERVAL_SECONDS`` (300 by
default) from a cursor persisted by Dagster (`kommo_dagster.kommo.changes.ChangeCursor`). A quiet
account costs one request per tick. When events arrived, it requests one run per UTC day they
fall on (in practice today's), of that day's partition, selecting exactly the affected streams:
``events`` always, plus ``leads``/``contacts``/``companies``/``tasks`` for events about them,
with what the jobs run with them (their derived and link tables).
Streams switched to a full-table sync are refreshed by a run of the full-tables job instead.

The first tick only starts the cursor at the current time (the schedules and backfills load
history); it makes no request. A failing poll (Kommo down, bad token) fails the tick with the
client's message, visible in the UI, and leaves the cursor where it was, so the next tick asks
again and nothing is lost. Run keys derive from the cursor, so a tick evaluated twice launches
nothing twice.

A tick reads at most ``max_pages`` pages of events (1,000 by default). Kommo serves events newest
first with no other order, so when more are announced after that (the sensor was stopped for
days on a busy account) the unread ones are the oldest: the tick then refreshes every change
stream on every day from the cursor to the oldest event read, logs a warning saying so, and tags
its runs ``kommo/capped``. Nothing is lost; the runs only refresh more than changed.

With several accounts each account has its own sensor, ``kommo_<account>_change_sensor``, polling
its own account with its own cursor.

Like the schedules it starts stopped unless ``KOMMO_SCHEDULES_DEFAULT_ON=true``.
"""

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

import dagster as dg

from kommo_dagster.derived.declaration import with_derived
from kommo_dagster.kommo.changes import MAX_PAGES, ChangeCursor, Changes, poll_changes
from kommo_dagster.kommo.links import LINK_TABLES
from kommo_dagster.orchestration.accounts import AccountScope
from kommo_dagster.orchestration.jobs import KommoJobs, partition_key
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.orchestration.schedules import default_status
from kommo_dagster.orchestration.translator import AccountSpecs
from kommo_dagster.settings import Settings

CHANGE_SENSOR = "kommo_change_sensor"


@dataclass(frozen=True, kw_only=True)
class _Targets:
    """What a tick turns changed streams into runs of: the jobs, the keys, the first day."""

    jobs: KommoJobs
    specs: AccountSpecs
    name: str
    partitioned: frozenset[str]
    # Incremental streams switched to full tables still change through events.
    switched: frozenset[str]
    first_day: date
    # Pages of events one tick reads at most (see `kommo_dagster.kommo.changes`).
    max_pages: int = MAX_PAGES


def build_change_sensor(
    settings: Settings,
    jobs: KommoJobs,
    *,
    specs: AccountSpecs | None = None,
    max_pages: int = MAX_PAGES,
) -> dg.SensorDefinition | None:
    """The sensor for the selected streams; None when no job could refresh a changed stream.
    ``max_pages`` caps the event pages one tick reads (a test makes it small)."""
    targets = [j for j in (jobs.incremental, jobs.full_tables) if j is not None]
    if not targets:
        return None
    scope = AccountScope.of(settings)
    runs = _Targets(
        jobs=jobs,
        specs=specs or AccountSpecs(settings),
        name=scope.qualify(CHANGE_SENSOR),
        partitioned=frozenset(settings.partitioned_streams),
        switched=frozenset(settings.full_table_streams),
        first_day=settings.start_date,
        max_pages=max_pages,
    )

    @dg.sensor(
        name=runs.name,
        jobs=targets,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=default_status(settings, dg.DefaultSensorStatus),
        required_resource_keys={scope.resource_key},
        description=(
            f"Polls Kommo's /api/v4/events{scope.whose} from a persisted cursor and refreshes, "
            "in the partition of each UTC day the new events fall on (today's, or yesterday's "
            "just after midnight), exactly the streams that changed (one request per quiet tick)."
        ),
    )
    def kommo_change_sensor(context: dg.SensorEvaluationContext, **_: object) -> dg.SensorResult:
        # The account's resource key varies, so it is not a parameter (`**_` takes it when the
        # sensor is invoked directly, as Dagster then passes required resources by keyword).
        kommo: KommoResource = getattr(context.resources, scope.resource_key)
        return _tick(context, kommo, runs)

    return kommo_change_sensor


def _tick(
    context: dg.SensorEvaluationContext, kommo: KommoResource, runs: _Targets
) -> dg.SensorResult:
    cursor = ChangeCursor.loads(context.cursor)
    if cursor is None:
        start = ChangeCursor(since=int(time.time()))
        return dg.SensorResult(
            cursor=start.dumps(),
            skip_reason=(
                f"started watching Kommo events from "
                f"{datetime.fromtimestamp(start.since, tz=UTC).isoformat()}"
            ),
        )
    # The poll's checks quote Kommo's answers, which may hold the token: masked as in assets.
    with kommo.get_client() as client:
        changes = kommo.scrubber().call(poll_changes, client, cursor, max_pages=runs.max_pages)
    context.log.info(
        f"{len(changes.events)} new Kommo events in {changes.requests} request(s)"
        + (f"; streams changed: {', '.join(sorted(changes.streams))}" if changes.events else "")
    )
    capped = _capped_note(changes)
    if capped:
        context.log.warning(capped)
    if not changes.streams_by_day:
        return dg.SensorResult(
            cursor=changes.cursor.dumps(), skip_reason="no Kommo event since the cursor"
        )
    requests = _run_requests(changes, runs=runs, today=datetime.now(UTC).date())
    if not requests:
        return dg.SensorResult(
            cursor=changes.cursor.dumps(),
            skip_reason=" ".join(
                ("the changed streams are not selected in this code location.", capped)
            ).strip(),
        )
    return dg.SensorResult(run_requests=requests, cursor=changes.cursor.dumps())


def _capped_note(changes: Changes) -> str:
    """What a poll stopped at its page cap did instead of reading on; "" for a full poll."""
    if changes.unread is None:
        return ""
    first, last = changes.unread
    return (
        f"Kommo still announced more events after {changes.requests} pages: events from "
        f"{first.isoformat()} to {last.isoformat()} (UTC) were not all read, so every change "
        "stream is refreshed on each of those days (runs tagged kommo/capped) and no change is "
        "lost. If this recurs, the sensor falls behind: keep it running (a shorter "
        "KOMMO_SENSOR_INTERVAL_SECONDS) or backfill those days."
    )


def _run_requests(changes: Changes, *, runs: _Targets, today: date) -> list[dg.RunRequest]:
    last = changes.events[-1]["id"] if changes.events else "none"
    token = f"{changes.cursor.since}-{len(changes.cursor.seen)}-{last}"
    by_day: dict[date, set[str]] = {}
    for day, streams in changes.streams_by_day.items():
        chosen = streams & runs.partitioned
        if not chosen or day < runs.first_day:
            continue
        # A clock ahead of ours would name a partition that does not exist yet: use today's.
        by_day.setdefault(min(day, today), set()).update(chosen)
    tags = {"kommo/trigger": runs.name}
    if changes.unread is not None:
        tags["kommo/capped"] = "/".join(d.isoformat() for d in changes.unread)
    requests: list[dg.RunRequest] = []
    if runs.jobs.incremental is not None:
        for day, streams in sorted(by_day.items()):
            key = partition_key(day)
            requests.append(
                dg.RunRequest(
                    job_name=runs.jobs.incremental.name,
                    partition_key=key,
                    asset_selection=[runs.specs.key(s) for s in sorted(_run_with(streams))],
                    run_key=f"kommo-changes:{key}:{token}",
                    tags=tags,
                )
            )
    full = changes.streams & runs.switched
    if full and runs.jobs.full_tables is not None:
        requests.append(
            dg.RunRequest(
                job_name=runs.jobs.full_tables.name,
                asset_selection=[runs.specs.key(s) for s in sorted(_run_with(set(full)))],
                run_key=f"kommo-changes:full:{token}",
                tags=tags,
            )
        )
    return requests


def _run_with(streams: set[str]) -> set[str]:
    """``streams`` and what the jobs run with them: their derived tables, and their link
    tables, written with their rows and recorded by their own assets."""
    chosen = with_derived(streams)
    return chosen | {t.name for t in LINK_TABLES.values() if t.parent in chosen}


__all__ = ["CHANGE_SENSOR", "build_change_sensor", "default_status"]
