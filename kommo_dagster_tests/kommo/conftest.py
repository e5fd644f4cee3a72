"""Helpers for the client tests: clients pointed at a sandbox, windows, row comparison, and
hosts other than the sandbox that answer as Kommo might (or as it never should)."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kommo_dagster.kommo import KommoClient, RetryPolicy
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, get_stream
from kommo_dagster.sandbox import FaultConfig, KommoSandbox

# The sandbox's default data window, [2026-10-01, 2026-11-01).
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
INCREMENTAL = INCREMENTAL_STREAMS

# Fast retries for tests; retry_after from the sandbox (1 s) is still honoured.
FAST_RETRY = RetryPolicy(max_attempts=6, max_elapsed=30.0, backoff_base=0.01, backoff_max=0.05)
# Python's int() and float() read these, but no one writes a setting so: "1_0" read as 10,
# digits of other scripts (Arabic-Indic, full-width, Devanagari) as ASCII ones.
NOT_PLAIN = ["1_0", "\u0663", "\uff15", "\u0968.5", "1e1_0"]


@pytest.fixture
def client_for(tmp_path) -> Iterator[Callable[..., KommoClient]]:
    """Clients for a sandbox: `client_for(sb, requests_per_second=None, ...)`; closed after."""
    made: list[KommoClient] = []

    def make(sb: KommoSandbox, **kwargs: Any) -> KommoClient:
        kwargs.setdefault("token", sb.token)
        kwargs.setdefault("requests_per_second", None)
        kwargs.setdefault("rate_limit_dir", tmp_path / "rate")
        kwargs.setdefault("retry", FAST_RETRY)
        client = KommoClient(base_url=sb.base_url, **kwargs)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


def until_today(make: Callable[..., KommoSandbox], *, leads: int) -> tuple[KommoSandbox, datetime]:
    """A sandbox (from `sandbox_factory`, no rate limit) whose data fills the ten days before
    today's midnight (UTC), and that midnight: a window from it reaches now."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sb = make(
        leads=leads,
        requests_per_second=None,
        start=(today - timedelta(days=10)).date(),
        end=today.date(),
    )
    return sb, today


def fetch(
    client: KommoClient, stream: str, start: datetime | None = START, end: datetime | None = END
) -> list[dict[str, Any]]:
    return [r for page in client.iter_records(stream, start=start, end=end) for r in page]


def rows_of(stream: str, records: list[dict[str, Any]]) -> list[tuple]:
    """Contract rows as sorted tuples, for comparing with the sandbox's expected rows."""
    cols = to_columns(stream, records)
    return sorted(zip(*cols.values(), strict=True), key=repr)


def expected(sb: KommoSandbox, stream: str, start: datetime = START, end: datetime = END):
    """The sandbox's expected rows of `stream` whose cursor lies in [start, end)."""
    cursor = get_stream(stream).cursor
    lo, hi = start.timestamp(), end.timestamp()
    out = []
    for row in sb.expected_rows(stream):
        if cursor in row and not lo <= row[cursor] < hi:
            continue
        out.append(tuple(row.values()))
    return sorted(out, key=repr)


class Answering:
    """A stand-in for a client's ``get``: answers each call with the next of ``answers`` and
    records its path and params in ``calls``, for the readers that take any client."""

    def __init__(self, answers: list) -> None:
        self.answers: list = answers
        self.calls: list[tuple[str, list]] = []

    def get(self, path: str, params: Any = (), *, what: str | None = None) -> Any:
        self.calls.append((path, list(params)))
        return self.answers.pop(0)


class QuietHandler(BaseHTTPRequestHandler):
    """A handler of the tests' own servers (`http_server`): nothing logged to stderr."""

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[tuple[str, list]]:
    """A server on loopback that is not the sandbox: its URL, and a list its handler may record
    what it received in (``self.server.seen``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    seen: list = []
    server.seen = seen  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    *,
    content_type: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Send a whole answer with its length, so that the connection can be kept alive."""
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# --- an account and hosts that answer as Kommo might, for the transport's and answers' tests ---

SECRET = "tok-7Q2x-SECRET-do-not-print-9Z"


@pytest.fixture(scope="module")
def quiet_account():
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(
        SandboxConfig(seed=2, leads=300, requests_per_second=None, token=SECRET)
    ) as sb:
        yield sb


@pytest.fixture
def account(quiet_account):
    quiet_account.reset()
    yield quiet_account
    quiet_account.reset()
    quiet_account.update_config(
        rate_limit_style="json", unpaid=False, not_admin=False, faults=FaultConfig()
    )


class _Page(QuietHandler):
    """A host that is not Kommo: a login page, or broken JSON, with status 200."""

    def do_GET(self):
        if "broken" in self.path:
            reply(self, 200, b'{"_embedded": {"leads": [', content_type="application/hal+json")
        else:
            page = b"<!doctype html><html><body>Sign in</body></html>"
            reply(self, 200, page, content_type="text/html")


@pytest.fixture
def not_kommo():
    with http_server(_Page) as (url, _):
        yield url


class _Throttling(QuietHandler):
    """A gateway that answers 429, asking for the wait in the path's last part (``/wait/5``:
    ``retry_after`` 5 in the body; ``/header/nan``: ``Retry-After: nan``; ``/date/2``:
    ``Retry-After`` the HTTP-date 2 s from now); the times it was asked are recorded."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append(time.monotonic())
        _, style, value = self.path.rsplit("/", 2)
        if style == "date":
            when = email.utils.formatdate(time.time() + float(value), usegmt=True)
            headers, body = [("Retry-After", when)], b"{}"
        elif style == "header":
            headers, body = [("Retry-After", value)], b"{}"
        else:
            headers, body = (
                [],
                b'{"title": "Too Many Requests", "retry_after": %s}' % value.encode(),
            )
        reply(self, 429, body, content_type="application/problem+json", headers=headers)


@pytest.fixture
def throttling():
    with http_server(_Throttling) as served:
        yield served
