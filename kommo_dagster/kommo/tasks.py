"""Tasks: how a window is walked when the API filters on updated_at but orders only by id.

The window is probed with one page; if that is not all, it is cut into equal slices of time
("parts"), each offset-paged by id one page at a time. An update never moves a task within the id
order, but it can take a task out of a part (to any updated_at, earlier ones included) and a
deletion removes it; either shifts the unseen tasks behind it one place up, so one may slip past a
page boundary, but only if the part had already seen the task that left. A part read in one
request is a consistent snapshot. For the others, a check closes each round: the events of tasks
since the round began (Kommo stamps every event with its own current time, whatever updated_at
the change carries) name every task that changed or was deleted meanwhile, and the tasks updated
since then tell where the changes stamped now put them. A part is taken as left by a task it saw
unless the task's only change kept it inside that part, whichever part saw it after: a task that
moved to a part read later is seen there too, but the shift it caused is in the part it left.
Each part a task may have left is walked again, cut into chunks of about `TASK_CHUNK` of the
tasks it saw, so the new chunks are mostly single requests and the rounds end even while the
account keeps changing. Changed tasks whose new version lies inside the window are yielded from
the check itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from kommo_dagster.kommo.errors import KommoConsistencyError
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.kommo.transport import Response, Transport
from kommo_dagster.kommo.walks.base import Job, Walk, server_since
from kommo_dagster.kommo.walks.keyset import CHECK_MAX_PAGES, FAR_FUTURE, events_since, list_since
from kommo_dagster.kommo.walks.pages import PagesWalk, even_bounds
from kommo_dagster.kommo.walks.strategies import Strategy

log = logging.getLogger("kommo_dagster.kommo")

# Seen tasks per chunk when a part is walked again: a chunk of this many fits one page.
TASK_CHUNK = 200

Bounds = tuple[int, int]


def chunk_bounds(values: list[int], lo: int, hi: int, *, per_chunk: int) -> list[Bounds]:
    """Consecutive sub-ranges of [lo, hi] holding about ``per_chunk`` of ``values`` each."""
    values = sorted(v for v in values if lo <= v <= hi)
    cuts: list[int] = []
    for i in range(per_chunk, len(values), per_chunk):
        c = values[i]
        if c > (cuts[-1] if cuts else lo):
            cuts.append(c)
    starts = [lo, *cuts]
    ends = [c - 1 for c in cuts] + [hi]
    return list(zip(starts, ends, strict=True))


def tasks_check(
    *,
    stream: Stream,
    transport: Transport,
    since: int,
    lo: int,
    hi: int,
    seen: Mapping[Bounds, Collection[int]],
) -> tuple[list[dict[str, Any]], set[Bounds] | None, int]:
    """After a round of parts: the changed tasks whose new version lies in [lo, hi] (to yield),
    and the parts of ``seen`` (the bounds of each part of the round, which never overlap ->
    the ids of the tasks it saw) that a task they saw may have left since ``since``: deleted,
    changed more than once, changed to a version outside the part, or changed to an updated_at
    before ``since`` (back-dated: it could be anywhere). None instead of that set when there
    were too many changes to list. Also returns the number of requests made."""
    # The tasks updated first, then the events: a task that left its part during the round and
    # came back into it while the check ran is then either still outside it in the first list
    # or has two events in the second. The other order could see neither.
    updated, requests = list_since(
        stream=stream,
        transport=transport,
        query=(
            ("filter[updated_at][from]", since),
            ("filter[updated_at][to]", FAR_FUTURE),
            ("order[id]", "asc"),
        ),
        max_pages=CHECK_MAX_PAGES,
    )
    events, more = events_since(
        transport=transport, entity=stream.event_entity or "task", since=since
    )
    requests += more
    inside = [r for r in updated or () if lo <= r.get("updated_at", lo - 1) <= hi]
    if updated is None or events is None:
        return inside, None, requests
    now_at = {r.get("id"): r.get("updated_at") for r in updated}
    departed = set()
    for part, tasks in seen.items():
        for task in tasks:
            at = now_at.get(task)
            moved = at is not None and not part[0] <= at <= part[1]
            if moved or (task in events and (events[task] > 1 or at is None)):
                departed.add(part)
                break
    return inside, departed, requests


@dataclass(eq=False, kw_only=True)
class TasksCheckWalk(Walk):
    """The one-job check that closes a round of task parts (see `tasks_check`)."""

    since: int = 0
    seen: Mapping[Bounds, Collection[int]] = field(default_factory=dict)
    departed: set[Bounds] | None = field(default_factory=set)

    def remaining_seconds(self) -> int:
        return 0

    def next_job(self) -> Job | None:
        if self.done or self.requests:
            return None
        args = dict(
            stream=self.stream,
            transport=self.transport,
            since=self.since,
            lo=self.lo,
            hi=self.hi,
            seen=self.seen,
        )
        return Job(walk=self, run=lambda: tasks_check(**args), kind="check")

    def on_result(self, job: Job, result: Any) -> list[dict[str, Any]]:
        inside, self.departed, requests = result
        self.requests += requests
        self.done = True
        return inside


class TasksStrategy(Strategy):
    """probe -> parts -> check -> (the parts a departed task was seen in, again) -> check."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase = "probe"
        self.rewalks = 0
        self.since: int | None = None
        self.round_started = time.time()
        self.round: list[PagesWalk] = []
        self.check: TasksCheckWalk | None = None
        # The tasks each part walk of the round saw: id -> updated_at as it saw it. Per part, as
        # a task that moves may be seen by two parts, and both must be checked.
        self.seen: dict[Walk, dict[int, int]] = {}
        self.yielded: set[tuple[Any, Any]] = set()

    def _walk(self, lo: int, hi: int, *, probe: bool = False) -> PagesWalk:
        s = self.stream
        return PagesWalk(
            stream=s,
            transport=self.context.transport,
            decode=self.context.decode,
            lo=lo,
            hi=hi,
            kind="probe" if probe else "pages",
            base=self.with_,
            cursor=s.cursor or "updated_at",
            order=s.order,
            probe_only=probe,
        )

    def start(self) -> list[Walk]:
        self.probe = self._walk(self.lo, self.hi, probe=True)
        return [self.probe]

    def on_response(self, walk: Walk, resp: Response) -> None:
        if self.since is None:
            self.since = server_since(self.round_started, resp)

    def accept(self, walk: Walk, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in records:
            key = (r.get("id"), r.get("updated_at"))
            if key not in self.yielded:
                self.yielded.add(key)
                out.append(r)
        if walk.kind == "pages":
            seen = self.seen.setdefault(walk, {})
            for r in records:
                seen[r.get("id")] = r.get("updated_at")
        return out

    def fraction(self, walks: list[Walk]) -> float | None:
        return None

    def on_drained(self) -> list[Walk]:
        """A part walked in one request is a consistent snapshot and needs no check; only the
        tasks seen by parts of several pages are checked."""
        if self.phase == "probe":
            if not self.probe.probe_full:
                return []
            # Equal slices of time: the probe's tasks (lowest ids) are no fair sample of
            # updated_at, and a part cannot be split once paged. Twice the concurrency in parts
            # evens out the load as the walks finish at different times.
            return self._round(even_bounds(self.lo, self.hi, 2 * self.context.target_concurrency()))
        if self.phase == "walk":
            return self._close_round()
        assert self.check is not None
        departed = self.check.departed
        if departed is not None and not departed:
            return []
        return self._walk_again(departed)

    def _close_round(self) -> list[Walk]:
        multi = [w for w in self.round if w.requests > 1]
        if not multi:
            return []
        self.phase = "check"
        self.check = TasksCheckWalk(
            stream=self.stream,
            transport=self.context.transport,
            lo=self.lo,
            hi=self.hi,
            kind="verify",
            since=self.since if self.since is not None else int(time.time()) - 2,
            seen={(w.lo, w.hi): self.seen.get(w, {}).keys() for w in multi},
        )
        return [self.check]

    def _walk_again(self, departed: set[Bounds] | None) -> list[Walk]:
        self.rewalks += 1
        if self.rewalks > self.context.max_rewalks:
            raise KommoConsistencyError(
                f"tasks updated between {self.lo} and {self.hi} kept leaving the window while "
                f"it was paged, {self.rewalks} rounds in a row; retry later or use a smaller "
                "window"
            )
        dirty = [
            w
            for w in self.round
            if w.requests > 1 and (departed is None or (w.lo, w.hi) in departed)
        ]
        log.info("tasks left the window while it was paged; walking %d part(s) again", len(dirty))
        parts: list[Bounds] = []
        for w in dirty:
            values = list(self.seen.get(w, {}).values())
            parts += chunk_bounds(values, w.lo, w.hi, per_chunk=TASK_CHUNK)
        return self._round(parts)

    def _round(self, parts: list[Bounds]) -> list[Walk]:
        self.phase = "walk"
        self.since = None
        self.round_started = time.time()
        self.seen = {}
        self.round = [self._walk(a, b) for a, b in parts]
        return list(self.round)


__all__ = ["TASK_CHUNK", "TasksCheckWalk", "TasksStrategy", "chunk_bounds", "tasks_check"]
