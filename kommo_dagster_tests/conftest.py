"""Shared fixtures: Kommo sandboxes served on 127.0.0.1 for the tests that talk HTTP, and a clean
environment for the tests that load the code location from it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

# The small account most tests use: every messy case is in it (see sandbox/records.py and
# sandbox/timeline.py), and it pages in a few requests.
SMALL_ACCOUNT = SandboxConfig(seed=1, leads=300)


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., KommoSandbox]]:
    """Start sandboxes with SandboxConfig keyword arguments; all are stopped at teardown.

    `sandbox_factory(leads=300, requests_per_second=None)` -> a started KommoSandbox. A
    SandboxConfig can be passed as the first argument, with keyword overrides on top.
    """
    started: list[KommoSandbox] = []

    def make(config: SandboxConfig | None = None, **overrides: Any) -> KommoSandbox:
        sb = KommoSandbox(config or SandboxConfig(seed=1, leads=300), **overrides).start()
        started.append(sb)
        return sb

    try:
        yield make
    finally:
        for sb in started:
            sb.stop()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[KommoSandbox]:
    """A small default account (300 leads, Kommo's 7 requests/s), shared by a test module.

    Shared state: call `sandbox.reset()` (counters, queued faults, ban) where a test needs a
    clean slate, and do not churn it; use `sandbox_factory` for anything that changes the data.
    """
    with KommoSandbox(SMALL_ACCOUNT) as sb:
        yield sb


@pytest.fixture(scope="module")
def unlimited_sandbox() -> Iterator[KommoSandbox]:
    """The small account without a rate limit, shared by a module: for tests that count
    requests, not pace. Do not churn it."""
    with KommoSandbox(SandboxConfig(seed=1, leads=300, requests_per_second=None)) as sb:
        yield sb


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A clean process environment (the code location reads the real one) with a database."""
    for name in list(os.environ):
        if name.startswith("KOMMO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KOMMO_DUCKDB_PATH", str(tmp_path / "crm.duckdb"))
    return {"KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb")}
