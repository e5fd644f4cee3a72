"""The one declaration of the eight Kommo streams.

Everything that differs between streams lives here: the endpoint, the key of the list inside
``_embedded``, the cursor, the page size, the ``with=`` expansions the contract needs, and the
columns. The columns come from the contract file; this module only adds where each one is read from
in the API record. Assets, DuckDB schemas, checks and docs are all derived from `STREAMS`, so a new
stream or column is a change to this file and the contract, nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kommo_dagster.contract import load_contract

ColumnType = Literal["integer", "string", "boolean"]
SyncType = Literal["incremental", "full_table"]
# How the client pages a stream (see kommo_dagster.kommo.walks for why each is safe):
# keyset: order[cursor]=asc, `from` moves to the last cursor seen; by_id: offset pages ordered by
# id inside a cursor window; newest_first: offset pages in the API's own newest-first order;
# pages: plain offset pages; single: one unpaged request; per_parent: one request per parent id.
Paging = Literal["keyset", "by_id", "newest_first", "pages", "single", "per_parent"]

DUCKDB_TYPES: Mapping[str, str] = {"integer": "BIGINT", "string": "VARCHAR", "boolean": "BOOLEAN"}

MAX_PAGE_SIZE = 250
# Kommo documents 250 for events too, but answers 50 rows to limit=250; 100 is honoured.
EVENTS_PAGE_SIZE = 100


@dataclass(frozen=True, kw_only=True)
class Column:
    """One contract column and where its value sits in an API record.

    ``source`` is the key path into the record (``("_embedded", "tags")`` for tags). A path that
    runs into a missing key, a null or a non-object (Kommo's ``[]`` for an empty task result)
    yields NULL. ``is_json`` columns hold the compact JSON text of the value found there.
    """

    name: str
    type: ColumnType
    description: str
    source: tuple[str, ...]
    is_json: bool

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.type]


@dataclass(frozen=True, kw_only=True)
class Stream:
    """How to fetch one stream and what its table holds."""

    name: str
    description: str
    sync: SyncType
    cursor: str | None
    path: str
    list_key: str
    page_size: int | None
    columns: tuple[Column, ...]
    with_: tuple[str, ...] = ()
    # The API accepts order[<cursor>]=asc, so a keyset walk on the cursor is possible.
    orderable_by_cursor: bool = False
    # with=only_deleted returns the deleted, still restorable records.
    has_deleted_list: bool = False
    # Full-table streams fetched once per record of another stream (statuses per pipeline).
    parent: str | None = None
    paging: Paging = "pages"
    # Extra order parameter for offset paging (tasks: by id, the only stable order they offer).
    order: tuple[tuple[str, str], ...] = ()
    # The event type Kommo records when a record of this stream is deleted, for streams whose
    # deleted records cannot be listed.
    deleted_event: str | None = None
    # The entity_type Kommo's events give this stream's records (``filter[entity][]``): every
    # change to such a record is recorded as an event stamped with the server's current time,
    # whatever updated_at the change carries, which is what the walks' closing checks rely on.
    event_entity: str | None = None
    # The columns that identify one version of a record: a table holds one row per key. Filled
    # in by `_build_streams` when not declared: (id, cursor) for incremental streams, else id.
    key: tuple[str, ...] = ()

    @property
    def is_incremental(self) -> bool:
        return self.sync == "incremental"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"stream {self.name!r} has no column {name!r}")


# Where a column is not read from the record's top-level key of the same name.
_SOURCES: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("leads", "tags"): ("_embedded", "tags"),
    ("contacts", "tags"): ("_embedded", "tags"),
    ("companies", "tags"): ("_embedded", "tags"),
    # Kommo serves [] for no result and {"text": ...} once a task is completed with one.
    ("tasks", "result"): ("result", "text"),
}

# The HTTP side of each stream; the table side comes from the contract.
_ENDPOINTS: Mapping[str, dict] = {
    "leads": dict(
        path="/api/v4/leads",
        event_entity="lead",
        page_size=MAX_PAGE_SIZE,
        with_=("source_id", "is_price_modified_by_robot"),
        orderable_by_cursor=True,
        has_deleted_list=True,
        paging="keyset",
    ),
    "contacts": dict(
        path="/api/v4/contacts",
        event_entity="contact",
        page_size=MAX_PAGE_SIZE,
        orderable_by_cursor=True,
        has_deleted_list=True,
        paging="keyset",
    ),
    "companies": dict(
        path="/api/v4/companies",
        event_entity="company",
        page_size=MAX_PAGE_SIZE,
        orderable_by_cursor=True,
        has_deleted_list=True,
        paging="keyset",
    ),
    # Tasks filter on updated_at but can only be ordered by created_at, complete_till or id.
    "tasks": dict(
        path="/api/v4/tasks",
        page_size=MAX_PAGE_SIZE,
        paging="by_id",
        order=(("order[id]", "asc"),),
        deleted_event="task_deleted",
        event_entity="task",
    ),
    # Events take no order parameter at all and come newest first.
    "events": dict(path="/api/v4/events", page_size=EVENTS_PAGE_SIZE, paging="newest_first"),
    # Not paged: one response carries every pipeline, each with its statuses embedded.
    "pipelines": dict(path="/api/v4/leads/pipelines", page_size=None, paging="single"),
    "statuses": dict(
        path="/api/v4/leads/pipelines/{pipeline_id}/statuses",
        page_size=None,
        parent="pipelines",
        paging="per_parent",
        # Kommo reuses status ids 142 and 143 in every pipeline.
        key=("pipeline_id", "id"),
    ),
    "users": dict(path="/api/v4/users", page_size=MAX_PAGE_SIZE),
}


def _is_json_column(spec: Mapping[str, str]) -> bool:
    return spec["type"] == "string" and "(JSON)" in spec["description"]


def _build_streams() -> dict[str, Stream]:
    contract = load_contract()["streams"]
    if set(contract) != set(_ENDPOINTS):
        raise RuntimeError(
            f"contract streams {sorted(contract)} differ from the declared endpoints "
            f"{sorted(_ENDPOINTS)}"
        )
    streams: dict[str, Stream] = {}
    for name, spec in contract.items():
        columns = tuple(
            Column(
                name=c["name"],
                type=c["type"],
                description=c["description"],
                source=_SOURCES.get((name, c["name"]), (c["name"],)),
                is_json=_is_json_column(c),
            )
            for c in spec["columns"]
        )
        endpoint = dict(_ENDPOINTS[name])
        endpoint.setdefault("key", ("id", spec["cursor"]) if spec["cursor"] else ("id",))
        unknown = set(endpoint["key"]) - {c.name for c in columns}
        if unknown:
            raise RuntimeError(f"the key of {name} names columns it lacks: {sorted(unknown)}")
        streams[name] = Stream(
            name=name,
            description=spec["description"],
            sync=spec["sync"],
            cursor=spec["cursor"],
            list_key=name,
            columns=columns,
            **endpoint,
        )
    return streams


STREAMS: Mapping[str, Stream] = _build_streams()
INCREMENTAL_STREAMS: tuple[str, ...] = tuple(n for n, s in STREAMS.items() if s.is_incremental)
FULL_TABLE_STREAMS: tuple[str, ...] = tuple(n for n, s in STREAMS.items() if not s.is_incremental)


def get_stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown Kommo stream {name!r}; known: {', '.join(STREAMS)}") from None


__all__ = [
    "DUCKDB_TYPES",
    "FULL_TABLE_STREAMS",
    "INCREMENTAL_STREAMS",
    "STREAMS",
    "Column",
    "Stream",
    "get_stream",
]
