"""The sandbox service: the account served over HTTP, its controls and its lifecycle.

An API request crosses the gateway (`gateway`: IP block, wrong host, rate limit, latency,
faults, auth, payment, in Kommo's order) before the account's API answers it. Every API request
counts as an arrival in the rate-limit window, including the ones answered 429: Kommo's gateway
counts what it receives, so a client that retries a 429 at once only digs deeper. An arrival is
stamped by the kernel when its first segment reaches the host (see `arrivals`), not when a
handler thread gets to it: the window holds what reached the server, however late a starved
machine schedules the threads. `/__sandbox/...` paths are the sandbox's own controls: no auth,
no rate limit, not counted.
"""

from __future__ import annotations

import dataclasses
import threading
import traceback
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.api import KommoApi
from kommo_dagster.sandbox.churn import Churner
from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster.sandbox.gateway import Gateway
from kommo_dagster.sandbox.responses import JSON, Response, problem
from kommo_dagster.sandbox.server import HOST, Handler, Server
from kommo_dagster.sandbox.stats import Stats
from kommo_dagster.sandbox.truth import expected_rows

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


class KommoSandbox:
    """A Kommo API v4 account served over HTTP on 127.0.0.1, in a background thread.

    >>> with KommoSandbox(SandboxConfig(leads=300)) as sb:
    ...     auth = {"Authorization": f"Bearer {sb.token}"}
    ...     requests.get(f"{sb.base_url}/api/v4/leads", headers=auth)
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        config = config or SandboxConfig()
        self._config = dataclasses.replace(config, **overrides) if overrides else config
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats_counter = Stats()
        self._gate = Gateway(
            self._config, stats=self.stats_counter, churn_step=self.churn_step, sleep=self._sleep
        )
        self._account: Account | None = None
        self._api: KommoApi | None = None
        self._churner: Churner | None = None
        self._churn_thread: threading.Thread | None = None
        self._churn_stop = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KommoSandbox:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._stop.clear()
        self._server = Server(self._config.port, self._handle)
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
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._stop_churn_thread()

    def __enter__(self) -> KommoSandbox:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
            banned=self._gate.banned, pending_faults=self._gate.faults.pending()
        )

    def reset_stats(self) -> None:
        self.stats_counter.reset()

    def reset(self, *, data: bool = False) -> None:
        """Clear counters, queued faults and a ban; with data=True also regenerate the account."""
        self.stats_counter.reset()
        self._gate.reset()
        if data:
            self._build_account()

    def update_config(self, **changes: Any) -> SandboxConfig:
        """Change settings while serving (rate limit, latency, faults, unpaid, not_admin...)."""
        old = self._config
        self._config = dataclasses.replace(old, **changes)
        self._gate.reconfigure(old, self._config)
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
        self._gate.banned = True

    def inject_fault(self, kind: str, *, count: int = 1, path: str | None = None) -> None:
        """The next `count` API requests (to `path` and below, if given) meet fault `kind`."""
        self._gate.faults.inject(kind, count=count, path=path)

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

    def _handle(self, h: Handler) -> None:
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
                resp = self._gate.check(h, cfg, url.path, arrival)
                if resp is None:
                    assert self._api is not None
                    resp = self._api.get(url.path, url.query)
            except Exception as e:
                # A sandbox bug: answer like a failing server and leave the traceback on stderr.
                traceback.print_exc()
                resp = problem(500, f"sandbox error: {e!r}")
            self.stats_counter.record(url.path, "dropped" if resp.drop else resp.status)
            h.send(resp)
        finally:
            self.stats_counter.leave()

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
                return _json({"ok": True, "pending": self._gate.faults.pending()})
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
