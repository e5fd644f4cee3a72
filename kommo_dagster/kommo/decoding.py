"""List pages decoded straight into typed records, for extractions that only want the columns.

Building a dict for every record and every nested object, then reading the contract's columns
out of it, costs more CPU than receiving the page. Here each stream's contract becomes a msgspec
type: the page is decoded in one pass into records holding only the contract's top-level values,
already checked against their column types; what no column reads is skipped unparsed, and a JSON
column keeps the bytes Kommo sent for it (`msgspec.Raw`), so its value is never built at all.

A page that does not fit the strict types (a numeric string where an integer belongs) is decoded
again into lenient records: the same shape, but each scalar column as whatever JSON value came,
converted or refused by the rules of `kommo_dagster.kommo.records`, while the JSON columns still
keep the bytes Kommo sent (parsing them would turn an integer past 64 bits into a float and drop a
decimal's extra digits). Only a page unlike that shape too (an odd envelope, ``[]`` where
``_embedded`` holds the JSON columns' object, malformed JSON) is decoded the general way
(`walks.records_of`), as dicts converted by the same rules, its JSON values re-serialized.

Typed records answer ``record[key]`` and ``record.get(key)`` for their top-level keys, which is all
the walks read (ids and cursors), so a walk pages them like dicts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import msgspec
from msgspec.structs import astuple

from kommo_dagster.kommo.links import EMBED_PREFIX, embedded_columns
from kommo_dagster.kommo.records import descend, typed_values
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import Column, Stream, get_stream
from kommo_dagster.kommo.walks.base import records_of

_NULL = msgspec.Raw(b"null")
_SCALARS: Mapping[str, Any] = {
    "integer": int | None,
    "boolean": bool | None,
    "string": str | None,
    "number": float | None,
}


class TypedRecord(msgspec.Struct, gc=False):
    """Base of the per-stream record types (no cycles, so the collector need not track them)."""

    _attrs: ClassVar[Mapping[str, str]] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            attr = self._attrs[key]
        except KeyError:
            raise KeyError(key) from None
        return getattr(self, attr)

    def get(self, key: str, default: Any = None) -> Any:
        attr = self._attrs.get(key)
        return default if attr is None else getattr(self, attr)


@dataclass(frozen=True)
class Node:
    """One key of a record type: a column's value (``column``), an object whose keys columns
    read (``children``, decoded as a nested typed record when a JSON column lies below, so that
    column stays raw), or else a value decoded as plain Python and descended with the general
    rules (Kommo's ``[]`` for an empty task result must give NULL, not an error)."""

    key: str
    column: Column | None = None
    children: tuple[Node, ...] = ()

    @property
    def typed(self) -> bool:
        return self.column is not None or any(c.is_json for c in self.leaf_columns())

    def leaf_columns(self) -> Iterator[Column]:
        """The columns at or below this key."""
        if self.column is not None:
            yield self.column
        for child in self.children:
            yield from child.leaf_columns()


def _nodes(columns: list[tuple[Column, tuple[str, ...]]]) -> tuple[Node, ...]:
    """The tree of keys the columns read, in the order of their first appearance."""
    groups: dict[str, list[tuple[Column, tuple[str, ...]]]] = {}
    for col, path in columns:
        groups.setdefault(path[0], []).append((col, path[1:]))
    nodes = []
    for key, group in groups.items():
        leaf = next((col for col, rest in group if not rest), None)
        if leaf is not None and len(group) > 1:
            raise ValueError(f"column {leaf.name} reads {key!r}, which other columns descend into")
        nodes.append(Node(key, leaf) if leaf else Node(key, children=_nodes(group)))
    return tuple(nodes)


def _field_type(node: Node, name: str, *, lenient: bool) -> Any:
    if node.column is not None:
        if node.column.is_json:
            return msgspec.Raw
        return Any if lenient else _SCALARS[node.column.type]
    if node.typed:
        nested = f"{name}_{node.key.strip('_')}"
        return _record_type(nested, node.children, lenient=lenient) | None
    return Any


def _record_type(name: str, nodes: tuple[Node, ...], *, lenient: bool) -> type[TypedRecord]:
    # Positional attribute names: keys need not be identifiers ("_embedded" is one that isn't
    # usable); the JSON keys are restored by ``rename``.
    attrs = {node.key: f"f{i}" for i, node in enumerate(nodes)}
    fields = [
        (
            attrs[node.key],
            _field_type(node, name, lenient=lenient),
            msgspec.Raw() if node.column is not None and node.column.is_json else None,
        )
        for node in nodes
    ]
    return msgspec.defstruct(
        name,
        fields,
        bases=(TypedRecord,),
        rename={attr: key for key, attr in attrs.items()},
        namespace={"_attrs": attrs},
        gc=False,
    )


@dataclass(frozen=True)
class PageType:
    """A stream's record types (strict, and lenient for pages with values to convert), the
    decoders of its list pages and the tree the columns follow."""

    stream: Stream
    record: type[TypedRecord]
    lenient: type[TypedRecord]
    nodes: tuple[Node, ...]
    decoder: msgspec.json.Decoder
    lenient_decoder: msgspec.json.Decoder


def _page_decoder(stream: Stream, name: str, record: type[TypedRecord]) -> msgspec.json.Decoder:
    embedded = msgspec.defstruct(
        f"{name}_embedded", [("items", list[record], [])], rename={"items": stream.list_key}
    )
    envelope = msgspec.defstruct(
        f"{name}_page",
        [("links", Any, None), ("embedded", embedded | None, None)],
        rename={"links": "_links", "embedded": "_embedded"},
    )
    return msgspec.json.Decoder(envelope)


@cache
def page_type(stream_name: str) -> PageType:
    stream = get_stream(stream_name)
    if stream.list_key is None:
        raise ValueError(f"{stream_name} has no list to decode")
    # The embedded lists the link tables read ride along as raw JSON (`kommo.links`).
    columns = (*stream.columns, *embedded_columns(stream_name))
    nodes = _nodes([(col, col.source) for col in columns])
    record = _record_type(f"{stream_name}_record", nodes, lenient=False)
    lenient = _record_type(f"{stream_name}_lenient", nodes, lenient=True)
    return PageType(
        stream,
        record,
        lenient,
        nodes,
        _page_decoder(stream, stream_name, record),
        _page_decoder(stream, f"{stream_name}_lenient", lenient),
    )


def typed_records_of(stream: Stream, resp: Response) -> tuple[list[Any], bool]:
    """`walks.records_of`, with typed records when the page has the contract's shape: strict
    ones when its values fit the column types, else lenient ones (see the module docstring)."""
    if resp.body is None or stream.list_key is None:
        return records_of(stream, resp)
    pt = page_type(stream.name)
    try:
        page = pt.decoder.decode(resp.body)
    except msgspec.ValidationError:
        try:
            page = pt.lenient_decoder.decode(resp.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return records_of(stream, resp)
    except msgspec.DecodeError:
        return records_of(stream, resp)
    links = page.links
    has_next = isinstance(links, dict) and bool(links.get("next"))
    if page.embedded is None:
        return [], False
    return page.embedded.items, has_next


def typed_to_columns(
    stream: str, records: Sequence[TypedRecord], *, json_bytes: bool = False
) -> dict[str, list]:
    """The contract columns of one page of typed records.

    Strict records' values were checked against the column types while the page was decoded,
    so the columns are the records transposed (``astuple``, ``zip``); lenient records' scalar
    columns are then converted by the general rules. A JSON column holds the text
    Kommo sent for the value, or with ``json_bytes`` its UTF-8 bytes (None where the key is
    missing or null); a column below a generic value follows the general rules of
    `kommo_dagster.kommo.records`.
    """
    pt = page_type(stream)
    kinds = set(map(type, records))
    if len(kinds) > 1 or kinds - {pt.record, pt.lenient}:
        raise TypeError(f"a page of {stream} mixes typed records with others")
    lenient = kinds == {pt.lenient}
    out: dict[str, list] = {}
    if records:
        transposed = zip(*map(astuple, records), strict=True)
        for node, values in zip(pt.nodes, transposed, strict=True):
            _node_columns(
                pt.stream.name,
                node,
                list(values),
                records,
                out,
                json_bytes=json_bytes,
                lenient=lenient,
            )
    else:
        out = {c.name: [] for c in pt.stream.columns}
    return {c.name: out[c.name] for c in pt.stream.columns}


def _node_columns(
    stream: str,
    node: Node,
    values: list,
    records: Sequence[Any],
    out: dict,
    *,
    json_bytes: bool,
    lenient: bool,
    depth: int = 0,
) -> None:
    col = node.column
    if col is not None:
        # An empty Raw: the key was missing.
        if col.is_json and json_bytes:
            values = [None if not v or v == _NULL else bytes(v) for v in values]
        elif col.is_json:
            values = [None if not v or v == _NULL else str(v, "utf-8") for v in values]
        elif lenient:
            values = typed_values(stream, col, values, records)
        out[col.name] = values
    elif node.typed:
        for child in node.children:
            if child.column is not None and child.column.name.startswith(EMBED_PREFIX):
                continue  # not a column: an embedded list the link tables read
            below = [None if v is None else v[child.key] for v in values]
            _node_columns(
                stream,
                child,
                below,
                records,
                out,
                json_bytes=json_bytes,
                lenient=lenient,
                depth=depth + 1,
            )
    else:
        for leaf in node.leaf_columns():
            found = descend(values, leaf.source[depth + 1 :])
            out[leaf.name] = typed_values(stream, leaf, found, records)


__all__ = ["PageType", "TypedRecord", "page_type", "typed_records_of", "typed_to_columns"]
