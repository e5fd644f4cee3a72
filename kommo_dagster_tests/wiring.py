"""Test helpers that wire the code location to a sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kommo_dagster.resources import KommoResource
from kommo_dagster.sandbox import KommoSandbox


def sandbox_kommo(sandbox: KommoSandbox, directory: Path, **overrides: Any) -> KommoResource:
    """A `KommoResource` for ``sandbox``, with its own rate-limit folder under ``directory``.

    The budget is far above the sandbox's so that tests never wait on it; tests of the limit
    itself build their clients directly.
    """
    settings: dict[str, Any] = dict(
        api_token=sandbox.token,
        base_url=sandbox.base_url,
        requests_per_second=1000.0,
        rate_limit_dir=str(directory / "rate-limit"),
    )
    return KommoResource(**(settings | overrides))
