"""A bound on the whole of one HTTP exchange, which socket timeouts cannot give.

A socket's timeout bounds each read, not the answer: a server (or a broken proxy) that sends
one byte a little faster than the read timeout keeps a request alive as long as it likes. The
body is read in one call (chunked reads cost a Python round trip each), so nothing in the
reading thread can look at a clock. Instead one daemon thread per process holds the deadline
of every exchange in flight and, when one passes, shuts that exchange's socket down: the
blocked read then ends at once, and the reader sees that its deadline fired.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

# How long the thread sleeps with nothing armed: an arm with a later deadline need not wake it.
IDLE_WAKE = 60.0


class Armed:
    """The deadline of one exchange on one socket, until disarmed."""

    __slots__ = ("_watchdog", "deadline", "fired", "sock")

    def __init__(self, watchdog: Watchdog, sock: socket.socket, deadline: float) -> None:
        self._watchdog = watchdog
        self.sock = sock
        self.deadline = deadline
        self.fired = False

    def disarm(self) -> bool:
        """Whether the deadline passed (the socket was shut down). Once this returns, the
        socket is never touched again: call it before the connection can carry another
        request. Calling it again only repeats the answer."""
        return self._watchdog._disarm(self)


class Watchdog:
    """Shuts down the sockets whose exchange outlived its deadline (one thread, started on
    the first arm; cheap when nothing is late: arming takes a lock, and rarely wakes it)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A forked child has the state but not the thread: it starts its own.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._armed: set[Armed] = set()
        self._next_wake: float | None = None
        self._thread: threading.Thread | None = None

    def arm(self, sock: Any, seconds: float) -> Armed:
        """Shut ``sock`` down ``seconds`` from now unless disarmed before."""
        armed = Armed(self, _raw_socket(sock), time.monotonic() + seconds)
        with self._lock:
            self._armed.add(armed)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kommo-answer-deadlines", daemon=True
                )
                self._thread.start()
            elif self._next_wake is None or armed.deadline < self._next_wake:
                self._wake.notify()
        return armed

    def in_flight(self) -> int:
        """How many exchanges are armed (for tests and diagnostics)."""
        with self._lock:
            return len(self._armed)

    def _disarm(self, armed: Armed) -> bool:
        with self._lock:
            self._armed.discard(armed)
            return armed.fired

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for armed in [a for a in self._armed if a.deadline <= now]:
                    self._armed.discard(armed)
                    armed.fired = True
                    _shut(armed.sock)
                soonest = min((a.deadline for a in self._armed), default=now + IDLE_WAKE)
                self._next_wake = soonest
                self._wake.wait(soonest - now)


def _raw_socket(sock: Any) -> socket.socket:
    """The OS socket under ``sock``: itself, or under urllib3's TLS-in-TLS wrapper (a proxy's
    TLS carrying the host's)."""
    while not isinstance(sock, socket.socket):
        sock = sock.socket
    return sock


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown: an SSLSocket's would also drop its TLS state under the
    # reading thread.
    with contextlib.suppress(OSError):  # already closed by its reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


WATCHDOG = Watchdog()

__all__ = ["WATCHDOG", "Armed", "Watchdog"]
