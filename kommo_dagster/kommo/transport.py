"""One GET against Kommo: rate limit, retries, and turning Kommo's answers into data or errors.

Every attempt, retries included, first takes a slot from the shared rate limiter. 429, 500, 502,
503, 504, dropped connections and timeouts (of the connect, of a read, or of the whole answer)
are retried with bounded backoff (a 429's ``retry_after`` or ``Retry-After`` is honoured and
pauses every user of the account's budget; one asking for longer than the policy waits ends the
retries rather than being cut short).
Everything else that is not a 200/204 with JSON raises a specific `KommoError` at once.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3.exceptions
from urllib3 import BaseHTTPResponse
from urllib3.util import make_headers

from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import (
    ENV_API_TOKEN,
    ENV_BASE_URL,
    ENV_RATE_LIMIT_DIR,
    ENV_SUBDOMAIN,
    Secret,
)
from kommo_dagster.kommo.connections import AnswerTimeoutError, Connections
from kommo_dagster.kommo.errors import (
    KommoAuthError,
    KommoConfigError,
    KommoError,
    KommoForbiddenError,
    KommoHTTPError,
    KommoIPBlockedError,
    KommoNotFoundError,
    KommoPaymentRequiredError,
    KommoResponseError,
    KommoRetryError,
)
from kommo_dagster.kommo.ratelimit import BudgetPaused, SharedRateLimiter, Slot
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.stats import StatsRecorder

log = logging.getLogger("kommo_dagster.kommo")

Params = Sequence[tuple[str, str | int]]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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


class _Retryable(Exception):
    def __init__(self, reason: str, *, status: int | None, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.wait = wait


def _server_time(resp: BaseHTTPResponse) -> int | None:
    value = resp.headers.get("Date")
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _retry_after_header(resp: BaseHTTPResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _target(path: str, params: Params) -> str:
    """The request's path and query, encoded as requests encoded them (``[`` and ``]`` of
    Kommo's ``filter[updated_at][from]`` as ``%5B`` and ``%5D``, a space as ``+``)."""
    return f"{path}?{urlencode(params, doseq=True)}" if params else path


def _is_html(content_type: str, body: bytes) -> bool:
    if "html" in content_type:
        return True
    return body[:200].lstrip()[:1] == b"<"


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

    def close(self) -> None:
        self.connections.close()

    def _headers(self) -> dict[str, str]:
        # Built for each request: the token is kept in its `Secret` and nowhere else.
        return {**HEADERS, "Authorization": f"Bearer {self._token.get_secret_value()}"}

    def scrub(self, text: str) -> str:
        """The text with the token replaced, for anything built from a server's answer."""
        token = self._token.get_secret_value()
        return text.replace(token, "***") if token and token in text else text

    def get(self, path: str, params: Params = (), *, what: str | None = None) -> Response:
        """GET ``path`` with retries. ``what`` names the object for 404 messages."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(path, params, what=what)
            except _Retryable as exc:
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
            self.stats.retry(throttled=throttled)
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
        self, path: str, last: _Retryable, *, attempt: int, elapsed: float
    ) -> KommoRetryError:
        self.stats.error()
        if last.wait is not None and last.wait > self.retry.retry_after_max:
            why = (
                f". Kommo asked to wait {last.wait:.0f}s, longer than the "
                f"{self.retry.retry_after_max:.0f}s this client waits for one 429: every client "
                "of the account on this machine holds off for that long; run again later"
            )
        elif last.status == 429:
            why = (
                ". Kommo kept answering 429: another client may be using this account's "
                "budget, lower KOMMO_REQUESTS_PER_SECOND"
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
        # Called again for one request when its connection was made again after the slot.
        self.stats.request_started(waited, again=self._local.sent is not None)
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

    def _after_send(self) -> None:
        """Settle the slot to the moment the request's bytes were written."""
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
            raise _Retryable(
                f"read timeout (the whole answer took longer than {whole:g}s)", status=None
            ) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise _Retryable("read timeout", status=None) from None
        except urllib3.exceptions.NewConnectionError as exc:  # a ConnectTimeoutError, to urllib3
            raise self._connection_failed(exc) from None
        except urllib3.exceptions.ConnectTimeoutError:
            raise _Retryable("connect timeout", status=None) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._connection_failed(exc) from None
        sent = self._local.sent
        if sent is not None:
            self.stats.response(seconds=time.monotonic() - sent)
        return self._classify(resp, body, path=path, what=what)

    def _connection_failed(self, exc: urllib3.exceptions.HTTPError) -> _Retryable:
        reason = self.scrub(str(exc))[:300]
        return _Retryable(f"connection failed ({type(exc).__name__}: {reason})", status=None)

    def _classify(
        self, resp: BaseHTTPResponse, body: bytes, *, path: str, what: str | None
    ) -> Response:
        """Data, a retry, or a specific error: looked up in `OUTCOMES` by status and by whether
        the body is an HTML page."""
        ctype = resp.headers.get("Content-Type", "").lower()
        answer = _Answer(self, resp, body, path, what, ctype, _is_html(ctype, body))
        status = resp.status
        outcome = OUTCOMES.get((status, answer.html)) or OUTCOMES.get((status, None))
        if outcome is None:
            outcome = _redirected if 300 <= status < 400 else _other_status
        return outcome(answer)

    @staticmethod
    def _problem(body: bytes) -> dict[str, Any] | None:
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def _detail(self, problem: dict[str, Any] | None) -> str:
        if not problem:
            return ""
        parts = []
        for key in ("title", "detail"):
            value = problem.get(key)
            if value and str(value) not in parts:
                parts.append(str(value))
        errors = problem.get("validation-errors") or problem.get("validation_errors")
        if errors:
            parts.append(orjson.dumps(errors).decode()[:500])
        return (": " + "; ".join(self.scrub(p)[:300] for p in parts)) if parts else ""


@dataclass(frozen=True)
class _Answer:
    """A response being classified, with what its outcome needs to say."""

    transport: Transport
    resp: BaseHTTPResponse
    body: bytes
    path: str
    what: str | None
    ctype: str
    html: bool

    @functools.cached_property
    def problem(self) -> dict[str, Any] | None:
        """The JSON problem document of an error answer (parsed only when an outcome asks)."""
        return None if self.html else self.transport._problem(self.body)

    @property
    def status(self) -> int:
        return self.resp.status

    @property
    def detail(self) -> str:
        return self.transport._detail(self.problem)

    def response(self, body: bytes | None) -> Response:
        return Response(body=body, server_time=_server_time(self.resp), path=self.path)

    def error(self, cls: type[KommoHTTPError], message: str) -> KommoHTTPError:
        return cls(message, status=self.status, path=self.path)


def _no_content(a: _Answer) -> Response:
    return a.response(None)


# What a 200 that is not the API's JSON most likely means.
_NOT_THE_API = (
    f"{ENV_BASE_URL} or {ENV_SUBDOMAIN} may point at a login page or a proxy rather than the "
    "account's API, or Kommo is in maintenance"
)


def _json_body(a: _Answer) -> Response:
    if "json" not in a.ctype:
        raise a.error(
            KommoResponseError,
            f"Kommo answered GET {a.path} with 200 and {a.ctype or 'no content type'} instead "
            f"of JSON: {_NOT_THE_API}",
        )
    # isspace() stops at the first other byte; strip() would copy the whole body.
    return a.response(None if not a.body or a.body.isspace() else a.body)


def _html_instead_of_json(a: _Answer) -> Response:
    raise a.error(
        KommoResponseError,
        f"Kommo answered GET {a.path} with 200 and an HTML page instead of JSON: {_NOT_THE_API}",
    )


def _retry(a: _Answer) -> Response:
    wait = None
    if a.status == 429:
        wait = _retry_after_header(a.resp)
        value = (a.problem or {}).get("retry_after")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            wait = float(value)
    reason = f"HTTP {a.status}" + (" (HTML page)" if a.html else "")
    if a.problem:
        detail = a.problem.get("detail") or a.problem.get("title")
        trace = a.problem.get("trace_id")
        if detail:
            reason += f": {a.transport.scrub(str(detail))[:200]}"
        if trace:
            reason += f" (trace_id {a.transport.scrub(str(trace))[:80]})"
    raise _Retryable(reason, status=a.status, wait=wait)


def _unauthorized(a: _Answer) -> Response:
    raise a.error(
        KommoAuthError,
        f"Kommo rejected the API token (401{a.detail}): check {ENV_API_TOKEN}; it must be the "
        "long-lived token of a private integration installed in this account, and "
        f"{ENV_BASE_URL}/{ENV_SUBDOMAIN} must name that account's host",
    )


def _payment_required(a: _Answer) -> Response:
    raise a.error(
        KommoPaymentRequiredError,
        f"Kommo answered 402 Payment Required{a.detail}: the account's paid period has ended; "
        "renew the subscription in Kommo to resume API access",
    )


def _ip_blocked(a: _Answer) -> Response:
    if a.transport.ban is not None:
        raise a.transport.ban.record(path=a.path)
    raise a.error(
        KommoIPBlockedError,
        f"Kommo answered GET {a.path} with an HTML 403 page: this IP is blocked by Kommo, "
        "usually for exceeding the API rate limit. The block does not expire by itself; ask "
        "Kommo support to lift it, and check KOMMO_REQUESTS_PER_SECOND and other clients of "
        "this account before retrying",
    )


def _forbidden(a: _Answer) -> Response:
    if a.path.rstrip("/").endswith("/users"):
        msg = (
            f"Kommo refused GET {a.path} (403{a.detail}): the token's user is not an account "
            "administrator, and only administrators may list users; create the integration's "
            "token as an admin user, or leave users out of the streams"
        )
    else:
        msg = (
            f"Kommo refused GET {a.path} (403{a.detail}): the token's user lacks the rights "
            "for this data"
        )
    raise a.error(KommoForbiddenError, msg)


def _not_found(a: _Answer) -> Response:
    raise a.error(
        KommoNotFoundError, f"Kommo answered 404 Not Found for {a.what or a.path}{a.detail}"
    )


def _redirected(a: _Answer) -> Response:
    location = a.transport.scrub(a.resp.headers.get("Location", "nowhere"))[:200]
    raise a.error(
        KommoHTTPError,
        f"Kommo answered GET {a.path} with a redirect ({a.status}) to {location}, which is not "
        f"followed (the token would go along): {ENV_BASE_URL}/{ENV_SUBDOMAIN} should name the "
        "account's own host (kommo.com and amocrm.ru accounts live on different hosts)",
    )


def _other_status(a: _Answer) -> Response:
    kind = " (HTML page)" if a.html else ""
    raise a.error(
        KommoHTTPError, f"Kommo answered GET {a.path} with HTTP {a.status}{kind}{a.detail}"
    )


Outcome = Callable[[_Answer], Response]
# What each answer means, by status and by whether the body is an HTML page (None: either).
# Statuses not listed: 3xx is a redirect (never followed), anything else an HTTP error.
OUTCOMES: dict[tuple[int, bool | None], Outcome] = {
    (200, False): _json_body,
    (200, True): _html_instead_of_json,
    (204, None): _no_content,
    **{(status, None): _retry for status in sorted(RETRY_STATUSES)},
    (401, None): _unauthorized,
    (402, None): _payment_required,
    (403, True): _ip_blocked,
    (403, False): _forbidden,
    (404, None): _not_found,
}


__all__ = ["KommoHTTPError", "RetryPolicy", "Transport"]
