"""A request budget shared by every thread and process on the machine that talks to one account.

Kommo counts requests per integration and IP and bans an IP that keeps going over. Several Dagster
steps, runs and processes may extract the same account at once, so the budget cannot live in one
process's memory. It lives in a small file per account host (``KOMMO_RATE_LIMIT_DIR``), holding
a sliding log of the last ``capacity`` request times plus a "blocked until" time set after a 429.
Taking a slot means: lock the file, drop times older than the window, and append the earliest
time the rules allow, now or a little later (a reservation: the thread then sleeps until it is
due). Each waiting thread thus holds its own slot and wakes once; had they all slept until the
next free slot, they would all wake for it, and all but one would sleep again. Slots are also
spaced evenly (``window / capacity`` apart), so requests do not arrive in bursts that queue at
the server. Threads of one process queue on a process lock
first, so only one of them holds the file lock at a time.

The file is opened once per process and locked with ``flock`` around each access (read and
rewrite in place: a handful of system calls). Every system call lets other threads take the
interpreter, and in a busy process each costs a wait for it, between taking a slot and sending
the request: the fewer the better.

Why not pyrate-limiter's file-locked SQLite bucket: it needs a background leaker thread, its file
lock is thread-local while our callers are threads *and* processes, and a 40-line log under one
``flock`` is easy to reason about and to test.

The server counts requests when they arrive, a little after we take the slot (the slot is taken
once the connection is open, right before the request is written), and the delay varies (thread
scheduling on a loaded machine, the network). The window is therefore ``margin`` seconds longer
than the server's, so that jitter between two requests' delays cannot push ``capacity + 1``
arrivals into one server window. Should a 429 arrive anyway, every user of the account widens
its window further for a while (`block_for` with ``learn``).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Seconds added to the 1 s window. Since each slot is settled to the moment its request was
# written (`settle`), the margin only has to cover how much later than that the server counts
# the request. Measured against the sandbox on a 2-core machine under a load average of 4 to 6:
# 0.3 ms at the median, at most 29 ms over some 2,000 requests, with the arrivals of requests
# seven apart never closer than 1.016 s. (Up to 200 ms, and 429s, while DuckDB's thread pool
# took both cores at each staged batch: staging now keeps to one thread.) 30 ms keeps the rate
# at 7 / 1.03 = 97% of the limit; a rarer, larger delay is what the learning below is for.
DEFAULT_MARGIN = 0.03
# After a 429 every user of the account widens the window by this much more (up to the cap),
# for `LEARNED_FOR` seconds: a 429 under our own limit means the arrival spread is wider.
LEARN_STEP = 0.05
LEARN_CAP = 0.25
LEARNED_FOR = 600.0
# A thread that wakes from its wait for a slot this much later than asked is on a machine short
# of CPU, where arrivals are counted late too (measured on the sandbox sharing 2 busy cores: up
# to 200 ms). Every user of the account then keeps a wider window for `OVERLOADED_FOR` seconds.
OVERLOAD_LAG = 0.015
OVERLOAD_EXTRA = 0.05
OVERLOADED_FOR = 60.0


class _StateFile:
    """One account's state file, opened once per process (again after a fork: a child must not
    share its parent's open file, whose ``flock`` would then be theirs together)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def fd(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd


_files: dict[str, _StateFile] = {}
_registry_lock = threading.Lock()


def _state_file(path: Path) -> _StateFile:
    with _registry_lock:
        if str(path) not in _files:
            _files[str(path)] = _StateFile(path)
        return _files[str(path)]


def account_key(base_url: str) -> str:
    """The budget's key: the account's host and port, never anything derived from the token."""
    host = base_url.split("://", 1)[-1].split("/", 1)[0].lower()
    return re.sub(r"[^a-z0-9.-]", "_", host)


@dataclass
class _State:
    blocked_until: float = 0.0
    extra: float = 0.0
    extra_until: float = 0.0
    # The planned time of the last slot taken: the grid the even spacing follows.
    grid: float = 0.0
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
        self._file = _state_file(self.path)

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter(capacity={self.capacity}, window={self.window:.3f}s, "
            f"path={str(self.path)!r})"
        )

    # The state file, float64s: blocked_until, extra window, extra until, the grid, then the
    # slot times.
    _HEADER = 4

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The state file's descriptor, held by this thread and, through ``flock``, this
        process alone."""
        with self._file.thread_lock:
            fd = self._file.fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _read(self, fd: int, now: float) -> _State:
        raw = os.pread(fd, 1 << 16, 0)
        values = array("d")
        if len(raw) % values.itemsize or 0 < len(raw) < self._HEADER * values.itemsize:
            # Unreadable (not ours, or damaged): assume the window is full, and start afresh.
            state = _State(blocked_until=now + self.window)
            self._write(fd, state)
            return state
        values.frombytes(raw)
        if not values:
            return _State()
        blocked_until, extra, extra_until, grid = values[0], values[1], values[2], values[3]
        window = self.window + (extra if extra_until > now else 0.0)
        # Keep slots inside the window; drop any from a clock that jumped back by over a window.
        log = [t for t in values[self._HEADER :].tolist() if now - window < t <= now + window]
        if blocked_until > now + 3600:
            blocked_until = 0.0
        if extra_until <= now or extra_until > now + 2 * LEARNED_FOR:
            extra, extra_until = 0.0, 0.0
        if not now - window < grid <= now + window:
            grid = 0.0
        return _State(
            blocked_until=blocked_until, extra=extra, extra_until=extra_until, grid=grid, log=log
        )

    def _write(self, fd: int, state: _State) -> None:
        header = [state.blocked_until, state.extra, state.extra_until, state.grid]
        data = array("d", header + state.log[-self.capacity :]).tobytes()
        # Rewritten in place under the lock: readers hold the lock too, so none sees it half
        # written; a state shorter than the last one is cut to its length.
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def _next_slot(self, state: _State, now: float) -> float:
        """The earliest time the next slot may be taken, given the shared state."""
        window = self.window + state.extra
        spacing = window / self.capacity
        # Evenly spaced slots (a burst would make its own requests queue at the server and
        # arrive late, which is what eats the margin), on a grid of planned times: a thread
        # that wakes or sends a little late does not push the slots after it.
        at = max(now, state.grid + spacing) if state.grid else now
        log = state.log
        if len(log) >= self.capacity:
            # The safety rule, on the times the requests really went out (see `settle`).
            at = max(at, log[len(log) - self.capacity] + window)
        return at

    def _take(self, fd: int, state: _State, at: float) -> None:
        """Log the slot ``at`` and move the grid: late by less than a spacing, the grid keeps
        its plan (the next slot catches up); idle for longer, it starts again at ``at``."""
        spacing = (self.window + state.extra) / self.capacity
        planned = state.grid + spacing
        state.grid = planned if state.grid and at - planned < spacing else at
        state.log.append(at)
        self._write(fd, state)

    def try_acquire(self) -> tuple[float | None, float]:
        """Take a slot now: ``(slot_time, 0)``; or ``(None, seconds to wait)``."""
        return self._claim(ahead=0.0)

    def reserve(self) -> tuple[float | None, float]:
        """Take the next free slot, now or in the near future: ``(slot_time, seconds until
        it)``; or ``(None, seconds to wait)`` while the budget is blocked or the next free slot
        lies over a window away. Threads waiting for the budget thus each hold their own slot
        and wake once, when it is due, instead of all waking for the same one."""
        return self._claim(ahead=self.window)

    def _claim(self, *, ahead: float) -> tuple[float | None, float]:
        """Log the next free slot if it is due within ``ahead`` seconds."""
        with self._locked() as fd:
            now = time.time()
            state = self._read(fd, now)
            if state.blocked_until > now:
                return None, state.blocked_until - now
            at = self._next_slot(state, now)
            if at - now > ahead:
                return None, max(at - now - ahead, 0.0005)
            self._take(fd, state, at)
            return at, at - now

    def acquire(self, *, cancelled: threading.Event | None = None) -> Slot:
        """Block until a slot is due, and take it."""
        started = time.monotonic()
        while True:
            at, wait = self.reserve()
            if wait > 0:
                due = time.monotonic() + wait
                if cancelled is None:
                    time.sleep(wait)
                elif cancelled.wait(wait):
                    raise InterruptedError("rate-limit wait cancelled")
                self.note_wake(late=time.monotonic() - due)
            if at is None:
                continue
            if wait > 0 and self.blocked():
                # A 429 paused the account while this thread waited: its slot stays in the
                # log (a slot unused only makes the budget stricter) and it waits for another.
                continue
            return Slot(at=at, waited=time.monotonic() - started)

    def blocked(self) -> bool:
        """Whether the account's budget is paused now (after a 429)."""
        with self._locked() as fd:
            now = time.time()
            return self._read(fd, now).blocked_until > now

    def note_wake(self, *, late: float) -> None:
        """A wait for a slot ended ``late`` seconds after it was due. Past `OVERLOAD_LAG` the
        machine is short of CPU: widen every user's window by `OVERLOAD_EXTRA` for a while
        (without adding to a wider window learned from a 429)."""
        if late <= OVERLOAD_LAG:
            return
        with self._locked() as fd:
            now = time.time()
            state = self._read(fd, now)
            state.extra = max(state.extra, OVERLOAD_EXTRA)
            state.extra_until = max(state.extra_until, now + OVERLOADED_FOR)
            self._write(fd, state)

    def settle(self, slot: float, sent: float) -> None:
        """Record that the request of ``slot`` actually went out at ``sent``.

        Between taking a slot and writing the request a thread can stall (the GIL held by a busy
        consumer, a collector pause); the server then counts the request later than its slot.
        Moving the slot to the real send time pushes back the slot ``capacity`` places later,
        which must come a window after it, so a stall cannot bring ``capacity + 1`` arrivals
        into one server window. The even spacing keeps to its grid: a stall costs one window's
        chain that much time, not every slot after it.
        """
        if sent <= slot:
            return
        with self._locked() as fd:
            state = self._read(fd, time.time())
            try:
                i = state.log.index(slot)
            except ValueError:
                return  # already out of the log: later slots no longer depend on it
            state.log[i] = sent
            state.log.sort()
            self._write(fd, state)

    def block_for(self, seconds: float, *, learn: bool = False) -> None:
        """Pause every user of this account's budget (after a 429 that asked us to wait).

        ``learn``: the 429 came although we kept to the budget, so the spread between taking a
        slot and arriving at the server is wider than the margin; widen everyone's window.
        """
        with self._locked() as fd:
            now = time.time()
            state = self._read(fd, now)
            state.blocked_until = max(state.blocked_until, now + max(seconds, 0.0))
            if learn:
                state.extra = min(LEARN_CAP, state.extra + LEARN_STEP)
                state.extra_until = now + LEARNED_FOR
            self._write(fd, state)

    def extra_margin(self) -> float:
        """The window widening currently learned from 429s (seconds)."""
        with self._locked() as fd:
            return self._read(fd, time.time()).extra
