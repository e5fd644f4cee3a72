"""Arrivals stamped by the kernel: the stamp itself, and a real sandbox whose handler threads are
held back (as a starved machine holds them) while requests reach it.

The client's own clock is the ground truth: each request is sent after the client read its
clock past the previous send plus the spacing, so the requests reached the server at least
that far apart, however late its threads count them.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from kommo_dagster.sandbox import KommoSandbox, arrivals

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's"),
]

LEADS = "/api/v4/leads?limit=1"


@contextlib.contextmanager
def _pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A listener with kernel stamps on, and a connected (client, accepted server) pair."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert arrivals.enable_kernel_stamps(listener)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            _until_the_kernel_stamps(client, server)
            yield client, server


def _until_the_kernel_stamps(client: socket.socket, server: socket.socket) -> None:
    """Linux turns packet stamping on in a deferred work item when the first socket of the
    host asks for it, so a byte sent at once may arrive unstamped: probe until one is stamped."""
    deadline = time.monotonic() + 5
    while True:
        client.sendall(b"?")
        stamped = arrivals.kernel_arrival(server) is not None
        assert server.recv(1) == b"?"
        if stamped:
            return
        assert time.monotonic() < deadline, "the kernel stamped no byte in 5 s"
        time.sleep(0.01)


def test_accepted_connections_inherit_the_option_of_the_listener():
    assert arrivals.SO_TIMESTAMPNS is not None
    with _pair() as (_client, server):
        assert server.getsockopt(socket.SOL_SOCKET, arrivals.SO_TIMESTAMPNS) == 1


def test_the_stamp_is_when_the_byte_arrived_not_when_it_is_peeked_and_nothing_is_read():
    with _pair() as (client, server):
        sent = time.time()
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        time.sleep(0.4)
        stamp = arrivals.kernel_arrival(server)
        peeked = time.time()
        assert stamp is not None and sent <= stamp < sent + 0.2 < peeked
        assert server.recv(100) == b"GET / HTTP/1.1\r\n\r\n"
        client.shutdown(socket.SHUT_WR)
        assert arrivals.kernel_arrival(server) is None


def test_the_counting_reader_tells_what_the_buffer_holds_unread():
    with _pair() as (client, server):
        reader = arrivals.CountingReader(server.makefile("rb", buffering=0))
        buffered = io.BufferedReader(reader)
        client.sendall(b"one\r\ntwo\r\n")
        assert buffered.readline() == b"one\r\n"
        assert reader.delivered - buffered.tell() == 5
        assert buffered.readline() == b"two\r\n"
        assert reader.delivered == buffered.tell()
        buffered.close()


def _connections(sb: KommoSandbox, n: int) -> list[http.client.HTTPConnection]:
    conns = [http.client.HTTPConnection("127.0.0.1", sb.port, timeout=30) for _ in range(n)]
    for conn in conns:
        conn.connect()
    return conns


def _send_spaced(conns: list[http.client.HTTPConnection], token: str, spacing: float) -> float:
    """Send one request on each connection, each `spacing` after the last send had returned;
    return the span from the end of the first send to the start of the last."""
    first_sent = last_start = last_sent = 0.0
    for k, conn in enumerate(conns):
        if k:
            while time.time() < last_sent + spacing:
                time.sleep(0.002)
        last_start = time.time()
        conn.request("GET", LEADS, headers={"Authorization": f"Bearer {token}"})
        last_sent = time.time()
        if not k:
            first_sent = last_sent
    return last_start - first_sent


def _stalled(sb: KommoSandbox, spacing: float) -> tuple[list[int], float]:
    """Eight requests on eight connections `spacing` apart while every handler thread is held
    at the counter's lock; return their statuses and the span of the sends."""
    conns = _connections(sb, 8)
    try:
        with sb.stats_counter._lock:
            span = _send_spaced(conns, sb.token, spacing)
            time.sleep(0.3)
        statuses = []
        for conn in conns:
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        return statuses, span
    finally:
        for conn in conns:
            conn.close()


def test_requests_a_seventh_of_a_second_apart_are_no_violation_however_late_counted(
    sandbox_factory,
):
    sb = sandbox_factory(leads=40, requests_per_second=7)
    statuses, span = _stalled(sb, spacing=1 / 7 + 0.01)
    assert span >= 1.0
    stats = sb.stats()
    assert statuses == [200] * 8
    assert stats["violations"] == 0 and stats["rate_limited"] == 0
    assert stats["peak_requests_per_second"] <= 7
    assert stats["arrival_clock"] == "kernel"
    # The handler threads met all eight at once: stamped there, they would have been a violation.
    assert stats["peak_requests_per_second_handler"] == 8
    assert stats["violations_handler"] == 1


def test_eight_requests_within_a_window_are_still_a_violation_however_late_counted(
    sandbox_factory,
):
    # A long window, so that the eight arrive within it however slow the machine; the handler
    # threads take them in any order, and whichever completes the eight gets the 429.
    sb = sandbox_factory(leads=40, requests_per_second=7, rate_limit_window=60)
    statuses, _span = _stalled(sb, spacing=0.05)
    stats = sb.stats()
    assert sorted(statuses) == [200] * 7 + [429]
    assert stats["violations"] == 1 and stats["rate_limited"] == 1
    assert stats["arrival_clock"] == "kernel"


def test_each_request_on_a_keep_alive_connection_gets_its_own_stamp(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    (conn,) = _connections(sb, 1)
    auth = {"Authorization": f"Bearer {sb.token}"}
    try:
        stamps = []
        for _ in range(3):
            sb.reset_stats()
            with sb.stats_counter._lock:
                sent = time.time()
                conn.request("GET", LEADS, headers=auth)
                after = time.time()
                time.sleep(0.5)
                released = time.time()
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            stats = sb.stats()
            assert stats["arrivals_by_clock"] == {"kernel": 1}
            # Stamped when it arrived, not when the held handler counted it.
            assert sent <= stats["first_arrival_at"] <= min(after + 0.1, released)
            stamps.append(stats["first_arrival_at"])
        assert stamps[0] + 0.5 <= stamps[1] and stamps[1] + 0.5 <= stamps[2]
    finally:
        conn.close()


def test_a_request_read_along_with_the_one_before_falls_back_to_the_handler_clock(
    sandbox_factory,
):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    head = f"GET {LEADS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sb.token}\r\n"
    with socket.create_connection(("127.0.0.1", sb.port), timeout=30) as sock:
        sock.sendall(f"{head}\r\n{head}Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert sb.stats()["arrivals_by_clock"] == {"kernel": 1, "handler": 1}


def test_without_the_option_the_handler_clock_stamps_arrivals(sandbox_factory, monkeypatch):
    monkeypatch.setattr(arrivals, "SO_TIMESTAMPNS", None)
    sb = sandbox_factory(leads=40, requests_per_second=None)
    (conn,) = _connections(sb, 1)
    with contextlib.closing(conn):
        conn.request("GET", LEADS, headers={"Authorization": f"Bearer {sb.token}"})
        assert conn.getresponse().status == 200
    assert sb.stats()["arrival_clock"] == "handler"
