"""The rows of the link tables (`kommo_dagster.kommo.links`), gathered from the pages that carry
them: the embedded lists ride along as raw JSON, decoded by `kommo_dagster.kommo.link_decoding`
with the first page. A run's module that imports neither msgspec nor PyArrow itself, so that a
run's first request does not wait for them (the client imports them beside it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.errors import KommoContractError
from kommo_dagster.kommo.links import LinkTable, link_tables_of
from kommo_dagster.kommo.streams import get_stream

if TYPE_CHECKING:
    import pyarrow as pa

    from kommo_dagster.kommo.link_decoding import Columns


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
        from kommo_dagster.kommo import link_decoding as dec  # with the first page, not before

        cursor = self.stream.cursor
        heads = dec.typed_heads(records, cursor)
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
        values = dec.embedded_values([h[3] for h in live], embeds)
        decoded = {e: dec.decode_page(values[e], e, ids, parent=self.parent) for e in embeds}
        for table in self.link_tables:
            rows = dec.EMBEDS[table.embed].rows
            rows(self._columns[table.name], ids, versions, decoded[table.embed])

    def add_links(self, ids: Iterable[int], items: Iterable[Mapping[str, Any]]) -> None:
        """The current links of ``ids`` from a /links answer (items of ``_embedded.links``)."""
        from kommo_dagster.kommo import link_decoding as dec

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
            rows = dec.decode(value, table.embed, where=where)
            dec.EMBEDS[table.embed].rows(self._columns[table.name], [parent], [None], [rows])

    def tables(self) -> dict[str, pa.Table]:
        """Each link table's rows (with `VERSION`) as Arrow."""
        return {table.name: self.table(table) for table in self.link_tables}

    def table(self, table: LinkTable) -> pa.Table:
        """The rows of one of its link tables (with `VERSION`) as Arrow."""
        import pyarrow as pa

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
        import pyarrow as pa

        return pa.table({"id": pa.array(sorted(set(self.parent_ids)), pa.int64())})


__all__ = ["LinkRows"]
