"""The shared sliding log: never more than `capacity` slots in a window, across threads and
processes. These tests check the slot times the limiter wrote, not wall-clock durations."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path

import pytest

from kommo_dagster.kommo.config import base_url_for
from kommo_dagster.kommo.ratelimit import (
    LEARN_CAP,
    LEARN_STEP,
    LEARNED_FOR,
    MIN_GAP,
    PENDING_TTL,
    SharedRateLimiter,
    account_key,
)
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS

# Slot times are epoch seconds (~1.8e9) in doubles, whose spacing there is ~2.4e-7 s: a slot the
# limiter put exactly one window after another can read back a few hundred nanoseconds short.
FLOAT_RESOLUTION = 1e-6


def assert_within_budget(times: list[float], capacity: int, window: float) -> None:
    times = sorted(times)
    for i in range(len(times) - capacity):
        gap = times[i + capacity] - times[i]
        assert gap >= window - FLOAT_RESOLUTION, (i, times[i : i + capacity + 1])


def test_the_key_is_the_host_never_the_token():
    assert account_key("https://Acme.kommo.com") == "acme.kommo.com"
    assert account_key("http://127.0.0.1:8123") == "127.0.0.1_8123"


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.kommo.com:443",
        "https://acme.kommo.com:",
        "https://acme.kommo.com.",
        "https://ACME.Kommo.com.:443",
        "http://acme.kommo.com:80",
    ],
)
def test_one_account_has_one_budget_however_its_url_is_written(url):
    """A default port, an empty one or the root's dot name the same host: clients of one
    account configured either way share its budget (and its ban), not one each."""
    assert base_url_for(subdomain=None, base_url=url)  # the settings take it as it is
    assert account_key(url) == account_key(base_url_for(subdomain="acme", base_url=None))
    assert account_key("https://acme.kommo.com:8443") == "acme.kommo.com_8443"
    assert account_key("http://[::1]:9000") != account_key("http://[::1]")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("https://acme.kommo.com:80", "http://acme.kommo.com"),
        ("http://acme.kommo.com:443", "https://acme.kommo.com"),
        ("https://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ],
)
def test_one_host_and_port_have_one_budget_whatever_the_scheme(one, other):
    """The scheme only says whether TLS is spoken on the port: a key of its own for each would
    let clients written either way send the whole rate each to one server."""
    assert account_key(one) == account_key(other)


def test_fractional_and_slow_rates_stretch_the_window(tmp_path):
    lim = SharedRateLimiter(key="a", requests_per_second=0.5, directory=tmp_path, margin=0)
    assert (lim.capacity, lim.window) == (1, 2.0)
    lim = SharedRateLimiter(key="b", requests_per_second=6.5, directory=tmp_path, margin=0.04)
    assert lim.capacity == 6 and lim.window == pytest.approx(1.04)


@pytest.mark.timeout(60)
def test_threads_share_one_budget(tmp_path):
    # Two limiter objects (two clients) and eight threads, one account.
    limiters = [
        SharedRateLimiter(key="acct", requests_per_second=40, directory=tmp_path) for _ in range(2)
    ]
    times: list[float] = []
    lock = threading.Lock()

    def worker(lim: SharedRateLimiter) -> None:
        for _ in range(10):
            at = lim.acquire().at
            lim.settle(at, time.time())  # the request is written: a sender settles its slot
            with lock:
                times.append(at)

    threads = [threading.Thread(target=worker, args=(limiters[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times) == 80
    assert_within_budget(times, 40, limiters[0].window)


CHILD = """
import json, sys
from pathlib import Path
import time
from kommo_dagster.kommo.ratelimit import SharedRateLimiter
lim = SharedRateLimiter(key="acct", requests_per_second=60, directory=Path(sys.argv[1]))
times = []
for _ in range(40):
    times.append(lim.acquire().at)
    lim.settle(times[-1], time.time())
print(json.dumps(times))
"""


@pytest.mark.timeout(120)
def test_processes_share_one_budget(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    times: list[float] = []
    for p in procs:
        out, _ = p.communicate(timeout=100)
        assert p.returncode == 0
        times += json.loads(out)
    assert len(times) == 120
    window = SharedRateLimiter(key="acct", requests_per_second=60, directory=tmp_path).window
    assert_within_budget(times, 60, window)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_forked_while_another_thread_holds_the_budget_can_take_slots(tmp_path):
    """A child forked while a thread of its parent was inside the budget's lock inherited
    that lock held, by a thread the child does not have, and hung on its first slot."""
    lim = SharedRateLimiter(key="fork", requests_per_second=100, directory=tmp_path)
    lim.try_acquire()
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with lim._locked():
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: its parent's holder is gone; a slot must come, not a hang
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(5)
            code = 0 if lim.reserve()[0] is not None else 1
        finally:
            os._exit(code)
    time.sleep(0.5)
    leave.set()  # the parent's flock goes too, so the child only waits on its own lock
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_block_pauses_every_user_of_the_account(tmp_path):
    a = SharedRateLimiter(key="acct", requests_per_second=100, directory=tmp_path)
    b = SharedRateLimiter(key="acct", requests_per_second=100, directory=tmp_path)
    other = SharedRateLimiter(key="other", requests_per_second=100, directory=tmp_path)
    a.block_for(30)
    at, wait = b.try_acquire()
    assert at is None and 29 < wait <= 30
    assert other.try_acquire()[0] is not None


def test_a_429_widens_the_window_for_every_user_of_the_account(tmp_path):
    a = SharedRateLimiter(key="acct", requests_per_second=1, directory=tmp_path)
    b = SharedRateLimiter(key="acct", requests_per_second=1, directory=tmp_path)
    a.block_for(0, learn=True)
    a.block_for(0, learn=True)
    assert b.extra_margin() == pytest.approx(2 * LEARN_STEP)
    first, _ = b.try_acquire()
    at, wait = a.try_acquire()
    assert first is not None and at is None
    assert wait == pytest.approx(first + b.window + 2 * LEARN_STEP - time.time(), abs=0.05)
    for _ in range(10):
        a.block_for(0, learn=True)
    assert b.extra_margin() == pytest.approx(LEARN_CAP)


def test_slots_are_spaced_evenly(tmp_path):
    lim = SharedRateLimiter(key="acct", requests_per_second=7, directory=tmp_path)
    first, _ = lim.try_acquire()
    at, wait = lim.try_acquire()
    assert first is not None and at is None
    assert wait == pytest.approx(first + lim.window / 7 - time.time(), abs=0.02)


@pytest.mark.parametrize(
    ("rps", "due"),
    [
        # One slot a window: the next must come a window after the real send (0.9 + 1).
        (1, 1.9),
        # Two a window: the next keeps to the even spacing's grid (0.5), however late the
        # first went out; the window's rule, on the real send times, still holds.
        (2, 0.5),
    ],
)
def test_a_request_sent_late_pushes_back_only_the_slot_a_window_later(tmp_path, rps, due):
    lim = SharedRateLimiter(key="late", requests_per_second=rps, directory=tmp_path, margin=0)
    first, _ = lim.try_acquire()
    assert first is not None
    lim.settle(first, first + 0.9 * (1 / rps))
    second, wait = lim.try_acquire()
    assert second is None and wait == pytest.approx(first + due - time.time(), abs=0.05)


def test_settling_moves_the_slot_in_the_shared_log(tmp_path):
    lim = SharedRateLimiter(key="settle", requests_per_second=1, directory=tmp_path, margin=0)
    first, _ = lim.try_acquire()
    assert first is not None
    lim.settle(first, first + 0.9)
    assert _slots(lim) == [first + 0.9]
    # Settling earlier than the slot, or a slot no longer in the log, changes nothing.
    lim.settle(first + 0.9, first)
    lim.settle(12345.0, 99999.0)
    assert _slots(lim) == [first + 0.9]


def test_a_send_settled_after_its_pending_record_expired_still_counts(tmp_path):
    """A write that stalled past the pending records' life (a stopped process, a connection
    made again after a long wait) went out uncounted: its slot was no longer in the log."""
    clock = [1_000_000.0]
    lim = SharedRateLimiter(
        key="stall", requests_per_second=1, directory=tmp_path, margin=0, clock=lambda: clock[0]
    )
    at, _ = lim.try_acquire()
    assert at is not None
    confirmed, _ = lim.confirm(at)
    assert confirmed is not None
    clock[0] += PENDING_TTL + 1
    lim.settle(confirmed, clock[0])
    assert _slots(lim) == [clock[0]]
    assert lim.try_acquire()[0] is None  # one a window, and that one just went out


def _write_state(lim: SharedRateLimiter, *, grid: float, slots: list[float]) -> None:
    # The header (see SharedRateLimiter._HEADER), no pending or planned slots, then the sends.
    header = [0.0, 0.0, 0.0, grid, 0.0, 0.0, 0.0, 0.0, 0.0]
    Path(lim.path).write_bytes(array("d", [*header, *slots]).tobytes())


def _slots(lim: SharedRateLimiter) -> list[float]:
    """Every time in the log: pending, planned and sent."""
    return array("d", lim.path.read_bytes())[SharedRateLimiter._HEADER :].tolist()


def test_a_thread_that_wakes_late_keeps_the_grid(tmp_path):
    lim = SharedRateLimiter(key="grid", requests_per_second=5, directory=tmp_path, margin=0)
    spacing = lim.window / lim.capacity
    now = time.time()
    # The slot was due 0.3 spacings ago: taking it now leaves the grid where it was planned,
    # so the next slot comes 0.7 spacings from now.
    _write_state(lim, grid=now - 1.3 * spacing, slots=[now - 1.3 * spacing])
    at, _ = lim.try_acquire()
    assert at is not None
    _, wait = lim.try_acquire()
    assert wait == pytest.approx(at - 0.3 * spacing + spacing - time.time(), abs=0.03)
    assert wait < 0.8 * spacing


def test_after_an_idle_while_the_grid_starts_again(tmp_path):
    lim = SharedRateLimiter(key="idle", requests_per_second=5, directory=tmp_path, margin=0)
    spacing = lim.window / lim.capacity
    # Idle for three spacings: no burst of catching up, the next slot is a spacing after now.
    _write_state(lim, grid=time.time() - 3 * spacing, slots=[])
    at, _ = lim.try_acquire()
    assert at is not None
    _, wait = lim.try_acquire()
    assert wait == pytest.approx(at + spacing - time.time(), abs=0.03)


def test_sends_on_record_still_count_after_the_clock_steps_back(tmp_path):
    """A clock stepped back (an NTP step, a resumed VM) by more than a window leaves the log's
    last sends in its future; they went out just now, and must not be forgotten."""
    clock = [1_000_000.0]
    lim = SharedRateLimiter(
        key="back", requests_per_second=5, directory=tmp_path, margin=0, clock=lambda: clock[0]
    )
    spacing = lim.window / lim.capacity
    sent = [clock[0] + i * spacing for i in range(lim.capacity)]
    _write_state(lim, grid=sent[-1], slots=sent)
    clock[0] = sent[-1] - 5.0  # right after the last send, the clock reads 5 s earlier
    at, wait = lim.try_acquire()
    assert at is None and wait == pytest.approx(lim.window)
    # Nor does the step back stretch the pause: a window after the step, sends go on.
    clock[0] += lim.window
    at, _ = lim.try_acquire()
    assert at is not None


def _stepping_limiter(tmp_path: Path, clocks: dict[str, float]) -> SharedRateLimiter:
    return SharedRateLimiter(
        key="step",
        requests_per_second=7,
        directory=tmp_path,
        clock=lambda: clocks["unix"],
        monotonic=lambda: clocks["monotonic"],
    )


def _send_a_window(lim: SharedRateLimiter, clocks: dict[str, float]) -> None:
    for _ in range(lim.capacity):
        slot, wait = lim.reserve()
        assert slot is not None
        clocks["unix"] += wait
        clocks["monotonic"] += wait
        sent, _ = lim.confirm(slot)
        assert sent is not None
        lim.settle(sent, sent)


@pytest.mark.parametrize("step", [5.0, 0.4, -0.4, -5.0])
def test_a_step_of_the_clock_neither_forgets_nor_stretches_the_sends(tmp_path, step):
    """An NTP step or a resumed VM moves the Unix clock: forward, the last window's sends looked
    a step older, and a whole window more could follow at once. The monotonic clock measures
    how long ago they really went out."""
    clocks = {"unix": 1_800_000_000.0, "monotonic": 5_000.0}
    lim = _stepping_limiter(tmp_path, clocks)
    _send_a_window(lim, clocks)
    first = _slots(lim)[0]
    clocks["unix"] += step + 0.01
    clocks["monotonic"] += 0.01
    _, wait = lim.try_acquire()
    # Due a window after the first of the seven, as if the clock had not stepped.
    assert wait == pytest.approx(first + lim.window - (clocks["unix"] - step), abs=1e-6)


@pytest.mark.parametrize("step", [5.0, -5.0])
def test_a_pause_a_widening_and_the_gap_last_as_long_across_a_step_of_the_clock(tmp_path, step):
    """The header's times move with the sends: a step forward must not cut short a 429's pause
    or the widening learned from it, nor let the next confirmation crowd the last one."""
    clocks = {"unix": 1_800_000_000.0, "monotonic": 5_000.0}
    lim = _stepping_limiter(tmp_path, clocks)
    lim.block_for(60.0, learn=True)
    clocks["unix"] += step + 1.0
    clocks["monotonic"] += 1.0
    _, wait = lim.try_acquire()
    assert wait == pytest.approx(59.0, abs=1e-6)
    clocks["unix"] += LEARNED_FOR - 1.5
    clocks["monotonic"] += LEARNED_FOR - 1.5
    assert lim.extra_margin() == LEARN_STEP
    slot, _ = lim.reserve()
    assert slot is not None
    assert lim.confirm(slot)[0] is not None
    clocks["unix"] += step + 0.001
    clocks["monotonic"] += 0.001
    slot, _ = lim.reserve()
    assert slot is not None
    _, wait = lim.confirm(slot)
    gap = MIN_GAP * (lim.window + LEARN_STEP) / lim.capacity
    assert wait == pytest.approx(gap - 0.001, abs=1e-6)
    clocks["unix"] += 1.0
    clocks["monotonic"] += 1.0
    assert lim.extra_margin() == 0.0


@pytest.mark.parametrize("step", [5.0, -5.0])
def test_a_request_in_flight_across_a_step_of_the_clock_is_settled(tmp_path, step):
    """The step moves the request's pending record with the others; its settlement finds it
    by the confirmation's monotonic time. Left pending, it would hold a place in every window
    until `PENDING_TTL`, and the account would stall for seconds."""
    clocks = {"unix": 1_800_000_000.0, "monotonic": 5_000.0}
    lim = _stepping_limiter(tmp_path, clocks)
    slots = []
    for _ in range(2):
        slot = lim.acquire()
        assert slot.monotonic == clocks["monotonic"]
        slots.append(slot)
        clocks["unix"] += 0.2
        clocks["monotonic"] += 0.2
    clocks["unix"] += step
    mine, other = slots
    lim.settle(mine.at, clocks["unix"], confirmed=mine.monotonic)
    # Its own record went, the other's stays pending (moved by the step), and the send counts.
    header = array("d", lim.path.read_bytes())[: SharedRateLimiter._HEADER]
    assert header[7] == 1
    assert _slots(lim) == pytest.approx([other.at + step, clocks["unix"]], abs=1e-6)
    # Without the monotonic time, the moved record is not found: it stays, counted twice.
    lim.settle(other.at, clocks["unix"])
    assert array("d", lim.path.read_bytes())[7] == 1


def test_clocks_read_across_a_preemption_are_no_step(tmp_path):
    """A thread preempted between reading the two clocks sees the monotonic one run ahead of
    the Unix one: taken for a step back, it would make the sends on file look older."""
    clocks = {"unix": 1_800_000_000.0, "monotonic": 5_000.0}
    reads = itertools.count()
    lim = SharedRateLimiter(
        key="preempted",
        requests_per_second=7,
        directory=tmp_path,
        clock=lambda: clocks["unix"],
        # Every other read 20 ms late, as if the thread had waited for a core in between.
        monotonic=lambda: clocks["monotonic"] + 0.02 * (next(reads) % 2),
    )
    _send_a_window(lim, clocks)
    first = _slots(lim)[0]
    _, wait = lim.try_acquire()
    assert wait == pytest.approx(first + lim.window - clocks["unix"], abs=1e-6)


def test_times_written_by_an_earlier_version_or_before_a_reboot_are_not_moved(tmp_path):
    clocks = {"unix": 1_800_000_000.0, "monotonic": 5_000.0}
    lim = _stepping_limiter(tmp_path, clocks)
    spacing = lim.window / lim.capacity
    sends = [clocks["unix"] - 0.5 + i * spacing / 2 for i in range(lim.capacity)]
    for fields in ([0.12, clocks["unix"] - 3.0], [clocks["unix"] - 0.5, 9_000.0]):
        # An earlier version's send delay and its time; a monotonic time from before a reboot.
        header = [0.0, 0.0, 0.0, sends[-1], *fields, sends[-1], 0.0, 0.0]
        Path(lim.path).write_bytes(array("d", [*header, *sends]).tobytes())
        assert _slots(lim) == sends
        _, wait = lim.try_acquire()
        assert wait == pytest.approx(sends[0] + lim.window - clocks["unix"], abs=1e-6)


def test_a_torn_state_file_is_read_as_a_full_window(tmp_path):
    lim = SharedRateLimiter(key="acct", requests_per_second=5, directory=tmp_path)
    Path(lim.path).write_bytes(b"\x00" * 13)
    before = time.time()
    at, wait = lim.try_acquire()
    assert at is None and wait == pytest.approx(lim.window, abs=0.05)
    # ...and the file is whole again, so the limiter recovers after that one window.
    state = array("d")
    state.frombytes(Path(lim.path).read_bytes())
    assert len(state) == SharedRateLimiter._HEADER
    assert state[0] == pytest.approx(before + lim.window, abs=0.05)


# --- against the sandbox, which counts requests on arrival in a sliding one-second window ----

EXTRACT = """
import json, sys
from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS
from datetime import datetime, UTC
start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
with KommoClient.from_env() as client:
    rows = {s: sum(len(p) for p in client.iter_records(s, start=start, end=end))
            for s in INCREMENTAL_STREAMS}
    print(json.dumps({"rows": rows, "requests": client.stats().requests}))
"""


@pytest.mark.timeout(180)
def test_two_processes_extracting_at_once_stay_under_the_limit(sandbox_factory, tmp_path):
    sb = sandbox_factory(leads=300, requests_per_second=7, latency_ms=40, latency_jitter_ms=20)
    env = {
        **os.environ,
        "KOMMO_BASE_URL": sb.base_url,
        "KOMMO_API_TOKEN": sb.token,
        "KOMMO_REQUESTS_PER_SECOND": "7",
        "KOMMO_MAX_WORKERS": "4",
        "KOMMO_RATE_LIMIT_DIR": str(tmp_path),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXTRACT], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=170)
        assert p.returncode == 0
        results.append(json.loads(out))
    stats = sb.stats()
    assert stats["violations"] == 0 and stats["rate_limited"] == 0, stats
    want = {s: len(sb.expected_rows(s)) for s in INCREMENTAL_STREAMS}
    for result in results:
        assert result["rows"] == want
    assert stats["requests"] == sum(r["requests"] for r in results)


@pytest.mark.timeout(120)
def test_one_client_with_many_workers_stays_under_the_limit(sandbox_factory, tmp_path):
    from kommo_dagster.kommo import KommoClient

    sb = sandbox_factory(leads=600, requests_per_second=7, latency_ms=150, latency_jitter_ms=50)
    with KommoClient(
        base_url=sb.base_url, token=sb.token, max_workers=6, rate_limit_dir=tmp_path
    ) as client:
        rows = sum(len(p) for p in client.iter_records("events"))
        assert rows == len(sb.expected_rows("events"))
        assert client.stats().requests > 14 and client.stats().throttled == 0
    stats = sb.stats()
    assert stats["violations"] == 0 and stats["peak_concurrency"] > 1


def test_reservations_are_each_threads_own_slots_on_the_grid(tmp_path):
    lim = SharedRateLimiter(key="reserve", requests_per_second=5, directory=tmp_path, margin=0)
    spacing = lim.window / lim.capacity
    slots = [lim.reserve()[0] for _ in range(4)]
    assert None not in slots
    assert [b - a for a, b in itertools.pairwise(slots)] == pytest.approx([spacing] * 3)
    assert _slots(lim) == slots
    # A probe sees the budget taken until the last reservation's spacing.
    at, wait = lim.try_acquire()
    assert at is None and wait == pytest.approx(slots[-1] + spacing - time.time(), abs=0.03)


def test_no_slot_is_reserved_over_a_window_ahead(tmp_path):
    lim = SharedRateLimiter(key="ahead", requests_per_second=1, directory=tmp_path, margin=0)
    first, _ = lim.reserve()
    second, _ = lim.reserve()
    assert first is not None and second == pytest.approx(first + 1.0)
    third, wait = lim.reserve()
    assert third is None and wait == pytest.approx(first + 2.0 - time.time() - 1.0, abs=0.03)
    assert _slots(lim) == [second]  # the log keeps the last `capacity` slots


def test_a_block_set_while_a_thread_waits_for_its_slot_holds_it_back(tmp_path):
    lim = SharedRateLimiter(key="held", requests_per_second=2, directory=tmp_path, margin=0)
    other = SharedRateLimiter(key="held", requests_per_second=2, directory=tmp_path, margin=0)
    assert lim.try_acquire()[0] is not None
    began = time.time()
    # The next slot is half a second away; a 429 elsewhere pauses the account meanwhile.
    timer = threading.Timer(0.1, lambda: other.block_for(0.8))
    timer.start()
    slot = lim.acquire()
    timer.join()
    assert slot.at >= began + 0.9


def test_a_connection_made_again_after_the_confirmation_does_not_outlive_it(tmp_path):
    """A kept-alive connection found closed once the slot is confirmed is made again before
    the write. A connect that takes longer than the pending record lives (a slow DNS answer,
    SYNs or TLS records lost and resent) must not let the request go out unseen by the others:
    meanwhile another process took the account's whole window."""
    from kommo_dagster.kommo.connections import _budgeted

    clock = [1_000_000.0]
    arrivals: list[float] = []

    def limiter() -> SharedRateLimiter:
        lim = SharedRateLimiter(
            key="reconnect", requests_per_second=7, directory=tmp_path, clock=lambda: clock[0]
        )
        lim._sleep = lambda wait, cancelled: clock.__setitem__(0, clock[0] + wait)  # type: ignore[method-assign]
        return lim

    mine, other = limiter(), limiter()
    slot: list[float] = []

    def before_send() -> None:
        slot[:] = [mine.acquire().at]

    def after_send(*, unused: bool = False) -> None:
        if slot:
            mine.settle(slot.pop(), clock[0])

    class Stub:
        sock = object()
        is_connected = False

        def connect(self) -> None:
            clock[0] += PENDING_TTL + 1  # the connect drags on; the other process sends
            for _ in range(7):
                sent = other.acquire().at
                arrivals.append(clock[0])
                other.settle(sent, clock[0])

        def close(self) -> None:
            pass

        def request(self, *args, **kwargs) -> None:
            arrivals.append(clock[0])

    class Pool:
        ConnectionCls = Stub

    conn = _budgeted(Pool, before_send, after_send, lambda sock: None).ConnectionCls()
    conn.kept_alive = True
    conn.request("GET", "/")
    assert len(arrivals) == 8
    assert_within_budget(arrivals, 7, 1.0)
