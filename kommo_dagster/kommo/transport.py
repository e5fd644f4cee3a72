"""One GET against Kommo: rate limit, retries, and handing each answer to what it means.

Every attempt, retries included, first takes a slot from the shared rate limiter. 429, every
5xx, dropped connections and timeouts (of the connect, of a read, or of the whole answer) are
retried with bounded backoff (a 429's ``retry_after`` or ``Retry-After`` is honoured and
pauses every user of the account's budget; one asking for longer than the policy waits ends the
retries rather than being cut short).
Everything else that is not a 200/204 with JSON raises a specific `KommoError` at once. What
each answer means is decided in `kommo_dagster.kommo.answers`; a usable one comes back as a
`kommo_dagster.kommo.response.Response`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import urllib3.exceptions
from urllib3 import BaseHTTPResponse
from urllib3.util import make_headers

from kommo_dagster.kommo.answers import (
    OUTCOMES,
    Answer,
    Retryable,
    is_html,
    other_status,
    redirected,
)
from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import ENV_RATE_LIMIT_DIR, Secret
from kommo_dagster.kommo.connections import AnswerTimeoutError, Connections
from kommo_dagster.kommo.errors import (
    KommoConfigError,
    KommoError,
    KommoRetryError,
)
from kommo_dagster.kommo.ratelimit import BLOCK_MAX, BudgetPaused, SharedRateLimiter, Slot
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.secrecy import Scrubber, Scrubbers
from kommo_dagster.kommo.stats import StatsRecorder

log = logging.getLogger("kommo_dagster.kommo")
# Every open client's scrubber, applied to each record of the logger they share.
SCRUBBERS = Scrubbers()

Params = Sequence[tuple[str, str | int]]

USER_AGENT = "kommo-dagster/0.1 (+https://github.com/kommo-dagster)"
# Every request's headers but the token's, in the order requests sent them.
HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept-Encoding": ", ".join(make_headers(accept_encoding=True)["accept-encoding"].split(",")),
    "Accept": "application/hal+json, application/json",
    "Connection": "keep-alive",
}


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounds of the retry loop around each request."""

    max_attempts: int = 8
    max_elapsed: float = 300.0  # seconds, including waits
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0  # a 429 asking for longer is not retried

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for the ``attempt``-th failure (1-based)."""
        # The exponent kept small: 2 ** 1024 is past any float, and the product overflowed.
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt - 1, 64))
        return ceiling * random.uniform(0.5, 1.0)


class _Cancelled(Exception):
    """Raised from inside a send when the client is closing (not an OSError: urllib3 must not
    mistake it for a connection failure)."""


def _seconds(value: float) -> str:
    """A wait as read in a message: whole seconds, or a power of ten past a few months (a
    ``retry_after`` of 1e308 is not three hundred digits)."""
    return f"{value:.0f}s" if value < 1e7 else f"{value:.1e}s"


def _target(path: str, params: Params) -> str:
    """The request's path and query, encoded as requests encoded them (``[`` and ``]`` of
    Kommo's ``filter[updated_at][from]`` as ``%5B`` and ``%5D``, a space as ``+``)."""
    return f"{path}?{urlencode(params, doseq=True)}" if params else path


class Transport:
    """The pooled connections of one client, with its limiter, retry policy and counters."""

    def __init__(
        self,
        *,
        base_url: str,
        token: Secret,
        limiter: SharedRateLimiter | None,
        stats: StatsRecorder,
        ban: IPBan | None = None,
        pool_size: int,
        timeout: tuple[float, float],
        retry: RetryPolicy,
    ):
        self.base_url = base_url
        self._token = token
        # Masks the token in the errors the client raises and in its logger's records.
        self.scrubber = Scrubber(token)
        self.limiter = limiter
        self.ban = ban
        self.stats = stats
        self.retry = retry
        self.cancelled = threading.Event()
        self._local = threading.local()
        self.connections = Connections(
            base_url,
            pool_size=pool_size,
            timeout=timeout,
            before_send=self._before_send,
            after_send=self._after_send,
        )
        # Last: a constructor that raised returns nothing to close, which would leave it on.
        SCRUBBERS.add(self.scrubber)
        log.addFilter(SCRUBBERS)  # once; again if a logging configuration took it off

    def close(self) -> None:
        self.connections.close()
        SCRUBBERS.discard(self.scrubber)

    def _headers(self) -> dict[str, str]:
        # Built for each request: the token is kept in its `Secret` and nowhere else.
        return {**HEADERS, "Authorization": f"Bearer {self._token.get_secret_value()}"}

    def scrub(self, text: str) -> str:
        """The text with the token replaced, for anything built from a server's answer."""
        return self.scrubber.text(text)

    def get(self, path: str, params: Params = (), *, what: str | None = None) -> Response:
        """GET ``path`` with retries. ``what`` names the object for 404 messages."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(path, params, what=what)
            except Retryable as exc:
                last = exc
            elapsed = time.monotonic() - started
            throttled = last.status == 429
            wait = self.retry.backoff(attempt) if last.wait is None else last.wait
            if throttled and self.limiter is not None:
                # Everyone sharing the budget pauses, not just this thread, and keeps a wider
                # window for a while: we were within our budget, so arrivals spread more.
                self.limiter.block_for(wait, learn=True)
            # A wait Kommo asked for is never cut short: past the policy's longest, give up.
            too_long = last.wait is not None and last.wait > self.retry.retry_after_max
            out_of_time = elapsed + wait > self.retry.max_elapsed
            if too_long or out_of_time or attempt >= self.retry.max_attempts:
                raise self._gave_up(path, last, attempt=attempt, elapsed=elapsed)
            # ``sent`` is set once connected (`_before_send`): unset, nothing went out.
            self.stats.retry(throttled=throttled, sent=self._local.sent is not None)
            log.warning(
                "Kommo GET %s: %s; retry %d of %d in %.1fs",
                path,
                last.reason,
                attempt,
                self.retry.max_attempts - 1,
                wait,
            )
            if self.cancelled.wait(wait):
                raise KommoError(f"GET {path} cancelled")

    def _gave_up(
        self, path: str, last: Retryable, *, attempt: int, elapsed: float
    ) -> KommoRetryError:
        self.stats.error()
        if last.wait is not None and last.wait > self.retry.retry_after_max:
            # The shared pause is capped (`BLOCK_MAX`): say how long it is, not what was asked.
            held = (
                ""
                if self.limiter is None
                else ": every client of the account on this machine holds off for "
                f"{min(last.wait, BLOCK_MAX):.0f}s"
            )
            why = (
                f". Kommo asked to wait {_seconds(last.wait)}, longer than the "
                f"{self.retry.retry_after_max:.0f}s this client waits for one 429{held}; "
                "run again later"
            )
        elif last.status == 429:
            why = (
                ". Kommo kept answering 429: another client may be using this account's "
                "budget, lower KOMMO_REQUESTS_PER_SECOND"
            )
        elif last.status is None:
            # No HTTP answer at all: the host, not Kommo, is what to check.
            why = (
                f". No answer from {self.base_url}: check that KOMMO_BASE_URL or "
                "KOMMO_SUBDOMAIN names the account's host and that it is reachable from here"
            )
        else:
            why = ""
        return KommoRetryError(
            self.scrub(
                f"GET {path} failed after {attempt} attempts over {elapsed:.1f}s "
                f"(limits: {self.retry.max_attempts} attempts, "
                f"{self.retry.max_elapsed:.0f}s); last failure: {last.reason}{why}"
            ),
            attempts=attempt,
            elapsed=elapsed,
            last_status=last.status,
        )

    def _before_send(self) -> None:
        """Take a slot of the shared budget (every attempt, retries included), and send nothing
        while Kommo's IP block is remembered on this machine."""
        self._local.slot = None
        try:
            waited = self._take_slot()
        except InterruptedError:
            raise _Cancelled from None
        except BudgetPaused as exc:
            raise KommoError(
                f"Every client of this account on this machine holds off for {exc.seconds:.0f}s "
                f"more, as a 429 from Kommo asked; that is longer than the "
                f"{self.retry.retry_after_max:.0f}s a request waits for one: run again later"
            ) from None
        except OSError as exc:
            # Not an OSError out of here: urllib3 would take it for a dropped connection.
            raise KommoConfigError(
                f"The shared request budget's files cannot be used ({exc}): "
                f"{ENV_RATE_LIMIT_DIR} must name a directory this process can write"
            ) from None
        self.stats.request_started(waited)
        self._local.sent = time.monotonic()

    def _take_slot(self) -> float:
        """Check the ban, take and confirm a slot: the seconds waited for it."""
        if self.ban is not None:
            self.ban.check()
        if self.limiter is None:
            return 0.0
        slot = self.limiter.acquire(cancelled=self.cancelled, max_pause=self.retry.retry_after_max)
        self._local.slot = slot
        if self.ban is not None:
            # The wait for a slot may have outlasted another client's meeting the block.
            self.ban.check()
        return slot.waited

    def _after_send(self, *, unused: bool = False) -> None:
        """Settle the slot to the moment the request's bytes were written. ``unused``: nothing
        was written, its connection is made again first. The slot is settled all the same (a
        slot lost keeps the limiter on the safe side), but the request is no longer counted as
        sent: should the connect fail, the retry is one that could not connect."""
        if unused:
            self.stats.request_withdrawn()
            self._local.sent = None
        slot: Slot | None = getattr(self._local, "slot", None)
        if self.limiter is not None and slot is not None:
            self._local.slot = None
            self.limiter.settle(slot.at, time.time(), confirmed=slot.monotonic)

    def _attempt(self, path: str, params: Params, *, what: str | None) -> Response:
        if self.ban is not None:
            self.ban.check()  # before even connecting; again right before sending
        self._local.sent = None
        try:
            resp, body = self.connections.get(_target(path, params), self._headers())
        except (_Cancelled, urllib3.exceptions.ClosedPoolError):
            raise KommoError(f"GET {path} cancelled: the client is closing") from None
        except AnswerTimeoutError:
            whole = self.connections.answer_timeout
            raise Retryable(
                f"read timeout (the whole answer took longer than {whole:g}s)", status=None
            ) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise Retryable("read timeout", status=None) from None
        except urllib3.exceptions.NewConnectionError as exc:  # a ConnectTimeoutError, to urllib3
            raise self._connection_failed(exc) from None
        except urllib3.exceptions.ConnectTimeoutError:
            raise Retryable("connect timeout", status=None) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._connection_failed(exc) from None
        sent = self._local.sent
        if sent is not None:
            self.stats.response(seconds=time.monotonic() - sent)
        return self._classify(resp, body, path=path, what=what)

    def _connection_failed(self, exc: urllib3.exceptions.HTTPError) -> Retryable:
        reason = self.scrub(str(exc))[:300]
        return Retryable(f"connection failed ({type(exc).__name__}: {reason})", status=None)

    def _classify(
        self, resp: BaseHTTPResponse, body: bytes, *, path: str, what: str | None
    ) -> Response:
        """Data, a retry, or a specific error: looked up in `OUTCOMES` by status and by whether
        the body is an HTML page."""
        ctype = resp.headers.get("Content-Type", "").lower()
        answer = Answer(self, resp, body, path, what, ctype, is_html(ctype, body))
        status = resp.status
        outcome = OUTCOMES.get((status, answer.html)) or OUTCOMES.get((status, None))
        if outcome is None:
            outcome = redirected if 300 <= status < 400 else other_status
        return outcome(answer)


__all__ = ["RetryPolicy", "Transport"]
