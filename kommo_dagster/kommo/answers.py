"""What each answer of Kommo means: data, a retry, or a specific `KommoError`.

The transport (`kommo_dagster.kommo.transport`) sends and retries; it hands every answer it
receives to `OUTCOMES`, looked up by status and by whether the body is an HTML page. 200 with
JSON and 204 are data; 429 and every 5xx are retried (a 429's ``retry_after`` or
``Retry-After`` says for how long); 401, 402, 403 (an HTML page: the IP is blocked), 404, a
redirect, an HTML or other non-JSON 200 and any other status raise an error that says what to
do. This module does not import the transport, which imports it: an answer sees the transport
only as a `Receiver`.
"""

from __future__ import annotations

import email.utils
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from urllib3 import BaseHTTPResponse

from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import ENV_API_TOKEN, ENV_BASE_URL, ENV_SUBDOMAIN
from kommo_dagster.kommo.errors import (
    KommoAuthError,
    KommoForbiddenError,
    KommoHTTPError,
    KommoIPBlockedError,
    KommoNotFoundError,
    KommoPaymentRequiredError,
    KommoResponseError,
)
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import get_stream

# 429, and every 5xx: Kommo's own (500 with a trace_id, 504 on heavy requests) and whatever a
# gateway in front of it answers (502, 503, 520...) pass with time.
RETRY_STATUSES = frozenset({429, *range(500, 600)})


class Retryable(Exception):
    """A failure worth another attempt: a status an outcome retries, or (raised by the
    transport) a dropped connection or a timeout."""

    def __init__(self, reason: str, *, status: int | None, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.wait = wait


class Receiver(Protocol):
    """The transport an answer came through, as far as its outcomes use it: the remembered IP
    block and the token's scrubbing (a protocol, not the class, so no import goes back)."""

    ban: IPBan | None

    def scrub(self, text: str) -> str: ...


def _server_time(resp: BaseHTTPResponse) -> int | None:
    value = resp.headers.get("Date")
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _retry_after_header(resp: BaseHTTPResponse) -> float | None:
    """The seconds ``Retry-After`` asks for: a number of them or an HTTP-date. None (the backoff
    instead) for anything else, a negative number included, as a negative ``retry_after``."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def is_html(content_type: str, body: bytes) -> bool:
    if "html" in content_type:
        return True
    return body[:200].lstrip()[:1] == b"<"


def _problem(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _detail(problem: dict[str, Any] | None, *, scrub: Callable[[str], str]) -> str:
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
    return (": " + "; ".join(scrub(p)[:300] for p in parts)) if parts else ""


@dataclass(frozen=True)
class Answer:
    """A response being classified, with what its outcome needs to say."""

    transport: Receiver
    resp: BaseHTTPResponse
    body: bytes
    path: str
    what: str | None
    ctype: str
    html: bool

    @functools.cached_property
    def problem(self) -> dict[str, Any] | None:
        """The JSON problem document of an error answer (parsed only when an outcome asks)."""
        return None if self.html else _problem(self.body)

    @property
    def status(self) -> int:
        return self.resp.status

    @property
    def detail(self) -> str:
        return _detail(self.problem, scrub=self.transport.scrub)

    def response(self, body: bytes | None) -> Response:
        return Response(
            body=body,
            server_time=_server_time(self.resp),
            path=self.path,
            scrub=self.transport.scrub,
        )

    def error(self, cls: type[KommoHTTPError], message: str) -> KommoHTTPError:
        return cls(message, status=self.status, path=self.path)


def _no_content(a: Answer) -> Response:
    return a.response(None)


# What a 200 that is not the API's JSON most likely means.
_NOT_THE_API = (
    f"{ENV_BASE_URL} or {ENV_SUBDOMAIN} may point at a login page or a proxy rather than the "
    "account's API, or Kommo is in maintenance"
)


def _json_body(a: Answer) -> Response:
    if "json" not in a.ctype:
        # As sent, not lowercased: the message quotes the header as the server wrote it.
        ctype = a.transport.scrub(a.resp.headers.get("Content-Type", ""))[:100]
        raise a.error(
            KommoResponseError,
            f"Kommo answered GET {a.path} with 200 and {ctype or 'no content type'} instead "
            f"of JSON: {_NOT_THE_API}",
        )
    # isspace() stops at the first other byte; strip() would copy the whole body.
    return a.response(None if not a.body or a.body.isspace() else a.body)


def _html_instead_of_json(a: Answer) -> Response:
    raise a.error(
        KommoResponseError,
        f"Kommo answered GET {a.path} with 200 and an HTML page instead of JSON: {_NOT_THE_API}",
    )


def _retry(a: Answer) -> Response:
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
    raise Retryable(reason, status=a.status, wait=wait)


def _unauthorized(a: Answer) -> Response:
    raise a.error(
        KommoAuthError,
        f"Kommo rejected the API token (401{a.detail}): check {ENV_API_TOKEN}; it must be the "
        "long-lived token of a private integration installed in this account, and "
        f"{ENV_BASE_URL}/{ENV_SUBDOMAIN} must name that account's host",
    )


def _payment_required(a: Answer) -> Response:
    raise a.error(
        KommoPaymentRequiredError,
        f"Kommo answered 402 Payment Required{a.detail}: the account's paid period has ended; "
        "renew the subscription in Kommo to resume API access",
    )


def _ip_blocked(a: Answer) -> Response:
    if a.transport.ban is not None:
        raise a.transport.ban.record(path=a.path)
    raise a.error(
        KommoIPBlockedError,
        f"Kommo answered GET {a.path} with an HTML 403 page: this IP is blocked by Kommo, "
        "usually for exceeding the API rate limit. The block does not expire by itself; ask "
        "Kommo support to lift it, and check KOMMO_REQUESTS_PER_SECOND and other clients of "
        "this account before retrying",
    )


def _forbidden(a: Answer) -> Response:
    # Only administrators may list users: the users stream's request is the admin check.
    if a.path == get_stream("users").path:
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


def _not_found(a: Answer) -> Response:
    raise a.error(
        KommoNotFoundError, f"Kommo answered 404 Not Found for {a.what or a.path}{a.detail}"
    )


def redirected(a: Answer) -> Response:
    location = a.transport.scrub(a.resp.headers.get("Location", "nowhere"))[:200]
    raise a.error(
        KommoHTTPError,
        f"Kommo answered GET {a.path} with a redirect ({a.status}) to {location}, which is not "
        f"followed (the token would go along): {ENV_BASE_URL}/{ENV_SUBDOMAIN} should name the "
        "account's own host (kommo.com and amocrm.ru accounts live on different hosts)",
    )


def other_status(a: Answer) -> Response:
    kind = " (HTML page)" if a.html else ""
    raise a.error(
        KommoHTTPError, f"Kommo answered GET {a.path} with HTTP {a.status}{kind}{a.detail}"
    )


Outcome = Callable[[Answer], Response]
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


__all__ = [
    "OUTCOMES",
    "RETRY_STATUSES",
    "Answer",
    "Outcome",
    "Receiver",
    "Retryable",
    "is_html",
    "other_status",
    "redirected",
]
