"""Helpers for the sandbox's own tests: plain `requests` calls, no project client involved, and
small generated accounts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import requests

from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.sandbox.account import DELETED, LIVE, Account

# The generated accounts' window, [2026-10-01, 2026-11-01).
START, END = date(2026, 10, 1), date(2026, 11, 1)


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


def generated_account(seed: int = 1, leads: int = 300, **kw) -> Account:
    """An account generated in memory, without a server: the generation tests read its tables."""
    return Account(seed=seed, leads=leads, start=START, end=END, base_url="http://x", **kw)


def held(account: Account, stream: str) -> list[dict[str, Any]]:
    """The records of a stream as the account holds them, the deleted ones with every value
    (`Account.records` serves those as with=only_deleted does, mostly null): for the tests of
    what the generation made."""
    table = account.tables[stream]
    return [table.record(r) for r in table.rows_in_state(LIVE, DELETED).tolist()]


@pytest.fixture(scope="module")
def account() -> Account:
    return generated_account()
