"""Links that changed without moving ``updated_at``: found in the events, re-read by /links.

Kommo does not promise that linking or unlinking records moves their ``updated_at``, so the
leads and contacts walks may never see a relink. It does write link events: generic
(``entity_linked`` / ``entity_unlinked``) or typed (``contact_linked``, ``lead_unlinked``...), on
either side of the link, with the other side in the value: ``[{"link": {"entity": {"type",
"id"}}}]`` in ``value_after`` (a link) or ``value_before`` (an unlink), or ``[{"unlink": ...}]``
in ``value_after``. `LinkEvents` reads every one of these readings from the events batches of a
window and names both records of each link; `LinkEvents.refresh` then reads the current links of
the named leads and contacts through ``GET /api/v4/{leads|contacts}/links``, `LINKS_BATCH` ids a
request (never one request per record), into `LinkRows` that replace their rows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from kommo_dagster.kommo.changes import ENTITY_STREAMS
from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.links import LINK_TABLES, link_tables_of
from kommo_dagster.kommo.streams import get_stream

if TYPE_CHECKING:
    import pyarrow as pa

    from kommo_dagster.kommo.link_rows import LinkRows

# Entity ids per /links request. Kommo documents no limit (long query strings hit 414); the
# sandbox answers at most 50 like a long filter (validation error), and 50 ids are a short URL.
LINKS_BATCH = 50
# The stream whose partition runs read the link events and refresh the links they name.
LINK_EVENTS_STREAM = "events"
_LINKED = ("linked", "unlinked")
LINK_EVENT_TYPES = frozenset(
    f"{entity}_{verb}"
    for entity in ("entity", "lead", "contact", "company", "customer")
    for verb in _LINKED
)
# Kommo's singular entity type -> stream, of the records a link can join: the streams the link
# tables connect, by the entity type their events carry.
_CONNECTED = {
    s for t in LINK_TABLES.values() for s in (t.parent, *(r.stream for r in t.references))
}
_PLURAL = {entity: name for entity, name in ENTITY_STREAMS.items() if name in _CONNECTED}


class Getter(Protocol):
    def get(self, path: str, params: Any = (), *, what: str | None = None) -> dict | None: ...


def _linked_entities(values: Any) -> Iterator[tuple[str, int]]:
    """(singular type, id) of each ``{"link"|"unlink": {"entity": {...}}}`` in an event value."""
    if not isinstance(values, list):
        return
    for item in values:
        if not isinstance(item, dict):
            continue
        for key in ("link", "unlink"):
            entity = (
                (item.get(key) or {}).get("entity") if isinstance(item.get(key), dict) else None
            )
            if isinstance(entity, dict) and type(entity.get("id")) is int:
                yield str(entity.get("type")), entity["id"]


class LinkEvents:
    """The records the link events of a window name, by plural entity type: of the ``streams``
    given only (all by default), since another stream's link table would hold just the few
    records the events name."""

    def __init__(self, streams: Collection[str] | None = None) -> None:
        self.named: dict[str, set[int]] = {
            plural: set() for plural in _PLURAL.values() if streams is None or plural in streams
        }
        self.events = 0

    def add(self, batch: pa.Table) -> None:
        """Read the link events of one events batch (contract columns)."""
        import orjson
        import pyarrow as pa  # a run's: loading the definitions reads only the stream's name

        types = batch.column("type").to_pylist()
        wanted = [i for i, t in enumerate(types) if t in LINK_EVENT_TYPES]
        if not wanted:
            return
        rows = batch.take(pa.array(wanted, pa.int64())).to_pylist()
        for row in rows:
            self.events += 1
            self._name(row.get("entity_type"), row.get("entity_id"))
            for column in ("value_after", "value_before"):
                text = row.get(column)
                values = orjson.loads(text) if text else None
                for entity, rid in _linked_entities(values):
                    self._name(entity, rid)

    def _name(self, entity: Any, rid: Any) -> None:
        named = self.named.get(_PLURAL.get(str(entity), ""))
        if named is not None and type(rid) is int:
            named.add(rid)

    def summary(self) -> str:
        """What the window's link events named and what that re-reads, for the run's log."""
        if not self.events:
            return "no link events in the window, so no links to re-read"
        named = ", ".join(f"{len(ids)} {entity}" for entity, ids in self.named.items() if ids)
        return f"{self.events} link events name {named or 'no record'}; their links re-read"

    def refresh(self, client: Getter) -> list[LinkRows]:
        """The current links of every named lead and contact, `LINKS_BATCH` ids a request."""
        from kommo_dagster.kommo.link_rows import LinkRows

        out = []
        for parent, ids in self.named.items():
            if not ids or not link_tables_of(parent):
                continue
            rows = LinkRows(parent, tables=[t for t in link_tables_of(parent) if t.to_entity_type])
            for chunk in _chunks(sorted(ids), LINKS_BATCH):
                rows.add_links(chunk, links_of(client, parent, chunk))
            out.append(rows)
        return out


def _chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def links_of(client: Getter, entity: str, ids: Iterable[int]) -> list[dict[str, Any]]:
    """Items of ``GET /api/v4/{entity}/links`` for ``ids`` (204: none), following its pages."""
    path = f"{get_stream(entity).path}/links"
    params = [("filter[entity_id][]", i) for i in ids]
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        data = client.get(path, [*params, ("page", page)], what=f"links of {entity}")
        if data is None:
            return items
        embedded = data.get("_embedded")
        links = embedded.get("links") if isinstance(embedded, dict) else None
        if not isinstance(links, list) or not all(isinstance(i, dict) for i in links):
            raise KommoResponseError(
                f"Kommo's {entity}/links response has no list at _embedded.links", path=path
            )
        items.extend(links)
        nxt = data.get("_links")
        if not (isinstance(nxt, dict) and nxt.get("next")) or not links:
            return items
        page += 1


__all__ = ["LINKS_BATCH", "LINK_EVENTS_STREAM", "LINK_EVENT_TYPES", "LinkEvents", "links_of"]
