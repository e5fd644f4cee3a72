"""The rows of the link tables (`kommo_dagster.kommo.links`), gathered from the pages that carry
them: the embedded lists ride along as raw JSON and are decoded here, one call per page and list.
A run's module: loading the definitions imports only the declarations."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Any

import msgspec
import pyarrow as pa

from kommo_dagster.kommo.errors import KommoContractError
from kommo_dagster.kommo.links import LinkTable, link_tables_of
from kommo_dagster.kommo.streams import get_stream

_NULL = msgspec.Raw(b"null")


class _Ref(msgspec.Struct, gc=False):
    id: int


class _Contact(msgspec.Struct, gc=False):
    id: int
    is_main: bool | None = None


class _Metadata(msgspec.Struct, gc=False):
    quantity: float | None = None
    catalog_id: int | None = None
    price_id: int | None = None


_NO_METADATA = _Metadata()


class _Element(msgspec.Struct, gc=False):
    id: int
    metadata: _Metadata | None = None


class _Source(msgspec.Struct, gc=False):
    id: int
    name: str | None = None


# Row builders: append the rows of each parent (ids[k], its version, its decoded value) to the
# table's columns (the table's, then `VERSION`). Columns, not tuples: Arrow takes them as they are.
Columns = list[list[Any]]


def _contacts(out: Columns, ids: list, versions: list, values: list) -> None:
    parent, contact, main, version = out
    pairs = [
        (pid, ver, items) for pid, ver, items in zip(ids, versions, values, strict=True) if items
    ]
    parent += [pid for pid, _, items in pairs for _ in items]
    version += [ver for _, ver, items in pairs for _ in items]
    contact += [c.id for _, _, items in pairs for c in items]
    main += [c.is_main for _, _, items in pairs for c in items]


def _companies(out: Columns, ids: list, versions: list, values: list) -> None:
    parent, company, version = out
    pairs = [
        (pid, ver, items) for pid, ver, items in zip(ids, versions, values, strict=True) if items
    ]
    parent += [pid for pid, _, items in pairs for _ in items]
    version += [ver for _, ver, items in pairs for _ in items]
    company += [c.id for _, _, items in pairs for c in items]


def _products(out: Columns, ids: list, versions: list, values: list) -> None:
    parent, catalog, element, quantity, price, version = out
    pairs = [
        (pid, ver, items) for pid, ver, items in zip(ids, versions, values, strict=True) if items
    ]
    parent += [pid for pid, _, items in pairs for _ in items]
    version += [ver for _, ver, items in pairs for _ in items]
    element += [e.id for _, _, items in pairs for e in items]
    meta = [e.metadata or _NO_METADATA for _, _, items in pairs for e in items]
    catalog += [m.catalog_id for m in meta]
    quantity += [m.quantity for m in meta]
    price += [m.price_id for m in meta]


def _source(out: Columns, ids: list, versions: list, values: list) -> None:
    source, name, version = out
    found = [(ver, item) for ver, item in zip(versions, values, strict=True) if item is not None]
    source += [item.id for _, item in found]
    name += [item.name for _, item in found]
    version += [ver for ver, _ in found]


@dataclass(frozen=True)
class _Embed:
    """How one embedded value becomes rows: its type, and the rows of a page's parents."""

    type: Any
    rows: Callable[[Columns, list, list, list], None]

    @cached_property
    def page_decoder(self) -> msgspec.json.Decoder:
        """Decodes a JSON array of one such value per parent, in one call."""
        return msgspec.json.Decoder(list[self.type])


_EMBEDS: Mapping[str, _Embed] = {
    "contacts": _Embed(list[_Contact] | None, _contacts),
    "companies": _Embed(list[_Ref] | None, _companies),
    "catalog_elements": _Embed(list[_Element] | None, _products),
    "source": _Embed(_Source | None, _source),
}


def _decode(value: Any, embed: str, *, where: str) -> Any:
    """An embedded value (raw JSON bytes from a typed page, or a parsed value) as its type."""
    spec = _EMBEDS[embed]
    try:
        if isinstance(value, msgspec.Raw):
            return msgspec.json.decode(value, type=spec.type) if len(value) else None
        return msgspec.convert(value, spec.type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise KommoContractError(
            f"{where}: _embedded.{embed} is not what Kommo sends ({exc})"
        ) from None


def _decode_page(values: list, embed: str, ids: list, *, parent: str) -> list:
    """The embedded values of a page's parents, decoded in one call (raw JSON from a typed
    page, or parsed values); a value unlike Kommo's is found again record by record, so the
    error names the record."""
    spec = _EMBEDS[embed]
    try:
        if set(map(type, values)) == {msgspec.Raw}:
            body = b"[" + b",".join([v or _NULL for v in values]) + b"]"
            return spec.page_decoder.decode(body)
        return msgspec.convert(values, list[spec.type])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return [_decode(v, embed, where=f"{parent} {i}") for v, i in zip(values, ids, strict=True)]


def _typed_heads(records: list, cursor: str | None) -> list[tuple] | None:
    """(id, is_deleted, cursor, _embedded) of each record of a typed page, read by attribute in
    one C call a record; None for pages of dicts (or of mixed records)."""
    attrs = getattr(type(records[0]), "_attrs", None)
    keys = ("id", "is_deleted", cursor or "id", "_embedded")
    if attrs is None or any(k not in attrs for k in keys):
        return None
    if len(set(map(type, records))) > 1:
        return None
    head = attrgetter(*(attrs[k] for k in keys))
    return [head(r) for r in records]


def _embedded_values(embedded: list, embeds: list[str]) -> dict[str, list]:
    """Each embedded list's values, per record, from the records' ``_embedded`` (typed or not)."""
    first = next((e for e in embedded if e is not None), None)
    attrs = getattr(type(first), "_attrs", None)
    if attrs is not None and set(map(type, embedded)) <= {type(first), type(None)}:
        get = attrgetter(*(attrs[e] for e in embeds))
        rows = [(None,) * len(embeds) if e is None else get(e) for e in embedded]
        if len(embeds) == 1:
            rows = [r if type(r) is tuple else (r,) for r in rows]
        return {e: [r[k] for r in rows] for k, e in enumerate(embeds)}
    gets = [getattr(e, "get", _no_embeds) for e in embedded]
    return {e: [get(e) for get in gets] for e in embeds}


def _no_embeds(key: str) -> None:
    return None


class LinkRows:
    """The link rows of one parent stream's records, and the parents whose links they replace.

    `add` reads a page of the parent's records (typed or dicts); `add_links` the items of a
    ``/links`` answer. `tables` gives each link table's rows as Arrow, with the parent's cursor
    value in `VERSION` (the newest version of a record wins), and `parent_ids` the parents
    whose rows a write removes first (every record seen, so a link removed in Kommo goes).
    """

    def __init__(self, parent: str, *, tables: Sequence[LinkTable] | None = None) -> None:
        self.parent = parent
        self.stream = get_stream(parent)
        self.link_tables = tuple(tables) if tables is not None else link_tables_of(parent)
        self._columns: dict[str, Columns] = {
            t.name: [[] for _ in range(len(t.columns) + 1)] for t in self.link_tables
        }
        self.parent_ids: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.link_tables)

    def add(self, records: Iterable[Any]) -> None:
        records = list(records)
        if not records:
            return
        cursor = self.stream.cursor
        heads = _typed_heads(records, cursor)
        if heads is None:
            heads = [
                (
                    r.get("id"),
                    r.get("is_deleted"),
                    r.get(cursor) if cursor else None,
                    r.get("_embedded"),
                )
                for r in records
            ]
        # A record without an integer id: the parent's own columns report it.
        heads = [h for h in heads if type(h[0]) is int]
        self.parent_ids += [h[0] for h in heads]
        live = [h for h in heads if not h[1]]
        if not live:
            return
        ids = [h[0] for h in live]
        versions = [h[2] for h in live] if cursor else [None] * len(live)
        embeds = list(dict.fromkeys(t.embed for t in self.link_tables))
        values = _embedded_values([h[3] for h in live], embeds)
        decoded = {e: _decode_page(values[e], e, ids, parent=self.parent) for e in embeds}
        for table in self.link_tables:
            rows = _EMBEDS[table.embed].rows
            rows(self._columns[table.name], ids, versions, decoded[table.embed])

    def add_links(self, ids: Iterable[int], items: Iterable[Mapping[str, Any]]) -> None:
        """The current links of ``ids`` from a /links answer (items of ``_embedded.links``)."""
        self.parent_ids.extend(ids)
        by_type = {t.to_entity_type: t for t in self.link_tables if t.to_entity_type}
        for item in items:
            table = by_type.get(item.get("to_entity_type"))
            if table is None:
                continue
            where = f"{self.parent}/links of {item.get('entity_id')!r}"
            meta = item.get("metadata") or {}
            if table.embed == "contacts":
                value: Any = [{"id": item.get("to_entity_id"), "is_main": meta.get("main_contact")}]
            elif table.embed == "catalog_elements":
                value = [{"id": item.get("to_entity_id"), "metadata": meta}]
            else:
                value = [{"id": item.get("to_entity_id")}]
            parent = item.get("entity_id")
            if type(parent) is not int:
                raise KommoContractError(f"{where}: entity_id {parent!r} is not an integer")
            rows = _decode(value, table.embed, where=where)
            _EMBEDS[table.embed].rows(self._columns[table.name], [parent], [None], [rows])

    def tables(self) -> dict[str, pa.Table]:
        """Each link table's rows (with `VERSION`) as Arrow."""
        return {table.name: self.table(table) for table in self.link_tables}

    def table(self, table: LinkTable) -> pa.Table:
        """The rows of one of its link tables (with `VERSION`) as Arrow."""
        schema = table.arrow_schema
        try:
            arrays = [
                pa.array(column, f.type)
                for column, f in zip(self._columns[table.name], schema, strict=True)
            ]
        except (pa.ArrowException, OverflowError, TypeError) as exc:
            raise KommoContractError(
                f"{table.name}: a value does not fit its column ({exc})"
            ) from None
        return pa.Table.from_arrays(arrays, schema=schema)

    def parent_id_array(self) -> pa.Table:
        return pa.table({"id": pa.array(sorted(set(self.parent_ids)), pa.int64())})


__all__ = ["LinkRows"]
