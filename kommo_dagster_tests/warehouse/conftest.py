"""A DuckDB file per test, in a directory that does not exist yet; and another program, a child
Python process, for the tests of what one process leaves to the next (locks, staging)."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "kommo_test.duckdb"


@dataclasses.dataclass(frozen=True)
class Child:
    """A child process and the first line it printed, once it printed it."""

    process: subprocess.Popen[str]
    line: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """End it as a crash would (SIGKILL: none of its cleanup runs), then reap it."""
        self.process.kill()
        self.process.wait(30)


@contextlib.contextmanager
def child_python(script: str, *args: str | Path | int) -> Iterator[Child]:
    """Run ``script`` (Python, ``args`` its ``sys.argv[1:]``) in another process; enter once it
    printed its first line, which a script prints when it holds what the test is about, and
    then waits on its stdin.

    A test may `Child.kill` it; on leaving, one still running has its stdin closed, so it ends
    as usual, and is waited for. The pipes are closed either way."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        yield Child(process, process.stdout.readline().strip())
    finally:
        with contextlib.suppress(BrokenPipeError):  # one killed may have left it unread
            process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()  # stuck: no process outlives its test
            process.wait(30)
            raise
        finally:
            process.stdout.close()
