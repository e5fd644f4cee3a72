"""Taking turns on a database file: a lock file next to it (``<file>.lock``) held from connect
to close, and retries while another program holds the file. Either wait ends with
`DatabaseLockTimeout`, which says what holds the file and what to do: the lock's holder writes
who it is next to it (``<file>.lock.holder``), since a lock file says nothing of its holder."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import filelock

from kommo_dagster.warehouse.errors import WarehouseError
from kommo_dagster.warehouse.owners import Owner, this_process
from kommo_dagster.warehouse.sql import is_file_database


class DatabaseLockTimeout(WarehouseError):
    """The database file stayed busy for longer than the configured timeout."""


def lock_path(database: str | Path) -> Path:
    return Path(f"{database}.lock")


def holder_path(database: str | Path) -> Path:
    return Path(f"{database}.lock.holder")


def _record_holder(database: Path) -> None:
    """Say who holds the lock, for a run that waits for it; written only while holding it. Not
    the command line, which may carry a secret and is one ``ps -p <PID>`` away. A second line
    identifies the process (`Owner`), so that a record a killed holder left is not believed."""
    since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    owner = this_process()
    with contextlib.suppress(OSError):
        holder_path(database).write_text(
            f"PID {owner.pid} on {owner.host} since {since}\n{owner.to_json()}\n"
        )


def _holder(database: Path) -> str:
    """`_record_holder`'s words, or a general one if the holder could not write them.

    A killed holder's record stays until the next holder replaces it, just after taking the
    lock: a run that waits in between, or for a holder that could not write, would name a
    process that no longer exists. A record whose process has certainly ended is not repeated.
    """
    try:
        said, _, identity = holder_path(database).read_text().strip().partition("\n")
    except (OSError, UnicodeDecodeError):  # not `_record_holder`'s words
        said, identity = "", ""
    owner = Owner.from_json(identity)
    if owner is not None and owner.has_ended():
        said = ""
    return said.strip() or "a process that did not say which"


@contextlib.contextmanager
def database_lock(
    database: str | Path, *, timeout: float, on_wait: Callable[[str], None] | None = None
) -> Iterator[float]:
    """Hold the project's lock file of ``database``; yields the deadline left for DuckDB's own.

    A database that is not a local file (MotherDuck) has no lock file: its service orders
    concurrent writers itself, and a lock on one machine could not reach the others anyway.
    """
    deadline = time.monotonic() + timeout
    if not is_file_database(database):
        yield deadline
        return
    database = Path(database)
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path(database)), timeout=timeout)
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if on_wait is not None:
                on_wait(
                    f"{database} is being written by another run; waiting up to {timeout:.0f} s "
                    f"for it (KOMMO_DUCKDB_LOCK_TIMEOUT); it is held by {_holder(database)}"
                )
            lock.acquire()
    except filelock.Timeout:
        raise DatabaseLockTimeout(
            f"waited {timeout:.0f} s for {lock_path(database)}: another run of this project "
            f"still holds {database}: {_holder(database)}. Let it finish (or end that process "
            f"if it is stuck), or raise KOMMO_DUCKDB_LOCK_TIMEOUT."
        ) from None
    try:
        _record_holder(database)
        yield deadline
    finally:
        with contextlib.suppress(OSError):
            holder_path(database).unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def connect(
    database: str | Path,
    *,
    timeout: float,
    config: Mapping[str, Any] | None = None,
    read_only: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``database``, holding the project's lock file for as long as it is open.

    Waits up to ``timeout`` seconds in total: first for the lock file (another run of this
    project), then for DuckDB's own lock (another program holding the file). ``config`` is
    DuckDB's connection configuration (``{"memory_limit": "512MB"}``...). ``on_wait`` is told,
    once, when the connection has to wait.
    """
    with database_lock(database, timeout=timeout, on_wait=on_wait) as deadline:
        con = retry_while_locked(
            lambda: duckdb.connect(str(database), read_only=read_only, config=dict(config or {})),
            database=Path(database),
            deadline=deadline,
            on_wait=on_wait,
        )
        try:
            yield con
        finally:
            con.close()


def retry_while_locked(
    open_: Callable[[], Any],
    *,
    database: Path,
    deadline: float,
    on_wait: Callable[[str], None] | None,
) -> Any:
    delay = 0.05
    while True:
        try:
            return open_()
        except duckdb.Error as exc:
            if not is_file_database(database):
                raise WarehouseError(
                    f"could not open the MotherDuck database {database}: {exc}. MotherDuck needs "
                    f"network access and a token (the motherduck_token or MOTHERDUCK_TOKEN "
                    f"variable); check both, or point KOMMO_DUCKDB_PATH at a local file."
                ) from exc
            if not isinstance(exc, duckdb.IOException):
                raise
            if "lock" not in str(exc).lower():
                raise
            if delay == 0.05 and on_wait is not None:
                left = max(0.0, deadline - time.monotonic())
                on_wait(
                    f"{database} is held open by another program; waiting up to {left:.3g} s "
                    f"for it (KOMMO_DUCKDB_LOCK_TIMEOUT) ({exc})"
                )
            if time.monotonic() + delay > deadline:
                raise DatabaseLockTimeout(
                    f"{database} stays locked by another program ({exc}). Close the DuckDB "
                    f"CLI, notebook or process that holds it open, then re-run; or raise "
                    f"KOMMO_DUCKDB_LOCK_TIMEOUT to wait longer."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


__all__ = [
    "DatabaseLockTimeout",
    "connect",
    "database_lock",
    "holder_path",
    "lock_path",
]
