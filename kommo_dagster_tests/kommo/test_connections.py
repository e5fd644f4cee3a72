"""What goes out on the wire, and through which proxy and CA bundle, checked at real servers."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from kommo_dagster.kommo import KommoConfigError, KommoRetryError, RetryPolicy
from kommo_dagster.kommo.config import Secret
from kommo_dagster.kommo.connections import NetworkSettings
from kommo_dagster.kommo.stats import StatsRecorder
from kommo_dagster.kommo.transport import USER_AGENT, Transport
from kommo_dagster_tests.kommo.conftest import (
    QuietHandler,
    expected,
    fetch,
    http_server,
    reply,
    rows_of,
)

pytestmark = pytest.mark.timeout(120)

SECRET = "tok-3Kd9-SECRET-do-not-print-4Wq"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


class _Capture(QuietHandler):
    """Records each request's line and headers, in the order they came, and answers JSON."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append((self.requestline, list(self.headers.items())))
        reply(self, 200, b'{"_links": {}}', content_type="application/hal+json")


@pytest.fixture
def capture():
    with http_server(_Capture) as served:
        yield served


def _transport(base_url: str, *, pool_size: int = 1) -> Transport:
    return Transport(
        base_url=base_url,
        token=Secret(SECRET),
        limiter=None,
        stats=StatsRecorder(),
        pool_size=pool_size,
        timeout=(1.0, 1.0),
        retry=RetryPolicy(),
    )


# Kommo's bracketed filter keys, a list, and what must be escaped or kept.
PARAMS = [
    ("filter[updated_at][from]", 1700000000),
    ("filter[updated_at][to]", 1702678399),
    ("order[updated_at]", "asc"),
    ("with", "contacts,source_id"),
    ("query", "Zoë & co/2 = 50%+~*'()"),
    ("limit", 250),
    ("page", 2),
]


def test_a_request_goes_out_byte_for_byte_as_requests_sent_it(capture):
    """Request line (path and query encoding) and headers, names, values and order, as the
    requests session the transport used before sent them."""
    base_url, seen = capture
    transport = _transport(base_url)
    try:
        assert transport.get("/api/v4/leads", PARAMS).data == {"_links": {}}
        transport.get("/api/v4/account")
    finally:
        transport.close()
    with requests.Session() as session:
        session.trust_env = False
        session.headers.update(
            {"Accept": "application/hal+json, application/json", "User-Agent": USER_AGENT}
        )
        bearer = {"Authorization": f"Bearer {SECRET}"}
        session.get(f"{base_url}/api/v4/leads", params=PARAMS, headers=bearer)
        session.get(f"{base_url}/api/v4/account", headers=bearer)
    ours, theirs = seen[:2], seen[2:]
    assert ours == theirs
    line = ours[0][0]
    assert line.startswith("GET /api/v4/leads?filter%5Bupdated_at%5D%5Bfrom%5D=1700000000&")
    assert "&query=Zo%C3%AB+%26+co%2F2+%3D+50%25%2B~%2A%27%28%29&" in line
    assert ours[1][0] == "GET /api/v4/account HTTP/1.1"


def test_connections_are_kept_alive(capture):
    base_url, seen = capture
    transport = _transport(base_url)
    try:
        for _ in range(3):
            transport.get("/api/v4/account")
        pool = transport.connections._pool
        assert pool.num_connections == 1 and pool.num_requests == 3
    finally:
        transport.close()
    assert len(seen) == 3


def test_a_connection_goes_back_to_the_pool_with_its_deadline_disarmed(capture):
    """Disarmed as the pool takes it back, before another request may take it: a deadline
    left armed would shut the socket under that request."""
    from kommo_dagster.kommo.watchdog import WATCHDOG

    base_url, _ = capture
    transport = _transport(base_url)
    try:
        transport.get("/api/v4/account")
        pool = transport.connections._pool
        idle = [conn for conn in list(pool.pool.queue) if conn is not None]
        assert len(idle) == 1 and idle[0].armed is None and idle[0].sock is not None
        assert transport.connections._local.armed.disarm() is False
        assert WATCHDOG.in_flight() == 0
        assert transport.connections.answer_timeout == 3.0  # 1 s to connect + 2 x 1 s reads
    finally:
        transport.close()


class _ShortKeepAlive(_Capture):
    """Closes a kept-alive connection idle for 0.3 s, as servers do after their own time."""

    timeout = 0.3


def test_a_connection_closed_while_its_request_waited_for_a_slot_is_made_anew(tmp_path):
    """The pool checks a kept-alive connection before the wait for a slot, which can be long
    (a 429's pause): the request then went out on a connection the server had closed, failed
    as a dropped connection, and spent a retry and a second slot."""
    from kommo_dagster.kommo import KommoClient

    with http_server(_ShortKeepAlive) as (base_url, seen):
        client = KommoClient(base_url=base_url, token=SECRET, rate_limit_dir=tmp_path)
        with client:
            client.get("/api/v4/account")
            client.limiter.block_for(0.8)  # another client of the account met a 429
            client.get("/api/v4/account")
            assert client.stats().retries == 0
            # Made anew, the connection took a second slot for the same request: one request.
            assert client.stats().requests == 2
    assert len(seen) == 2


def test_a_connection_that_cannot_be_made_again_after_the_slot_sent_no_request(tmp_path):
    """The server closed the kept-alive connection during the wait for the slot, and then
    refused new ones: the slot stays spent (the limiter keeps to the safe side), but the retry
    is reported as one that could not connect, not as a request sent."""
    from kommo_dagster.kommo import KommoClient

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ShortKeepAlive)
    server.seen = []  # type: ignore[attr-defined]
    serving = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    serving.start()

    def stop() -> None:
        server.shutdown()
        # No more connections. Its handler threads are daemons, which server_close does not
        # join: the kept-alive one closes its connection itself, 0.3 s idle into the 1.5 s wait.
        server.server_close()

    stopping = threading.Thread(target=stop)
    policy = RetryPolicy(max_attempts=2, max_elapsed=10, backoff_base=0.01, backoff_max=0.02)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    client = KommoClient(base_url=base_url, token=SECRET, rate_limit_dir=tmp_path, retry=policy)
    settled: list[float] = []
    settle = client.limiter.settle

    def recording_settle(slot: float, sent: float, **kwargs: float | None) -> None:
        settled.append(slot)
        settle(slot, sent, **kwargs)

    client.limiter.settle = recording_settle  # type: ignore[method-assign]
    with client:
        client.get("/api/v4/account")
        client.limiter.block_for(1.5)  # another client of the account met a 429
        stopping.start()  # closed within 0.3 s idle, and the port then refuses
        with pytest.raises(KommoRetryError, match=r"connection failed \(NewConnectionError"):
            client.get("/api/v4/account")
        stats = client.stats()
    stopping.join()
    assert len(server.seen) == 1  # type: ignore[attr-defined]
    assert (stats.requests, stats.retries, stats.unsent) == (1, 1, 1)
    # Two slots spent: the request sent, and the one whose connection could not be made again
    # (its slot after the 1.5 s pause); the retry's connect failed before taking any slot.
    assert len(settled) == 2 and settled[1] - settled[0] >= 1.5


def test_proxies_and_the_ca_bundle_still_come_from_the_environment(monkeypatch, tmp_path):
    """They are read once, for the account's host, rather than on every request."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    settings = _transport("https://acme.kommo.com").connections.settings
    assert settings.proxy == "http://proxy.example:3128"
    assert settings.ca_bundle == str(bundle)
    monkeypatch.setenv("NO_PROXY", "acme.kommo.com")
    assert _transport("https://acme.kommo.com").connections.settings.proxy is None
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("ALL_PROXY", "proxy.example:8080")
    assert NetworkSettings.from_environment("http://acme.kommo.com").proxy == (
        "http://proxy.example:8080"
    )


def test_without_proxy_or_bundle_variables_the_host_is_direct_with_requests_bundle():
    """No proxy configured: a direct connection, verified with requests' default bundle."""
    settings = NetworkSettings.from_environment("https://acme.kommo.com")
    assert settings.proxy is None
    assert settings.ca_bundle == requests.utils.DEFAULT_CA_BUNDLE_PATH


def _requests_imported_resolving(**variables: str) -> bool:
    """Whether resolving the network settings, in a fresh interpreter, imported requests."""
    code = (
        "import sys; from kommo_dagster.kommo.connections import NetworkSettings; "
        "NetworkSettings.from_environment('https://acme.kommo.com'); "
        "print('requests' in sys.modules)"
    )
    # The autouse fixture has taken every proxy variable out of this environment.
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],  # this checkout's kommo_dagster
        env=os.environ | variables,
        capture_output=True,
        text=True,
        check=True,
    )
    return {"True": True, "False": False}[done.stdout.strip()]


def test_requests_is_imported_only_to_resolve_a_configured_proxy():
    """Its import costs a run's start CPU: without any proxy variable it is not needed."""
    assert not _requests_imported_resolving()
    assert _requests_imported_resolving(NO_PROXY="acme.kommo.com")


def test_a_ca_bundle_that_does_not_exist_fails_before_any_request(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.pem"
    monkeypatch.setenv("CURL_CA_BUNDLE", str(missing))
    with pytest.raises(KommoConfigError, match="CURL_CA_BUNDLE") as err:
        _transport("https://acme.kommo.com")
    assert str(missing) in str(err.value)
    # Only an https host needs one.
    _transport("http://127.0.0.1:9").close()


def test_a_proxy_password_stays_out_of_the_settings_repr(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://me:pr0xy-pass@proxy.example:3128")
    settings = NetworkSettings.from_environment("https://acme.kommo.com")
    assert settings.proxy == "http://me:pr0xy-pass@proxy.example:3128"
    assert "pr0xy-pass" not in repr(settings) and "proxy.example:3128" in repr(settings)


class _ForwardProxy(QuietHandler):
    """An HTTP proxy: takes absolute-form requests and forwards them to the host they name."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.seen.append((self.requestline, self.headers.get("Host")))
        url = urlsplit(self.path)
        upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
        upstream.request("GET", url.path + (f"?{url.query}" if url.query else ""), headers=headers)
        answer = upstream.getresponse()
        body = answer.read()
        upstream.close()
        skip = ("connection", "content-length", "content-type", "transfer-encoding")
        headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in skip]
        ctype = answer.getheader("Content-Type", "")
        reply(self, answer.status, body, content_type=ctype, headers=headers)


@pytest.fixture
def forward_proxy():
    with http_server(_ForwardProxy) as served:
        yield served


def test_requests_through_a_proxy_reach_the_account_and_take_the_budget(
    sandbox_factory, client_for, forward_proxy, monkeypatch
):
    """Every request through HTTP_PROXY names the whole URL and the account's host, and takes
    a slot of the account's budget like a direct one."""
    proxy_url, seen = forward_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    sb = sandbox_factory(leads=300, requests_per_second=None)
    client = client_for(sb, requests_per_second=50)
    assert rows_of("companies", fetch(client, "companies")) == expected(sb, "companies")
    host = sb.base_url.removeprefix("http://")
    assert seen and all(line.startswith(f"GET {sb.base_url}/api/v4/") for line, _ in seen)
    assert {h for _, h in seen} == {host}
    assert client.stats().requests == len(seen) == sb.stats()["requests"]
