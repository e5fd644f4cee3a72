"""The link tables: which records link which, read from the pages of the records that own them.

Kommo embeds a lead's contacts (``with=contacts``), products (``with=catalog_elements``) and
source (``with=source``), and a lead's or contact's companies (always) in ``_embedded`` of each
record. The link tables (``kommo_link_streams.json``, plus ``lead_sources``, which the contract
leaves to the issue that asks for it) are those lists flattened, one row per link: no request of
their own. A `LinkTable` says where its rows sit in the parent's record and how they are
replaced; `LinkRows` gathers them while the parent's pages stream by (the pages' embedded lists
ride along as raw JSON, see `kommo_dagster.kommo.decoding`), and from `/links` answers when links
changed without moving their parent's ``updated_at`` (`kommo_dagster.kommo.relinks`).

A table's rows are replaced by parent: writing the rows of a set of parents first removes every
row of those parents, so a link removed in Kommo disappears. ``lead_sources`` is keyed by the
source itself and replaced by key. Links of deleted records are dropped with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Any, Literal

import msgspec
import pyarrow as pa

from kommo_dagster.contract import link_contract
from kommo_dagster.kommo.errors import KommoContractError
from kommo_dagster.kommo.streams import Column, Reference, get_stream

_NULL = msgspec.Raw(b"null")
# Names of the pseudo-columns that carry an embedded list through the typed decoder.
EMBED_PREFIX = "_embedded."
# The parent's cursor value the rows were read with: of two versions of a record, the newer wins.
VERSION = "_version"
_ARROW = {
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "number": pa.float64(),
}


def _ref(column: str, stream: str) -> Reference:
    return Reference(columns=(column,), stream=stream)


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
    # The to_entity_type of the same links in a /links answer (None: not a link there).
    to_entity_type: str | None

    @cached_property
    def page_decoder(self) -> msgspec.json.Decoder:
        """Decodes a JSON array of one such value per parent, in one call."""
        return msgspec.json.Decoder(list[self.type])


_EMBEDS: Mapping[str, _Embed] = {
    "contacts": _Embed(list[_Contact] | None, _contacts, "contacts"),
    "companies": _Embed(list[_Ref] | None, _companies, "companies"),
    "catalog_elements": _Embed(list[_Element] | None, _products, "catalog_elements"),
    "source": _Embed(_Source | None, _source, None),
}


@dataclass(frozen=True, kw_only=True)
class LinkTable:
    """One link table: its parent stream, the embedded list its rows come from, its columns."""

    name: str
    description: str
    parent: str
    embed: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    # "parent": rows are replaced per parent record (the first column holds its id);
    # "key": rows are replaced by key (sources, shared by many leads).
    replace: Literal["parent", "key"] = "parent"
    references: tuple[Reference, ...] = ()
    # Data checks beyond the ones every link table gets, by name.
    checks: tuple[str, ...] = ()

    # A link table keeps no versions: its table is the current state (no `_current` view).
    is_incremental = False
    cursor = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def parent_column(self) -> str:
        return self.columns[0].name

    @property
    def to_entity_type(self) -> str | None:
        return _EMBEDS[self.embed].to_entity_type

    @property
    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(c.name, _ARROW[c.type]) for c in self.columns]
        return pa.schema([*fields, pa.field(VERSION, pa.int64())])


# What the contract leaves to the code: each table's embedded list, key, and the tables its
# columns point into (checked by the link checks, never enforced: a link may point to a record
# the warehouse does not hold).
# A lead has at most one main contact (a warning when not).
ONE_MAIN_CONTACT = "one_main_contact"
_CHECKS: Mapping[str, tuple[str, ...]] = {"lead_contacts": (ONE_MAIN_CONTACT,)}
_DECLARED: Mapping[str, tuple[str, tuple[str, ...], tuple[Reference, ...]]] = {
    "lead_contacts": (
        "contacts",
        ("lead_id", "contact_id"),
        (_ref("lead_id", "leads"), _ref("contact_id", "contacts")),
    ),
    "lead_companies": (
        "companies",
        ("lead_id", "company_id"),
        (_ref("lead_id", "leads"), _ref("company_id", "companies")),
    ),
    "contact_companies": (
        "companies",
        ("contact_id", "company_id"),
        (_ref("contact_id", "contacts"), _ref("company_id", "companies")),
    ),
    "lead_products": (
        "catalog_elements",
        ("lead_id", "catalog_id", "element_id"),
        (
            _ref("lead_id", "leads"),
            Reference(
                columns=("catalog_id", "element_id"),
                stream="catalog_elements",
                keys=("catalog_id", "id"),
            ),
        ),
    ),
}
LEAD_SOURCES = LinkTable(
    name="lead_sources",
    description=(
        "The lead sources of the account (the channel that brought a lead), one row per source "
        "id with its latest name. From _embedded.source of the leads walk (with=source), since "
        "GET /api/v4/sources lists only the calling integration's own sources."
    ),
    parent="leads",
    embed="source",
    columns=(
        Column(
            name="id",
            type="integer",
            description="Source identifier",
            source=("id",),
            is_json=False,
        ),
        Column(
            name="name", type="string", description="Source name", source=("name",), is_json=False
        ),
    ),
    key=("id",),
    replace="key",
)


def _build() -> dict[str, LinkTable]:
    tables: dict[str, LinkTable] = {}
    contract = link_contract()
    if set(contract) != set(_DECLARED):
        raise RuntimeError(f"link tables {sorted(contract)} differ from {sorted(_DECLARED)}")
    for name, spec in contract.items():
        embed, key, references = _DECLARED[name]
        get_stream(spec["parent"])  # an unknown parent fails here, when the module loads
        tables[name] = LinkTable(
            name=name,
            description=spec["description"],
            parent=spec["parent"],
            embed=embed,
            columns=tuple(Column.from_contract(c) for c in spec["columns"]),
            key=key,
            references=references,
            checks=_CHECKS.get(name, ()),
        )
    tables[LEAD_SOURCES.name] = LEAD_SOURCES
    return tables


LINK_TABLES: Mapping[str, LinkTable] = _build()


def link_tables_of(stream: str) -> tuple[LinkTable, ...]:
    """The link tables whose rows ``stream``'s records carry, in declaration order."""
    return tuple(t for t in LINK_TABLES.values() if t.parent == stream)


def embedded_columns(stream: str) -> tuple[Column, ...]:
    """Pseudo-columns holding, as raw JSON, each embedded list ``stream``'s link tables read."""
    embeds = dict.fromkeys(t.embed for t in link_tables_of(stream))
    return tuple(
        Column(
            name=f"{EMBED_PREFIX}{e}",
            type="string",
            description=f"_embedded.{e} (raw, for the link tables)",
            source=("_embedded", e),
            is_json=True,
        )
        for e in embeds
    )


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


__all__ = [
    "EMBED_PREFIX",
    "LEAD_SOURCES",
    "LINK_TABLES",
    "ONE_MAIN_CONTACT",
    "VERSION",
    "LinkRows",
    "LinkTable",
    "embedded_columns",
    "link_tables_of",
]
