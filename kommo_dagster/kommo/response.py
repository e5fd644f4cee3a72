"""A usable answer of Kommo: its body, kept as bytes until the JSON is asked for, and the
server's clock.

Kept apart from the transport that produces it: the walks, the decoding and the tasks read a
`Response`, and build one in their tests, without any of the sending.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kommo_dagster.kommo.errors import KommoResponseError


def lone_surrogate(body: bytes) -> str | None:
    """Where a body orjson refused holds a lone surrogate escape (``"\\ud800"``), if that is
    why: the path, the enclosing record's id and the value, so the record can be found and
    corrected. JSON allows the escape; no UTF-8 text can hold it. Only run on a refused body."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    stack: list[tuple[str, Any, Any]] = [("$", data, None)]
    while stack:
        path, value, record_id = stack.pop()
        if isinstance(value, dict):
            # The outermost id: a record's, not that of a tag or contact embedded in it.
            record_id = value.get("id") if record_id is None else record_id
            stack.extend((f"{path}.{k}", v, record_id) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(
                (f"{path}[{i}]", v, record_id) for i, v in reversed(list(enumerate(value)))
            )
        elif isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value):
            of = "" if record_id is None else f" (record id {record_id})"
            return f"{path}{of}: {value!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class Response:
    """A usable answer: its JSON body (None for 204 or an empty body) and the server's clock.

    The body is parsed on first use of `data`, not on arrival: a list page may instead be
    decoded straight into typed records (`kommo_dagster.kommo.decoding`), which costs a
    fraction of building the whole tree of Python objects.
    """

    body: bytes | None
    server_time: int | None  # Unix seconds from the Date header
    path: str = ""
    # The token out of an error's text: a value quoted from the body may hold it.
    scrub: Callable[[str], str] = field(default=str, repr=False, compare=False)

    @functools.cached_property
    def data(self) -> dict[str, Any] | None:
        """The body as parsed JSON; a malformed body or one that is not an object raises."""
        if self.body is None:
            return None
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            where = lone_surrogate(self.body)
            what = (
                "malformed JSON"
                if where is None
                else f"a lone UTF-16 surrogate at {where}, valid JSON but no text DuckDB (UTF-8) "
                "can hold: correct the value in Kommo"
            )
            raise KommoResponseError(
                self.scrub(f"Kommo answered GET {self.path} with {what} ({exc})"), path=self.path
            ) from None
        if not isinstance(data, dict):
            shown = f"{type(data).__name__} {data!r:.80}"
            raise KommoResponseError(
                self.scrub(
                    f"Kommo answered GET {self.path} with JSON that is not an object: {shown}"
                ),
                path=self.path,
            )
        return data


__all__ = ["Response", "lone_surrogate"]
