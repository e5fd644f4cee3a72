"""The one declaration of the Kommo streams: the only list of them in the project.

Everything that differs between streams lives here: the endpoint, the key of the list inside
``_embedded``, the cursor, the paging, the ``with=`` expansions the contract needs, the parent a
stream is read per record of, the references between tables, and the columns. The columns come
from the contract files (`kommo_dagster.contract`); this module adds the HTTP side and where each
column is read from in the API record. Assets, DuckDB schemas, checks, docs, the demo and the
tests' stream lists are all derived from `STREAMS`, so a new stream is one entry of `ENDPOINTS`
plus its contract entry, nowhere else.

Contract entries with ``derived_from`` are tables computed from another stream's table without a
request to Kommo; they are left out of `STREAMS` on purpose (`DERIVED_TABLES` names them), so
they never become extracted assets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kommo_dagster.contract import contract_streams
from kommo_dagster.kommo import unsorted

# "date" and "number" appear only in derived tables (kommo_activity_streams.json).
ColumnType = Literal["integer", "string", "boolean", "date", "number"]
SyncType = Literal["incremental", "full_table"]
# How the client pages a stream (see kommo_dagster.kommo.walks for why each is safe):
# keyset: order[cursor]=asc, `from` moves to the last cursor seen; by_id: offset pages ordered by
# id inside a cursor window; newest_first: offset pages in the API's own newest-first order;
# pages: offset pages following _links.next; single: one unpaged request; per_parent: the
# stream's path once per parent id (paged when the stream has a page size).
Paging = Literal["keyset", "by_id", "newest_first", "pages", "single", "per_parent"]

DUCKDB_TYPES: Mapping[str, str] = {
    "integer": "BIGINT",
    "string": "VARCHAR",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "number": "DOUBLE",
}

MAX_PAGE_SIZE = 250
# Kommo documents 250 for events too, but answers 50 rows to limit=250; 100 is honoured.
EVENTS_PAGE_SIZE = 100
# Custom-field definitions come at most 50 a page whatever `limit` asks for.
CUSTOM_FIELDS_PAGE_SIZE = 50


@dataclass(frozen=True, kw_only=True)
class Column:
    """One contract column and where its value sits in an API record.

    ``source`` is the key path into the record (``("_embedded", "tags")`` for tags). A path that
    runs into a missing key, a null or a non-object (Kommo's ``[]`` for an empty task result)
    yields NULL. ``is_json`` columns hold the JSON text of the value found there: the bytes
    Kommo sent (`kommo_dagster.kommo.decoding`), or the value re-serialized compactly when its
    page was unlike the typed records' shape (`kommo_dagster.kommo.records`).
    """

    name: str
    type: ColumnType
    description: str
    # Keys, or list indexes (the first lead of an inbox entry), from the record down.
    source: tuple[str | int, ...]
    is_json: bool

    @classmethod
    def from_contract(
        cls, spec: Mapping[str, str], *, source: tuple[str | int, ...] | None = None
    ) -> Column:
        """The column a contract entry declares; a JSON text column says "(JSON)" of itself."""
        return cls(
            name=spec["name"],
            type=spec["type"],  # type: ignore[arg-type]
            description=spec["description"],
            source=source or (spec["name"],),
            is_json=spec["type"] == "string" and "(JSON)" in spec["description"],
        )

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.type]


@dataclass(frozen=True, kw_only=True)
class Reference:
    """Columns of one table that hold the key of a row of another (``stream``).

    ``keys`` are the referenced table's columns, matched position by position; a status is
    identified by (pipeline_id, id), so ``leads.(pipeline_id, status_id)`` references
    ``statuses.(pipeline_id, id)``. A row whose columns are all NULL references nothing.
    """

    columns: tuple[str, ...]
    stream: str
    keys: tuple[str, ...] = ("id",)

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.keys):
            raise ValueError(f"reference to {self.stream}: {self.columns} vs keys {self.keys}")

    @property
    def column(self) -> str:
        """The column that names the referenced row (the last one; the others scope it)."""
        return self.columns[-1]

    @property
    def check_name(self) -> str:
        return f"{self.column}_in_{self.stream}"


@dataclass(frozen=True, kw_only=True)
class Stream:
    """How to fetch one stream and what its table holds."""

    name: str
    description: str
    sync: SyncType
    cursor: str | None
    path: str
    # The key of the record list inside `_embedded`; None: the response body is the one record.
    list_key: str | None
    page_size: int | None
    columns: tuple[Column, ...]
    with_: tuple[str, ...] = ()
    # The API accepts order[<cursor>]=asc, so a keyset walk on the cursor is possible.
    orderable_by_cursor: bool = False
    # with=only_deleted returns the deleted, still restorable records.
    has_deleted_list: bool = False
    # Streams read once per row of another stream's table (statuses per pipeline): that stream,
    # and this stream's column holding its id, which is also the placeholder in `path`.
    parent: str | None = None
    parent_column: str | None = None
    # Columns holding keys of other tables (the parent's included, see `all_references`).
    references: tuple[Reference, ...] = ()
    paging: Paging = "pages"
    # Extra order parameter for offset paging (tasks: by id, the only stable order they offer).
    order: tuple[tuple[str, str], ...] = ()
    # The event type Kommo records when a record of this stream is deleted, for streams whose
    # deleted records cannot be listed.
    deleted_event: str | None = None
    # The entity_type Kommo's events give this stream's records (``filter[entity][]``): every
    # change to such a record is recorded as an event stamped with the server's current time,
    # whatever updated_at the change carries, which is what the changes sensor relies on.
    event_entity: str | None = None
    # The columns that identify one version of a record: a table holds one row per key. Filled
    # in by `build_streams` when not declared: (id, cursor) for incremental streams, else id.
    key: tuple[str, ...] = ()
    # Why a response without rows can be normal, said in the asset's metadata (the inbox).
    empty_reason: str | None = None

    def __post_init__(self) -> None:
        if (self.parent is None) != (self.parent_column is None):
            raise ValueError(f"{self.name}: declare parent and parent_column together")
        if self.parent_column is not None and f"{{{self.parent_column}}}" not in self.path:
            raise ValueError(f"{self.name}: path {self.path} lacks {{{self.parent_column}}}")

    @property
    def is_incremental(self) -> bool:
        return self.sync == "incremental"

    @property
    def holds(self) -> str:
        """What the table holds: the contract's description without the endpoint some end
        with, which the asset's description and the README give with its query."""
        return self.description.split(" GET ")[0]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def all_references(self) -> tuple[Reference, ...]:
        """The declared references, after the one to the parent a stream is read from."""
        if self.parent is None or self.parent_column is None:
            return self.references
        return (Reference(columns=(self.parent_column,), stream=self.parent), *self.references)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"stream {self.name!r} has no column {name!r}")

    def path_for(self, parent_id: int) -> str:
        """The path of the request for one parent record (statuses of one pipeline)."""
        if self.parent_column is None:
            raise ValueError(f"{self.name} is not read per parent record")
        return self.path.format(**{self.parent_column: parent_id})


# Where a column is not read from the record's top-level key of the same name.
_SOURCES: Mapping[tuple[str, str], tuple[str | int, ...]] = {
    **unsorted.SOURCES,
    ("leads", "tags"): ("_embedded", "tags"),
    ("contacts", "tags"): ("_embedded", "tags"),
    ("companies", "tags"): ("_embedded", "tags"),
    # Kommo serves [] for no result and {"text": ...} once a task is completed with one.
    ("tasks", "result"): ("result", "text"),
    ("account", "timezone"): ("_embedded", "datetime_settings", "timezone"),
}


def _ref(column: str, stream: str) -> Reference:
    return Reference(columns=(column,), stream=stream)


def _notes(entity: str) -> dict:
    """Notes of one entity type: a keyset walk like the entity's own list, no deleted list
    (Kommo does not list deleted notes), ``is_pinned`` only when asked for."""
    return dict(
        path=f"/api/v4/{entity}/notes",
        list_key="notes",
        page_size=MAX_PAGE_SIZE,
        with_=("is_pinned",),
        orderable_by_cursor=True,
        paging="keyset",
        references=(_ref("entity_id", entity),),
    )


def _paged(path: str, list_key: str, page_size: int = MAX_PAGE_SIZE) -> dict:
    return dict(path=path, list_key=list_key, page_size=page_size, paging="pages")


def _per_parent(
    path: str, list_key: str, *, parent: str, parent_column: str, page_size: int | None
) -> dict:
    """A stream read once per row of ``parent``; its rows are identified within the parent
    (Kommo reuses status ids 142 and 143 in every pipeline)."""
    return dict(
        path=path,
        list_key=list_key,
        page_size=page_size,
        key=(parent_column, "id"),
        parent=parent,
        parent_column=parent_column,
        paging="per_parent",
    )


def _entity(name: str, singular: str, **extra: object) -> dict:
    """Leads, contacts, companies: a keyset walk on updated_at, a list of deleted records, and
    events of entity type ``singular`` for every change."""
    return dict(
        path=f"/api/v4/{name}",
        list_key=name,
        page_size=MAX_PAGE_SIZE,
        orderable_by_cursor=True,
        has_deleted_list=True,
        paging="keyset",
        event_entity=singular,
        **extra,
    )


# The HTTP side of each stream; the table side comes from the contract.
ENDPOINTS: Mapping[str, dict] = {
    "leads": _entity(
        "leads",
        "lead",
        # contacts, catalog_elements and source feed the link tables (kommo/links.py) from the
        # same pages; companies come embedded without asking.
        with_=("source_id", "is_price_modified_by_robot", "contacts", "catalog_elements", "source"),
        references=(
            _ref("pipeline_id", "pipelines"),
            Reference(
                columns=("pipeline_id", "status_id"), stream="statuses", keys=("pipeline_id", "id")
            ),
            _ref("loss_reason_id", "loss_reasons"),
        ),
    ),
    "contacts": _entity("contacts", "contact"),
    "companies": _entity("companies", "company"),
    # Tasks filter on updated_at but can only be ordered by created_at, complete_till or id.
    "tasks": dict(
        path="/api/v4/tasks",
        list_key="tasks",
        page_size=MAX_PAGE_SIZE,
        paging="by_id",
        order=(("order[id]", "asc"),),
        event_entity="task",
        deleted_event="task_deleted",
        references=(_ref("task_type_id", "task_types"),),
    ),
    # Events take no order parameter at all and come newest first.
    "events": dict(
        path="/api/v4/events",
        list_key="events",
        page_size=EVENTS_PAGE_SIZE,
        paging="newest_first",
    ),
    # Not paged: one response carries every pipeline, each with its statuses embedded.
    "pipelines": dict(
        path="/api/v4/leads/pipelines", list_key="pipelines", page_size=None, paging="single"
    ),
    "statuses": _per_parent(
        "/api/v4/leads/pipelines/{pipeline_id}/statuses",
        "statuses",
        parent="pipelines",
        parent_column="pipeline_id",
        page_size=None,
    ),
    "users": _paged("/api/v4/users", "users"),
    "lead_notes": _notes("leads"),
    "contact_notes": _notes("contacts"),
    "company_notes": _notes("companies"),
    "lead_custom_fields": _paged(
        "/api/v4/leads/custom_fields", "custom_fields", CUSTOM_FIELDS_PAGE_SIZE
    ),
    "contact_custom_fields": _paged(
        "/api/v4/contacts/custom_fields", "custom_fields", CUSTOM_FIELDS_PAGE_SIZE
    ),
    "company_custom_fields": _paged(
        "/api/v4/companies/custom_fields", "custom_fields", CUSTOM_FIELDS_PAGE_SIZE
    ),
    "lead_tags": _paged("/api/v4/leads/tags", "tags"),
    "contact_tags": _paged("/api/v4/contacts/tags", "tags"),
    "company_tags": _paged("/api/v4/companies/tags", "tags"),
    "loss_reasons": _paged("/api/v4/leads/loss_reasons", "loss_reasons"),
    "catalogs": _paged("/api/v4/catalogs", "catalogs"),
    # No updated_at filter: every catalog's elements are read whole, catalog by catalog.
    "catalog_elements": _per_parent(
        "/api/v4/catalogs/{catalog_id}/elements",
        "elements",
        parent="catalogs",
        parent_column="catalog_id",
        page_size=MAX_PAGE_SIZE,
    ),
    # The account itself is the response body: one row.
    "account": dict(
        path="/api/v4/account",
        list_key=None,
        page_size=None,
        with_=("datetime_settings",),
        paging="single",
    ),
    "task_types": dict(
        path="/api/v4/account",
        list_key="task_types",
        page_size=None,
        with_=("task_types",),
        paging="single",
    ),
}


def _extracted(contract: Mapping[str, dict]) -> dict[str, dict]:
    """The contract's tables that are read from Kommo: not those with ``derived_from``."""
    return {name: spec for name, spec in contract.items() if not spec.get("derived_from")}


def build_streams(contract: Mapping[str, dict], endpoints: Mapping[str, dict]) -> dict[str, Stream]:
    """`Stream`s of the extracted contract tables, in contract order, from their endpoints."""
    tables = _extracted(contract)
    if set(tables) != set(endpoints):
        raise RuntimeError(
            f"contract streams {sorted(tables)} differ from the declared endpoints "
            f"{sorted(endpoints)}"
        )
    streams: dict[str, Stream] = {}
    for name, spec in tables.items():
        columns = tuple(
            Column.from_contract(c, source=_SOURCES.get((name, c["name"]))) for c in spec["columns"]
        )
        endpoint = dict(endpoints[name])
        endpoint.setdefault("key", ("id", spec["cursor"]) if spec["cursor"] else ("id",))
        unknown = set(endpoint["key"]) - {c.name for c in columns}
        if unknown:
            raise RuntimeError(f"the key of {name} names columns it lacks: {sorted(unknown)}")
        streams[name] = Stream(
            name=name,
            description=spec["description"],
            sync=spec["sync"],
            cursor=spec["cursor"],
            columns=columns,
            **endpoint,
        )
    for stream in streams.values():
        for ref in stream.all_references:
            target = streams.get(ref.stream)
            missing = [c for c in ref.columns if c not in stream.column_names]
            if target is None or missing or not set(ref.keys) <= set(target.column_names):
                raise RuntimeError(f"{stream.name}: reference {ref} names unknown tables/columns")
    return streams


# The contract's tables, and the incoming leads declared in its format (kommo/unsorted.py).
STREAMS: Mapping[str, Stream] = build_streams(
    {**contract_streams(), **unsorted.CONTRACT}, {**ENDPOINTS, **unsorted.ENDPOINTS}
)
INCREMENTAL_STREAMS: tuple[str, ...] = tuple(n for n, s in STREAMS.items() if s.is_incremental)
FULL_TABLE_STREAMS: tuple[str, ...] = tuple(n for n, s in STREAMS.items() if not s.is_incremental)
# Contract tables built from other tables without a request (not streams of this client).
DERIVED_TABLES: tuple[str, ...] = tuple(
    n for n, s in contract_streams().items() if s.get("derived_from")
)


def get_stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown Kommo stream {name!r}; known: {', '.join(STREAMS)}") from None


__all__ = [
    "DERIVED_TABLES",
    "DUCKDB_TYPES",
    "ENDPOINTS",
    "FULL_TABLE_STREAMS",
    "INCREMENTAL_STREAMS",
    "STREAMS",
    "Column",
    "Reference",
    "Stream",
    "build_streams",
    "get_stream",
]
