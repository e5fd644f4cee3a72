"""Kommo's edge in front of the API: what an API request meets before the account answers it.

In Kommo's order: IP block (403 HTML) -> a host that is not the account's (a redirect,
`wrong_host`) -> rate limit (429) -> a churn step due -> latency -> injected fault -> auth (401)
-> unpaid (402) -> only GET. The gateway keeps the state these decisions carry from one request
to the next (the ban, the requests counted towards a churn step, the faults, the random draws
of jitter and error styles), apart from the HTTP plumbing and the account.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import orjson

from kommo_dagster.sandbox.arrival_clock import Arrival
from kommo_dagster.sandbox.config import SandboxConfig
from kommo_dagster.sandbox.faults import Faults
from kommo_dagster.sandbox.responses import HTML, JSON, Response, html_page, problem
from kommo_dagster.sandbox.stats import Stats

MAX_URL_LENGTH = 8192
_LOGIN_PAGE = b"<!doctype html><html><body>Sign in</body></html>"
_FAULT_PAGES = {"500_html": 500, "502": 502, "504": 504}
# What the gateway reads of a request: its path, method and headers.
Request = BaseHTTPRequestHandler


def fault_seed(config: SandboxConfig) -> int:
    """The seed of the faults' RNG: their own when given, else the sandbox's."""
    return config.faults.seed if config.faults.seed is not None else config.seed


class Gateway:
    """Answers an API request that must not reach the account, or passes it (None)."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        stats: Stats,
        churn_step: Callable[[], object],
        sleep: Callable[[float], None],
    ) -> None:
        self.banned = False
        self.faults = Faults(seed=fault_seed(config))
        self._stats = stats
        self._churn_step = churn_step
        self._sleep = sleep
        self._served = 0
        self._served_lock = threading.Lock()
        self._rng = random.Random(f"{config.seed}:gateway")

    def reset(self) -> None:
        """Forget queued faults, the ban and the requests counted towards a churn step."""
        self.faults.clear()
        self.banned = False
        with self._served_lock:
            self._served = 0

    def reconfigure(self, old: SandboxConfig, new: SandboxConfig) -> None:
        """A new fault seed starts a new fault sequence; anything else keeps the state."""
        if fault_seed(new) != fault_seed(old):
            self.faults = Faults(seed=fault_seed(new))

    def check(self, h: Request, cfg: SandboxConfig, path: str, arrival: Arrival) -> Response | None:
        """The answer of the edge to this request, or None when it reaches the API."""
        resp = self._edge(h, cfg, arrival)
        if resp is not None:
            return resp
        self._count_for_churn(cfg)
        if cfg.latency_ms or cfg.latency_jitter_ms:
            jitter = self._rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
            self._sleep(max(0.0, cfg.latency_ms + jitter) / 1000.0)
        resp = self._fault(cfg, path)
        if resp is not None:
            return resp
        if h.headers.get("Authorization") != f"Bearer {cfg.token}":
            return problem(401, "Invalid user name or password")
        if cfg.unpaid:
            return problem(402, "Payment Required: the account's paid period has ended")
        if h.command != "GET":
            return problem(405, f"Method {h.command} is not allowed here")
        return None

    def too_many(self, cfg: SandboxConfig) -> Response:
        """A 429 in the configured style ("mixed" draws one per answer)."""
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

    def _edge(self, h: Request, cfg: SandboxConfig, arrival: Arrival) -> Response | None:
        """The answers of the web servers in front of the account: no latency, no faults."""
        if len(h.path) > MAX_URL_LENGTH:
            return html_page(414)
        if self.banned:
            return html_page(403)
        if cfg.redirect_to:
            resp = html_page(301)
            resp.headers.append(("Location", cfg.redirect_to.rstrip("/") + h.path))
            return resp
        if cfg.wrong_host:
            return wrong_host(cfg.wrong_host)
        if arrival.over or arrival.over_handler:
            n = self._stats.violation(arrival)
            if arrival.over:
                if cfg.ban_after is not None and n >= cfg.ban_after:
                    self.banned = True
                return self.too_many(cfg)
        return None

    def _count_for_churn(self, cfg: SandboxConfig) -> None:
        churn = cfg.churn
        if churn is None or not churn.every_requests:
            return
        with self._served_lock:
            self._served += 1
            due = self._served % churn.every_requests == 0
        if due:
            self._churn_step()

    def _fault(self, cfg: SandboxConfig, path: str) -> Response | None:
        """The fault drawn for this request, if any; a slow one only delays the answer."""
        fault = self.faults.draw(path, cfg.faults)
        if fault is None:
            return None
        self._stats.fault(fault)
        if fault == "drop":
            return Response(0, drop=True)
        if fault == "slow":
            self._sleep(cfg.faults.slow_seconds)
            return None
        if fault == "429":
            return self.too_many(cfg)
        if fault == "200_html":
            return Response(200, _LOGIN_PAGE, "text/html")
        if fault == "500_json":
            trace_id = f"{self._rng.getrandbits(64):016x}"
            return problem(500, "Internal Server Error", trace_id=trace_id)
        return html_page(_FAULT_PAGES[fault])


def wrong_host(kind: str) -> Response:
    """What a web server that is not a Kommo account answers to ``/api/v4/...``."""
    if kind == "404":
        return html_page(404)
    if kind == "html":
        page = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body></body></html>\n"
        return Response(200, page, HTML)
    return Response(200, orjson.dumps({"status": "ok", "service": "not a Kommo account"}), JSON)
