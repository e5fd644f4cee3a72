"""A DuckDB file per test, in a directory that does not exist yet."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "kommo_test.duckdb"
