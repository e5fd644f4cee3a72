"""Kommo API v4 semantics: routing, paging, filters, order, `with=` and the HAL envelopes.

`KommoApi.get(path, query)` answers one authenticated GET. Everything around it (auth, rate
limit, faults, latency) happens in `service.py`; this module only knows what Kommo returns.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
import orjson

from kommo_dagster.sandbox.account import WITH_DELETED, Account, served_record
from kommo_dagster.sandbox.dictionaries import Collection, account_body
from kommo_dagster.sandbox.notes import NOTE_TABLES
from kommo_dagster.sandbox.responses import (
    Response,
    hal,
    hal_bytes,
    no_content,
    page_links,
    problem,
    validation_error,
)
from kommo_dagster.sandbox.store import DELETED, LIVE, Selection, Table

DEFAULT_LIMIT = 50
MAX_LIMIT = 250
EVENTS_MAX_LIMIT = 100
MAX_EVENT_FILTER_VALUES = 10

# Range filters (filter[x][from|to]) and order keys each list stream accepts.
RANGE_FILTERS = {
    "leads": ("updated_at", "created_at"),
    "contacts": ("updated_at", "created_at"),
    "companies": ("updated_at", "created_at"),
    "tasks": ("updated_at", "created_at"),
    "events": ("created_at",),
    **{notes: ("updated_at",) for notes in NOTE_TABLES.values()},
}
ORDER_KEYS = {
    "leads": ("updated_at", "created_at", "id"),
    "contacts": ("updated_at", "created_at", "id"),
    "companies": ("updated_at", "created_at", "id"),
    "tasks": ("created_at", "complete_till", "id"),
    "events": (),
    **{notes: ("updated_at", "id") for notes in NOTE_TABLES.values()},
}
ENTITY_FIELDS = {"leads", "contacts", "companies"}

_FILTER_RE = re.compile(r"^filter\[([A-Za-z_]+)\](?:\[([A-Za-z0-9_]*)\])?$")
_ORDER_RE = re.compile(r"^order\[([A-Za-z_]+)\]$")


class _BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _NoRows(Exception):
    """The query can match nothing (Kommo answers 204)."""


def _int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _BadRequest(
            validation_error(where, "This value should be of type int.", "Type")
        ) from None


class Query:
    """A parsed query string, keeping the original pairs to echo in `_links`."""

    def __init__(self, raw: str) -> None:
        self.pairs = parse_qsl(raw, keep_blank_values=True)
        self.filters: dict[str, dict[str, list[str]]] = {}
        self.orders: list[tuple[str, str]] = []
        self.with_: set[str] = set()
        self.page_raw: str | None = None
        self.limit_raw: str | None = None
        for k, v in self.pairs:
            if k == "page":
                self.page_raw = v
            elif k == "limit":
                self.limit_raw = v
            elif k == "with":
                self.with_.update(w.strip() for w in v.split(",") if w.strip())
            elif m := _FILTER_RE.match(k):
                name, sub = m.group(1), m.group(2)
                # filter[id]=1, filter[id][]=1 and filter[id][0]=1 all add a value.
                key = sub if sub in ("from", "to") else ""
                self.filters.setdefault(name, {}).setdefault(key, []).append(v)
            elif m := _ORDER_RE.match(k):
                self.orders.append((m.group(1), v))

    def page(self) -> int:
        if self.page_raw is None:
            return 1
        return max(1, _int(self.page_raw, "page"))

    def limit(self, maximum: int) -> int:
        if self.limit_raw is None:
            return DEFAULT_LIMIT
        value = _int(self.limit_raw, "limit")
        # Kommo ignores a limit it does not accept and serves its default.
        return value if 1 <= value <= maximum else DEFAULT_LIMIT

    def href(self, base: str, path: str, page: int) -> str:
        pairs = [(k, v) for k, v in self.pairs if k != "page"]
        pairs.append(("page", str(page)))
        return f"{base}{path}?{urlencode(pairs, safe='[],')}"


class KommoApi:
    """Answers GET requests for the account; the caller holds no lock, this takes it."""

    def __init__(self, account: Account, *, not_admin: Callable[[], bool]) -> None:
        self.account = account
        self.base_url = account.catalog.base_url
        self._not_admin = not_admin
        self._routes: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
            (re.compile(r"^/api/v4/(leads|contacts|companies|tasks|events)$"), self._list),
            (re.compile(r"^/api/v4/(leads|contacts|companies)/notes$"), self._notes),
            (re.compile(r"^/api/v4/(leads|contacts|companies)/links$"), self._links),
            (re.compile(r"^/api/v4/(leads|contacts|companies)/(\d+)/links$"), self._links_of),
            (re.compile(r"^/api/v4/leads/unsorted$"), self._unsorted),
            (re.compile(r"^/api/v4/(leads|contacts|companies|tasks)/(\d+)$"), self._one),
            (re.compile(r"^/api/v4/leads/pipelines$"), self._pipelines),
            (re.compile(r"^/api/v4/leads/pipelines/([^/]+)$"), self._pipeline),
            (re.compile(r"^/api/v4/leads/pipelines/([^/]+)/statuses$"), self._statuses),
            (re.compile(r"^/api/v4/catalogs/([^/]+)/elements$"), self._elements),
            (re.compile(r"^/api/v4/users$"), self._users),
            (re.compile(r"^/api/v4/users/(\d+)$"), self._user),
            (re.compile(r"^/api/v4/account$"), self._account),
        ]

    def get(self, path: str, raw_query: str) -> Response:
        path = path.rstrip("/") or "/"
        for pattern, handler in self._routes:
            m = pattern.match(path)
            if m:
                try:
                    return handler(path, Query(raw_query), *m.groups())
                except _BadRequest as e:
                    return e.response
                except _NoRows:
                    return no_content()
        collection = self.account.catalog.collections.get(path)
        if collection is not None:
            return self._collection(path, Query(raw_query), collection)
        return problem(404, "Not found")

    # --- the incremental streams --------------------------------------------------------------

    def _selection(self, stream: str, table: Table, q: Query) -> Selection:
        state = LIVE
        if "only_deleted" in q.with_ and stream in WITH_DELETED:
            state = DELETED
        ranges: list[tuple[str, int, int]] = []
        lists: list[tuple[str, tuple[int, ...]]] = []
        for name, parts in sorted(q.filters.items()):
            if name in RANGE_FILTERS[stream]:
                if "" in parts:
                    if stream != "events":
                        # A scalar filter[updated_at]=TS matches nothing on Kommo.
                        raise _NoRows
                    parts = {"from": parts[""], **parts}
                lo = max(
                    (_int(v, f"filter.{name}.from") for v in parts.get("from", [])), default=None
                )
                hi = min((_int(v, f"filter.{name}.to") for v in parts.get("to", [])), default=None)
                ranges.append((name, -(2**62) if lo is None else lo, 2**62 if hi is None else hi))
            elif name == "id":
                values = self._id_values(stream, table, parts.get("", []))
                lists.append(("id" if stream != "events" else "row", values))
            else:
                lists.extend(self._other_filter(stream, table, name, parts.get("", [])))
        order = None
        if q.orders:
            allowed = ORDER_KEYS[stream]
            if allowed:
                if len(q.orders) > 1:
                    raise _BadRequest(validation_error("order", "Only one order key is allowed."))
                key, direction = q.orders[0]
                if key not in allowed or direction.lower() not in ("asc", "desc"):
                    raise _BadRequest(
                        validation_error(
                            f"order.{key}", "The value you selected is not a valid choice."
                        )
                    )
                desc = direction.lower() == "desc"
                order = ("row", desc) if key == "id" else (key, desc)
        return Selection(state=state, ranges=tuple(ranges), lists=tuple(lists), order=order)

    def _id_values(self, stream: str, table: Table, raw: list[str]) -> tuple[int, ...]:
        values: list[int] = []
        for chunk in raw:
            for v in chunk.split(","):
                v = v.strip()
                if not v:
                    continue
                if stream == "events":
                    row = table.row_of.get(v)
                    values.append(-1 if row is None else row)
                else:
                    values.append(_int(v, "filter.id"))
        return tuple(sorted(set(values)))

    def _other_filter(
        self, stream: str, table: Table, name: str, raw: list[str]
    ) -> list[tuple[str, tuple[int, ...]]]:
        flat = [v.strip() for chunk in raw for v in chunk.split(",") if v.strip()]
        if stream == "events":
            if name in ("entity_id", "created_by") and len(flat) > MAX_EVENT_FILTER_VALUES:
                raise _BadRequest(
                    validation_error(
                        f"filter.{name}",
                        f"This collection should contain {MAX_EVENT_FILTER_VALUES} elements "
                        "or less.",
                        "Count",
                    )
                )
            if name == "type":
                return [("type", tuple(sorted(table.code_of("type", v) for v in flat)))]
            if name == "entity":
                return [
                    ("entity_type", tuple(sorted(table.code_of("entity_type", v) for v in flat)))
                ]
            if name in ("entity_id", "created_by"):
                return [(name, tuple(sorted(_int(v, f"filter.{name}") for v in flat)))]
        if stream == "tasks":
            if name == "is_completed" and flat:
                return [("is_completed", (1 if flat[0] in ("1", "true") else 0,))]
            if name == "entity_type":
                return [
                    ("entity_type", tuple(sorted(table.code_of("entity_type", v) for v in flat)))
                ]
            if name in ("entity_id", "responsible_user_id"):
                return [(name, tuple(sorted(_int(v, f"filter.{name}") for v in flat)))]
        if stream in NOTE_TABLES.values() and flat:
            if name == "note_type":
                return [("note_type", tuple(sorted(table.code_of("note_type", v) for v in flat)))]
            if name == "entity_id":
                return [("entity_id", tuple(sorted(_int(v, "filter.entity_id") for v in flat)))]
        # Kommo ignores filters it does not know.
        return []

    def _notes(self, path: str, q: Query, entity: str) -> Response:
        return self._list(path, q, NOTE_TABLES[entity], key="notes")

    def _list(self, path: str, q: Query, stream: str, *, key: str | None = None) -> Response:
        maximum = EVENTS_MAX_LIMIT if stream == "events" else MAX_LIMIT
        page, limit = q.page(), q.limit(maximum)
        with self.account.lock:
            table = self.account.tables[stream]
            with_fields = tuple(f for f in table.with_fields if f in q.with_)
            selection = self._selection(stream, table, q)
            rows = table.select(selection)
            offset = (page - 1) * limit
            chunk = rows[offset : offset + limit]
            if not len(chunk):
                return no_content()
            if selection.state == DELETED:
                # A record in the trash is read and nulled; a live page stays a byte slice.
                bodies = [
                    orjson.dumps(served_record(table, r, with_fields=with_fields))
                    for r in chunk.tolist()
                ]
            else:
                bodies = table.bodies_of(chunk, with_fields=with_fields)
            bodies = self.account.links.embed(stream, chunk, bodies, q.with_)
            more = offset + limit < len(rows)
        return hal_bytes(self._envelope(path, q, page, key or stream, bodies, more=more))

    def _envelope(
        self, path: str, q: Query, page: int, key: str, bodies: list[bytes], *, more: bool
    ) -> bytes:
        links = page_links(lambda n: q.href(self.base_url, path, n), page, more=more)
        return b"".join(
            (
                b'{"_page":',
                str(page).encode(),
                b',"_links":',
                orjson.dumps(links),
                b',"_embedded":{"',
                key.encode(),
                b'":[',
                b",".join(bodies),
                b"]}}",
            )
        )

    def _one(self, path: str, q: Query, stream: str, rid: str) -> Response:
        with self.account.lock:
            table = self.account.tables[stream]
            row = table.row_of.get(int(rid))
            if row is None or table.state[row] != LIVE:
                return no_content()
            with_fields = tuple(f for f in table.with_fields if f in q.with_)
            rows = np.array([row])
            bodies = table.bodies_of(rows, with_fields=with_fields)
            return hal_bytes(self.account.links.embed(stream, rows, bodies, q.with_)[0])

    # --- links and the unsorted inbox (sandbox/links.py, sandbox/unsorted.py) -----------------

    def _links(self, path: str, q: Query, entity: str) -> Response:
        raw = q.filters.get("entity_id", {}).get("", [])
        ids = [_int(v, "filter.entity_id") for c in raw for v in c.split(",") if v.strip()]
        return self.account.links.links_response(entity, ids, q.href(self.base_url, path, 1))

    def _links_of(self, path: str, q: Query, entity: str, rid: str) -> Response:
        return self.account.links.links_response(entity, [int(rid)], f"{self.base_url}{path}")

    def _unsorted(self, path: str, q: Query) -> Response:
        return self.account.inbox.response(q, lambda page: q.href(self.base_url, path, page))

    # --- pipelines and statuses ---------------------------------------------------------------

    def _find_pipeline(self, raw_id: str) -> dict[str, Any] | None:
        for p in self.account.catalog.pipelines:
            if str(p["id"]) == raw_id:
                return p
        return None

    def _pipelines(self, path: str, q: Query) -> Response:
        pipelines = self.account.catalog.pipelines
        return hal(
            {
                "_total_items": len(pipelines),
                "_links": {"self": {"href": f"{self.base_url}{path}"}},
                "_embedded": {"pipelines": pipelines},
            }
        )

    def _pipeline(self, path: str, q: Query, raw_id: str) -> Response:
        p = self._find_pipeline(raw_id)
        if p is None:
            return problem(404, "Pipeline not found")
        return hal(p)

    def _statuses(self, path: str, q: Query, raw_id: str) -> Response:
        p = self._find_pipeline(raw_id)
        if p is None:
            return problem(404, "Pipeline not found")
        statuses = p["_embedded"]["statuses"]
        return hal(
            {
                "_total_items": len(statuses),
                "_links": {"self": {"href": f"{self.base_url}{path}"}},
                "_embedded": {"statuses": statuses},
            }
        )

    # --- small paged collections --------------------------------------------------------------

    def _paged(
        self, path: str, q: Query, key: str, items: list[Any], *, max_page: int = MAX_LIMIT
    ) -> Response:
        # A collection may serve fewer per page than asked (custom fields: 50 at most).
        page, limit = q.page(), min(q.limit(MAX_LIMIT), max_page)
        offset = (page - 1) * limit
        chunk = items[offset : offset + limit]
        if not chunk:
            return no_content()
        more = offset + limit < len(items)
        links = page_links(lambda n: q.href(self.base_url, path, n), page, more=more)
        return hal(
            {
                "_total_items": len(items),
                "_page": page,
                "_page_count": -(-len(items) // limit),
                "_links": links,
                "_embedded": {key: chunk},
            }
        )

    def _collection(self, path: str, q: Query, collection: Collection) -> Response:
        return self._paged(path, q, collection.key, collection.items, max_page=collection.max_page)

    def _elements(self, path: str, q: Query, raw_id: str) -> Response:
        collection = self.account.catalog.collections.get(path)
        if collection is None:
            return problem(404, "Catalog not found")
        return self._collection(path, q, collection)

    def _user_view(self, user: dict[str, Any], with_: set[str]) -> dict[str, Any]:
        out = dict(user)
        if "uuid" in with_:
            out["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kommo-user-{user['id']}"))
        if "amojo_id" in with_:
            out["amojo_id"] = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"amojo-{user['id']}"))
        embedded: dict[str, Any] = {}
        rights = user["rights"]
        if "role" in with_:
            role = rights["role_id"]
            embedded["roles"] = [] if role is None else [{"id": role, "name": f"Role {role}"}]
        if "group" in with_:
            group = rights["group_id"]
            embedded["groups"] = [] if group is None else [{"id": group, "name": f"Отдел {group}"}]
        if embedded:
            out["_embedded"] = embedded
        return out

    def _users(self, path: str, q: Query) -> Response:
        if self._not_admin():
            return problem(403, "User is not an account administrator")
        users = [self._user_view(u, q.with_) for u in self.account.catalog.users]
        return self._paged(path, q, "users", users)

    def _user(self, path: str, q: Query, raw_id: str) -> Response:
        if self._not_admin():
            return problem(403, "User is not an account administrator")
        for u in self.account.catalog.users:
            if str(u["id"]) == raw_id:
                return hal(self._user_view(u, q.with_))
        return no_content()

    def _account(self, path: str, q: Query) -> Response:
        account = self.account
        body = account_body(
            account.catalog, q.with_, base_url=self.base_url, unsorted_on=account.inbox.enabled
        )
        return hal(body)
