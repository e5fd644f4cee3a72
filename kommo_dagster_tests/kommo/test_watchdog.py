"""The whole-answer deadline: a late exchange's socket is shut down, a disarmed one never is."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from kommo_dagster.kommo.watchdog import Watchdog

pytestmark = pytest.mark.timeout(60)


def test_a_passed_deadline_ends_a_blocked_read_at_once():
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(30)  # far longer than the deadline: only the shutdown can end the read
        started = time.monotonic()
        armed = watchdog.arm(ours, 0.3)
        assert ours.recv(10) == b""  # the shutdown reads as the end of the stream
        took = time.monotonic() - started
        assert armed.disarm() is True and armed.disarm() is True
    assert 0.25 <= took < 5.0
    assert watchdog.in_flight() == 0


def test_a_disarmed_socket_is_never_touched_and_nothing_stays_armed():
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        armed = watchdog.arm(ours, 0.2)
        assert armed.disarm() is False
        assert watchdog.in_flight() == 0
        time.sleep(0.5)  # past the deadline
        theirs.sendall(b"still open")
        ours.settimeout(5)
        assert ours.recv(10) == b"still open"
        ours.sendall(b"both ways")
        theirs.settimeout(5)
        assert theirs.recv(10) == b"both ways"


def test_each_deadline_shuts_only_its_own_socket():
    """Deadlines armed in any order fire in theirs, a later arm with an earlier deadline
    included; a disarmed neighbour stays open."""
    watchdog = Watchdog()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        late = watchdog.arm(pairs[0][0], 0.8)
        spared = watchdog.arm(pairs[1][0], 0.4)
        early = watchdog.arm(pairs[2][0], 0.2)  # armed last, due first
        assert spared.disarm() is False
        ended: dict[int, float] = {}

        def read(i: int) -> None:
            pairs[i][0].settimeout(30)
            assert pairs[i][0].recv(1) == b""
            ended[i] = time.monotonic()

        readers = [threading.Thread(target=read, args=(i,)) for i in (0, 2)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(timeout=10)
        assert set(ended) == {0, 2} and ended[2] < ended[0]
        assert late.disarm() is True and early.disarm() is True
        pairs[1][1].sendall(b"x")
        pairs[1][0].settimeout(5)
        assert pairs[1][0].recv(1) == b"x"
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def _deadline_threads() -> int:
    return sum(t.name == "kommo-answer-deadlines" for t in threading.enumerate())


def test_one_thread_serves_every_deadline():
    before = _deadline_threads()
    watchdog = Watchdog()
    assert _deadline_threads() == before  # started on the first arm, not before
    ours, theirs = socket.socketpair()
    with ours, theirs:
        for _ in range(50):
            watchdog.arm(ours, 30).disarm()
    assert _deadline_threads() == before + 1
    assert watchdog.in_flight() == 0
