"""The whole sandbox account: its catalog (users, pipelines, fields) and one table per stream.

Built deterministically from (seed, scale, window). Records are generated in a stream of dicts
straight into their tables, keeping only the few values later steps need (for the events that
accompany them), so a 500,000-lead account never holds all its dicts at once.
"""

from __future__ import annotations

import gc
import random
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, NamedTuple

import numpy as np

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.catalog_build import build_catalog
from kommo_dagster.sandbox.chats import lead_conversations
from kommo_dagster.sandbox.dictionaries import account_body, build_dictionaries, task_types
from kommo_dagster.sandbox.events import (
    ENTITY_SINGULAR,
    events_bytes,
    responsible_value,
    status_value,
)
from kommo_dagster.sandbox.links import LinkBook
from kommo_dagster.sandbox.notes import NOTE_ID_BASES, NOTE_TABLES, build_note, notes_table
from kommo_dagster.sandbox.randomness import ulids
from kommo_dagster.sandbox.records import build_company, build_contact, build_lead, build_task
from kommo_dagster.sandbox.scale import Scale
from kommo_dagster.sandbox.stage_paths import path_events
from kommo_dagster.sandbox.store import DELETED, GONE, LIVE, Table
from kommo_dagster.sandbox.timeline import bulk_size_for, deleted_mask, ids_for, timeline
from kommo_dagster.sandbox.unsorted import Inbox

INCREMENTAL = (
    "leads",
    "contacts",
    "companies",
    "tasks",
    "events",
    *NOTE_TABLES.values(),
)
WITH_DELETED = ("leads", "contacts", "companies")
# What Kommo still shows of a record in the trash (with=only_deleted): its id, its last change
# and is_deleted; the other fields come as null (amoCRM docs, leads-api, with=only_deleted; a
# captured answer in amocrm/amocrm-api-php#254). The record keeps them for a restore.
TRASH_KEEPS = frozenset(
    ("id", "updated_at", "updated_by", "is_deleted", "account_id", "_links", "_embedded")
)
LEAD_WITH_FIELDS = ("source_id", "is_price_modified_by_robot")

_ID_BASES = {
    "companies": 40_000_000,
    "contacts": 30_000_000,
    "leads": 20_000_000,
    "tasks": 50_000_000,
}


def _table(name: str) -> Table:
    if name == "leads":
        return Table(
            name,
            int_cols=("id", "updated_at", "created_at", "pipeline_id", "status_id"),
            with_fields=LEAD_WITH_FIELDS,
        )
    if name in ("contacts", "companies"):
        return Table(name, int_cols=("id", "updated_at", "created_at"))
    if name == "tasks":
        return Table(
            name,
            int_cols=(
                "id",
                "updated_at",
                "created_at",
                "complete_till",
                "entity_id",
                "responsible_user_id",
                "is_completed",
            ),
            code_cols=("entity_type",),
        )
    if name == "events":
        return Table(
            name,
            int_cols=("created_at", "entity_id", "created_by"),
            code_cols=("type", "entity_type"),
            default_order=("created_at", True),
        )
    if name in NOTE_TABLES.values():
        return notes_table(name)
    raise KeyError(name)


@contextmanager
def _generating() -> Iterator[None]:
    """Generate with the cyclic GC off, then freeze what was generated out of its reach.

    Millions of short-lived containers: the cyclic GC would rescan the growing event list over
    and over and double the start-up time. Nothing generated here forms a cycle. The account
    lives as long as the server: a full collection of a 100,000-lead account pauses every
    thread for ~80 ms, which would stamp requests arriving meanwhile late and count phantom
    rate violations.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if gc_was_enabled:
            gc.enable()


class _Skeleton(NamedTuple):
    """What every record of a deletable stream starts from (arrays, and lists for loops)."""

    ids: np.ndarray
    deleted: np.ndarray
    timeline: Any
    id_list: list[int]
    created: list[int]
    updated: list[int]
    dlist: list[bool]


def _robot_touch(
    cat: Catalog, lead_id: int, pipeline_id: int, status_id: int, ts: int
) -> tuple[Any, ...]:
    """The robot's bulk edit setting a lead's status from its pipeline's first stage."""
    first = cat.stages_by_pipeline[pipeline_id][0][1]
    before = status_value(pipeline_id, first)
    after = status_value(pipeline_id, status_id)
    return (ts, "lead_status_changed", "lead", lead_id, 0, after, before)


class Account:
    """Everything the sandbox serves. Guard every read and change with `lock`."""

    def __init__(
        self,
        *,
        seed: int,
        leads: int,
        users: int | None = None,
        start: date,
        end: date,
        base_url: str,
        subdomain: str = "sandbox",
        flavour: str = "kommo",
    ) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.scale = Scale.of(leads, users)
        self.catalog = build_catalog(
            base_url=base_url,
            seed=seed,
            scale=self.scale,
            start=start,
            end=end,
            subdomain=subdomain,
            flavour=flavour,
        )
        self.tables: dict[str, Table] = {name: _table(name) for name in INCREMENTAL}
        self._events: list[tuple[Any, ...]] = []
        with _generating():
            self._build_entity("companies", self.scale.companies, build_company)
            self._build_entity("contacts", self.scale.contacts, build_contact)
            self._build_leads()
            self._build_tasks()
            for k, (entity, table) in enumerate(NOTE_TABLES.items()):
                self._build_notes(entity, table, k)
            self._build_events()
            build_dictionaries(self.catalog, random.Random(f"{seed}:dictionaries"))
            self.links = LinkBook(self)
            self.inbox = Inbox(self)
        self.max_ts = max(
            (
                int(t.cols[c].max())
                for t in self.tables.values()
                for c in ("updated_at", "created_at")
                if c in t.cols and len(t)
            ),
            default=self.catalog.start_ts,
        )

    # --- generation ---------------------------------------------------------------------------

    def _rngs(self, name: str, k: int) -> tuple[np.random.Generator, random.Random]:
        return np.random.default_rng([self.seed, k]), random.Random(f"{self.seed}:{name}")

    def _skeleton(self, name: str, n: int, nprng: np.random.Generator) -> _Skeleton:
        """Ids, deleted mask and timeline of ``n`` records of a stream with a deleted list."""
        cat = self.catalog
        ids = ids_for(n, nprng, _ID_BASES[name])
        deleted = deleted_mask(n)
        tl = timeline(
            n,
            nprng,
            start_ts=cat.start_ts,
            end_ts=cat.end_ts,
            bulk_size=bulk_size_for(n),
            excluded=deleted,
        )
        return _Skeleton(
            ids=ids,
            deleted=deleted,
            timeline=tl,
            id_list=ids.tolist(),
            created=tl.created.tolist(),
            updated=tl.updated.tolist(),
            dlist=deleted.tolist(),
        )

    def _build_entity(self, name: str, n: int, builder: Any) -> None:
        cat = self.catalog
        nprng, rng = self._rngs(name, {"companies": 1, "contacts": 2}[name])
        ids, deleted, _, id_list, created, updated, dlist = self._skeleton(name, n, nprng)
        records = (
            builder(
                cat,
                rng,
                row=i,
                id=id_list[i],
                created_at=created[i],
                updated_at=updated[i],
                deleted=dlist[i],
            )
            for i in range(n)
        )
        table = self.tables[name]
        table.load(records, states=np.where(deleted, DELETED, LIVE))
        live_ids = ids[~deleted].tolist()
        if name == "companies":
            cat.company_ids = live_ids
        else:
            cat.contact_ids = live_ids
        singular = ENTITY_SINGULAR[name]
        for i in range(n):
            self._events.append((created[i], f"{singular}_added", singular, id_list[i], 0, [], []))
            if dlist[i]:
                self._events.append(
                    (updated[i], f"{singular}_deleted", singular, id_list[i], 0, [], [])
                )

    def _build_leads(self) -> None:
        """Leads, then the events of their lives, their chats and their field edits."""
        nprng, rng = self._rngs("leads", 3)
        sk = self._skeleton("leads", self.scale.leads, nprng)
        info = self._load_leads(sk, rng)
        self._lead_histories(sk, info, rng)
        live = np.flatnonzero(~sk.deleted).tolist()
        self._events += lead_conversations(
            self.catalog,
            random.Random(f"{self.seed}:chats"),
            leads=[(sk.id_list[i], sk.created[i], info[i][2]) for i in live],
        )
        self._lead_edits(sk, info, live, rng)

    def _load_leads(self, sk: _Skeleton, rng: random.Random) -> list[tuple[Any, ...]]:
        """Generate the leads into their table; returns each one's (pipeline_id, status_id,
        responsible_user_id, price), which its events refer to."""
        cat = self.catalog
        source_ids: list[int | None] = []
        robot: list[bool] = []
        info: list[tuple[Any, ...]] = []
        id_list, created, updated, dlist = sk.id_list, sk.created, sk.updated, sk.dlist

        def records():
            for i in range(len(id_list)):
                rec, sid, by_robot = build_lead(
                    cat,
                    rng,
                    row=i,
                    id=id_list[i],
                    created_at=created[i],
                    updated_at=updated[i],
                    deleted=dlist[i],
                )
                source_ids.append(sid)
                robot.append(by_robot)
                info.append(
                    (rec["pipeline_id"], rec["status_id"], rec["responsible_user_id"], rec["price"])
                )
                yield rec

        table = self.tables["leads"]
        table.load(records(), states=np.where(sk.deleted, DELETED, LIVE))
        table.with_values["source_id"] = source_ids
        table.with_values["is_price_modified_by_robot"] = robot
        return info

    def _lead_histories(
        self, sk: _Skeleton, info: list[tuple[Any, ...]], rng: random.Random
    ) -> None:
        """Each lead's creation, deletion (or a deletion undone) and walk through the stages."""
        cat = self.catalog
        ev = self._events
        id_list, created, updated, dlist = sk.id_list, sk.created, sk.updated, sk.dlist
        bulk = set(sk.timeline.bulk_rows.tolist())
        paths_rng = random.Random(f"{self.seed}:stage_paths")
        movers = [0, *cat.user_ids]
        for i in range(len(id_list)):
            lid = id_list[i]
            pipeline_id, status_id, _, _ = info[i]
            ev.append(
                (created[i], "lead_added", "lead", lid, cat.user(rng, robot_share=0.2), [], [])
            )
            if dlist[i]:
                ev.append((updated[i], "lead_deleted", "lead", lid, cat.user(rng), [], []))
            elif i % 97 == 50 and updated[i] > created[i]:
                t = rng.randint(created[i], updated[i])
                ev.append((t, "lead_deleted", "lead", lid, cat.user(rng), [], []))
                ev.append((t, "lead_restored", "lead", lid, cat.user(rng), [], []))
            walk = (
                path_events(
                    cat,
                    paths_rng,
                    lead_id=lid,
                    pipeline_id=pipeline_id,
                    status_id=status_id,
                    created_at=created[i],
                    updated_at=updated[i],
                    by=movers,
                    robot_last=i in bulk,
                )
                if not dlist[i]
                else []
            )
            ev += walk
            if i in bulk and not walk:
                # The robot's bulk edit also touched the leads with no walk (still incoming).
                ev.append(_robot_touch(cat, lid, pipeline_id, status_id, updated[i]))

    def _lead_edits(
        self, sk: _Skeleton, info: list[tuple[Any, ...]], live: list[int], rng: random.Random
    ) -> None:
        """Field edits on random live leads: responsible user, price, name, tags."""
        cat = self.catalog
        ev = self._events
        id_list, created, updated = sk.id_list, sk.created, sk.updated
        for _ in range(self.scale.extra_events if live else 0):
            i = rng.choice(live)
            _, _, responsible, price = info[i]
            t = rng.randint(created[i], updated[i])
            # Stage moves are the leads' walks (stage_paths), not drawn here.
            kind = 1 + rng.randrange(4)
            by = cat.user(rng, robot_share=0.1)
            if kind == 1:
                after, before = responsible_value(responsible), responsible_value(cat.user(rng))
                ev.append((t, "entity_responsible_changed", "lead", id_list[i], by, after, before))
            elif kind == 2:
                after = [{"sale_field_value": {"sale": price}}]
                before = [{"sale_field_value": {"sale": rng.randrange(0, 100_000)}}]
                ev.append((t, "sale_field_changed", "lead", id_list[i], by, after, before))
            elif kind == 3:
                name = texts.MESSY_NAMES[i % len(texts.MESSY_NAMES)]
                after = [{"name_field_value": {"name": name}}]
                ev.append((t, "name_field_changed", "lead", id_list[i], by, after, []))
            else:
                tag = rng.choice(cat.tags["leads"])
                after = [{"tag": {"name": tag["name"]}}]
                ev.append((t, "entity_tag_added", "lead", id_list[i], by, after, []))

    def _build_tasks(self) -> None:
        cat = self.catalog
        n = self.scale.tasks
        nprng, rng = self._rngs("tasks", 4)
        ids = ids_for(n, nprng, _ID_BASES["tasks"])
        tl = timeline(
            n, nprng, start_ts=cat.start_ts, end_ts=cat.end_ts, bulk_size=bulk_size_for(n)
        )
        id_list, created, updated = ids.tolist(), tl.created.tolist(), tl.updated.tolist()
        leads = self.tables["leads"].rows_in_state(LIVE)
        lead_ids = [self.tables["leads"].ids[r] for r in leads.tolist()]
        targets = {"leads": lead_ids, "contacts": cat.contact_ids, "companies": cat.company_ids}

        def entity(i: int) -> tuple[str, int] | None:
            if i % 40 == 17:
                return None
            r = rng.random()
            kind = "leads" if r < 0.62 else "contacts" if r < 0.88 else "companies"
            if i % 40 == 29:
                kind = "companies"
            pool = targets[kind] or lead_ids
            return (kind, rng.choice(pool)) if pool else None

        def records():
            for i in range(n):
                link = entity(i)
                rec = build_task(
                    cat,
                    rng,
                    row=i,
                    id=id_list[i],
                    created_at=created[i],
                    updated_at=updated[i],
                    entity=link,
                )
                if i % 3 == 0:
                    self._events.append(
                        (created[i], "task_added", "task", id_list[i], rec["created_by"], [], [])
                    )
                yield rec

        self.tables["tasks"].load(records(), states=np.full(n, LIVE))
        # Ids in the gaps belonged to tasks deleted before; their deletions are in the events.
        gaps = sorted(set(range(id_list[0], id_list[-1])) - set(id_list)) if id_list else []
        gaps = gaps[:: max(1, n // 50)]
        for k, tid in enumerate(gaps):
            t = cat.start_ts + (k * 7_919) % (cat.end_ts - cat.start_ts)
            self._events.append((t, "task_deleted", "task", tid, cat.user(rng), [], []))

    def _build_notes(self, entity: str, name: str, k: int) -> None:
        """Notes on live records of ``entity``, with boundary seconds and a crowded second."""
        cat = self.catalog
        n = self.scale.notes[name]
        nprng, rng = self._rngs(name, 10 + k)
        owners = self.tables[entity].rows_in_state(LIVE).tolist()
        if not owners:
            return
        owner_ids = [self.tables[entity].ids[r] for r in owners]
        ids = ids_for(n, nprng, NOTE_ID_BASES[name]).tolist()
        tl = timeline(
            n, nprng, start_ts=cat.start_ts, end_ts=cat.end_ts, bulk_size=bulk_size_for(n)
        )
        created, updated = tl.created.tolist(), tl.updated.tolist()
        pinned: list[bool] = []

        def records():
            for i in range(n):
                rec, is_pinned = build_note(
                    cat,
                    rng,
                    row=i,
                    id=ids[i],
                    entity=entity,
                    entity_id=owner_ids[int(rng.random() * len(owner_ids))],
                    created_at=created[i],
                    updated_at=updated[i],
                )
                pinned.append(is_pinned)
                yield rec

        table = self.tables[name]
        table.load(records(), states=np.full(n, LIVE))
        table.with_values["is_pinned"] = pinned

    def _build_events(self) -> None:
        """Serialise the collected events, oldest first, ids (ULIDs) ascending within a second."""
        cat = self.catalog
        raw = self._events
        self._events = []
        nprng = np.random.default_rng([self.seed, 5])
        created = np.fromiter((e[0] for e in raw), dtype=np.int64, count=len(raw))
        ms = created * 1000 + nprng.integers(0, 1000, len(raw))
        ids = ulids(ms, nprng)
        # The ULID starts with the millisecond, so sorting ids sorts by created_at too.
        order = np.argsort(ids, kind="stable").tolist()
        id_list = [b.decode() for b in ids[order].tolist()]
        events = [raw[i] for i in order]
        bodies = events_bytes(cat, id_list, events)
        self.tables["events"].load_serialised(
            bodies,
            ids=id_list,
            ints={
                "created_at": created[order],
                "entity_id": [e[3] for e in events],
                "created_by": [e[4] for e in events],
            },
            codes={"type": [e[1] for e in events], "entity_type": [e[2] for e in events]},
            states=np.full(len(events), LIVE),
        )

    # --- reading ------------------------------------------------------------------------------

    def records(self, stream: str) -> list[dict[str, Any]]:
        """Current records of a stream as the API serves them (with their with= fields).

        Incremental streams include deleted leads/contacts/companies (is_deleted true, shown as
        with=only_deleted shows them: see `served_record`) but not tasks deleted for good.
        """
        with self.lock:
            if stream in self.tables:
                t = self.tables[stream]
                return [
                    served_record(t, r, with_fields=t.with_fields)
                    for r in t.rows_in_state(LIVE, DELETED).tolist()
                ]
            if stream == "account":
                with_ = {"datetime_settings"}
                body = account_body(
                    self.catalog,
                    with_,
                    base_url=self.catalog.base_url,
                    unsorted_on=self.inbox.enabled,
                )
                return [body]
            if stream == "task_types":
                return task_types(self.catalog)
            held = [c for c in self.catalog.collections.values() if c.table == stream]
            if held:
                return [dict(item) for c in held for item in c.items]
            if stream == "pipelines":
                return [
                    {k: v for k, v in p.items() if k != "_embedded"}
                    | {"_embedded": {"statuses": list(p["_embedded"]["statuses"])}}
                    for p in self.catalog.pipelines
                ]
            if stream == "statuses":
                return [s for p in self.catalog.pipelines for s in p["_embedded"]["statuses"]]
            if stream == "users":
                return [dict(u) for u in self.catalog.users]
            if stream == "incoming_leads":
                return [dict(e) for e in self.inbox.current()]
            raise KeyError(f"unknown stream {stream!r}")

    def live_rows(self, stream: str) -> np.ndarray:
        return self.tables[stream].rows_in_state(LIVE)

    def deleted_rows(self, stream: str) -> np.ndarray:
        return self.tables[stream].rows_in_state(DELETED)


def served_record(table: Table, row: int, *, with_fields: Iterable[str] = ()) -> dict[str, Any]:
    """A row's record as the API serves it: the one place of the trash rule, so the API's
    with=only_deleted pages and `Account.records` (the ground truth) cannot drift apart. A
    deleted record shows what `TRASH_KEEPS` names; its other fields come as null."""
    record = table.record(row, with_fields=with_fields)
    if table.state[row] != DELETED:
        return record
    return {k: v if k in TRASH_KEEPS else None for k, v in record.items()}


__all__ = [
    "DELETED",
    "GONE",
    "INCREMENTAL",
    "LEAD_WITH_FIELDS",
    "LIVE",
    "TRASH_KEEPS",
    "WITH_DELETED",
    "Account",
    "served_record",
]
