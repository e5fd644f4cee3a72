"""The embedded lists that carry links (contacts, companies, catalog elements, source), decoded
from the pages' raw JSON into the link tables' columns.

Two ways, one meaning. The raw values of many pages at once are parsed by Arrow's JSON reader
straight into columns (`arrow_rows`): a lead carries three or four links, and building them as
Python values cost more than the rest of the lead. Values that are not raw JSON (a ``/links``
answer, a page of dicts), and any batch Arrow cannot take whole, go through msgspec into Python
rows (`decode_page`, `EMBEDS[...].rows`), which names the record whose value is unlike Kommo's.
Both take exactly the values the msgspec types below admit.

Imported by `kommo_dagster.kommo.link_rows` with the first page it reads, not before a run's first
request: msgspec and PyArrow are a run's libraries."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from kommo_dagster.kommo.errors import KommoContractError

_NULL = msgspec.Raw(b"null")
# An id the link tables' BIGINT columns hold: one beyond it is refused here, naming its record,
# rather than by Arrow when the table is built, which cannot say whose it was.
_Id = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _Ref(msgspec.Struct, gc=False):
    id: _Id


class _Contact(msgspec.Struct, gc=False):
    id: _Id
    is_main: bool | None = None


class _Metadata(msgspec.Struct, gc=False):
    quantity: float | None = None
    catalog_id: _Id | None = None
    price_id: _Id | None = None


_NO_METADATA = _Metadata()


class _Element(msgspec.Struct, gc=False):
    id: _Id
    metadata: _Metadata | None = None


class _Source(msgspec.Struct, gc=False):
    id: _Id
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


# Arrow's rows of parsed values (``values``: one per parent, ``ids`` and ``versions`` theirs): the
# table's columns then `VERSION`, or None when a value Arrow let through the msgspec types refuse
# (a null where an id or an element is required), for the msgspec path to report.
ArrowRows = Callable[[pa.Array, pa.Array, pa.Array], list[pa.Array] | None]


def _list_rows(columns: Callable[[pa.StructArray], list[pa.Array]]) -> ArrowRows:
    """The rows of list values: the parent's id, ``columns`` of each item, the parent's version;
    None on a null item or an item without an id."""

    def rows(values: pa.Array, ids: pa.Array, versions: pa.Array) -> list[pa.Array] | None:
        items = pc.list_flatten(values)
        if items.null_count or items.field("id").null_count:
            return None
        parents = pc.list_parent_indices(values)
        return [ids.take(parents), *columns(items), versions.take(parents)]

    return rows


def _product_columns(items: pa.StructArray) -> list[pa.Array]:
    # In `_METADATA`'s order; a null metadata gives nulls.
    quantity, catalog, price = items.field("metadata").flatten()
    return [catalog, items.field("id"), quantity, price]


def _source_arrow(values: pa.Array, ids: pa.Array, versions: pa.Array) -> list | None:
    present = values.is_valid()
    found = values.filter(present)
    if found.field("id").null_count:
        return None
    return [found.field("id"), found.field("name"), versions.filter(present)]


_REF = pa.struct([("id", pa.int64())])
_CONTACT = pa.struct([("id", pa.int64()), ("is_main", pa.bool_())])
_METADATA = pa.struct(
    [("quantity", pa.float64()), ("catalog_id", pa.int64()), ("price_id", pa.int64())]
)
_ELEMENT = pa.struct([("id", pa.int64()), ("metadata", _METADATA)])
_SOURCE = pa.struct([("id", pa.int64()), ("name", pa.string())])


@dataclass(frozen=True)
class _Embed:
    """How one embedded value becomes rows: its type (msgspec, and the same as Arrow reads it),
    and the rows of a page's parents from each."""

    type: Any
    rows: Callable[[Columns, list, list, list], None]
    arrow_type: pa.DataType
    arrow_rows: ArrowRows

    @cached_property
    def page_decoder(self) -> msgspec.json.Decoder:
        """Decodes a JSON array of one such value per parent, in one call."""
        return msgspec.json.Decoder(list[self.type])


EMBEDS: Mapping[str, _Embed] = {
    "contacts": _Embed(
        list[_Contact] | None,
        _contacts,
        pa.list_(_CONTACT),
        _list_rows(lambda items: [items.field("id"), items.field("is_main")]),
    ),
    "companies": _Embed(
        list[_Ref] | None, _companies, pa.list_(_REF), _list_rows(lambda i: [i.field("id")])
    ),
    "catalog_elements": _Embed(
        list[_Element] | None, _products, pa.list_(_ELEMENT), _list_rows(_product_columns)
    ),
    "source": _Embed(_Source | None, _source, _SOURCE, _source_arrow),
}


def is_raw(values: list) -> bool:
    """Whether a page's values of an embed are raw JSON (or absent), as a typed page has them."""
    return set(map(type, values)) <= {msgspec.Raw, type(None)}


def arrow_rows(raws: list, embed: str, ids: pa.Array, versions: pa.Array) -> list[pa.Array] | None:
    """The rows of raw values (one per parent) parsed by Arrow in one call, or None when Arrow
    cannot take them whole (a value unlike the types): `decode_page` then names the record."""
    spec = EMBEDS[embed]
    lines = [v or _NULL for v in raws]
    body = b'{"v":' + b'}\n{"v":'.join(lines) + b"}"
    if body.count(b"\n") != len(lines) - 1:  # JSON whitespace: a line break between tokens
        lines = [bytes(v).replace(b"\n", b" ") for v in lines]
        body = b'{"v":' + b'}\n{"v":'.join(lines) + b"}"
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([("v", spec.arrow_type)]), unexpected_field_behavior="ignore"
    )
    try:
        parsed = pa_json.read_json(
            pa.BufferReader(body),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
            parse_options=options,
        )
    except pa.ArrowInvalid:
        return None
    values = parsed.column("v").combine_chunks()
    if len(values) != len(raws):
        return None
    return spec.arrow_rows(values, ids, versions)


def decode(value: Any, embed: str, *, where: str) -> Any:
    """An embedded value (raw JSON bytes from a typed page, or a parsed value) as its type."""
    spec = EMBEDS[embed]
    try:
        if isinstance(value, msgspec.Raw):
            return msgspec.json.decode(value, type=spec.type) if len(value) else None
        return msgspec.convert(value, spec.type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise KommoContractError(
            f"{where}: _embedded.{embed} is not what Kommo sends ({exc})"
        ) from None


def decode_page(values: list, embed: str, ids: list, *, parent: str) -> list:
    """The embedded values of a page's parents, decoded in one call (raw JSON from a typed
    page, or parsed values); a value unlike Kommo's is found again record by record, so the
    error names the record."""
    spec = EMBEDS[embed]
    try:
        if set(map(type, values)) == {msgspec.Raw}:
            body = b"[" + b",".join([v or _NULL for v in values]) + b"]"
            return spec.page_decoder.decode(body)
        return msgspec.convert(values, list[spec.type])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return [decode(v, embed, where=f"{parent} {i}") for v, i in zip(values, ids, strict=True)]


def typed_heads(records: list, cursor: str | None) -> list[tuple] | None:
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


def embedded_values(embedded: list, embeds: list[str]) -> dict[str, list]:
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


__all__ = [
    "EMBEDS",
    "Columns",
    "arrow_rows",
    "decode",
    "decode_page",
    "embedded_values",
    "is_raw",
    "typed_heads",
]
