"""The API token in nothing a run leaves behind, whatever the server answers.

A proxy in front of the sandbox echoes the token it was sent into the answers of the leads: in
values the client refuses (a non-integer cursor, a value of the wrong type, a lone surrogate, a
link that is not an id), in an HTML error page and in a 4xx problem's detail. Those the client's
own calls refuse; the events run's relinks read a /links answer through the client and refuse it
themselves, so the token in the entity_id of a lead's link is masked only by the asset's guard
around the extraction. Each is one Dagster run of a real instance over HTTP; the token must be in
no text of its exception (causes and contexts included), in no captured log record, in no entry
of the run's event log and in no file it wrote.
"""

from __future__ import annotations

import http.client
import logging
import random
import traceback
from collections.abc import Callable, Iterator
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import duckdb
import orjson
import pytest

from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo.secrecy import MASK
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


def _item_value(key: str, value: Callable[[str], Any]) -> Callable[[Record, str], None]:
    def change(item: Record, token: str) -> None:
        item[key] = value(token)

    return change


# How each case changes the first lead of every leads page: the token inside a value.
RECORD_CHANGES = {
    "non-integer-cursor": _item_value("updated_at", lambda t: f"{t} yesterday"),
    "ill-typed-value": _item_value("price", lambda t: {"amount": t}),
    "lone-surrogate": _item_value("name", lambda t: f"{t} {SURROGATE}"),
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
# The answer each case changes the first item of: path, and the list under ``_embedded``.
CHANGED: dict[str, tuple[str, str, Callable[[Record, str], None]]] = {
    case: ("/api/v4/leads", "leads", change) for case, change in RECORD_CHANGES.items()
}
# The relinks' read of a lead's links: an entity_id the client hands on, which
# `LinkRows.add_links` refuses quoting it, outside any call of the client.
RELINK_CASE = "relinked-lead-link"
CHANGED[RELINK_CASE] = ("/api/v4/leads/links", "links", _item_value("entity_id", str))
# Typed events on the lead's side: a relink names its lead, whose links the events run re-reads.
RELINK_READING = ("typed", "lead", "before")


def _echoing(sandbox: KommoSandbox, case: str) -> type[BaseHTTPRequestHandler]:
    """A handler forwarding every GET to ``sandbox`` and changing the answers ``case`` names
    (`ANSWERS`, `CHANGED`), with the token the request carried."""
    target = urlsplit(sandbox.base_url)

    class Echoing(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            token = self.headers["Authorization"].removeprefix("Bearer ")
            path = urlsplit(self.path).path
            if path == "/api/v4/leads" and case in ANSWERS:
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
            if case in CHANGED and path == CHANGED[case][0] and status == 200 and body:
                body = self._changed(body, token)
            reply(self, status, body, content_type=ctype or "application/json")

        def _changed(self, body: bytes, token: str) -> bytes:
            _, key, change = CHANGED[case]
            data = orjson.loads(body)
            items = data.get("_embedded", {}).get(key) or []
            if items:
                change(items[0], token)
            return orjson.dumps(data).replace(SURROGATE.encode(), b"\\ud800")

    return Echoing


# The account every case reads: its token is the secret.
ACCOUNT = SandboxConfig(seed=5, leads=300, requests_per_second=None, token=SECRET)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[KommoSandbox]:
    with KommoSandbox(ACCOUNT) as sb:
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
    _assert_nothing_leaks(sandbox, tmp_path, caplog, case=case, stream="leads", partition=PARTITION)


def test_the_token_in_a_relinked_leads_link_is_in_nothing_the_events_run_leaves(
    sandbox_factory, tmp_path, caplog
):
    """The events run reads the relinked lead's links through the client, which hands the
    answer on: refused by the relinks, past the client's guard, masked by the asset's. The
    relink changes the account's data: a sandbox of its own, not the module's."""
    sandbox = sandbox_factory(ACCOUNT)
    noon = int(datetime.fromisoformat(f"{PARTITION}T12:00:00+00:00").timestamp())
    sandbox.account.links.relink(reading=RELINK_READING, ts=noon, rng=random.Random(5))
    failure = _assert_nothing_leaks(
        sandbox, tmp_path, caplog, case=RELINK_CASE, stream="events", partition=PARTITION
    )
    # The partition's link events named the lead, and the relinks refused its links' answer.
    assert f"leads/links of '{MASK}': entity_id '{MASK}' is not an integer" in failure, failure


def _assert_nothing_leaks(
    sandbox: KommoSandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    *,
    case: str,
    stream: str,
    partition: str,
) -> str:
    """Run ``stream``'s ``partition`` through a proxy changing the answers as ``case`` says:
    the run fails, and the token is in nothing it left. Returns the step's failure."""
    caplog.set_level(logging.DEBUG)
    with http_server(_echoing(sandbox, case)) as (url, _):
        settings = Settings(start_date=date(2026, 9, 1), duckdb_path=tmp_path / "crm.duckdb")
        kommo = sandbox_kommo(sandbox, tmp_path, base_url=url, max_workers=1)
        defs = build_definitions(settings, kommo=kommo)
        instance = dg.DagsterInstance.ephemeral()
        result = materialize_streams(
            defs, instance, [stream], partition=partition, raise_on_error=False
        )
        # Every case is a failing run, so the answer was read and refused, not skipped.
        assert not result.success
        errors = [e for e in result.all_events if e.is_step_failure]
        assert errors and SECRET not in str(errors)
        with pytest.raises(Exception) as raised:
            materialize_streams(defs, instance, [stream], partition=partition)
    texts = _texts_of(raised.value)
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    texts += [dg.serialize_value(e) for e in instance.all_logs(result.run_id)]
    leaks = [t for t in texts if SECRET.lower() in t.lower()]
    assert not leaks, leaks[0][-2000:]
    assert not any(SECRET.encode() in data for data in _files_under(tmp_path))
    return str(errors[0].event_specific_data.error)


def _leads_tables(database: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(database), read_only=True) as con:
        return {
            t: con.execute(f"SELECT * FROM kommo.{t} ORDER BY ALL").fetchall()
            for t in ("leads", "lead_contacts")
        }


def test_a_write_failing_before_its_commit_says_it_left_the_table_as_it_was(sandbox, tmp_path):
    """The bad link passes the extraction and fails the write, inside its transaction: the
    contact id is cast once the leads' slice is deleted and written again. The step's failure
    says what the write left, and it left the tables as they were."""
    database = tmp_path / "crm.duckdb"
    settings = Settings(start_date=date(2026, 9, 1), duckdb_path=database)
    instance = dg.DagsterInstance.ephemeral()
    direct = build_definitions(settings, kommo=sandbox_kommo(sandbox, tmp_path, max_workers=1))
    assert materialize_streams(direct, instance, ["leads"], partition=PARTITION).success
    before = _leads_tables(database)
    assert before["leads"] and before["lead_contacts"]
    with http_server(_echoing(sandbox, "bad-link")) as (url, _):
        kommo = sandbox_kommo(sandbox, tmp_path, base_url=url, max_workers=1)
        defs = build_definitions(settings, kommo=kommo)
        result = materialize_streams(
            defs, instance, ["leads"], partition=PARTITION, raise_on_error=False
        )
    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error
    # Failed in the IO manager's write (the extraction's own failures say the same).
    assert error is not None and "handling output" in error.message, error
    assert (
        f"crm.kommo.leads was left as it was: nothing of this run's partitions {PARTITION} was "
        "written (a run writes its slice of a table in one transaction, once all of it is read)"
    ) in str(error)
    assert SECRET not in str(error)
    assert _leads_tables(database) == before
