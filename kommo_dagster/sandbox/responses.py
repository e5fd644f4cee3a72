"""The bodies Kommo answers with: HAL+JSON successes, problem+JSON errors and nginx HTML pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

HAL_JSON = "application/hal+json"
PROBLEM_JSON = "application/problem+json"
HTML = "text/html; charset=utf-8"
JSON = "application/json"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Close the socket without answering (the "drop" fault).
    drop: bool = False


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "Request-URI Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    504: "Gateway Time-out",
}


def hal(payload: Any) -> Response:
    return Response(200, orjson.dumps(payload), HAL_JSON)


def hal_bytes(body: bytes) -> Response:
    return Response(200, body, HAL_JSON)


def page_links(href: Callable[[int], str], page: int, *, more: bool) -> dict[str, Any]:
    """`_links` of a list page: `next` only while more rows follow; past the first page also
    `first` and `prev`, as amoCRM's leads-api example of page 2 shows (so a client must pick
    `next` by name, not take whatever link is not `self`)."""
    links: dict[str, Any] = {"self": {"href": href(page)}}
    if more:
        links["next"] = {"href": href(page + 1)}
    if page > 1:
        links["first"] = {"href": href(1)}
        links["prev"] = {"href": href(page - 1)}
    return links


def no_content() -> Response:
    return Response(204)


def problem(status: int, detail: str, **extra: Any) -> Response:
    payload = {
        "title": _TITLES.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **extra,
    }
    return Response(status, orjson.dumps(payload), PROBLEM_JSON)


def validation_error(path: str, detail: str, code: str = "NotSupportedChoice") -> Response:
    errors = [{"request_id": "0", "errors": [{"code": code, "path": path, "detail": detail}]}]
    return problem(400, "Request validation failed", **{"validation-errors": errors})


def html_page(status: int) -> Response:
    """nginx's plain error page, as Kommo's gateway serves for 429, 403 blocks, 5xx and 414."""
    title = f"{status} {_TITLES.get(status, 'Error')}"
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
    return Response(status, body, HTML)
