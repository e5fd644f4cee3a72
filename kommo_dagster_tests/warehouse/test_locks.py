"""The lock that lets concurrent writers take turns on a real DuckDB file, a file held by
another program, and a writer killed while it holds both."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import filelock
import pytest

from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.locks import DatabaseLockTimeout, connect, holder_path, lock_path
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.rows import synthetic_columns
from kommo_dagster_tests.warehouse.conftest import Child, child_python


def test_a_second_connection_waits_for_the_first(db: Path):
    holding, release, order = threading.Event(), threading.Event(), []

    def first():
        with connect(db, timeout=30) as con:
            con.execute("CREATE TABLE t (x INTEGER)")
            holding.set()
            release.wait(10)
            con.execute("INSERT INTO t VALUES (1)")
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(10)
    threading.Timer(0.3, release.set).start()
    waits: list[str] = []
    with connect(db, timeout=30, on_wait=waits.append) as con:
        order.append("second")
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    thread.join(10)
    assert order == ["first", "second"]
    assert len(waits) == 1 and "another run" in waits[0]


def test_waiting_for_the_lock_ends_with_a_clear_error(db: Path):
    with (
        connect(db, timeout=30),
        pytest.raises(DatabaseLockTimeout, match="KOMMO_DUCKDB_LOCK_TIMEOUT"),
        connect(db, timeout=0.2),
    ):
        pass


@pytest.mark.timeout(60)
def test_a_file_held_by_another_program_is_waited_for_then_reported(db: Path):
    db.parent.mkdir(parents=True)
    duckdb.connect(str(db)).close()
    opens = "import duckdb, sys; c = duckdb.connect(sys.argv[1])"
    with _holding(opens, db):
        waits: list[str] = []
        with (
            pytest.raises(DatabaseLockTimeout, match="another program") as err,
            connect(db, timeout=0.5, on_wait=waits.append),
        ):
            pass
        # Both say which setting bounds the wait, the first how long it is.
        assert "raise KOMMO_DUCKDB_LOCK_TIMEOUT to wait longer" in str(err.value)
        assert len(waits) == 1 and "held open by another program" in waits[0]
        assert re.search(
            r"waiting up to 0\.[0-9]+ s for it \(KOMMO_DUCKDB_LOCK_TIMEOUT\)", waits[0]
        )
    assert not lock_path(db).read_text()  # the lock file is only a lock
    with connect(db, timeout=5) as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]


# Another run of this project: takes the lock and holds it.
_TAKES_THE_LOCK = (
    "import sys; from kommo_dagster.warehouse.locks import connect; "
    "held = connect(sys.argv[1], timeout=30); c = held.__enter__()"
)


def _wait_in_vain(db: Path) -> tuple[str, list[str]]:
    """A connection's wait for a lock held elsewhere: its error, and what it was told meanwhile."""
    waits: list[str] = []
    with (
        pytest.raises(DatabaseLockTimeout) as err,
        connect(db, timeout=0.3, on_wait=waits.append),
    ):
        pass
    return str(err.value), waits


@pytest.mark.timeout(60)
def test_waiting_in_vain_for_another_run_names_the_process_that_holds_the_file(db: Path):
    with _holding(_TAKES_THE_LOCK, db) as holder:
        error, waits = _wait_in_vain(db)
        # Which process to wait for, or end if it is stuck; the log line names it too.
        assert f"PID {holder.pid}" in error
        assert "KOMMO_DUCKDB_LOCK_TIMEOUT" in error
        assert len(waits) == 1 and f"PID {holder.pid}" in waits[0]
    # Released: the next connection neither waits nor hears of the process that held it.
    waits = []
    with connect(db, timeout=5, on_wait=waits.append) as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]
    assert waits == []
    assert not lock_path(db).read_text()
    assert not holder_path(db).exists()


@pytest.mark.timeout(60)
def test_a_killed_holders_record_does_not_name_it_as_the_holder(db: Path):
    with _holding(_TAKES_THE_LOCK, db) as killed:
        killed.kill()
    # Its record stays until the next holder replaces it...
    assert holder_path(db).read_text().startswith(f"PID {killed.pid} on ")
    # ...which it does just after taking the lock: a run that waits in between hears of no one.
    with filelock.FileLock(str(lock_path(db))):
        error, waits = _wait_in_vain(db)
    for said in (error, *waits):
        assert f"PID {killed.pid}" not in said
        assert "a process that did not say which" in said
    assert len(waits) == 1
    with connect(db, timeout=5):
        assert holder_path(db).read_text().startswith(f"PID {os.getpid()} on ")
    assert not holder_path(db).exists()


# A write that stops inside its transaction, once its slice is deleted and its rows are in.
_STOPPED_WRITE = """
import sys
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.rows import synthetic_columns
window = EpochWindow(start=int(sys.argv[2]), end=int(sys.argv[3]))
staged = StagedRows(get_stream("leads"), window=window)
staged.append(synthetic_columns(staged.stream, 7, cursor_start=window.start, first_id=100))
staged.write(sys.argv[1], schema="kommo", timeout=30, after=lambda con: (
    print("inside", flush=True), sys.stdin.readline()))
"""


@pytest.mark.timeout(60)
def test_a_writer_killed_inside_its_transaction_leaves_the_rows_and_frees_the_file(db: Path):
    leads, window = get_stream("leads"), EpochWindow(start=1_790_000_000, end=1_790_086_400)
    with StagedRows(leads, window=window) as staged:
        staged.append(synthetic_columns(leads, 5, cursor_start=window.start))
        staged.write(db, schema="kommo", timeout=30)
        staged.discard()
    with child_python(_STOPPED_WRITE, db, window.start, window.end) as writer:
        assert writer.line == "inside"
        writer.kill()
    # The lock went with the process: no wait, and the rows of before, not the killed run's.
    waits: list[str] = []
    with connect(db, timeout=5, on_wait=waits.append) as con:
        ids = con.execute("SELECT id FROM kommo.leads ORDER BY id").fetchall()
    assert waits == []
    assert ids == [(i,) for i in range(1, 6)]
    assert not holder_path(db).exists()


@contextlib.contextmanager
def _holding(opens: str, db: Path) -> Iterator[Child]:
    """Another process that runs ``opens`` (Python opening ``db``, its first argument) and
    keeps it open until the block ends."""
    with child_python(f"{opens}; print('open', flush=True); sys.stdin.readline()", db) as holder:
        assert holder.line == "open"
        yield holder


@pytest.mark.timeout(60)
def test_a_holder_record_that_is_not_text_is_no_name(db: Path):
    """The record is read to word a wait's message: bytes that are not UTF-8 there (another
    program's, a damaged disk's) say nothing of the holder, rather than fail the wait."""
    db.parent.mkdir(parents=True)
    holder_path(db).write_bytes(b"PID \xff\xfe")
    with filelock.FileLock(str(lock_path(db))):
        error, waits = _wait_in_vain(db)
    for said in (error, *waits):
        assert "a process that did not say which" in said
