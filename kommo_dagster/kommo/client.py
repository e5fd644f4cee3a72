"""`KommoClient`: the account's streams as pages of raw records.

One client holds one HTTP connection pool and one worker pool. `iter_records` yields pages as they
arrive; behind it several sub-windows of the requested time window are walked concurrently (see
`kommo_dagster.kommo.walks` for how each stream is walked and what that guarantees), as many as
it takes to keep the account's request budget busy at the measured latency, and never more than
``max_workers``. A window with no rows costs one request (two for streams with a deleted list),
and nothing else: no request checks the token or the host first; the client's first answer does
(`kommo_dagster.kommo.host`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import (
    DEFAULT_MAX_WORKERS,
    DEFAULT_REQUESTS_PER_SECOND,
    KommoSettings,
    Secret,
)
from kommo_dagster.kommo.errors import (
    KommoError,
    KommoNotFoundError,
    KommoResponseError,
)
from kommo_dagster.kommo.extraction import (
    Extraction,
    ProgressCallback,
    Runtime,
    out_pages,
    progress_report,
)
from kommo_dagster.kommo.host import HostCheckedTransport
from kommo_dagster.kommo.ratelimit import DEFAULT_MARGIN, SharedRateLimiter, account_key
from kommo_dagster.kommo.stats import ClientStats, StatsRecorder
from kommo_dagster.kommo.streams import Stream, get_stream
from kommo_dagster.kommo.transport import Params, RetryPolicy
from kommo_dagster.kommo.walks.base import Decoder, record_ids, records_of
from kommo_dagster.kommo.walks.strategies import WalkContext

if TYPE_CHECKING:
    # PyArrow (with NumPy) and msgspec are imported beside the first requests (see
    # `iter_batches`): a run's first requests do not wait for them.
    import pyarrow as pa

    from kommo_dagster.kommo.link_rows import LinkRows

log = logging.getLogger("kommo_dagster.kommo")

DEFAULT_PROGRESS_INTERVAL = 5.0
DEFAULT_TIMEOUT = (10.0, 60.0)
# Rows per table of `iter_batches`: Arrow arrays and DuckDB inserts cost per call as well as per
# value; 10,000 leads are about 11 MB.
DEFAULT_BATCH_ROWS = 10_000


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
        token: str | Secret | None = None,
        base_url: str | None = None,
        subdomain: str | None = None,
        requests_per_second: float | None = DEFAULT_REQUESTS_PER_SECOND,
        max_workers: int = DEFAULT_MAX_WORKERS,
        rate_limit_dir: str | os.PathLike | None = None,
        ban_cooldown_seconds: float | None = None,
        settings: KommoSettings | None = None,
        progress: ProgressCallback | None = None,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        rate_limit_margin: float = DEFAULT_MARGIN,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ):
        if settings is None:
            settings = KommoSettings.build(
                token=token,
                subdomain=subdomain,
                base_url=base_url,
                requests_per_second=requests_per_second,
                max_workers=max_workers,
                rate_limit_dir=rate_limit_dir,
                ban_cooldown_seconds=ban_cooldown_seconds,
            )
        self.settings = settings
        self.base_url = settings.base_url
        # None (given directly, never from the environment) disables the limiter.
        self.requests_per_second = requests_per_second and settings.requests_per_second
        self.max_workers = settings.max_workers
        self.rate_limit_dir = settings.rate_limit_dir
        self.progress = progress
        self.progress_interval = progress_interval
        # The account's key, read once: its limiter and its ban are kept under it.
        key = account_key(self.base_url)
        self.limiter = self._limiter(key=key, margin=rate_limit_margin)
        self.ban = self._ban(key=key)
        self._stats = StatsRecorder()
        self._transport = self._build_transport(timeout=timeout, retry=retry or RetryPolicy())
        self._workers = _Workers(self.max_workers, closed=self._transport.cancelled)

    def _limiter(self, *, key: str, margin: float) -> SharedRateLimiter | None:
        """The account's budget shared on this machine; None when the rate is unlimited."""
        if self.requests_per_second is None:
            return None
        return SharedRateLimiter(
            key=key,
            requests_per_second=self.requests_per_second,
            directory=Path(self.rate_limit_dir),
            margin=margin,
        )

    def _ban(self, *, key: str) -> IPBan:
        """The account's ban, recorded beside the shared budget: every client of this machine
        waits out a ban one of them met."""
        return IPBan(
            key=key,
            directory=Path(self.rate_limit_dir),
            cooldown=self.settings.ban_cooldown_seconds,
        )

    def _build_transport(
        self, *, timeout: tuple[float, float], retry: RetryPolicy
    ) -> HostCheckedTransport:
        """The pooled connections every request goes through, behind the limiter and the ban:
        one kept alive for each worker and one for the calling thread's requests."""
        return HostCheckedTransport(
            env_prefix=self.settings.env_prefix,
            base_url=self.base_url,
            token=self.settings.token,
            limiter=self.limiter,
            ban=self.ban,
            stats=self._stats,
            pool_size=self.max_workers + 1,
            timeout=timeout,
            retry=retry,
        )

    @classmethod
    def from_settings(cls, settings: KommoSettings, **kwargs: Any) -> KommoClient:
        """A client of already validated settings (nothing is validated twice)."""
        return cls(settings=settings, requests_per_second=settings.requests_per_second, **kwargs)

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
        self._workers.shutdown()
        self._transport.close()

    def stats(self) -> ClientStats:
        return self._stats.snapshot()

    # --- plain requests -----------------------------------------------------------------------

    def get(self, path: str, params: Params = (), *, what: str | None = None) -> dict | None:
        """One GET of ``/api/v4/...`` with the client's limits and retries; None for 204."""
        return self._transport.scrubber.call(self._get, path, params, what=what)

    def _get(self, path: str, params: Params, *, what: str | None) -> dict | None:
        # Checked under the scrubber: the message quotes the path, which may hold the token.
        if not path.startswith("/"):
            raise ValueError(f"path must start with /: {path!r}")
        return self._transport.get(path, params, what=what).data

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
        pages = self._pages(get_stream(stream), start, end, parent_ids, decode=records_of)
        return self._transport.scrubber.iterate(pages)

    def iter_batches(
        self,
        stream: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        parent_ids: Iterable[int] | None = None,
        rows: int = DEFAULT_BATCH_ROWS,
        links: LinkRows | None = None,
    ) -> Iterator[pa.Table]:
        """The records `iter_records` yields, as Arrow tables of about ``rows`` rows with the
        contract's columns and types (`kommo_dagster.kommo.columns`). What loading a table
        needs, for a fraction of the CPU: list pages are decoded straight into typed values
        (`kommo_dagster.kommo.decoding`), no record becomes a dict and no JSON value a Python
        string. ``links`` gathers the rows of the stream's link tables from the same pages
        (`kommo_dagster.kommo.links`).
        """
        tables = self._batches(stream, start, end, parent_ids, rows=rows, links=links)
        return self._transport.scrubber.iterate(tables)

    def _batches(
        self,
        stream: str,
        start: datetime | None,
        end: datetime | None,
        parent_ids: Iterable[int] | None,
        *,
        rows: int,
        links: LinkRows | None,
    ) -> Iterator[pa.Table]:
        spec = get_stream(stream)
        # What decoding needs is imported beside the first requests, not before them, and ready
        # (or nearly) when their answers come: a walk waiting for it would fall behind its pace.
        threading.Thread(target=_import_decoding, name="kommo-imports", daemon=True).start()
        pages = self._pages(spec, start, end, parent_ids, decode=_typed_records_of)
        yield from _tables(spec.name, pages, rows=rows, links=links)

    def _pages(
        self,
        spec: Stream,
        start: datetime | None,
        end: datetime | None,
        parent_ids: Iterable[int] | None,
        *,
        decode: Decoder,
    ) -> Iterator[list[Any]]:
        if not spec.is_incremental:
            if start is not None or end is not None:
                log.debug("%s is a full table; the window is ignored", spec.name)
            return self._iter_full_table(spec, parent_ids)
        lo, hi = _window(start, end)
        runtime = Runtime(
            walks=WalkContext(
                transport=self._transport,
                target_concurrency=self.target_concurrency,
                decode=decode,
            ),
            submit=self._workers.submit,
            out_pages=out_pages(self.requests_per_second),
            stats=self._stats,
            progress=self.progress,
            progress_interval=self.progress_interval,
        )
        return Extraction(runtime, spec, lo, hi, start=start, end=end).run()

    def _iter_full_table(
        self, spec: Stream, parent_ids: Iterable[int] | None
    ) -> Iterator[list[dict[str, Any]]]:
        started = time.monotonic()
        before = self._stats.snapshot()
        rows = pages = 0
        if spec.paging == "per_parent":
            batches = self._iter_per_parent(spec, parent_ids)
        else:
            batches = self._iter_list(spec, spec.path)
        for batch in batches:
            if batch:
                pages += 1
                rows += len(batch)
                self._stats.page(len(batch))
                yield batch
        if self.progress is not None:
            p = progress_report(
                spec.name,
                (None, None),
                pages=pages,
                rows=rows,
                before=before,
                now=self.stats(),
                started=started,
                fraction=1.0,
            )
            self.progress(dataclasses.replace(p, done=True, eta_seconds=0.0))

    def _iter_list(
        self, spec: Stream, path: str, *, what: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The records at ``path``: one request for unpaged streams, else pages until Kommo
        announces no next one (a page may hold fewer rows than asked for: custom-field
        definitions come 50 a page whatever ``limit`` says)."""
        with_: Params = [("with", ",".join(spec.with_))] if spec.with_ else []
        if spec.page_size is None:
            yield records_of(spec, self._transport.get(path, with_, what=what))[0]
            return
        page = 1
        while True:
            params = [*with_, ("limit", spec.page_size), ("page", page)]
            records, has_next = records_of(spec, self._transport.get(path, params, what=what))
            yield records
            if not records or not has_next:
                return
            page += 1

    def _iter_per_parent(
        self, spec: Stream, parent_ids: Iterable[int] | None
    ) -> Iterator[list[dict[str, Any]]]:
        assert spec.parent is not None
        if parent_ids is None:
            parent = get_stream(spec.parent)
            parent_ids = [
                i
                for batch in self._iter_list(parent, parent.path)
                for i in record_ids(parent, batch)
            ]
        ids = list(parent_ids)
        for pid in ids:
            if type(pid) is not int:
                raise ValueError(f"parent ids of {spec.name} must be integers, got {pid!r}")

        def fetch(pid: int) -> list[dict[str, Any]]:
            path = spec.path_for(pid)
            try:
                return [
                    r
                    for page in self._iter_list(spec, path, what=f"{spec.parent} {pid}")
                    for r in page
                ]
            except KommoNotFoundError as exc:
                raise KommoNotFoundError(
                    f"Kommo has no {spec.parent} entry with id {pid} (404 on {path}); it may "
                    f"have been deleted since {spec.parent} were read: materialize "
                    f"{spec.parent} again",
                    status=404,
                    path=path,
                ) from exc

        futures = [self._workers.submit(lambda pid=pid: fetch(pid)) for pid in ids]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()


class _Workers:
    """The client's worker threads: started by the first task, so a client that only sends
    plain requests starts none, and stopped by `shutdown`. Once the client is closed (``closed``
    set) no task starts them again."""

    def __init__(self, max_workers: int, *, closed: threading.Event) -> None:
        self._max_workers = max_workers
        self._closed = closed
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> Future:
        with self._lock:
            if self._pool is None:
                if self._closed.is_set():
                    raise KommoError("the client is closed")
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="kommo")
            return self._pool.submit(fn)

    def shutdown(self) -> None:
        """Stop the threads, cancelling the tasks not begun, and wait for the running ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _import_decoding() -> None:
    import kommo_dagster.kommo.columns  # noqa: F401 - PyArrow, NumPy, msgspec, the typed decoder


def _typed_records_of(spec: Stream, response: Any) -> tuple[list[Any], bool]:
    from kommo_dagster.kommo.decoding import typed_records_of

    return typed_records_of(spec, response)


def _tables(
    name: str, pages: Iterator[list[Any]], *, rows: int, links: LinkRows | None
) -> Iterator[pa.Table]:
    """``pages`` as Arrow tables of about ``rows`` rows, and into ``links`` the rows of the
    stream's link tables. PyArrow's import, begun beside the first requests (`iter_batches`),
    is waited for here if it has not ended yet."""
    first = next(pages, None)
    if first is None:
        return
    from kommo_dagster.kommo.columns import ColumnBatch, page_columns

    batch = ColumnBatch(name)
    for page in itertools.chain([first], pages):
        batch.extend(page_columns(name, page))
        if links:
            links.add(page)
        if batch.rows >= rows:
            yield batch.take()
    if batch.rows:
        yield batch.take()


def _window(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """Inclusive cursor bounds (Unix seconds) of the half-open window [start, end)."""
    for name, value in (("start", start), ("end", end)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got {value!r}")
    lo = 0 if start is None else math.ceil(start.timestamp())
    hi = int(time.time()) if end is None else math.ceil(end.timestamp()) - 1
    return max(lo, 0), hi


__all__ = ["KommoClient", "KommoResponseError", "ProgressCallback"]
