"""The HTTP plumbing: a threaded HTTP/1.1 server on 127.0.0.1 and its request handler.

The handler reads a request, stamps its arrival (the kernel's time, see `arrivals`) and passes
it to the server's `respond` (`KommoSandbox`), which decides the answer; `Handler.send` writes it
the way nginx in front of Kommo does. The server tracks its open connections so that stopping
it does not wait for idle keep-alive ones.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kommo_dagster.sandbox.arrivals import CountingReader, enable_kernel_stamps, kernel_arrival
from kommo_dagster.sandbox.responses import Response

HOST = "127.0.0.1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 120
    # Headers and body go out in two writes; with Nagle's algorithm the second of a small
    # answer waited for the client's delayed ACK of the first: 40 ms added to every small
    # answer on a kept-alive connection, which Kommo's servers do not add.
    disable_nagle_algorithm = True
    # The raw reader comes unbuffered and `setup` buffers it behind a byte count, so that the
    # handler knows when nothing of the next request has been read yet.
    rbufsize = 0
    # When the request being handled reached the host, by the kernel (Unix time); None when
    # the kernel gave no stamp and the arrival is stamped by the handler's clock.
    arrived_at: float | None = None

    server: Server

    def setup(self) -> None:
        super().setup()
        self._stamped = enable_kernel_stamps(self.connection)
        self._reader = CountingReader(self.rfile)
        self.rfile = io.BufferedReader(self._reader)
        self.server.track(self.connection, open_=True)

    def handle_one_request(self) -> None:
        """Read the kernel's stamp of the next request, then handle it.

        The stamp is peeked only while the buffer holds nothing of the next request: its first
        byte is then still in the kernel (a client sends it after reading the last answer). A
        request read along with the one before (pipelined) keeps the handler's clock.
        """
        self.arrived_at = None
        if self._stamped and self._reader.delivered == self.rfile.tell():
            try:
                self.arrived_at = kernel_arrival(self.connection)
            except TimeoutError:
                self.close_connection = True
                return
            except OSError:
                pass  # a reset connection: the read of the request meets it as before
        super().handle_one_request()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.respond(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, resp: Response) -> None:
        try:
            if resp.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(resp.status)
            if resp.content_type:
                self.send_header("Content-Type", resp.content_type)
            if resp.status != 204:
                self.send_header("Content-Length", str(len(resp.body)))
            for name, value in resp.headers:
                self.send_header(name, value)
            self.end_headers()
            if resp.body and resp.status != 204:
                self.wfile.write(resp.body)
        except OSError:
            # The client went away (it timed out on a slow response, or closed its pool).
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, respond: Callable[[Handler], None]) -> None:
        self.respond = respond
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        super().__init__((HOST, port), Handler)

    def server_bind(self) -> None:
        super().server_bind()
        # On the listening socket too: segments are stamped from the first one of a connection
        # (Linux passes the option on to accepted sockets; each handler sets it again anyway).
        enable_kernel_stamps(self.socket)

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._conn_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def open_connections(self) -> list[socket.socket]:
        with self._conn_lock:
            return list(self._connections)

    def close_connections(self) -> None:
        """Shut the kept-alive connections down: their handler threads would idle for minutes."""
        for conn in self.open_connections():
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
