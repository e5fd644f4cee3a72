"""The shape of a list page's body: the records at ``_embedded.<key>`` and whether Kommo
announced a next page. Read once here for the walks (`walks.records_of`) and the change poll
(`changes`); plain Python with no libraries, since the definitions import the change poll."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kommo_dagster.kommo.errors import KommoResponseError


def page_of(
    body: Mapping[str, Any] | None, key: str, *, name: str, lenient: bool = False
) -> tuple[list[Any], bool]:
    """The list at ``_embedded.<key>`` of a list page's parsed body, and whether Kommo announced
    a next page (``_links.next``): the one reading of a page's shape, for the walks and the
    change poll alike. No body or no ``_embedded`` is an empty page; an ``_embedded`` that is no
    object, or a value at ``key`` that is no list, raises naming ``name``.

    ``lenient`` is the change poll's reading (`kommo_dagster.kommo.changes`): any empty
    ``_embedded`` (``[]`` too, as PHP writes an empty array) or a null list is an empty page, a
    list in ``_embedded``'s place is the records, and the error quotes the value it met. It
    also refuses a page of records whose ``_links`` is no object, where the walks read no next
    page: the poll's cursor moves past what it read, so stopping short would lose events.
    """
    if body is None:
        return [], False
    embedded = body.get("_embedded")
    if lenient:
        embedded = embedded or {}
        records = embedded.get(key) if isinstance(embedded, dict) else embedded
        records = [] if records is None else records
    elif embedded is None:
        return [], False
    else:
        records = embedded.get(key, []) if isinstance(embedded, dict) else None
    if not isinstance(records, list):
        shown = f": {records!r:.200}" if lenient else ""
        raise KommoResponseError(f"Kommo's {name} response has no list at _embedded.{key}{shown}")
    links = body.get("_links")
    if lenient and records and links and not isinstance(links, dict):
        # A next page the poll cannot tell of may hold unread events: fail rather than stop.
        raise KommoResponseError(f"Kommo's {name} response has no object at _links: {links!r:.200}")
    has_next = isinstance(links, dict) and bool(links.get("next"))
    return records, has_next


__all__ = ["page_of"]
