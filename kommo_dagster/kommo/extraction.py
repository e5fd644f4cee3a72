"""One `KommoClient.iter_records` call of an incremental stream: walks run concurrently.

Decisions (what to request next, when to split a walk) are all taken in one coordinator thread, as
results come back; the pool's threads only run requests. Pages reach the consumer through a small
bounded queue, so the API keeps working while the consumer handles a page (staging it, writing
it), and memory stays bounded: a slow consumer holds back requests once the queue is full, never
more than `out_pages` pages wait (see `out_pages`). What is walked is the stream's `Strategy`'s
business.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from kommo_dagster.kommo.errors import KommoError
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.stats import ClientStats, PartStats, Progress, StatsRecorder
from kommo_dagster.kommo.streams import Stream
from kommo_dagster.kommo.tasks import TasksStrategy
from kommo_dagster.kommo.walks.base import Job, Walk
from kommo_dagster.kommo.walks.strategies import (
    KeysetStrategy,
    NewestFirstStrategy,
    Strategy,
    WalkContext,
)

log = logging.getLogger("kommo_dagster.kommo")

ProgressCallback = Callable[[Progress], None]
# Pages waiting for the consumer: at least this many, so a consumer pause of a few requests
# does not hold the walks back...
OUT_PAGES = 8
# ...and, under a rate limit, the pages of this many seconds at the limit. A consumer pauses at
# each batch (building it, staging it, collecting its garbage), longest when the machine is
# short of CPU: ten accounts extracting at once on 2 cores paused for over 8 pages, and the
# coordinator, blocked on the full queue, left answered walks without their next request (up to
# 1.3 s without one; an account under 0.90 of its limit in two tries of three). Unlimited, the
# consumer is the bottleneck anyway and a longer queue would only hold more pages in memory...
OUT_SECONDS = 3.0
# ...as it would at a limit far above Kommo's (allowed for a test server): never more than this.
OUT_PAGES_MAX = 24
STRATEGIES: dict[str, type[Strategy]] = {
    "keyset": KeysetStrategy,
    "newest_first": NewestFirstStrategy,
    "by_id": TasksStrategy,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Runtime:
    """What an extraction uses of its client: the walks' context, the worker pool, the
    counters and the progress callback."""

    walks: WalkContext
    submit: Callable[[Callable[[], Any]], Any]
    out_pages: int
    stats: StatsRecorder
    progress: ProgressCallback | None
    progress_interval: float


def out_pages(requests_per_second: float | None) -> int:
    """How many pages may wait for the consumer: `OUT_PAGES`, or `OUT_SECONDS` of pages at the
    limit if that is more (a page is at most one request), up to `OUT_PAGES_MAX`."""
    if requests_per_second is None:
        return OUT_PAGES
    return min(OUT_PAGES_MAX, max(OUT_PAGES, math.ceil(requests_per_second * OUT_SECONDS)))


def progress_report(
    stream: str,
    window: tuple[datetime | None, datetime | None],
    *,
    pages: int,
    rows: int,
    before: ClientStats,
    now: ClientStats,
    started: float,
    fraction: float | None = None,
) -> Progress:
    elapsed = time.monotonic() - started
    requests = now.requests - before.requests
    eta = None
    if fraction is not None and fraction > 0:
        eta = elapsed * (1 - fraction) / fraction
    return Progress(
        stream=stream,
        window_start=window[0],
        window_end=window[1],
        pages=pages,
        rows=rows,
        requests=requests,
        elapsed=elapsed,
        requests_per_second=requests / elapsed if elapsed > 0 else 0.0,
        retries=now.retries - before.retries,
        unsent=now.unsent - before.unsent,
        throttled=now.throttled - before.throttled,
        fraction_done=fraction,
        eta_seconds=eta,
    )


class _Cancelled(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class _Failed:
    """An exception of the coordinator thread, carried to the consumer to be raised there."""

    error: BaseException


_DONE = object()


class Extraction:
    """The walks of one window of one stream, and the thread that coordinates them."""

    def __init__(
        self,
        runtime: Runtime,
        stream: Stream,
        lo: int,
        hi: int,
        *,
        start: datetime | None,
        end: datetime | None,
    ):
        strategy = STRATEGIES.get(stream.paging)
        if strategy is None:
            raise KommoError(f"{stream.name} is not an incremental stream the client can walk")
        self.runtime = runtime
        self.strategy = strategy(context=runtime.walks, stream=stream, lo=lo, hi=hi)
        self.stream = stream
        self.lo, self.hi = lo, hi
        self.window = (start, end)
        self.results: queue.Queue = queue.Queue()
        self.walks: list[Walk] = []
        self.inflight = 0
        self.pages = 0
        self.rows = 0
        self.cancelled = threading.Event()

    # The loop.
    def _run_job(self, job: Job) -> None:
        if self.cancelled.is_set():
            self.results.put((job, None, _Cancelled()))
            return
        try:
            self.results.put((job, job.run(), None))
        except BaseException as exc:
            self.results.put((job, None, exc))

    def _submit(self, job: Job) -> None:
        job.walk.inflight = True
        self.inflight += 1
        self.runtime.submit(lambda: self._run_job(job))

    def _split_one(self, active: list[Walk]) -> Walk | None:
        """A new walk from the busiest walk that can give one: free splits first, and a cut
        only once every walk has a first page to tell how much it has left."""
        ranked = sorted(active, key=lambda w: w.remaining_pages(), reverse=True)
        known = all(w.sized for w in active)
        for cut in (False, True) if known else (False,):
            for w in ranked:
                new = w.split(cut=cut)
                if new is not None:
                    return new
        return None

    def _fill(self) -> None:
        target = self.runtime.walks.target_concurrency()
        while True:
            active = [w for w in self.walks if not w.done]
            if not active or len(active) >= target:
                break
            new = self._split_one(active)
            if new is None:
                break
            self.walks.append(new)
        for w in self.walks:
            if not w.done and not w.inflight:
                job = w.next_job()
                if job is not None:
                    self._submit(job)

    def _emit(self, before: ClientStats, started: float, *, done: bool = False) -> None:
        callback = self.runtime.progress
        if callback is None:
            return
        p = progress_report(
            self.stream.name,
            self.window,
            pages=self.pages,
            rows=self.rows,
            before=before,
            now=self.runtime.stats.snapshot(),
            started=started,
            fraction=1.0 if done else self.strategy.fraction(self.walks),
        )
        if done:
            p = dataclasses.replace(p, done=True, eta_seconds=0.0)
        try:
            callback(p)
        except Exception:
            log.exception("the progress callback failed")

    def _record_parts(self) -> None:
        for w in self.walks:
            self.runtime.stats.part(
                PartStats(
                    stream=self.stream.name,
                    kind=w.kind,
                    start=w.lo,
                    end=w.hi,
                    requests=w.requests,
                    rows=w.rows,
                )
            )

    def _put(self, out: queue.Queue, item: Any) -> bool:
        """Hand ``item`` to the consumer; False if the consumer went away meanwhile."""
        while not self.cancelled.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _next_result(self) -> tuple[Job, Any] | None:
        """The next finished job and its result (None after a short wait, so a consumer that
        stops is not held up by a slow request); raises what the job raised."""
        try:
            job, result, error = self.results.get(timeout=0.1)
        except queue.Empty:
            return None
        self.inflight -= 1
        job.walk.inflight = False
        if error is not None:
            raise error
        return job, result

    def _handle(self, job: Job, result: Any) -> list[dict[str, Any]]:
        """Hand a result to its walk and the strategy; start what comes next."""
        walk = job.walk
        if isinstance(result, Response):
            self.strategy.on_response(walk, result)
        records = self.strategy.accept(walk, walk.on_result(job, result))
        if self.inflight == 0 and all(w.done for w in self.walks):
            self.walks.extend(self.strategy.on_drained())
        self._fill()
        return records

    def _coordinate(self, out: queue.Queue) -> None:
        """The loop of the coordinator thread: submit, collect, decide, hand pages over."""
        try:
            self.walks.extend(self.strategy.start())
            self._fill()
            while self.inflight and not self.cancelled.is_set():
                done = self._next_result()
                if done is None:
                    continue
                records = self._handle(*done)
                if records:
                    self.pages += 1
                    self.rows += len(records)
                    self.runtime.stats.page(len(records))
                    if not self._put(out, records):
                        return
            self._put(out, _DONE)
        except BaseException as exc:
            self._put(out, _Failed(exc))

    def run(self) -> Iterator[list[dict[str, Any]]]:
        before = self.runtime.stats.snapshot()
        started = time.monotonic()
        if self.lo > self.hi:
            # An empty window (start >= end): nothing to ask.
            self._emit(before, started, done=True)
            return
        out: queue.Queue = queue.Queue(maxsize=self.runtime.out_pages)
        coordinator = threading.Thread(
            target=self._coordinate, args=(out,), name=f"kommo-{self.stream.name}", daemon=True
        )
        coordinator.start()
        finished = False
        try:
            yield from self._consume(out, before, started)
            finished = True
        finally:
            self.cancelled.set()
            coordinator.join()
            self._record_parts()
        if finished:
            self._emit(before, started, done=True)

    def _consume(
        self, out: queue.Queue, before: ClientStats, started: float
    ) -> Iterator[list[dict[str, Any]]]:
        """The pages the coordinator hands over, with a progress report every interval."""
        interval = self.runtime.progress_interval
        next_report = started + interval
        while True:
            timeout = max(0.0, next_report - time.monotonic())
            try:
                item = out.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            if item is not None:
                yield item
            if time.monotonic() >= next_report:
                self._emit(before, started)
                next_report = time.monotonic() + interval


__all__ = ["Extraction", "ProgressCallback", "Runtime", "out_pages", "progress_report"]
