"""`KommoClient`: the account's streams as pages of raw records.

One client holds one pooled HTTP session and one worker pool. `iter_records` yields pages as they
arrive; behind it several sub-windows of the requested time window are walked concurrently (see
`kommo_dagster.kommo.walks` for how each stream is walked and what that guarantees), as many as
it takes to keep the account's request budget busy at the measured latency, and never more than
``max_workers``. A window with no rows costs one request (two for streams with a deleted list).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from kommo_dagster.kommo.config import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUESTS_PER_SECOND,
    KommoSettings,
    Secret,
    base_url_for,
    rate_limit_dir_for,
    validate_max_workers,
    validate_requests_per_second,
    validate_token,
)
from kommo_dagster.kommo.errors import (
    KommoConsistencyError,
    KommoError,
    KommoNotFoundError,
    KommoResponseError,
)
from kommo_dagster.kommo.ratelimit import DEFAULT_MARGIN, SharedRateLimiter, account_key
from kommo_dagster.kommo.stats import ClientStats, PartStats, Progress, StatsRecorder
from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.kommo.transport import Params, Response, RetryPolicy, Transport
from kommo_dagster.kommo.walks import (
    Job,
    KeysetWalk,
    PagesWalk,
    TasksCheckWalk,
    Walk,
    chunk_bounds,
    even_bounds,
    records_of,
    server_since,
)

log = logging.getLogger("kommo_dagster.kommo")

ProgressCallback = Callable[[Progress], None]
DEFAULT_PROGRESS_INTERVAL = 5.0
DEFAULT_TIMEOUT = (10.0, 60.0)
# Seen tasks per chunk when a part is walked again: a chunk of this many fits one page.
TASK_CHUNK = 200


class KommoClient:
    """A Kommo API v4 client for one account.

    ``requests_per_second`` is the account's budget shared (through a file in
    ``rate_limit_dir``) with every other client of the same host on this machine; ``None``
    disables the limiter (only for servers without a limit, such as a local sandbox).
    ``progress`` receives a `Progress` every ``progress_interval`` seconds of an extraction and
    once at its end.
    """

    def __init__(
        self,
        *,
        token: str | Secret,
        base_url: str | None = None,
        subdomain: str | None = None,
        requests_per_second: float | None = DEFAULT_REQUESTS_PER_SECOND,
        max_workers: int = DEFAULT_MAX_WORKERS,
        progress: ProgressCallback | None = None,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        rate_limit_dir: str | os.PathLike | None = None,
        rate_limit_margin: float = DEFAULT_MARGIN,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_rewalks: int = 5,
    ):
        self.base_url = base_url_for(subdomain=subdomain, base_url=base_url)
        token = validate_token(token)
        self.requests_per_second = (
            None
            if requests_per_second is None
            else validate_requests_per_second(requests_per_second)
        )
        self.max_workers = validate_max_workers(max_workers)
        self.progress = progress
        self.progress_interval = progress_interval
        self.max_rewalks = max_rewalks
        self.rate_limit_dir = rate_limit_dir_for(rate_limit_dir)
        self.limiter = (
            None
            if self.requests_per_second is None
            else SharedRateLimiter(
                key=account_key(self.base_url),
                requests_per_second=self.requests_per_second,
                directory=Path(self.rate_limit_dir),
                margin=rate_limit_margin,
            )
        )
        self._stats = StatsRecorder()
        self._transport = Transport(
            base_url=self.base_url,
            token=token,
            limiter=self.limiter,
            stats=self._stats,
            pool_size=self.max_workers + 1,
            timeout=timeout,
            retry=retry or RetryPolicy(),
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: KommoSettings, **kwargs: Any) -> KommoClient:
        return cls(
            token=settings.token,
            base_url=settings.base_url,
            requests_per_second=settings.requests_per_second,
            max_workers=settings.max_workers,
            rate_limit_dir=settings.rate_limit_dir,
            **kwargs,
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **kwargs: Any) -> KommoClient:
        """A client configured by the ``KOMMO_*`` environment variables."""
        return cls.from_settings(KommoSettings.from_env(environ), **kwargs)

    def __repr__(self) -> str:
        rps = "unlimited" if self.requests_per_second is None else f"{self.requests_per_second:g}"
        return (
            f"KommoClient(base_url={self.base_url!r}, requests_per_second={rps}, "
            f"max_workers={self.max_workers})"
        )

    def __enter__(self) -> KommoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and close the pooled connections."""
        self._transport.cancelled.set()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._transport.close()

    def stats(self) -> ClientStats:
        return self._stats.snapshot()

    # --- plain requests -----------------------------------------------------------------------

    def get(self, path: str, params: Params = (), *, what: str | None = None) -> dict | None:
        """One GET of ``/api/v4/...`` with the client's limits and retries; None for 204."""
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        return self._transport.get(path, params, what=what).data

    def _submit(self, fn: Callable[[], Any]):
        with self._pool_lock:
            if self._pool is None:
                if self._transport.cancelled.is_set():
                    raise KommoError("the client is closed")
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kommo")
            return self._pool.submit(fn)

    def target_concurrency(self) -> int:
        """Requests worth having in flight: the budget times the measured latency (Little's law),
        plus one to cover jitter; at least 2, at most ``max_workers``."""
        if self.requests_per_second is None:
            return self.max_workers
        latency = self._stats.latency
        if latency is None:
            return min(2, self.max_workers)
        wanted = math.ceil(self.requests_per_second * latency * 1.25) + 1
        return max(1, min(self.max_workers, max(2, wanted)))

    # --- streams ------------------------------------------------------------------------------

    def iter_records(
        self,
        stream: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        parent_ids: Iterable[int] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages (lists) of raw records of ``stream``.

        Incremental streams: the records whose cursor lies in ``[start, end)`` (tz-aware
        datetimes; None = from the beginning / up to now), each (id, cursor) once; leads,
        contacts and companies include their deleted records (is_deleted true). Full-table
        streams ignore the window; statuses are read for ``parent_ids`` (pipeline ids), or for
        every pipeline when None.
        """
        spec = get_stream(stream)
        if not spec.is_incremental:
            if start is not None or end is not None:
                log.debug("%s is a full table; the window is ignored", stream)
            return self._iter_full_table(spec, parent_ids)
        lo, hi = _window(start, end)
        return _Extraction(self, spec, lo, hi, start=start, end=end).run()

    def _iter_full_table(
        self, spec: Stream, parent_ids: Iterable[int] | None
    ) -> Iterator[list[dict[str, Any]]]:
        started = time.monotonic()
        before = self._stats.snapshot()
        rows = pages = 0
        if spec.paging == "single":
            resp = self._transport.get(spec.path, ())
            batches: Iterable[list[dict[str, Any]]] = [records_of(spec, resp)[0]]
        elif spec.paging == "per_parent":
            batches = self._iter_per_parent(spec, parent_ids)
        else:
            batches = self._iter_pages(spec)
        for batch in batches:
            if batch:
                pages += 1
                rows += len(batch)
                self._stats.page(len(batch))
                yield batch
        if self.progress is not None:
            p = _progress(spec.name, None, None, pages, rows, before, self.stats(), started, 1.0)
            self.progress(dataclasses.replace(p, done=True, eta_seconds=0.0))

    def _iter_pages(self, spec: Stream) -> Iterator[list[dict[str, Any]]]:
        limit = spec.page_size or 250
        page = 1
        while True:
            resp = self._transport.get(spec.path, [("limit", limit), ("page", page)])
            records, has_next = records_of(spec, resp)
            yield records
            if len(records) < limit or not has_next:
                return
            page += 1

    def _iter_per_parent(
        self, spec: Stream, parent_ids: Iterable[int] | None
    ) -> Iterator[list[dict[str, Any]]]:
        if parent_ids is None:
            parent = get_stream(spec.parent or "pipelines")
            resp = self._transport.get(parent.path, ())
            parent_ids = [p["id"] for p in records_of(parent, resp)[0]]
        ids = list(parent_ids)
        for pid in ids:
            if type(pid) is not int:
                raise ValueError(f"parent ids of {spec.name} must be integers, got {pid!r}")

        def fetch(pid: int) -> list[dict[str, Any]]:
            path = spec.path.format(pipeline_id=pid)
            try:
                resp = self._transport.get(path, (), what=f"pipeline {pid}")
            except KommoNotFoundError as exc:
                raise KommoNotFoundError(
                    f"Kommo has no pipeline with id {pid} (404 on {path}); it may have been "
                    "deleted since the pipelines were read: materialize pipelines again",
                    status=404,
                    path=path,
                ) from exc
            return records_of(spec, resp)[0]

        futures = [self._submit(lambda pid=pid: fetch(pid)) for pid in ids]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()


def _window(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """Inclusive cursor bounds (Unix seconds) of the half-open window [start, end)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got {value!r}")
    lo = 0 if start is None else math.ceil(start.timestamp())
    hi = int(time.time()) if end is None else math.ceil(end.timestamp()) - 1
    return max(lo, 0), hi


def _progress(
    stream: str,
    start: datetime | None,
    end: datetime | None,
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
        window_start=start,
        window_end=end,
        pages=pages,
        rows=rows,
        requests=requests,
        elapsed=elapsed,
        requests_per_second=requests / elapsed if elapsed > 0 else 0.0,
        retries=now.retries - before.retries,
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
# Pages waiting for the consumer: enough to cover a consumer pause of a few requests.
OUT_PAGES = 8


class _Extraction:
    """One `iter_records` call of an incremental stream.

    Decisions (what to request next, when to split) are all taken in one coordinator thread, as
    results come back; the pool's threads only run requests. Pages reach the consumer through a
    small bounded queue, so the API keeps working while the consumer handles a page (staging it,
    writing it), and memory stays bounded: a slow consumer holds back requests once the queue is
    full, never more than `OUT_PAGES` pages wait.
    """

    def __init__(
        self,
        client: KommoClient,
        stream: Stream,
        lo: int,
        hi: int,
        *,
        start: datetime | None,
        end: datetime | None,
    ):
        self.client = client
        self.stream = stream
        self.lo, self.hi = lo, hi
        self.start, self.end = start, end
        self.transport = client._transport
        self.results: queue.Queue = queue.Queue()
        self.walks: list[Walk] = []
        self.inflight = 0
        self.pages = 0
        self.rows = 0
        self.cancelled = threading.Event()
        # Tasks: the probe, the parts, and the check that closes the window.
        self.phase = "probe"
        self.rewalks = 0
        self.since: int | None = None
        self.round_started = time.time()
        # Tasks seen by part walks: id -> (updated_at, the walk that saw it last).
        self.task_seen: dict[int, tuple[int, Walk]] = {}
        self.round: list[PagesWalk] = []
        self.yielded: set[tuple[Any, Any]] = set()

    # The walks each stream starts with.
    def _start(self) -> None:
        s = self.stream
        with_ = (("with", ",".join(s.with_)),) if s.with_ else ()
        if s.paging == "keyset":
            lists = [("live", with_)]
            if s.has_deleted_list:
                lists.append(("deleted", (("with", ",".join((*s.with_, "only_deleted"))),)))
            for kind, base in lists:
                self.walks.append(
                    KeysetWalk(
                        stream=s,
                        transport=self.transport,
                        lo=self.lo,
                        hi=self.hi,
                        kind=kind,
                        base=base,
                        cursor=s.cursor or "updated_at",
                        max_rewalks=self.client.max_rewalks,
                    )
                )
        elif s.paging == "newest_first":
            self.walks.append(
                PagesWalk(
                    stream=s,
                    transport=self.transport,
                    lo=self.lo,
                    hi=self.hi,
                    kind="pages",
                    base=with_,
                    cursor=s.cursor or "created_at",
                    newest_first=True,
                    # New events enter a window that includes now at the top and push rows down
                    # a page; a server that inserts among past events would do the same to a
                    # window in the past. Either way a repeat is dropped by id.
                    dedupe=True,
                )
            )
        elif s.paging == "by_id":
            self.walks.append(self._task_walk(self.lo, self.hi, probe=True))
        else:
            raise KommoError(f"{s.name} is not an incremental stream the client can walk")

    def _task_walk(self, lo: int, hi: int, *, probe: bool = False) -> PagesWalk:
        s = self.stream
        return PagesWalk(
            stream=s,
            transport=self.transport,
            lo=lo,
            hi=hi,
            kind="probe" if probe else "pages",
            base=(("with", ",".join(s.with_)),) if s.with_ else (),
            cursor=s.cursor or "updated_at",
            order=s.order,
            probe_only=probe,
        )

    def _on_drained(self) -> None:
        """Every walk is done. Tasks go probe -> parts -> check -> (dirty parts again) -> check.

        A part walked in one request is a consistent snapshot and needs no check; only tasks
        seen by parts of several pages are checked. A part a departed task was seen in is
        walked again in chunks of about `TASK_CHUNK` seen tasks, so most chunks are single
        requests, which is why the rounds end even while the account keeps changing.
        """
        if self.stream.paging != "by_id":
            return
        if self.phase == "probe":
            probe = self.walks[0]
            assert isinstance(probe, PagesWalk)
            if probe.probe_full:
                # Equal slices of time: the probe's tasks (lowest ids) are no fair sample of
                # updated_at, and a part cannot be split once paged. Twice the concurrency in
                # parts evens out the load as the walks finish at different times.
                parts = even_bounds(self.lo, self.hi, 2 * self.client.target_concurrency())
                self._task_round(parts)
        elif self.phase == "walk":
            multi = {id(w) for w in self.round if w.requests > 1}
            if not multi:
                return
            self.phase = "check"
            self.walks.append(
                TasksCheckWalk(
                    stream=self.stream,
                    transport=self.transport,
                    lo=self.lo,
                    hi=self.hi,
                    kind="verify",
                    events_path=get_stream("events").path,
                    since=self.since if self.since is not None else int(time.time()) - 2,
                    seen=frozenset(t for t, (_, w) in self.task_seen.items() if id(w) in multi),
                )
            )
        elif self.phase == "check":
            check = self.walks[-1]
            assert isinstance(check, TasksCheckWalk)
            if check.departed is not None and not check.departed:
                return
            self.rewalks += 1
            if self.rewalks > self.client.max_rewalks:
                raise KommoConsistencyError(
                    f"tasks updated between {self.lo} and {self.hi} kept leaving the window "
                    f"while it was paged, {self.rewalks} rounds in a row; retry later or use a "
                    "smaller window"
                )
            if check.departed is None:
                dirty = [w for w in self.round if w.requests > 1]
            else:
                walks = (self.task_seen[t][1] for t in check.departed)
                dirty = list({id(w): w for w in walks}.values())
            log.info(
                "tasks left the window while it was paged; walking %d part(s) again", len(dirty)
            )
            parts: list[tuple[int, int]] = []
            for w in dirty:
                values = [u for u, walk in self.task_seen.values() if walk is w]
                parts += chunk_bounds(values, w.lo, w.hi, per_chunk=TASK_CHUNK)
            self._task_round(parts)

    def _task_round(self, parts: list[tuple[int, int]]) -> None:
        self.phase = "walk"
        self.since = None
        self.round_started = time.time()
        self.round = [self._task_walk(a, b) for a, b in parts]
        self.walks.extend(self.round)

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
        self.client._submit(lambda: self._run_job(job))

    def _fill(self) -> None:
        target = self.client.target_concurrency()
        while True:
            active = [w for w in self.walks if not w.done]
            if not active or len(active) >= target:
                break
            new = None
            for w in sorted(active, key=lambda w: w.remaining_pages(), reverse=True):
                new = w.split()
                if new is not None:
                    break
            if new is None:
                break
            self.walks.append(new)
        for w in self.walks:
            if not w.done and not w.inflight:
                job = w.next_job()
                if job is not None:
                    self._submit(job)

    def _accept(self, walk: Walk, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.stream.paging != "by_id":
            return records
        cursor = self.stream.cursor or "updated_at"
        out = []
        for r in records:
            key = (r.get("id"), r.get(cursor))
            if key in self.yielded:
                continue
            self.yielded.add(key)
            out.append(r)
        if walk.kind == "pages":
            for r in records:
                self.task_seen[r.get("id")] = (r.get(cursor), walk)
        return out

    def _fraction(self) -> float | None:
        total = self.hi - self.lo + 1
        walks = [w for w in self.walks if w.kind in ("live", "pages")]
        if total <= 0 or not walks:
            return None
        if self.stream.paging == "by_id":
            return None
        first = min(
            (getattr(w, "first_seen", None) or w.lo for w in walks if w.kind == "live"),
            default=self.lo,
        )
        if self.stream.paging == "keyset" and first > self.lo:
            # Nothing exists before the first record: that part is covered.
            total = self.hi - first + 1
            covered = sum(w.covered_seconds() for w in walks) - (first - self.lo)
        else:
            covered = sum(w.covered_seconds() for w in walks)
        return max(0.0, min(1.0, covered / total)) if total > 0 else None

    def _emit(self, before: ClientStats, started: float, *, done: bool = False) -> None:
        callback = self.client.progress
        if callback is None:
            return
        p = _progress(
            self.stream.name,
            self.start,
            self.end,
            self.pages,
            self.rows,
            before,
            self.client._stats.snapshot(),
            started,
            1.0 if done else self._fraction(),
        )
        if done:
            p = dataclasses.replace(p, done=True, eta_seconds=0.0)
        try:
            callback(p)
        except Exception:
            log.exception("the progress callback failed")

    def _record_parts(self) -> None:
        for w in self.walks:
            self.client._stats.part(
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

    def _coordinate(self, out: queue.Queue) -> None:
        """The loop of the coordinator thread: submit, collect, decide, hand pages over."""
        try:
            self._start()
            self._fill()
            while self.inflight and not self.cancelled.is_set():
                try:
                    # A short wait, so a consumer that stops is not held up by a slow request.
                    job, result, error = self.results.get(timeout=0.1)
                except queue.Empty:
                    continue
                self.inflight -= 1
                walk = job.walk
                walk.inflight = False
                if error is not None:
                    raise error
                if self.since is None and isinstance(result, Response) and walk.kind != "verify":
                    self.since = server_since(self.round_started, result)
                records = self._accept(walk, walk.on_result(job, result))
                if self.inflight == 0 and all(w.done for w in self.walks):
                    self._on_drained()
                self._fill()
                if records:
                    self.pages += 1
                    self.rows += len(records)
                    self.client._stats.page(len(records))
                    if not self._put(out, records):
                        return
            self._put(out, _DONE)
        except BaseException as exc:
            self._put(out, _Failed(exc))

    def run(self) -> Iterator[list[dict[str, Any]]]:
        before = self.client._stats.snapshot()
        started = time.monotonic()
        if self.lo > self.hi:
            # An empty window (start >= end): nothing to ask.
            self._emit(before, started, done=True)
            return
        interval = self.client.progress_interval
        next_report = started + interval
        finished = False
        out: queue.Queue = queue.Queue(maxsize=OUT_PAGES)
        coordinator = threading.Thread(
            target=self._coordinate, args=(out,), name=f"kommo-{self.stream.name}", daemon=True
        )
        coordinator.start()
        try:
            while True:
                timeout = max(0.0, next_report - time.monotonic())
                try:
                    item = out.get(timeout=timeout)
                except queue.Empty:
                    self._emit(before, started)
                    next_report = time.monotonic() + interval
                    continue
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                yield item
                if time.monotonic() >= next_report:
                    self._emit(before, started)
                    next_report = time.monotonic() + interval
            finished = True
        finally:
            self.cancelled.set()
            coordinator.join()
            self._record_parts()
        if finished:
            self._emit(before, started, done=True)


__all__ = ["KommoClient", "KommoResponseError", "ProgressCallback"]
