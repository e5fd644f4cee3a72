"""The HTTP side: a threaded HTTP/1.1 server on 127.0.0.1 and the gateway every request crosses.

Order of checks for an API request, as Kommo's edge and backend apply them:
IP block (403 HTML) -> a host that is not the account's (a redirect, `wrong_host`) -> rate
limit (429) -> latency -> injected fault -> auth (401) -> unpaid (402) -> the API itself. Every
API request counts as an arrival in the rate-limit window, including the ones answered 429:
Kommo's gateway counts what it receives, so a client that retries a 429 at once only digs
deeper. An arrival is stamped by the kernel when its first segment reaches the host (see
`arrivals`), not when a handler thread gets to it: the window holds what reached the server,
however late a starved machine schedules the threads. `/__sandbox/...` paths are the sandbox's
own controls: no auth, no rate limit, not counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.api import KommoApi
from kommo_dagster.sandbox.arrivals import CountingReader, enable_kernel_stamps, kernel_arrival
from kommo_dagster.sandbox.churn import Churner
from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster.sandbox.faults import Faults
from kommo_dagster.sandbox.responses import HTML, JSON, Response, html_page, problem
from kommo_dagster.sandbox.stats import Arrival, Stats
from kommo_dagster.sandbox.truth import expected_rows

HOST = "127.0.0.1"
MAX_URL_LENGTH = 8192
# Settings a running sandbox accepts from POST /__sandbox/config.
RUNTIME_SETTINGS = (
    "requests_per_second",
    "rate_limit_style",
    "ban_after",
    "latency_ms",
    "latency_jitter_ms",
    "unpaid",
    "not_admin",
    "unsorted_inbox",
    "redirect_to",
    "wrong_host",
)


class _Handler(BaseHTTPRequestHandler):
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

    server: _Server

    def setup(self) -> None:
        super().setup()
        self._stamped = enable_kernel_stamps(self.connection)
        self._reader = CountingReader(self.rfile)
        self.rfile = io.BufferedReader(self._reader)
        self.server.sandbox._track(self.connection, open_=True)

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
            self.server.sandbox._track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.sandbox._handle(self)

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, sandbox: KommoSandbox, port: int) -> None:
        self.sandbox = sandbox
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:
        super().server_bind()
        # On the listening socket too: segments are stamped from the first one of a connection
        # (Linux passes the option on to accepted sockets; each handler sets it again anyway).
        enable_kernel_stamps(self.socket)


class KommoSandbox:
    """A Kommo API v4 account served over HTTP on 127.0.0.1, in a background thread.

    >>> with KommoSandbox(SandboxConfig(leads=300)) as sb:
    ...     auth = {"Authorization": f"Bearer {sb.token}"}
    ...     requests.get(f"{sb.base_url}/api/v4/leads", headers=auth)
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        config = config or SandboxConfig()
        self._config = dataclasses.replace(config, **overrides) if overrides else config
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.stats_counter = Stats()
        self._banned = False
        self._served = 0
        self._served_lock = threading.Lock()
        self._account: Account | None = None
        self._api: KommoApi | None = None
        self._churner: Churner | None = None
        self._churn_thread: threading.Thread | None = None
        self._churn_stop = threading.Event()
        self._faults = Faults(seed=self._fault_seed(self._config))
        self._rng = random.Random(f"{self._config.seed}:gateway")

    @staticmethod
    def _fault_seed(cfg: SandboxConfig) -> int:
        return cfg.faults.seed if cfg.faults.seed is not None else cfg.seed

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KommoSandbox:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._stop.clear()
        self._server = _Server(self, self._config.port)
        self._build_account()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kommo-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._start_churn_thread()
        return self

    def _start_churn_thread(self) -> None:
        churn = self._config.churn
        if churn is None or not churn.interval_ms:
            return
        stop = threading.Event()
        self._churn_stop = stop
        self._churn_thread = threading.Thread(
            target=self._churn_loop,
            args=(churn.interval_ms / 1000.0, stop),
            name="kommo-sandbox-churn",
            daemon=True,
        )
        self._churn_thread.start()

    def _stop_churn_thread(self) -> None:
        thread, self._churn_thread = self._churn_thread, None
        if thread is not None:
            self._churn_stop.set()
            thread.join(timeout=5)

    def _build_account(self) -> None:
        cfg = self._config
        self._account = Account(
            seed=cfg.seed,
            leads=cfg.leads,
            users=cfg.users,
            start=cfg.start,
            end=cfg.end,
            base_url=self.base_url,
            subdomain=cfg.subdomain,
            flavour=cfg.flavour,
        )
        self._api = KommoApi(self._account, not_admin=lambda: self._config.not_admin)
        self._churner = Churner(self._account, config=cfg.churn, seed=cfg.seed)
        self._account.inbox.enabled = cfg.unsorted_inbox

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._stop_churn_thread()

    def __enter__(self) -> KommoSandbox:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._conn_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # --- what callers use ---------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def token(self) -> str:
        return self._config.token

    @property
    def account(self) -> Account:
        if self._account is None:
            raise RuntimeError("the sandbox is not running")
        return self._account

    def stats(self) -> dict[str, Any]:
        """Counters since start (or the last reset), as GET /__sandbox/stats returns them."""
        return self.stats_counter.snapshot(
            banned=self._banned, pending_faults=self._faults.pending()
        )

    def reset_stats(self) -> None:
        self.stats_counter.reset()

    def reset(self, *, data: bool = False) -> None:
        """Clear counters, queued faults and a ban; with data=True also regenerate the account."""
        self.stats_counter.reset()
        self._faults.clear()
        self._banned = False
        with self._served_lock:
            self._served = 0
        if data:
            self._build_account()

    def update_config(self, **changes: Any) -> SandboxConfig:
        """Change settings while serving (rate limit, latency, faults, unpaid, not_admin...)."""
        old = self._config
        self._config = dataclasses.replace(old, **changes)
        if self._fault_seed(self._config) != self._fault_seed(old):
            self._faults = Faults(seed=self._fault_seed(self._config))
        if "unsorted_inbox" in changes and self._account is not None:
            self._account.inbox.enabled = self._config.unsorted_inbox
        if "churn" in changes and self._account is not None:
            self._stop_churn_thread()
            self._churner = Churner(self.account, config=self._config.churn, seed=old.seed)
            if self._server is not None:
                self._start_churn_thread()
        return self._config

    def ban(self) -> None:
        """Block the client's IP now: every API request gets Kommo's HTML 403 until `reset`."""
        self._banned = True

    def inject_fault(self, kind: str, *, count: int = 1, path: str | None = None) -> None:
        """The next `count` API requests (to `path` and below, if given) meet fault `kind`."""
        self._faults.inject(kind, count=count, path=path)

    def churn_step(self, steps: int = 1) -> dict[str, int]:
        """Apply churn steps now (with the configured or default ChurnConfig); returns counts."""
        assert self._churner is not None
        total: dict[str, int] = {}
        for _ in range(steps):
            changes = self._churner.step()
            self.stats_counter.churned(changes)
            for k, v in changes.items():
                total[k] = total.get(k, 0) + v
        return total

    def records(self, stream: str) -> list[dict[str, Any]]:
        """Current records of a stream as the API serves them (see `Account.records`)."""
        return self.account.records(stream)

    def expected_rows(self, stream: str) -> list[dict[str, Any]]:
        """The rows the contract table of `stream` should hold for the current state."""
        return expected_rows(self.account, stream)

    # --- serving ------------------------------------------------------------------------------

    def _churn_loop(self, interval: float, stop: threading.Event) -> None:
        while not stop.wait(interval) and not self._stop.is_set():
            self.churn_step()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        body = h.read_body()
        if url.path.startswith("/__sandbox/") or url.path == "/__sandbox":
            h.send(self._control(h.command, url.path, url.query, body))
            return
        cfg = self._config
        arrival = self.stats_counter.arrive(
            at=h.arrived_at, window=cfg.rate_limit_window, limit=cfg.requests_per_second
        )
        try:
            try:
                resp = self._gateway(h, url.path, url.query, arrival)
            except Exception as e:
                # A sandbox bug: answer like a failing server and leave the traceback on stderr.
                traceback.print_exc()
                resp = problem(500, f"sandbox error: {e!r}")
            self.stats_counter.record(url.path, "dropped" if resp.drop else resp.status)
            h.send(resp)
        finally:
            self.stats_counter.leave()

    def _too_many(self, cfg: SandboxConfig) -> Response:
        style = cfg.rate_limit_style
        if style == "mixed":
            style = self._rng.choice(("json", "html", "header"))
        if style == "html":
            return html_page(429)
        if style == "header":
            resp = problem(429, "Too Many Requests")
            resp.headers.append(("Retry-After", "1"))
            return resp
        return problem(429, "Too Many Requests", retry_after=1)

    def _gateway(self, h: _Handler, path: str, query: str, arrival: Arrival) -> Response:
        cfg = self._config
        if len(h.path) > MAX_URL_LENGTH:
            return html_page(414)
        if self._banned:
            return html_page(403)
        if cfg.redirect_to:
            resp = html_page(301)
            resp.headers.append(("Location", cfg.redirect_to.rstrip("/") + h.path))
            return resp
        if cfg.wrong_host:
            return _wrong_host(cfg.wrong_host)
        if arrival.over or arrival.over_handler:
            n = self.stats_counter.violation(arrival)
            if arrival.over:
                if cfg.ban_after is not None and n >= cfg.ban_after:
                    self._banned = True
                return self._too_many(cfg)
        churn = cfg.churn
        if churn is not None and churn.every_requests:
            with self._served_lock:
                self._served += 1
                due = self._served % churn.every_requests == 0
            if due:
                self.churn_step()
        if cfg.latency_ms or cfg.latency_jitter_ms:
            jitter = self._rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
            self._sleep(max(0.0, cfg.latency_ms + jitter) / 1000.0)
        fault = self._faults.draw(path, cfg.faults)
        if fault is not None:
            self.stats_counter.fault(fault)
            if fault == "drop":
                return Response(0, drop=True)
            if fault == "slow":
                self._sleep(cfg.faults.slow_seconds)
            elif fault == "429":
                return self._too_many(cfg)
            elif fault == "200_html":
                return Response(
                    200, b"<!doctype html><html><body>Sign in</body></html>", "text/html"
                )
            elif fault == "500_json":
                return problem(
                    500, "Internal Server Error", trace_id=f"{self._rng.getrandbits(64):016x}"
                )
            else:
                return html_page({"500_html": 500, "502": 502, "504": 504}[fault])
        if h.headers.get("Authorization") != f"Bearer {cfg.token}":
            return problem(401, "Invalid user name or password")
        if cfg.unpaid:
            return problem(402, "Payment Required: the account's paid period has ended")
        if h.command != "GET":
            return problem(405, f"Method {h.command} is not allowed here")
        assert self._api is not None
        return self._api.get(path, query)

    # --- /__sandbox controls ------------------------------------------------------------------

    def _control(self, method: str, path: str, query: str, body: bytes) -> Response:
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            if path == "/__sandbox/stats":
                return _json(self.stats())
            if path == "/__sandbox/reset":
                self.reset(data=params.get("data") in ("1", "true"))
                return _json({"ok": True})
            if path == "/__sandbox/faults" and method == "POST":
                self.inject_fault(
                    params["kind"], count=int(params.get("count", 1)), path=params.get("path")
                )
                return _json({"ok": True, "pending": self._faults.pending()})
            if path == "/__sandbox/ban" and method == "POST":
                self.ban()
                return _json({"ok": True})
            if path == "/__sandbox/churn" and method == "POST":
                return _json(self.churn_step(int(params.get("steps", 1))))
            if path == "/__sandbox/config" and method == "POST":
                changes = orjson.loads(body or b"{}")
                unknown = set(changes) - set(RUNTIME_SETTINGS)
                if unknown:
                    raise ValueError(f"not settable at runtime: {sorted(unknown)}")
                cfg = self.update_config(**changes)
                return _json({k: getattr(cfg, k) for k in RUNTIME_SETTINGS})
            if path == "/__sandbox/expected_rows":
                return _json(self.expected_rows(params["stream"]))
        except (KeyError, ValueError, TypeError) as e:
            return _json({"error": str(e)}, status=400)
        return _json({"error": f"unknown sandbox control {method} {path}"}, status=404)


def _json(payload: Any, *, status: int = 200) -> Response:
    return Response(status, orjson.dumps(payload), JSON)


def _wrong_host(kind: str) -> Response:
    """What a web server that is not a Kommo account answers to ``/api/v4/...``."""
    if kind == "404":
        return html_page(404)
    if kind == "html":
        page = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body></body></html>\n"
        return Response(200, page, HTML)
    return _json({"status": "ok", "service": "not a Kommo account"})
