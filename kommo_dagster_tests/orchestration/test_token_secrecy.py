"""The API token in nothing a run leaves behind, whatever the server answers.

A proxy in front of the sandbox echoes the token it was sent into the answers of the leads: in
values the client refuses (a non-integer cursor, a value of the wrong type, a lone surrogate, a
link that is not an id), in an HTML error page and in a 4xx problem's detail. Each is one Dagster
run of a real instance over HTTP; the token must be in no text of its exception (causes and
contexts included), in no captured log record, in no entry of the run's event log and in no file
it wrote.
"""

from __future__ import annotations

import http.client
import logging
import traceback
from collections.abc import Callable, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import orjson
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.sandbox import KommoSandbox, SandboxConfig
from kommo_dagster.settings import Settings
from kommo_dagster_tests.kommo.conftest import QuietHandler, http_server, reply
from kommo_dagster_tests.wiring import materialize_streams, sandbox_kommo

pytestmark = pytest.mark.timeout(180)

SECRET = "tok-Echo5-SECRET-never-shown-8K"
PARTITION = "2026-10-10"
# Replaced by a lone surrogate's escape once the body is JSON: orjson writes none.
SURROGATE = "<lone surrogate>"

Record = dict[str, Any]


def _lead_value(key: str, value: Callable[[str], Any]) -> Callable[[Record, str], None]:
    def change(lead: Record, token: str) -> None:
        lead[key] = value(token)

    return change


# How each case changes the first lead of every leads page: the token inside a value.
RECORD_CHANGES = {
    "non-integer-cursor": _lead_value("updated_at", lambda t: f"{t} yesterday"),
    "ill-typed-value": _lead_value("price", lambda t: {"amount": t}),
    "lone-surrogate": _lead_value("name", lambda t: f"{t} {SURROGATE}"),
    "bad-link": lambda lead, t: lead.setdefault("_embedded", {}).update(contacts=[{"id": t}]),
}
# Whole answers of the leads list in place of the sandbox's: status, content type, body.
ANSWERS = {
    "html-error-page": (
        400,
        "text/html; charset=utf-8",
        lambda t: f"<html><body><h1>Bad request</h1><p>token {t}</p></body></html>".encode(),
    ),
    "4xx-detail": (
        400,
        "application/problem+json",
        lambda t: orjson.dumps(
            {"title": f"Bad {t}", "detail": f"token {t} refused", "status": 400, "type": t}
        ),
    ),
}
CASES = [*RECORD_CHANGES, *ANSWERS]


def _echoing(sandbox: KommoSandbox, case: str) -> type[BaseHTTPRequestHandler]:
    """A handler forwarding every GET to ``sandbox`` and changing the leads list's answers as
    ``case`` says, with the token the request carried."""
    target = urlsplit(sandbox.base_url)

    class Echoing(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            token = self.headers["Authorization"].removeprefix("Bearer ")
            leads = urlsplit(self.path).path == "/api/v4/leads"
            if leads and case in ANSWERS:
                status, ctype, body = ANSWERS[case]
                reply(self, status, body(token), content_type=ctype)
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                conn.request("GET", self.path, headers={"Authorization": f"Bearer {token}"})
                resp = conn.getresponse()
                status, ctype, body = resp.status, resp.getheader("Content-Type"), resp.read()
            finally:
                conn.close()
            if leads and status == 200 and body:
                body = self._changed(body, token)
            reply(self, status, body, content_type=ctype or "application/json")

        def _changed(self, body: bytes, token: str) -> bytes:
            data = orjson.loads(body)
            records = data.get("_embedded", {}).get("leads") or []
            if records:
                RECORD_CHANGES[case](records[0], token)
            return orjson.dumps(data).replace(SURROGATE.encode(), b"\\ud800")

    return Echoing


@pytest.fixture(scope="module")
def sandbox() -> Iterator[KommoSandbox]:
    with KommoSandbox(
        SandboxConfig(seed=5, leads=300, requests_per_second=None, token=SECRET)
    ) as sb:
        yield sb


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def _texts_of(exc: BaseException) -> list[str]:
    """Everything an exception and its chain show: messages, reprs, notes, the traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    for e in _chain(exc):
        texts += [str(e), repr(e), *map(str, getattr(e, "__notes__", []))]
    return texts


def _files_under(directory: Path) -> Iterator[bytes]:
    for path in directory.rglob("*"):
        if path.is_file():
            yield path.read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_the_token_is_in_nothing_a_run_leaves(sandbox, tmp_path, caplog, case):
    caplog.set_level(logging.DEBUG)
    with http_server(_echoing(sandbox, case)) as (url, _):
        settings = Settings(start_date=date(2026, 9, 1), duckdb_path=tmp_path / "crm.duckdb")
        kommo = sandbox_kommo(sandbox, tmp_path, base_url=url, max_workers=1)
        defs = build_definitions(settings, kommo=kommo)
        instance = dg.DagsterInstance.ephemeral()
        result = materialize_streams(
            defs, instance, ["leads"], partition=PARTITION, raise_on_error=False
        )
        # Every case is a failing run, so the answer was read and refused, not skipped.
        assert not result.success
        errors = [e for e in result.all_events if e.is_step_failure]
        assert errors and SECRET not in str(errors)
        with pytest.raises(Exception) as raised:
            materialize_streams(defs, instance, ["leads"], partition=PARTITION)
    texts = _texts_of(raised.value)
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    texts += [dg.serialize_value(e) for e in instance.all_logs(result.run_id)]
    leaks = [t for t in texts if SECRET.lower() in t.lower()]
    assert not leaks, leaks[0][-2000:]
    assert not any(SECRET.encode() in data for data in _files_under(tmp_path))
