"""A request budget shared by every thread and process on the machine that talks to one account.

Kommo counts requests per integration and IP and bans an IP that keeps going over. Several Dagster
steps, runs and processes may extract the same account at once, so the budget cannot live in one
process's memory. It lives in a small file per account host (``KOMMO_RATE_LIMIT_DIR``), holding
sliding logs of the slots planned, the requests being written and the requests sent, plus a
"blocked until" time set after a 429.
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

On a machine short of CPU the delay between a slot and the write grows to hundreds of
milliseconds, and a request sent late must not bunch with the ones after it. So a slot is only
a plan: right before the request is written the thread *confirms* it (`confirm`), which checks
the rule again on what really went out, and once the request is written it *settles* it
(`settle`) to that moment. A request reaches the server after its confirmation and, but for the
network's transit, before its settlement; the rule compares a new confirmation with the earlier
requests' settlements (or, for those still being written, "pending", counts them as arriving
together with it). Of any ``capacity + 1`` requests the last to confirm thus saw the others, and
is held back unless they are a window apart, however long any of them stalled between its slot,
its confirmation and its write: a stall makes the rule stricter, never looser. Two confirmed
requests are also never closer than half the spacing (`MIN_GAP`).

What the rule cannot see is the transit after the write, which varies with the network, not with
our CPU. The window is therefore ``margin`` seconds longer than the server's, so that jitter
between two requests' transits cannot push ``capacity + 1`` arrivals into one server window.
Should a 429 arrive anyway, every user of the account widens its window further for a while
(`block_for` with ``learn``): the only evidence of a wider spread is the server's.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# Seconds added to the 1 s window. Since each slot is settled to the moment its request was
# written (`settle`), the margin only has to cover how much later than that the server counts
# the request. Measured against the sandbox on a 2-core machine under a load average of 4 to 6:
# 0.3 ms at the median, at most 29 ms over some 2,000 requests, with the arrivals of requests
# seven apart never closer than 1.016 s. (Up to 200 ms, and 429s, while DuckDB's thread pool
# took both cores at each staged batch: staging now keeps to one thread.) 30 ms keeps the rate
# at 7 / 1.03 = 97% of the limit; a rarer, larger delay is what the learning below is for.
# Later the sandbox took its arrival times from the kernel, not its handler threads: the late
# counts were its own threads starved, and by the kernel's stamps the arrival follows the write.
DEFAULT_MARGIN = 0.03
# After a 429 every user of the account widens the window by this much more (up to the cap),
# for `LEARNED_FOR` seconds: a 429 under our own limit means the arrival spread is wider.
LEARN_STEP = 0.05
LEARN_CAP = 0.25
LEARNED_FOR = 600.0
# Two confirmations are at least this share of the spacing apart: no two requests leave in one
# burst, yet a request sent a little late does not hold back the next one due (on a starved
# machine, where most wakes are late, a whole spacing made every late wake delay every request
# after it). The window's count keeps the limit.
MIN_GAP = 0.5
# The longest pause a 429 sets for the account; a later "blocked until" on file is damage.
BLOCK_MAX = 3600.0
# A confirmed request not settled after this long belongs to a process that died mid-write.
PENDING_TTL = 10.0
# A step of the Unix clock smaller than this is left alone: the two clocks are read at most
# `CLOCK_READ_MAX` apart (NTP's slewing moves both alike on Linux), and the times on file must
# keep their exact values while in use: a settlement finds its confirmation by its value (or,
# moved by a step, by its monotonic time).
CLOCK_STEP_MIN = 0.005
# The two clocks are read together if the monotonic one moved less than this around the Unix one.
CLOCK_READ_MAX = 0.001
# How long a thread waits before trying again to confirm, while pending requests fill the window.
PENDING_POLL = 0.005


class BudgetPaused(Exception):
    """The account's budget is paused (a 429 asked to wait) for longer than the caller waits."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the budget is paused for {seconds:.0f}s more")
        self.seconds = seconds


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


def _after_fork_in_child() -> None:
    """Fresh locks in a forked child: one held by another thread of the parent at the fork
    stays held in the child, where no thread will ever release it."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for state_file in _files.values():
        state_file.thread_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# The default ports of http and https, left out of a budget's key whatever the URL's scheme.
_WEB_PORTS = frozenset({80, 443})


def _state_file(path: Path) -> _StateFile:
    with _registry_lock:
        if str(path) not in _files:
            _files[str(path)] = _StateFile(path)
        return _files[str(path)]


def account_key(base_url: str) -> str:
    """The budget's key: the account's host and port, never anything derived from the token.
    The root's dot, an empty port and the ports 80 and 443 are left out, so that clients of
    one account share one budget however its URL is written.

    80 and 443 whatever the scheme: ``https://host:80`` reaches the same port as
    ``http://host``, and two keys for one server would let each send the whole rate. The key
    already joined ``http://host`` and ``https://host`` (one host's two web ports); one budget
    for two servers is only slower, never over Kommo's limit, and Kommo's accounts are
    distinct hosts anyway. Another port stays in the key: it is no Kommo account's own (a proxy
    or a sandbox, one account per port)."""
    parts = urlsplit(base_url if "://" in base_url else f"//{base_url}")
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port
    except ValueError:  # refused by the settings; a key all the same
        port = None
    host = f"[{host}]" if ":" in host else host
    if port is not None and port not in _WEB_PORTS:
        host = f"{host}:{port}"
    return re.sub(r"[^a-z0-9.-]", "_", host)


@dataclass
class _State:
    blocked_until: float = 0.0
    extra: float = 0.0
    extra_until: float = 0.0
    # The planned time of the last slot taken: the grid the even spacing follows.
    grid: float = 0.0
    # When the last request was confirmed: the next keeps the spacing from it.
    last_confirmed: float = 0.0
    # Confirm times of requests being written (confirmed, not yet settled).
    pending: list[float] = field(default_factory=list)
    # Slots planned and not yet confirmed (a reservation, or a slot taken for a caller that
    # never confirms).
    planned: list[float] = field(default_factory=list)
    # When requests went out (settled), sorted.
    sent: list[float] = field(default_factory=list)
    # Whether sends on file lay over a window ahead (the clock stepped back): moved to now.
    stepped_back: bool = False
    # The Unix and monotonic time the times above are in (read with the file), if read.
    clocks: tuple[float, float] | None = None


@dataclass(frozen=True)
class Slot:
    """A slot taken: when (Unix time, as written to the shared log) and after how long a wait."""

    at: float
    waited: float
    # The monotonic time of the confirmation, if read: finds its pending record again after a
    # step of the clock has moved it (see `settle`).
    monotonic: float | None = None


class SharedRateLimiter:
    """At most ``capacity`` slots in any ``window`` seconds, across threads and processes.

    ``requests_per_second`` below 1 or fractional is honoured by stretching the window:
    ``capacity = floor(rps)`` slots per ``max(1, capacity / rps)`` seconds. ``clock`` is the
    Unix time and ``monotonic`` a clock that never steps, shared by the machine's processes (a
    test simulating delays passes its own; with a ``clock`` of its own and no ``monotonic``,
    ``clock`` is both).
    """

    def __init__(
        self,
        *,
        key: str,
        requests_per_second: float,
        directory: Path,
        margin: float = DEFAULT_MARGIN,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
    ):
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self.capacity = max(1, math.floor(requests_per_second))
        self.window = max(1.0, self.capacity / requests_per_second) + margin
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"kommo-{key}.ratelimit"
        self._file = _state_file(self.path)
        self._clock = clock
        self._monotonic = monotonic or (time.monotonic if clock is time.time else clock)

    def __repr__(self) -> str:
        return (
            f"SharedRateLimiter(capacity={self.capacity}, window={self.window:.3f}s, "
            f"path={str(self.path)!r})"
        )

    # The state file, float64s: blocked_until, extra window, extra until, the grid, the Unix and
    # the monotonic time it was written at (where earlier versions kept a measured send delay,
    # which they ignore when it is out of bounds, as a Unix time is), the last confirmation, the
    # number of pending and of planned times; then the pending, planned and sent times.
    _HEADER = 9

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
        torn = len(raw) % values.itemsize or 0 < len(raw) < self._HEADER * values.itemsize
        if not torn:
            values.frombytes(raw)
            if not values:
                return _State()
            n_pending, n_planned = values[7], values[8]
            room = len(values) - self._HEADER
            torn = not (0 <= n_pending <= room and 0 <= n_planned <= room - n_pending)
        if torn:
            # Unreadable (not ours, or damaged): assume the window is full, and start afresh.
            state = _State(blocked_until=now + self.window)
            self._write(fd, state)
            return state
        state = self._parse(values, now)
        if state.stepped_back:
            self._write(fd, state)  # the sends moved back to now stay there as the clock goes on
        return state

    def _parse(self, values: array, now: float) -> _State:
        clocks = self._undo_clock_step(values)
        blocked_until, extra, extra_until, grid, _, _, last = values[: self._HEADER - 2]
        split = self._HEADER + int(values[7])
        end = split + int(values[8])
        if blocked_until > now + BLOCK_MAX:
            blocked_until = 0.0
        if extra_until <= now or extra_until > now + 2 * LEARNED_FOR:
            extra, extra_until = 0.0, 0.0
        state = _State(blocked_until, extra, extra_until, clocks=clocks)
        window = self._window(state, now)
        # Keep times inside the window. A confirmation, or a send over a window ahead, means
        # the clock stepped back since: it went out no later than now, so it counts as now
        # (dropping such sends let a step back of over a window forget the last ones). Sends
        # less far ahead count as they are, later still; plans past a window are dropped.
        state.grid = grid if now - window < grid <= now + window else 0.0
        state.last_confirmed = min(last, now) if now - window < last else 0.0
        state.pending = [
            t for t in values[self._HEADER : split] if now - PENDING_TTL < t <= now + window
        ]
        state.planned = [t for t in values[split:end] if now - window < t <= now + window]
        sent = values[end:]
        state.stepped_back = bool(sent) and sent[-1] > now + window
        state.sent = sorted(t if t <= now + window else now for t in sent if now - window < t)
        return state

    def _clocks(self) -> tuple[float, float] | None:
        """The Unix and the monotonic time read together, or None: a pair read across a
        preemption (a starved machine) would look like a step of the clock."""
        for _ in range(3):
            before = self._monotonic()
            unix = self._clock()
            after = self._monotonic()
            if after - before <= CLOCK_READ_MAX:
                return unix, (before + after) / 2
        return None

    def _undo_clock_step(self, values: array) -> tuple[float, float] | None:
        """Move the times on file by as much as the Unix clock stepped since they were written;
        the clocks they are then in (None if not read together).

        They are Unix times, which an NTP step or a resumed VM moves; a step forward made every
        send on file look older, and a window's worth of sends could follow the last ones at
        once. The monotonic clock, the same in every process of the machine, does not step: the
        Unix time elapsed minus the monotonic time elapsed is the step. A file without both
        times (new, or an earlier version's) or from before a reboot (its monotonic time ahead)
        is left as it is; a step back then still counts the sends ahead of now as now.
        """
        at_unix, at_monotonic = values[4], values[5]
        clocks = self._clocks()
        if clocks is None or not (at_unix > BLOCK_MAX and 0 < at_monotonic <= clocks[1]):
            return clocks
        step = (clocks[0] - at_unix) - (clocks[1] - at_monotonic)
        if abs(step) < CLOCK_STEP_MIN:
            return clocks
        for i in (0, 2, 3, 6):  # blocked until, extra until, the grid, the last confirmation
            if values[i] > 0:
                values[i] += step
        for i in range(self._HEADER, len(values)):
            values[i] += step
        return clocks

    def _write(self, fd: int, state: _State) -> None:
        # The latest plans, and more sends than a window holds (`confirm` counts them all).
        planned, sent = state.planned[-self.capacity :], state.sent[-2 * self.capacity :]
        header = [state.blocked_until, state.extra, state.extra_until, state.grid]
        # The clocks the times are in: those read with the file (a step since would otherwise be
        # written as already undone), or, for a state made afresh, now.
        header += [*(state.clocks or self._clocks() or (0.0, 0.0)), state.last_confirmed]
        header += [len(state.pending), len(planned)]
        data = array("d", header + state.pending + planned + sent).tobytes()
        # Rewritten in place under the lock: readers hold the lock too, so none sees it half
        # written; a state shorter than the last one is cut to its length.
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def _window(self, state: _State, now: float) -> float:
        """The window slots are planned and confirmed on: widened by what was learned from
        429s."""
        return self.window + state.extra

    def _next_slot(self, state: _State, now: float) -> float:
        """The earliest time the next slot may be planned, given the shared state."""
        window = self._window(state, now)
        spacing = window / self.capacity
        # Evenly spaced slots (a burst would make its own requests queue at the server and
        # arrive late, which is what eats the margin), on a grid of planned times: a thread
        # that wakes or sends a little late does not push the slots after it.
        at = max(now, state.grid + spacing) if state.grid else now
        taken = sorted(state.pending + state.planned + state.sent)
        if len(taken) >= self.capacity:
            at = max(at, taken[len(taken) - self.capacity] + window)
        return at

    def _take(self, fd: int, state: _State, at: float, now: float) -> None:
        """Plan the slot ``at`` and move the grid: late by less than a spacing, the grid keeps
        its plan (the next slot catches up); idle for longer, it starts again at ``at``."""
        spacing = self._window(state, now) / self.capacity
        planned = state.grid + spacing
        state.grid = planned if state.grid and at - planned < spacing else at
        state.planned.append(at)
        state.planned.sort()
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
        """Plan the next free slot if it is due within ``ahead`` seconds."""
        with self._locked() as fd:
            now = self._clock()
            state = self._read(fd, now)
            if state.blocked_until > now:
                return None, state.blocked_until - now
            at = self._next_slot(state, now)
            if at - now > ahead:
                return None, max(at - now - ahead, 0.0005)
            self._take(fd, state, at, now)
            return at, at - now

    def confirm(self, slot: float) -> tuple[float | None, float]:
        """Right before writing the request of the planned ``slot``: ``(send_time, 0)`` if it
        may go now, its plan replaced by a pending send; else ``(None, seconds to wait)``, the
        plan kept, and the caller confirms again after the wait.

        The rule is checked on what went out, not on plans: settled sends within the window
        count at their send time, pending ones as if they arrived with this one; and a send
        never follows the last one by less than the spacing.
        """
        with self._locked() as fd:
            now = self._clock()
            state = self._read(fd, now)
            if state.blocked_until > now:
                return None, state.blocked_until - now
            wait = self._send_wait(state, now)
            if wait > 0:
                return None, wait
            with contextlib.suppress(ValueError):
                state.planned.remove(slot)
            state.pending.append(now)
            state.last_confirmed = now
            self._write(fd, state)
            return now, 0.0

    def _send_wait(self, state: _State, now: float) -> float:
        """How long a request must wait before it may be written, by the sends on record."""
        window = self._window(state, now)
        if len(state.pending) >= self.capacity:
            return PENDING_POLL
        recent = [t for t in state.sent if t > now - window]
        # Of the sends in the window, all but `allowed` must leave it first.
        allowed = self.capacity - 1 - len(state.pending)
        due = now
        if len(recent) > allowed:
            due = recent[len(recent) - allowed - 1] + window
        if state.last_confirmed:
            gap = MIN_GAP * self._window(state, now) / self.capacity
            due = max(due, state.last_confirmed + gap)
        return due - now

    def acquire(
        self, *, cancelled: threading.Event | None = None, max_pause: float = math.inf
    ) -> Slot:
        """Block until a slot is due and may be sent, and confirm it: the caller writes its
        request at once and then calls `settle`. A pause of the budget (`block_for`) longer
        than ``max_pause`` seconds raises `BudgetPaused` rather than being waited out."""
        started = time.monotonic()
        while True:
            at, wait = self.reserve()
            if at is None and wait > max_pause and self.blocked():
                raise BudgetPaused(wait)
            if wait > 0:
                self._sleep(wait, cancelled)
            if at is None:
                continue
            sent = self._confirmed(at, cancelled)
            if sent is not None:
                return Slot(
                    at=sent, waited=time.monotonic() - started, monotonic=self._monotonic_of(sent)
                )

    def _confirmed(self, slot: float, cancelled: threading.Event | None) -> float | None:
        """Confirm ``slot``, waiting as the sends on record require; None if a 429 paused the
        account meanwhile (the plan stays in the log: unused, it only makes the budget
        stricter), and the caller takes another slot."""
        while True:
            sent, wait = self.confirm(slot)
            if sent is not None:
                return sent
            if self.blocked():
                return None
            self._sleep(wait, cancelled)

    def _monotonic_of(self, unix: float) -> float | None:
        """The monotonic time of the Unix time ``unix``, just past (None if the clocks could
        not be read together)."""
        clocks = self._clocks()
        return None if clocks is None else clocks[1] - (clocks[0] - unix)

    def _sleep(self, wait: float, cancelled: threading.Event | None) -> None:
        if cancelled is None:
            time.sleep(wait)
        elif cancelled.wait(wait):
            raise InterruptedError("rate-limit wait cancelled")

    def blocked(self) -> bool:
        """Whether the account's budget is paused now (after a 429)."""
        with self._locked() as fd:
            now = self._clock()
            return self._read(fd, now).blocked_until > now

    def settle(self, slot: float, sent: float, *, confirmed: float | None = None) -> None:
        """Record that the request of ``slot`` actually went out at ``sent``.

        Between confirming a slot and writing the request a thread can stall (the GIL held by
        a busy consumer, a collector pause); the server then counts the request later. The
        request moves from pending to sent at its real time, so the window's rule holds on
        what the server saw. A slot taken without confirming (`try_acquire`) moves the same
        way. A slot no longer in the log (a write that stalled past `PENDING_TTL`) still counts
        its send while in the window. ``confirmed``, the monotonic time of the confirmation,
        finds its pending record after a step of the clock moved it.
        """
        with self._locked() as fd:
            now = self._clock()
            state = self._read(fd, now)
            if slot in state.pending:
                state.pending.remove(slot)
            elif (moved := self._moved(state, confirmed, now)) is not None:
                state.pending.remove(moved)
                slot = moved
            elif slot in state.planned:
                if sent <= slot:
                    return  # a plan settled early changes nothing
                state.planned.remove(slot)
            elif slot in state.sent or sent <= now - self._window(state, now):
                return  # settled already, or its send is out of the window
            state.sent.append(max(sent, slot))
            state.sent.sort()
            self._write(fd, state)

    def _moved(self, state: _State, confirmed: float | None, now: float) -> float | None:
        """The pending record of the confirmation at monotonic time ``confirmed``, found by
        its Unix time now. Confirmations are at least `MIN_GAP` spacings apart, so within a
        quarter of that lies its own record and no other."""
        clocks = self._clocks() if confirmed is not None and state.pending else None
        if clocks is None or confirmed is None:
            return None
        expected = clocks[0] - (clocks[1] - confirmed)
        near_enough = MIN_GAP * self._window(state, now) / self.capacity / 4
        near = [t for t in state.pending if abs(t - expected) <= near_enough]
        return near[0] if len(near) == 1 else None

    def block_for(self, seconds: float, *, learn: bool = False) -> None:
        """Pause every user of this account's budget (after a 429 that asked us to wait).

        ``learn``: the 429 came although we kept to the budget, so the spread between taking a
        slot and arriving at the server is wider than the margin; widen everyone's window.
        """
        with self._locked() as fd:
            now = self._clock()
            state = self._read(fd, now)
            pause = min(max(seconds, 0.0), BLOCK_MAX)  # longer would read back as damage
            state.blocked_until = max(state.blocked_until, now + pause)
            if learn:
                state.extra = min(LEARN_CAP, state.extra + LEARN_STEP)
                state.extra_until = now + LEARNED_FOR
            self._write(fd, state)

    def extra_margin(self) -> float:
        """The window widening currently learned from 429s (seconds)."""
        with self._locked() as fd:
            return self._read(fd, self._clock()).extra
