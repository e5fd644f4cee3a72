"""A materialization's metadata says how many of its retries could not connect.

Such an attempt sends no request, so ``kommo/requests`` does not count it while
``kommo/retries`` does; ``kommo/retries_not_connected`` says it, as the progress line does. The
account's host here refuses connections until the client's first retry is logged, then forwards
to the sandbox: a real Dagster run over HTTP, whose first request could not connect.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

import dagster as dg
import pytest

from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster_tests.kommo.conftest import QuietHandler, reply
from kommo_dagster_tests.wiring import local_definitions, materialize_streams, sandbox_kommo

pytestmark = pytest.mark.timeout(120)

KEY = "kommo/retries_not_connected"


def _forwarding(sandbox: KommoSandbox) -> type[QuietHandler]:
    target = urlsplit(sandbox.base_url)

    class Forwarding(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                conn.request(
                    "GET", self.path, headers={"Authorization": self.headers["Authorization"]}
                )
                resp = conn.getresponse()
                status, ctype, body = resp.status, resp.getheader("Content-Type"), resp.read()
            finally:
                conn.close()
            reply(self, status, body, content_type=ctype or "application/json")

    return Forwarding


class _OpenOnRetry(logging.Handler):
    """Starts ``server`` listening when the client logs its first retry: until then its port,
    bound but not listening, refuses connections."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        super().__init__()
        self._server = server
        self.opened = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retry" in record.getMessage() and not self.opened.is_set():
            self._server.server_activate()
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
            self.opened.set()


@contextmanager
def _refusing_until_retried(sandbox: KommoSandbox) -> Iterator[tuple[str, _OpenOnRetry]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _forwarding(sandbox), bind_and_activate=False)
    server.server_bind()
    opener = _OpenOnRetry(server)
    client_log = logging.getLogger("kommo_dagster.kommo")
    client_log.addHandler(opener)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", opener
    finally:
        client_log.removeHandler(opener)
        if opener.opened.is_set():
            server.shutdown()
        server.server_close()


def test_retries_that_could_not_connect_are_in_the_materializations_metadata(
    unlimited_sandbox, tmp_path
):
    with _refusing_until_retried(unlimited_sandbox) as (url, opener):
        kommo = sandbox_kommo(unlimited_sandbox, tmp_path, base_url=url, max_workers=1)
        defs = local_definitions(tmp_path, kommo=kommo)
        result = materialize_streams(defs, dg.DagsterInstance.ephemeral(), ["pipelines"])
    assert opener.opened.is_set()
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    # The first attempt was refused and retried; every request counted went out and was read.
    assert metadata["kommo/retries"].value == 1
    assert metadata[KEY].value == 1
    assert metadata["kommo/requests"].value >= 1
    assert metadata["dagster/row_count"].value == len(unlimited_sandbox.expected_rows("pipelines"))


def test_without_such_retries_the_metadata_does_not_say_them(unlimited_sandbox, tmp_path):
    kommo = sandbox_kommo(unlimited_sandbox, tmp_path, max_workers=1)
    defs = local_definitions(tmp_path, kommo=kommo)
    result = materialize_streams(defs, dg.DagsterInstance.ephemeral(), ["pipelines"])
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["kommo/retries"].value == 0 and KEY not in metadata
