"""The rows of the link tables (`kommo_dagster.kommo.links`), gathered from the pages that carry
them: the embedded lists ride along as raw JSON, decoded by `kommo_dagster.kommo.link_decoding`
with the first page. A run's module that imports neither msgspec nor PyArrow itself, so that a
run's first request does not wait for them (the client imports them beside it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kommo_dagster.kommo.errors import KommoContractError
from kommo_dagster.kommo.links import VERSION, LinkTable, link_tables_of
from kommo_dagster.kommo.records import typed_values
from kommo_dagster.kommo.streams import get_stream

if TYPE_CHECKING:
    import pyarrow as pa

    from kommo_dagster.kommo.link_decoding import Columns


# Parents whose raw values are parsed by Arrow at once: a few MiB of JSON.
FLUSH_ROWS = 10_000


class LinkRows:
    """The link rows of one parent stream's records, and the parents whose links they replace.

    `add` reads a page of the parent's records (typed or dicts); `add_links` the items of a
    ``/links`` answer. `tables` gives each link table's rows as Arrow, with the parent's cursor
    value in `VERSION` (the newest version of a record wins), and `parent_ids` the parents
    whose rows a write removes first (every record seen, so a link removed in Kommo goes).
    `parent_heads` adds each record's version and deletion: the newest version read of a record
    decides its links even when it has none, or is deleted, so older versions' rows are not kept.
    """

    def __init__(self, parent: str, *, tables: Sequence[LinkTable] | None = None) -> None:
        self.parent = parent
        self.stream = get_stream(parent)
        self.link_tables = tuple(tables) if tables is not None else link_tables_of(parent)
        self._columns: dict[str, Columns] = {
            t.name: [[] for _ in range(len(t.columns) + 1)] for t in self.link_tables
        }
        self._embeds = list(dict.fromkeys(t.embed for t in self.link_tables))
        # Raw values of typed pages waiting for one Arrow parse (`_flush`), and their parents.
        self._pending: dict[str, list] = {e: [] for e in self._embeds}
        self._pending_ids: list[int] = []
        self._pending_versions: list[int | None] = []
        # Arrow columns of the parsed batches, per table.
        self._chunks: dict[str, list[list[pa.Array]]] = {t.name: [] for t in self.link_tables}
        self.parent_ids: list[int] = []
        # The version and deletion of each record in `parent_ids`, position by position.
        self._parent_versions: list[int | None] = []
        self._parent_deleted: list[bool] = []
        self._parents: tuple[int, pa.Table] | None = None  # (parents read then, their heads)

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
        heads = self._with_integer_ids(heads, records)
        self.parent_ids += [h[0] for h in heads]
        self._parent_versions += [h[2] for h in heads] if cursor else [None] * len(heads)
        self._parent_deleted += [bool(h[1]) for h in heads]
        live = [h for h in heads if not h[1]]
        if not live:
            return
        ids = [h[0] for h in live]
        versions = [h[2] for h in live] if cursor else [None] * len(live)
        values = dec.embedded_values([h[3] for h in live], self._embeds)
        if all(dec.is_raw(values[e]) for e in self._embeds):
            for embed in self._embeds:
                self._pending[embed] += values[embed]
            self._pending_ids += ids
            self._pending_versions += versions
            if len(self._pending_ids) >= FLUSH_ROWS:
                self._flush()
            return
        self._add_python(ids, versions, values)

    def _with_integer_ids(self, heads: list[tuple], records: list[Any]) -> list[tuple]:
        """``heads`` with each id as the parent's table writes it: converted by the same rule
        (a numeric string is that integer), refused naming the value where the table refuses
        it. A record without an id is left out: the walk that read it reports it."""
        raw = [h[0] for h in heads]
        if all(type(i) is int for i in raw):
            return heads
        ids = typed_values(self.parent, self.stream.column("id"), raw, records)
        return [(i, *h[1:]) for i, h in zip(ids, heads, strict=True) if i is not None]

    def _add_python(self, ids: list, versions: list, values: dict[str, list]) -> None:
        """Rows through msgspec of the embedded lists in ``values``: those of a page that are
        not raw JSON, or the one list of a batch Arrow refused (the error then names the
        record)."""
        from kommo_dagster.kommo import link_decoding as dec

        for embed in values:
            decoded = dec.decode_page(values[embed], embed, ids, parent=self.parent)
            for table in self.link_tables:
                if table.embed == embed:
                    dec.EMBEDS[embed].rows(self._columns[table.name], ids, versions, decoded)

    def _flush(self) -> None:
        """Parse the pending raw values with Arrow, one call per embedded list."""
        if not self._pending_ids:
            return
        import pyarrow as pa

        from kommo_dagster.kommo import link_decoding as dec

        ids, versions = self._pending_ids, self._pending_versions
        id_array, version_array = pa.array(ids, pa.int64()), pa.array(versions, pa.int64())
        for embed in self._embeds:
            raws = self._pending[embed]
            arrays = dec.arrow_rows(raws, embed, id_array, version_array)
            if arrays is None:
                self._add_python(ids, versions, {embed: raws})
                continue
            for table in self.link_tables:
                if table.embed == embed:
                    self._chunks[table.name].append(arrays)
        self._pending = {e: [] for e in self._embeds}
        self._pending_ids, self._pending_versions = [], []

    def add_links(self, ids: Iterable[int], items: Iterable[Mapping[str, Any]]) -> None:
        """The current links of ``ids`` from a /links answer (items of ``_embedded.links``)."""
        from kommo_dagster.kommo import link_decoding as dec

        ids = list(ids)
        self.parent_ids.extend(ids)
        self._parent_versions += [None] * len(ids)
        self._parent_deleted += [False] * len(ids)
        by_type = {t.to_entity_type: t for t in self.link_tables if t.to_entity_type}
        for item in items:
            table = by_type.get(item.get("to_entity_type"))
            if table is None:
                continue
            where = f"{self.parent}/links of {item.get('entity_id')!r}"
            meta = item.get("metadata") or {}
            if not isinstance(meta, dict):
                raise KommoContractError(f"{where}: metadata {meta!r:.80} is not an object")
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

        self._flush()
        schema = table.arrow_schema
        try:
            batches = [*self._chunks[table.name], self._columns[table.name]]
            tables = [
                pa.Table.from_arrays(
                    [
                        c.cast(f.type) if isinstance(c, pa.Array) else pa.array(c, f.type)
                        for c, f in zip(columns, schema, strict=True)
                    ],
                    schema=schema,
                )
                for columns in batches
            ]
        except (pa.ArrowException, OverflowError, TypeError) as exc:
            raise KommoContractError(
                f"{table.name}: a value does not fit its column ({exc})"
            ) from None
        return pa.concat_tables(tables)

    def parent_heads(self) -> pa.Table:
        """Each record read, once: ``id`` and the version (`VERSION`) and ``is_deleted`` of its
        newest reading (of readings of one version, a deleted one, as in the ``_current``
        views), which decides its links; worked out once, for every link table of a write."""
        import pyarrow as pa
        import pyarrow.compute as pc

        count = len(self.parent_ids)
        if self._parents is None or self._parents[0] != count:
            readings = pa.table(
                {
                    "id": pa.array(self.parent_ids, pa.int64()),
                    VERSION: pa.array(self._parent_versions, pa.int64()),
                    "is_deleted": pa.array(self._parent_deleted, pa.bool_()),
                }
            )
            # Each id's readings, oldest first (no version before any), a deleted one last of a
            # version: the last of each id is the one that decides.
            unversioned_first = pc.fill_null(readings.column(VERSION), -(2**63))
            order = pc.sort_indices(
                readings.set_column(1, VERSION, unversioned_first),
                sort_keys=[
                    ("id", "ascending"),
                    (VERSION, "ascending"),
                    ("is_deleted", "ascending"),
                ],
            )
            ids = readings.column("id").take(order).combine_chunks()
            following = pa.concat_arrays([ids[1:], pa.nulls(min(count, 1), pa.int64())])
            is_last = pc.fill_null(pc.not_equal(ids, following), True)
            newest = readings.take(order).filter(is_last)
            self._parents = (count, newest)
        return self._parents[1]


__all__ = ["LinkRows"]
