"""Tasks: how a window is walked when the API filters on updated_at but orders only by id.

The window is probed with one page; if that is not all, it is cut into equal slices of time
("parts"), each read in offset pages by id that overlap (`OverlapWalk`): each page shows by its
ids that it starts on or before the last task of the page before it, or the walk steps back. So
every task that stays in its part for the whole walk is on one of the part's pages, whatever
left the part (to any updated_at, earlier ones included), was deleted or arrived meanwhile, and
however often: no check has to find the parts such changes touched, and no part is walked again.

What the parts cannot promise is the newest version of a task changed while they ran: its old
version may have been read already, or the part its new version lies in may have passed its id.
Where a part took more than one request and the window reaches the second the parts began in,
one more walk reads the tasks updated since then inside the window (the changes Kommo stamped
with the time of the change), so a window that includes now ends with those versions, as the
keyset walks of leads end with the records changed into their unread gap. A change that set an
earlier updated_at, or one made after that walk, lies in the window of its new updated_at, which
the next extraction of that window delivers (see the walks package docstring).
"""

from __future__ import annotations

import time
from typing import Any

from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.walks.base import Walk, server_since
from kommo_dagster.kommo.walks.overlap import OverlapWalk
from kommo_dagster.kommo.walks.pages import PagesWalk, even_bounds
from kommo_dagster.kommo.walks.strategies import Strategy


class TasksStrategy(Strategy):
    """probe -> parts -> (the tasks updated inside the window since the parts began)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase = "probe"
        # The server-clock second the parts began in, from their first answer.
        self.since: int | None = None
        self.round_started = time.time()
        self.parts: list[OverlapWalk] = []
        self.yielded: set[tuple[Any, ...]] = set()

    def _args(self, lo: int, hi: int, kind: str) -> dict[str, Any]:
        """What the probe and the parts share: a range of updated_at, in the order by id."""
        s = self.stream
        return dict(
            stream=s,
            transport=self.context.transport,
            decode=self.context.decode,
            lo=lo,
            hi=hi,
            kind=kind,
            base=self.with_,
            cursor=s.cursor or "updated_at",
            order=s.order,
        )

    def _walk(self, lo: int, hi: int, *, kind: str = "pages") -> OverlapWalk:
        return OverlapWalk(**self._args(lo, hi, kind))

    def start(self) -> list[Walk]:
        self.probe = PagesWalk(**self._args(self.lo, self.hi, "probe"), probe_only=True)
        return [self.probe]

    def on_response(self, walk: Walk, resp: Response) -> None:
        if self.since is None and walk in self.parts:
            self.since = server_since(self.round_started, resp)

    def accept(self, walk: Walk, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each version (the stream's key: id and cursor) once: overlapping pages, the probe
        and the check repeat rows."""
        out = []
        for r in records:
            key = tuple(r.get(c) for c in self.stream.key)
            if key not in self.yielded:
                self.yielded.add(key)
                out.append(r)
        return out

    def fraction(self, walks: list[Walk]) -> float | None:
        return None

    def on_drained(self) -> list[Walk]:
        if self.phase == "probe":
            if not self.probe.probe_full:
                return []
            return self._parts()
        if self.phase == "parts":
            return self._check()
        return []

    def _parts(self) -> list[Walk]:
        """Equal slices of time: the probe's tasks (lowest ids) are no fair sample of
        updated_at, and a part cannot be split once paged. Twice the concurrency in parts
        evens out the load as the walks finish at different times."""
        self.phase = "parts"
        self.round_started = time.time()
        bounds = even_bounds(self.lo, self.hi, 2 * self.context.target_concurrency())
        self.parts = [self._walk(a, b) for a, b in bounds]
        return list(self.parts)

    def _check(self) -> list[Walk]:
        """The tasks updated inside the window since the parts began. Not where the window
        ended before they began (it holds no task stamped since), nor after parts of one request
        each: those were read side by side within a moment or two, where a change between them
        is not worth a request on every run of today's partition."""
        self.phase = "check"
        since = self.since if self.since is not None else int(time.time()) - 2
        if all(w.requests <= 1 for w in self.parts) or since > self.hi:
            return []
        return [self._walk(max(self.lo, since), self.hi, kind="verify")]


__all__ = ["TasksStrategy"]
