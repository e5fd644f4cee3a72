"""The shape of a list page's body: the records at ``_embedded.<key>`` and whether Kommo
announced a next page. One rule for the walks (`walks.records_of`, the fallback of the typed
decoding) and the change poll (`changes`); plain Python with no libraries, since the definitions
import the change poll."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kommo_dagster.kommo.errors import KommoResponseError

# No ``_links`` at all, or empty: PHP writes an empty object as an empty array.
_NO_LINKS = (None, [], {})


def page_of(body: Mapping[str, Any] | None, key: str, *, name: str) -> tuple[list[Any], bool]:
    """The list at ``_embedded.<key>`` of a list page's parsed body, and whether Kommo announced
    a next page (``_links.next``).

    No body, no ``_embedded`` (or PHP's empty array in its place) or a null list is an empty
    page. Anything else that is not a list there raises naming ``name`` and the value, and so
    does a page of records whose ``_links`` is no object: a next page nobody can tell of may
    hold unread records, and both callers move their cursor past what they read, so stopping
    short would lose them.
    """
    if body is None:
        return [], False
    embedded = body.get("_embedded")
    if embedded is None or embedded == []:
        return [], False
    records = _listed(embedded, key, name=name)
    links = body.get("_links")
    if records and links not in _NO_LINKS and not isinstance(links, dict):
        raise KommoResponseError(f"Kommo's {name} response has no object at _links: {links!r:.200}")
    return records, isinstance(links, dict) and bool(links.get("next"))


def _listed(embedded: object, key: str, *, name: str) -> list[Any]:
    records = embedded.get(key) if isinstance(embedded, dict) else embedded
    if records is None and isinstance(embedded, dict):
        return []
    if not (isinstance(embedded, dict) and isinstance(records, list)):
        raise KommoResponseError(
            f"Kommo's {name} response has no list at _embedded.{key}: {records!r:.200}"
        )
    return records


__all__ = ["page_of"]
