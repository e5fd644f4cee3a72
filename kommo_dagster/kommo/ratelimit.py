"""A request budget shared by every thread and process on the machine that talks to one account.

Kommo counts requests per integration and IP and bans an IP that keeps going over. Several Dagster
steps, runs and processes may extract the same account at once, so the budget cannot live in one
process's memory. It lives in a small file per account host (``KOMMO_RATE_LIMIT_DIR``), holding
a sliding log of the last ``capacity`` request times plus a "blocked until" time set after a 429.
Taking a slot means: lock the file, drop times older than the window, and either append now or
learn how long to wait. Threads of one process queue on a process lock first, so only one of them
holds the file lock at a time.

Why not pyrate-limiter's file-locked SQLite bucket: it needs a background leaker thread, its file
lock is thread-local while our callers are threads *and* processes, and a 40-line log under one
``filelock`` lock is easy to reason about and to test.

The server counts requests when they arrive, a little after we take the slot, and the delay varies
(thread scheduling, GIL, a new connection). The window is therefore ``margin`` seconds longer than
the server's, so that jitter between two requests' delays cannot push ``capacity + 1`` arrivals
into one server window.
"""

from __future__ import annotations

import math
import re
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

# Seconds added to the 1 s window: covers the spread between taking a slot and the request's
# arrival at the server (measured in milliseconds on loopback under load).
DEFAULT_MARGIN = 0.03

_process_locks: dict[str, threading.Lock] = {}
_file_locks: dict[str, FileLock] = {}
_registry_lock = threading.Lock()


def _locks_for(path: Path) -> tuple[threading.Lock, FileLock]:
    key = str(path)
    with _registry_lock:
        if key not in _process_locks:
            _process_locks[key] = threading.Lock()
            _file_locks[key] = FileLock(key + ".lock", thread_local=False)
        return _process_locks[key], _file_locks[key]


def account_key(base_url: str) -> str:
    """The budget's key: the account's host and port, never anything derived from the token."""
    host = base_url.split("://", 1)[-1].split("/", 1)[0].lower()
    return re.sub(r"[^a-z0-9.-]", "_", host)


@dataclass(frozen=True)
class Slot:
    """A slot taken: when (Unix time, as written to the shared log) and after how long a wait."""

    at: float
    waited: float


class SharedRateLimiter:
    """At most ``capacity`` slots in any ``window`` seconds, across threads and processes.

    ``requests_per_second`` below 1 or fractional is honoured by stretching the window:
    ``capacity = floor(rps)`` slots per ``max(1, capacity / rps)`` seconds.
    """

    def __init__(
        self,
        *,
        key: str,
        requests_per_second: float,
        directory: Path,
        margin: float = DEFAULT_MARGIN,
    ):
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self.capacity = max(1, math.floor(requests_per_second))
        self.window = max(1.0, self.capacity / requests_per_second) + margin
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"kommo-{key}.ratelimit"
        self._thread_lock, self._file_lock = _locks_for(self.path)

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter(capacity={self.capacity}, window={self.window:.3f}s, "
            f"path={str(self.path)!r})"
        )

    # The state file: blocked_until followed by the sorted slot times, as float64.
    def _read(self, now: float) -> tuple[float, list[float]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0.0, []
        values = array("d")
        if len(raw) % values.itemsize:
            # Unreadable (not ours, or damaged): assume the window is full, and start afresh.
            self._write(now + self.window, [])
            return now + self.window, []
        values.frombytes(raw)
        if not values:
            return 0.0, []
        blocked_until, log = values[0], values[1:].tolist()
        # Keep slots inside the window; drop any from a clock that jumped back by over a window.
        log = [t for t in log if now - self.window < t <= now + self.window]
        if blocked_until > now + 3600:
            blocked_until = 0.0
        return blocked_until, log

    def _write(self, blocked_until: float, log: list[float]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(array("d", [blocked_until, *log[-self.capacity :]]).tobytes())
        tmp.replace(self.path)

    def try_acquire(self) -> tuple[float | None, float]:
        """Take a slot now: ``(slot_time, 0)``; or ``(None, seconds to wait)``."""
        with self._thread_lock, self._file_lock:
            now = time.time()
            blocked_until, log = self._read(now)
            if blocked_until > now:
                return None, blocked_until - now
            if len(log) >= self.capacity:
                return None, max(log[len(log) - self.capacity] + self.window - now, 0.0005)
            log.append(now)
            self._write(blocked_until, log)
            return now, 0.0

    def acquire(self, *, cancelled: threading.Event | None = None) -> Slot:
        """Block until a slot is taken."""
        started = time.monotonic()
        while True:
            at, wait = self.try_acquire()
            if at is not None:
                return Slot(at=at, waited=time.monotonic() - started)
            if cancelled is not None and cancelled.is_set():
                raise InterruptedError("rate-limit wait cancelled")
            time.sleep(wait)

    def block_for(self, seconds: float) -> None:
        """Pause every user of this account's budget (after a 429 that asked us to wait)."""
        if seconds <= 0:
            return
        with self._thread_lock, self._file_lock:
            now = time.time()
            blocked_until, log = self._read(now)
            self._write(max(blocked_until, now + seconds), log)
