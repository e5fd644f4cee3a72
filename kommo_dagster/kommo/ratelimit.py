"""A request budget shared by every thread and process on the machine that talks to one account.

Kommo counts requests per integration and IP and bans an IP that keeps going over. Several Dagster
steps, runs and processes may extract the same account at once, so the budget cannot live in one
process's memory. It lives in a small file per account host (``KOMMO_RATE_LIMIT_DIR``), holding
a sliding log of the last ``capacity`` request times plus a "blocked until" time set after a 429.
Taking a slot means: lock the file, drop times older than the window, and either append now or
learn how long to wait. Slots are also spaced evenly (``window / capacity`` apart), so requests do
not arrive in bursts that queue at the server. Threads of one process queue on a process lock
first, so only one of them holds the file lock at a time.

Why not pyrate-limiter's file-locked SQLite bucket: it needs a background leaker thread, its file
lock is thread-local while our callers are threads *and* processes, and a 40-line log under one
``filelock`` lock is easy to reason about and to test.

The server counts requests when they arrive, a little after we take the slot (the slot is taken
once the connection is open, right before the request is written), and the delay varies (thread
scheduling on a loaded machine, the network). The window is therefore ``margin`` seconds longer
than the server's, so that jitter between two requests' delays cannot push ``capacity + 1``
arrivals into one server window. Should a 429 arrive anyway, every user of the account widens
its window further for a while (`block_for` with ``learn``).
"""

from __future__ import annotations

import math
import re
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

# Seconds added to the 1 s window. It covers the spread between taking a slot and the server
# counting the request. Measured against the sandbox on a loaded 2-core machine: gaps between
# arrivals seven slots apart were 6 ms longer than the slots' at the median, up to 40 ms shorter
# in 1 in 100, and once 110 ms shorter. 50 ms keeps the rate at 7 / 1.05 = 95% of the limit;
# the rare larger spread is what the learning below is for.
DEFAULT_MARGIN = 0.05
# After a 429 every user of the account widens the window by this much more (up to the cap),
# for `LEARNED_FOR` seconds: a 429 under our own limit means the arrival spread is wider.
LEARN_STEP = 0.05
LEARN_CAP = 0.25
LEARNED_FOR = 600.0

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


@dataclass
class _State:
    blocked_until: float = 0.0
    extra: float = 0.0
    extra_until: float = 0.0
    log: list[float] = field(default_factory=list)


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

    # The state file, float64s: blocked_until, extra window, extra until, then the slot times.
    _HEADER = 3

    def _read(self, now: float) -> _State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _State()
        values = array("d")
        if len(raw) % values.itemsize or 0 < len(raw) < self._HEADER * values.itemsize:
            # Unreadable (not ours, or damaged): assume the window is full, and start afresh.
            state = _State(blocked_until=now + self.window)
            self._write(state)
            return state
        values.frombytes(raw)
        if not values:
            return _State()
        blocked_until, extra, extra_until = values[0], values[1], values[2]
        window = self.window + (extra if extra_until > now else 0.0)
        # Keep slots inside the window; drop any from a clock that jumped back by over a window.
        log = [t for t in values[self._HEADER :].tolist() if now - window < t <= now + window]
        if blocked_until > now + 3600:
            blocked_until = 0.0
        if extra_until <= now or extra_until > now + 2 * LEARNED_FOR:
            extra, extra_until = 0.0, 0.0
        return _State(blocked_until=blocked_until, extra=extra, extra_until=extra_until, log=log)

    def _write(self, state: _State) -> None:
        tmp = self.path.with_suffix(".tmp")
        header = [state.blocked_until, state.extra, state.extra_until]
        tmp.write_bytes(array("d", header + state.log[-self.capacity :]).tobytes())
        tmp.replace(self.path)

    def try_acquire(self) -> tuple[float | None, float]:
        """Take a slot now: ``(slot_time, 0)``; or ``(None, seconds to wait)``."""
        with self._thread_lock, self._file_lock:
            now = time.time()
            state = self._read(now)
            if state.blocked_until > now:
                return None, state.blocked_until - now
            log = state.log
            window = self.window + state.extra
            # Evenly spaced slots: a burst would make its own requests queue at the server and
            # arrive late, which is what eats the margin.
            wait = log[-1] + window / self.capacity - now if log else 0.0
            if len(log) >= self.capacity:
                wait = max(wait, log[len(log) - self.capacity] + window - now)
            if wait > 0:
                return None, max(wait, 0.0005)
            log.append(now)
            self._write(state)
            return now, 0.0

    def acquire(self, *, cancelled: threading.Event | None = None) -> Slot:
        """Block until a slot is taken."""
        started = time.monotonic()
        while True:
            at, wait = self.try_acquire()
            if at is not None:
                return Slot(at=at, waited=time.monotonic() - started)
            if cancelled is None:
                time.sleep(wait)
            elif cancelled.wait(wait):
                raise InterruptedError("rate-limit wait cancelled")

    def settle(self, slot: float, sent: float) -> None:
        """Record that the request of ``slot`` actually went out at ``sent``.

        Between taking a slot and writing the request a thread can stall (the GIL held by a busy
        consumer, a collector pause); the server then counts the request later than its slot.
        Moving the slot to the real send time pushes the slots that follow it back, so a stall
        cannot bring ``capacity + 1`` arrivals into one server window.
        """
        if sent <= slot:
            return
        with self._thread_lock, self._file_lock:
            state = self._read(time.time())
            try:
                i = state.log.index(slot)
            except ValueError:
                return  # already out of the log: later slots no longer depend on it
            state.log[i] = sent
            state.log.sort()
            self._write(state)

    def block_for(self, seconds: float, *, learn: bool = False) -> None:
        """Pause every user of this account's budget (after a 429 that asked us to wait).

        ``learn``: the 429 came although we kept to the budget, so the spread between taking a
        slot and arriving at the server is wider than the margin; widen everyone's window.
        """
        with self._thread_lock, self._file_lock:
            now = time.time()
            state = self._read(now)
            state.blocked_until = max(state.blocked_until, now + max(seconds, 0.0))
            if learn:
                state.extra = min(LEARN_CAP, state.extra + LEARN_STEP)
                state.extra_until = now + LEARNED_FOR
            self._write(state)

    def extra_margin(self) -> float:
        """The window widening currently learned from 429s (seconds)."""
        with self._thread_lock, self._file_lock:
            return self._read(time.time()).extra
