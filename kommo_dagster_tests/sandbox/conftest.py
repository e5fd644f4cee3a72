"""Helpers for the sandbox's own tests: plain `requests` calls, no project client involved."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from kommo_dagster.sandbox import KommoSandbox, SandboxConfig


class Api:
    """A bare HTTP caller with the sandbox's token (these tests check the server, not a client)."""

    def __init__(self, sb: KommoSandbox) -> None:
        self.sb = sb
        self.session = requests.Session()

    def get(self, path: str, params: Any = None, *, token: str | None = None, **kw: Any):
        headers = {"Authorization": f"Bearer {token or self.sb.token}"}
        kw.setdefault("timeout", 30)
        return self.session.get(f"{self.sb.base_url}{path}", params=params, headers=headers, **kw)

    def items(self, path: str, key: str, params: Any = None) -> list[dict[str, Any]]:
        """Every record of a list endpoint, following `_links.next` until it is absent."""
        out: list[dict[str, Any]] = []
        r = self.get(path, params)
        while True:
            if r.status_code == 204:
                return out
            assert r.status_code == 200, r.text
            body = r.json()
            out.extend(body["_embedded"][key])
            nxt = body["_links"].get("next")
            if nxt is None:
                return out
            r = self.session.get(
                nxt["href"], headers={"Authorization": f"Bearer {self.sb.token}"}, timeout=30
            )

    def close(self) -> None:
        self.session.close()


@pytest.fixture(scope="module")
def open_sandbox() -> Iterator[KommoSandbox]:
    """A small account without a rate limit, for the semantics tests (read-only)."""
    with KommoSandbox(SandboxConfig(seed=3, leads=300, requests_per_second=None)) as sb:
        yield sb


@pytest.fixture(scope="module")
def api(open_sandbox: KommoSandbox) -> Iterator[Api]:
    a = Api(open_sandbox)
    yield a
    a.close()
