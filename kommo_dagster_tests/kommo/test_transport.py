"""Retries, deadlines, the shared budget and secrecy, against the sandbox over real HTTP."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
import traceback

import pytest

from kommo_dagster.kommo import (
    KommoError,
    KommoIPBlockedError,
    KommoNotFoundError,
    KommoResponseError,
    KommoRetryError,
    RetryPolicy,
)
from kommo_dagster.sandbox import FaultConfig
from kommo_dagster_tests.kommo.conftest import (
    END,
    FAST_RETRY,
    SECRET,
    START,
    QuietHandler,
    expected,
    fetch,
    http_server,
    reply,
    rows_of,
)

pytestmark = pytest.mark.timeout(120)


def test_a_429_pauses_every_user_of_the_account(account, client_for):
    account.inject_fault("429", count=1)
    a = client_for(account, requests_per_second=1000)
    b = client_for(account, requests_per_second=1000)
    records: list[dict] = []  # the worker's rows: an error in its thread would be lost
    worker = threading.Thread(target=lambda: records.extend(fetch(a, "companies")))
    worker.start()
    # While the first client waits out its 429, the other one meets the pause too.
    paused = []
    while worker.is_alive() and not paused:
        at, wait = b.limiter.try_acquire()
        if at is None and 0.2 < wait <= 1.0:
            paused.append(wait)
    worker.join()
    assert paused and a.stats().throttled == 1
    assert rows_of("companies", records) == expected(account, "companies")


@pytest.mark.parametrize("kind", ["500_json", "500_html", "502", "504", "drop"])
def test_every_fault_is_retried(account, client_for, kind):
    account.inject_fault(kind, count=2)
    client = client_for(account)
    assert rows_of("contacts", fetch(client, "contacts")) == expected(account, "contacts")
    assert client.stats().retries == 2 and client.stats().throttled == 0
    assert client.stats().unsent == 0  # each failed request went out, a dropped one too


class _GatewayThenKommo(QuietHandler):
    """A gateway that answers its first request with the 5xx in the path (``/api/v4/520``),
    HTML as gateways write them, and then as Kommo does."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append(self.path)
        if len(self.server.seen) == 1:
            status = int(self.path.split("?")[0].rsplit("/", 1)[1])
            reply(self, status, b"<html>origin error</html>", content_type="text/html")
        else:
            reply(self, 200, b'{"_links": {}}', content_type="application/hal+json")


@pytest.mark.parametrize("status", [501, 507, 520, 524])
def test_any_5xx_is_retried(tmp_path, status):
    from kommo_dagster.kommo import KommoClient

    with (
        http_server(_GatewayThenKommo) as (url, seen),
        KommoClient(
            base_url=url, token=SECRET, rate_limit_dir=tmp_path, retry=FAST_RETRY
        ) as client,
    ):
        assert client.get(f"/api/v4/{status}") == {"_links": {}}
        assert client.stats().retries == 1 and len(seen) == 2


def test_a_read_timeout_is_retried(account, client_for):
    account.update_config(faults=FaultConfig(slow_seconds=1.5))
    account.inject_fault("slow", count=1)
    client = client_for(account, timeout=(2.0, 0.3))
    assert rows_of("companies", fetch(client, "companies")) == expected(account, "companies")
    assert client.stats().retries == 1


def test_a_refused_connection_is_retried_as_a_connection_failure(tmp_path):
    """Not as a connect timeout, though urllib3 counts a refused connection as one."""
    from kommo_dagster.kommo import KommoClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    policy = RetryPolicy(max_attempts=2, max_elapsed=10, backoff_base=0.01, backoff_max=0.02)
    base_url = f"http://127.0.0.1:{port}"
    client = KommoClient(base_url=base_url, token=SECRET, rate_limit_dir=tmp_path, retry=policy)
    with client, pytest.raises(KommoRetryError) as err:
        client.get("/api/v4/account")
    msg = str(err.value)
    assert "failed after 2 attempts" in msg and "connection failed (NewConnectionError" in msg
    assert "refused" in msg and err.value.last_status is None
    # It names the host and the variables that set it, what to check when nothing answers.
    assert f"No answer from {base_url}: check that KOMMO_BASE_URL or KOMMO_SUBDOMAIN" in msg


def test_progress_says_retries_that_could_not_connect_sent_no_request(tmp_path):
    """A refused connection is retried without a request going out: the progress line says so
    rather than "0 requests, 3 retries"."""
    from kommo_dagster.kommo import KommoClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    policy = RetryPolicy(max_attempts=4, max_elapsed=10, backoff_base=0.2, backoff_max=0.2)
    reports: list = []
    client = KommoClient(
        base_url=f"http://127.0.0.1:{port}",
        token=SECRET,
        rate_limit_dir=tmp_path,
        retry=policy,
        progress=reports.append,
        progress_interval=0.05,
    )
    with client, pytest.raises(KommoRetryError, match="failed after 4 attempts"):
        list(client.iter_records("leads", start=START, end=END))
    stats = client.stats()
    # (leads walks live and deleted records at once: each walk retried its own request)
    assert stats.requests == 0 and stats.unsent == stats.retries >= 3
    # Reported while the retries went on: every retry one that could not connect.
    assert reports and all(p.requests == 0 and p.unsent == p.retries for p in reports)
    line = str(max(reports, key=lambda p: p.retries))
    assert "0 requests, " in line and "could not connect, so sent no request" in line, line


def test_seeded_faults_on_every_stream_still_give_exact_streams(sandbox_factory, client_for):
    faults = FaultConfig(error_500_json=0.05, error_502=0.05, error_504=0.05, drop=0.05, seed=3)
    sb = sandbox_factory(leads=1200, requests_per_second=None, faults=faults)
    # One request in five fails. With three workers the draws fall on requests in whatever
    # order they arrive, so six attempts (FAST_RETRY) all failing, 0.2**6 for each of the
    # ~116 requests, ended about one run in 130; with twelve, one in two million.
    retry = dataclasses.replace(FAST_RETRY, max_attempts=12)
    client = client_for(sb, max_workers=3, retry=retry)
    for stream in ("leads", "tasks", "events"):
        assert rows_of(stream, fetch(client, stream)) == expected(sb, stream)
    assert client.stats().retries > 0


def test_retries_are_bounded_and_the_error_says_what_was_tried(account, client_for):
    account.inject_fault("502", count=10)
    policy = RetryPolicy(max_attempts=3, max_elapsed=10, backoff_base=0.01, backoff_max=0.02)
    client = client_for(account, retry=policy)
    with pytest.raises(KommoRetryError) as err:
        fetch(client, "companies")
    msg = str(err.value)
    assert "failed after 3 attempts" in msg and "HTTP 502" in msg and "s (limits" in msg
    assert "No answer from" not in msg  # the host answered: no hint to check it
    assert err.value.attempts == 3 and err.value.last_status == 502


def test_the_backoff_stays_within_its_bound_however_many_the_attempts():
    policy = RetryPolicy(max_attempts=5000, max_elapsed=1e9, backoff_base=0.5, backoff_max=30)
    for attempt in (1, 2, 7, 100, 1100, 4999):
        assert 0 < policy.backoff(attempt) <= min(30, 0.5 * 2.0 ** min(attempt - 1, 10))


def test_a_retry_budget_in_time_is_honoured(account, client_for):
    account.inject_fault("429", count=10)
    policy = RetryPolicy(max_attempts=50, max_elapsed=1.5)
    client = client_for(account, retry=policy)
    with pytest.raises(KommoRetryError, match="kept answering 429") as err:
        fetch(client, "companies")
    assert err.value.attempts < 50 and err.value.last_status == 429


def test_a_netrc_entry_for_the_host_does_not_replace_the_token(
    account, client_for, tmp_path, monkeypatch
):
    """A ~/.netrc entry for the Kommo host is never applied: its Basic header would replace the
    token's, and the sandbox would answer 401."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password something-else\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = client_for(account)
    assert client.get("/api/v4/account")["id"]
    assert client.stats().requests == 1


def test_a_429_asking_for_longer_than_the_policy_waits_is_not_retried_early(throttling, tmp_path):
    """Retrying after the policy's longest wait, before the time Kommo asked for, is not
    honouring the 429: it draws more of them, and an IP that keeps drawing them is blocked."""
    from kommo_dagster.kommo import KommoClient

    url, seen = throttling
    policy = RetryPolicy(max_attempts=4, max_elapsed=30, retry_after_max=0.2)
    with KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path, retry=policy) as client:
        with pytest.raises(KommoRetryError, match="asked to wait 5s") as err:
            client.get("/api/v4/wait/5")
        assert len(seen) == 1 and err.value.last_status == 429
        # Every user of the account's budget holds off for as long as Kommo asked.
        at, wait = client.limiter.try_acquire()
        assert at is None and 4 < wait <= 5


@pytest.mark.parametrize("style", ["wait", "header"])
def test_a_429_asking_for_ages_says_how_long_everyone_holds_off(throttling, tmp_path, style):
    """The shared pause is capped at an hour: the message says so, in a readable number."""
    from kommo_dagster.kommo import KommoClient
    from kommo_dagster.kommo.ratelimit import BLOCK_MAX

    url, seen = throttling
    with KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path) as client:
        with pytest.raises(KommoRetryError) as err:
            client.get(f"/api/v4/{style}/1e300")
        message = str(err.value)
        assert "asked to wait 1.0e+300s" in message and len(message) < 500, message
        assert f"holds off for {BLOCK_MAX:.0f}s; run again later" in message, message
        at, wait = client.limiter.try_acquire()
        assert at is None and BLOCK_MAX - 5 < wait <= BLOCK_MAX and len(seen) == 1


def test_a_pause_longer_than_the_policy_waits_fails_the_request_before_it_is_sent(
    throttling, tmp_path
):
    """Another client of the account met a 429 asking for longer than this one's policy
    waits: the request would sit silently in the wait for its slot for all that time."""
    from kommo_dagster.kommo import KommoClient
    from kommo_dagster.kommo.ratelimit import SharedRateLimiter, account_key

    url, seen = throttling
    policy = RetryPolicy(max_attempts=4, max_elapsed=30, retry_after_max=1)
    client = KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path, retry=policy)
    other = SharedRateLimiter(key=account_key(url), requests_per_second=7, directory=tmp_path)
    other.block_for(8)
    started = time.monotonic()
    with client, pytest.raises(KommoError, match=r"holds off for [78]s more") as err:
        client.get("/api/v4/wait/1")
    assert time.monotonic() - started < 2 and seen == []
    assert "run again later" in str(err.value)


def test_a_budget_file_that_cannot_be_opened_is_no_connection_failure(not_kommo, tmp_path):
    """An error of the shared budget's file, met right before a send, went through urllib3 as
    a dropped connection: retried to the end, then reported as a connection failure."""
    from kommo_dagster.kommo import KommoClient

    client = KommoClient(
        base_url=not_kommo, token=SECRET, rate_limit_dir=tmp_path, retry=FAST_RETRY
    )
    client.limiter.path.mkdir()  # the state file's name taken by a folder
    with client, pytest.raises(KommoError, match="KOMMO_RATE_LIMIT_DIR") as err:
        client.get("/api/v4/leads")
    assert str(client.limiter.path) in str(err.value) and client.stats().retries == 0


def test_the_token_appears_nowhere(
    account, sandbox_factory, client_for, not_kommo, caplog, tmp_path
):
    """Every error path, every log line (urllib3's included), reprs and progress reports."""
    texts: list[str] = []

    def record(exc: BaseException) -> None:
        texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    caplog.set_level(logging.DEBUG)
    reports: list = []
    client = client_for(account, progress=lambda p: reports.append(str(p) + repr(p)))
    texts += [repr(client), str(client), repr(client.limiter), repr(client.stats())]
    fetch(client, "leads")
    scenarios = [
        (lambda: account.inject_fault("502", count=10), {"retry": RetryPolicy(max_attempts=2)}),
        (lambda: account.update_config(unpaid=True), {}),
        (lambda: account.update_config(unpaid=False, not_admin=True), {}),
        (lambda: account.update_config(not_admin=False), {"token": SECRET + "x"}),
    ]
    for setup, kwargs in scenarios:
        setup()
        c = client_for(account, **kwargs)
        with pytest.raises(KommoError) as err:
            fetch(c, "users")
        record(err.value)
    account.reset()
    with pytest.raises(KommoNotFoundError) as err:
        list(client.iter_records("statuses", parent_ids=[1]))
    record(err.value)
    banned = sandbox_factory(leads=300, requests_per_second=1, ban_after=1, token=SECRET)
    c = client_for(banned, requests_per_second=None)
    with pytest.raises(KommoIPBlockedError) as err:
        for _ in range(3):
            fetch(c, "pipelines")
    record(err.value)
    from kommo_dagster.kommo import KommoClient

    with KommoClient(base_url=not_kommo, token=SECRET, rate_limit_dir=tmp_path) as c:
        with pytest.raises(KommoResponseError) as err:
            c.get("/api/v4/leads")
        record(err.value)
    texts += [*reports, caplog.text]
    assert len(texts) > 20 and caplog.text
    for text in texts:
        assert SECRET not in text


class _Echoing(QuietHandler):
    """A host that quotes the token it was sent in what it answers: ``/ctype`` in the
    Content-Type of a 200 that is not JSON, ``/surrogate`` in a record's name that holds a lone
    surrogate escape, which the client's error quotes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        token = self.headers["Authorization"].removeprefix("Bearer ")
        if self.path.endswith("/ctype"):
            reply(self, 200, b"ok", content_type=f"text/plain; charset=utf-8; echo={token}")
        else:
            name = f'"{token} \\ud800"'.encode()
            body = b'{"_embedded": {"leads": [{"id": 5, "name": %s}]}}' % name
            reply(self, 200, body, content_type="application/hal+json")


def test_the_token_is_scrubbed_from_what_an_answer_quotes(tmp_path, caplog):
    """A message quoting an answer's header or a value of its body, whatever the case the
    header's value was read in."""
    from kommo_dagster.kommo import KommoClient

    caplog.set_level(logging.DEBUG)
    with (
        http_server(_Echoing) as (url, _),
        KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path) as client,
    ):
        with pytest.raises(
            KommoResponseError, match="text/plain; charset=utf-8; echo=\\*\\*\\*"
        ) as ctype:
            client.get("/api/v4/ctype")
        with pytest.raises(KommoResponseError, match="lone UTF-16 surrogate") as surrogate:
            client.get("/api/v4/surrogate")
    texts = [caplog.text]
    for exc in (ctype.value, surrogate.value):
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    assert "(record id 5): '*** \\ud800'" in str(surrogate.value)
    for text in texts:
        assert SECRET.lower() not in text.lower()


def test_closing_the_client_ends_a_wait_for_the_budget(account, client_for):
    client = client_for(account, requests_per_second=5)
    client.limiter.block_for(60)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fetch(client, "tasks")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    client.close()
    worker.join(timeout=30)
    assert not worker.is_alive()
    # Cancelled while waiting, or refused if the close came first: never a request.
    assert errors and isinstance(errors[0], KommoError)
    assert "cancelled" in str(errors[0]) or "closed" in str(errors[0])
    assert account.stats()["requests"] == 0


class _Trickling(QuietHandler):
    """Sends the headers, then the body a byte every 0.1 s: each read is in time (the read
    timeout is 0.5 s), the whole answer never. ``/close`` gives no length and ends the body
    with the connection, so a body cut short would read as whole; ``/ok`` answers at once."""

    protocol_version = "HTTP/1.1"
    body = b'{"_embedded": {"leads": [], "more": "xxxxxxxx"}}'

    def do_GET(self):
        self.server.seen.append(self.path)
        if self.path.startswith("/ok"):
            reply(self, 200, b'{"_links": {}}', content_type="application/hal+json")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/hal+json")
        if self.path.startswith("/close"):
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for i in range(len(self.body)):
                self.wfile.write(self.body[i : i + 1])
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            self.close_connection = True  # the client gave up


@pytest.fixture
def trickling():
    with http_server(_Trickling) as served:
        yield served


@pytest.mark.parametrize("path", ["/api/v4/leads", "/close/api/v4/leads"])
def test_an_answer_trickling_in_slower_than_its_deadline_is_retried_then_fails(
    trickling, tmp_path, path
):
    """Each byte comes well within the read timeout; the whole answer (5 s) never within the
    deadline of one attempt, 0.5 + 2 x 0.5 s from sending."""
    from kommo_dagster.kommo import KommoClient

    base_url, seen = trickling
    policy = RetryPolicy(max_attempts=2, max_elapsed=30, backoff_base=0.01, backoff_max=0.02)
    client = KommoClient(
        base_url=base_url, token=SECRET, rate_limit_dir=tmp_path, retry=policy, timeout=(0.5, 0.5)
    )
    started = time.monotonic()
    with client, pytest.raises(KommoRetryError) as err:
        client.get(path)
    took = time.monotonic() - started
    msg = str(err.value)
    assert "failed after 2 attempts" in msg, msg
    assert "read timeout (the whole answer took longer than 1.5s)" in msg, msg
    assert SECRET not in msg and err.value.last_status is None
    assert 3.0 <= took < 6.0, took  # two attempts of 1.5 s each, not two 4.8 s trickles
    assert seen == [path, path] and client.stats().retries == 1


def test_an_answer_in_time_is_unaffected_by_its_deadline(trickling, tmp_path):
    from kommo_dagster.kommo import KommoClient
    from kommo_dagster.kommo.watchdog import WATCHDOG

    base_url, seen = trickling
    with KommoClient(
        base_url=base_url, token=SECRET, rate_limit_dir=tmp_path, timeout=(0.2, 0.2)
    ) as client:
        for _ in range(3):
            assert client.get("/ok") == {"_links": {}}
            time.sleep(0.7)  # past the deadline (0.6 s) of the request before
        pool = client._transport.connections._pool
        assert pool.num_connections == 1 and pool.num_requests == 3 and seen == ["/ok"] * 3
        assert client.stats().retries == 0
    assert WATCHDOG.in_flight() == 0


def test_a_late_answer_shuts_no_other_requests_connection(trickling, tmp_path):
    """Requests through one client's pool while deadlines of trickling answers fire: every
    answer in time is read whole on the first attempt, on connections kept alive."""
    from concurrent.futures import ThreadPoolExecutor

    from kommo_dagster.kommo import KommoClient
    from kommo_dagster.kommo.watchdog import WATCHDOG

    base_url, seen = trickling
    policy = RetryPolicy(max_attempts=2, max_elapsed=30, backoff_base=0.01, backoff_max=0.02)
    client = KommoClient(
        base_url=base_url,
        token=SECRET,
        rate_limit_dir=tmp_path,
        retry=policy,
        timeout=(0.5, 0.5),
        max_workers=8,
        requests_per_second=None,
    )
    slow_done = threading.Event()

    def slow(path: str) -> str:
        with pytest.raises(KommoRetryError, match=r"the whole answer took longer than 1\.5s"):
            client.get(path)
        return path

    def fast() -> int:
        answered = 0
        while not slow_done.is_set():
            assert client.get("/ok") == {"_links": {}}
            answered += 1
            time.sleep(0.01)
        return answered

    with client, ThreadPoolExecutor(max_workers=9) as pool:
        fast_runs = [pool.submit(fast) for _ in range(6)]
        slow_runs = [pool.submit(slow, p) for p in ("/a", "/b", "/close/c")]
        for run in slow_runs:
            run.result(timeout=60)
        slow_done.set()
        answered = sum(run.result(timeout=60) for run in fast_runs)
        connections = client._transport.connections._pool.num_connections
        stats = client.stats()
    assert stats.retries == 3  # one for each trickling answer, none for the others
    assert answered == seen.count("/ok") and answered > 50
    assert connections < 20  # kept alive: a shut connection is not reused, the others are
    assert WATCHDOG.in_flight() == 0
