"""Churn: the account changes while a client pages through it.

Each step updates, creates, deletes (and optionally restores) records and appends the events
those changes imply (lead_status_changed, entity_responsible_changed, *_added, *_deleted,
*_restored...), so both offset paging over a window and a sensor polling /api/v4/events see a
live account. Changes happen under the account lock: a page is always cut from one consistent
state, but the next page may be cut from another, which is exactly Kommo's behaviour.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.catalog import LOST, WON
from kommo_dagster.sandbox.config import ChurnConfig
from kommo_dagster.sandbox.events import (
    ENTITY_SINGULAR,
    build_event,
    responsible_value,
    status_value,
)
from kommo_dagster.sandbox.notes import NOTE_TABLES, build_note, edit_note
from kommo_dagster.sandbox.randomness import ulid
from kommo_dagster.sandbox.records import build_company, build_contact, build_lead, build_task
from kommo_dagster.sandbox.store import DELETED, GONE, LIVE
from kommo_dagster.sandbox.timeline import DAY

# The entity type (leads...) of each note table.
NOTE_ENTITIES = {table: entity for entity, table in NOTE_TABLES.items()}


class Churner:
    def __init__(self, account: Account, *, config: ChurnConfig | None, seed: int) -> None:
        self.account = account
        self.config = config or ChurnConfig()
        self.rng = random.Random(
            f"{self.config.seed if self.config.seed is not None else seed}:churn"
        )

    def now(self) -> int:
        """The churn clock: never earlier than the newest timestamp in the account."""
        clock = self.config.clock
        t = int(clock()) if clock is not None else int(time.time())
        return max(t, self.account.max_ts)

    def step(self) -> Counter[str]:
        acc, cfg = self.account, self.config
        changes: Counter[str] = Counter()
        with acc.lock:
            ts = self.now()
            for stream in cfg.streams:
                for _ in range(cfg.updates):
                    changes[f"{stream}_updated"] += self._update(stream, ts)
                for _ in range(cfg.creates):
                    changes[f"{stream}_created"] += self._create(stream, ts)
                for _ in range(cfg.deletes):
                    changes[f"{stream}_deleted"] += self._delete(stream, ts)
                for _ in range(cfg.restores):
                    changes[f"{stream}_restored"] += self._restore(stream, ts)
            acc.max_ts = max(acc.max_ts, ts)
        return +changes

    # --- helpers ------------------------------------------------------------------------------

    def _pick_row(self, stream: str, state: int) -> int | None:
        rows = self.account.tables[stream].rows_in_state(state)
        if not len(rows):
            return None
        return int(rows[self.rng.randrange(len(rows))])

    def event(
        self,
        ts: int,
        type_: str,
        entity_type: str,
        entity_id: int,
        by: int,
        after: list[Any] | None = None,
        before: list[Any] | None = None,
    ) -> None:
        cat = self.account.catalog
        rec = build_event(
            cat,
            id=ulid(ts * 1000 + self.rng.randrange(1000), self.rng),
            type=type_,
            entity_type=entity_type,
            entity_id=entity_id,
            created_by=by,
            created_at=ts,
            value_after=after or [],
            value_before=before or [],
        )
        self.account.tables["events"].append(rec)

    # --- changes ------------------------------------------------------------------------------

    def _update(self, stream: str, ts: int) -> int:
        row = self._pick_row(stream, LIVE)
        if row is None:
            return 0
        if stream in NOTE_ENTITIES:
            return self._edit_note(stream, row, ts)
        table = self.account.tables[stream]
        rec = table.record(row)
        by = self.account.catalog.user(self.rng)
        kind = self.rng.randrange(4)
        if stream == "leads" and kind == 0:
            self._move_stage(rec, ts, by)
        elif stream == "leads" and kind == 1:
            self._reprice(rec, ts, by)
        elif stream == "tasks":
            self._progress_task(rec, ts, by)
        elif kind == 2 and "name" in rec:
            self._rename(stream, rec, ts, by)
        else:
            self._reassign(stream, rec, ts, by)
        rec["updated_at"] = self._stamp(ts, below=rec["updated_at"])
        rec["updated_by"] = by
        table.replace(row, rec)
        return 1

    # Each change edits the record in place and records the event it implies.

    def _move_stage(self, rec: dict[str, Any], ts: int, by: int) -> None:
        stages = self.account.catalog.stages_by_pipeline[rec["pipeline_id"]]
        others = [s for s in stages if s[1] != rec["status_id"]]
        _, status_id, stage_kind = self.rng.choice(others)
        before = status_value(rec["pipeline_id"], rec["status_id"])
        rec["status_id"] = status_id
        rec["closed_at"] = ts if stage_kind in (WON, LOST) else None
        after = status_value(rec["pipeline_id"], status_id)
        self.event(ts, "lead_status_changed", "lead", rec["id"], by, after, before)

    def _reprice(self, rec: dict[str, Any], ts: int, by: int) -> None:
        before = [{"sale_field_value": {"sale": rec["price"]}}]
        rec["price"] = self.rng.randrange(0, 1_000_000)
        after = [{"sale_field_value": {"sale": rec["price"]}}]
        self.event(ts, "sale_field_changed", "lead", rec["id"], by, after, before)

    def _progress_task(self, rec: dict[str, Any], ts: int, by: int) -> None:
        """An open task is completed; a completed one gets a new deadline."""
        if not rec["is_completed"]:
            rec["is_completed"] = True
            rec["result"] = {"text": self.rng.choice(texts.MESSY_TEXTS)}
            self.event(ts, "task_completed", "task", rec["id"], by)
            return
        before_till = rec["complete_till"]
        rec["complete_till"] = ts + self.rng.randrange(3_600, 10 * DAY)
        self.event(
            ts,
            "task_deadline_changed",
            "task",
            rec["id"],
            by,
            [{"task_deadline": {"timestamp": rec["complete_till"]}}],
            [{"task_deadline": {"timestamp": before_till}}],
        )

    def _rename(self, stream: str, rec: dict[str, Any], ts: int, by: int) -> None:
        rec["name"] = self.rng.choice(texts.MESSY_NAMES)
        after = [{"name_field_value": {"name": rec["name"]}}]
        self.event(ts, "name_field_changed", ENTITY_SINGULAR[stream], rec["id"], by, after)

    def _reassign(self, stream: str, rec: dict[str, Any], ts: int, by: int) -> None:
        before = responsible_value(rec["responsible_user_id"])
        rec["responsible_user_id"] = self.account.catalog.user(self.rng)
        after = responsible_value(rec["responsible_user_id"])
        singular = ENTITY_SINGULAR[stream]
        self.event(ts, "entity_responsible_changed", singular, rec["id"], by, after, before)

    def _stamp(self, ts: int, *, below: int) -> int:
        """The updated_at a change carries: the churn clock, or (with probability `backdate`)
        an earlier time in the data window, below the record's current ``below``."""
        start = self.account.catalog.start_ts
        # No draw at all without back-dating, so a seeded churn keeps its sequence of changes.
        if not self.config.backdate or below <= start or self.rng.random() >= self.config.backdate:
            return ts
        return self.rng.randrange(start, below)

    def _create(self, stream: str, ts: int) -> int:
        acc, cat, rng = self.account, self.account.catalog, self.rng
        table = acc.tables[stream]
        new_id = (table.ids[-1] if table.ids else 1_000_000) + rng.randrange(1, 4)
        row = len(table)
        stamp = self._stamp(ts, below=ts)
        common = dict(row=row, id=new_id, created_at=stamp, updated_at=stamp)
        if stream in NOTE_ENTITIES:
            return self._add_note(stream, common)
        if stream == "leads":
            rec, source_id, by_robot = build_lead(cat, rng, deleted=False, **common)
            table.append(
                rec,
                with_values={"source_id": source_id, "is_price_modified_by_robot": by_robot},
            )
        elif stream == "tasks":
            leads = acc.tables["leads"]
            live = leads.rows_in_state(LIVE)
            entity = (
                ("leads", leads.ids[int(live[rng.randrange(len(live))])]) if len(live) else None
            )
            rec = build_task(cat, rng, entity=entity, **common)
            table.append(rec)
        else:
            builder = build_contact if stream == "contacts" else build_company
            rec = builder(cat, rng, deleted=False, **common)
            table.append(rec)
            (cat.contact_ids if stream == "contacts" else cat.company_ids).append(new_id)
        singular = ENTITY_SINGULAR[stream]
        self.event(ts, f"{singular}_added", singular, new_id, rec["created_by"])
        return 1

    def _delete(self, stream: str, ts: int) -> int:
        row = self._pick_row(stream, LIVE)
        if row is None:
            return 0
        table = self.account.tables[stream]
        if stream in NOTE_ENTITIES:
            # Deleted notes are gone from every list, and Kommo records no event for them.
            table.set_state(row, GONE)
            return 1
        by = self.account.catalog.user(self.rng)
        singular = ENTITY_SINGULAR[stream]
        if stream == "tasks":
            # Deleted tasks are gone for good: no list returns them again.
            table.set_state(row, GONE)
            self.event(ts, "task_deleted", "task", table.ids[row], by)
            return 1
        rec = table.record(row)
        rec["is_deleted"] = True
        rec["updated_at"] = ts
        rec["updated_by"] = by
        table.replace(row, rec, state=DELETED)
        self.event(ts, f"{singular}_deleted", singular, rec["id"], by)
        return 1

    def _restore(self, stream: str, ts: int) -> int:
        if stream == "tasks" or stream in NOTE_ENTITIES:
            return 0
        row = self._pick_row(stream, DELETED)
        if row is None:
            return 0
        table = self.account.tables[stream]
        by = self.account.catalog.user(self.rng)
        rec = table.record(row)
        rec["is_deleted"] = False
        rec["updated_at"] = ts
        rec["updated_by"] = by
        table.replace(row, rec, state=LIVE)
        singular = ENTITY_SINGULAR[stream]
        self.event(ts, f"{singular}_restored", singular, rec["id"], by)
        return 1

    # --- notes --------------------------------------------------------------------------------

    def _edit_note(self, stream: str, row: int, ts: int) -> int:
        table = self.account.tables[stream]
        rec = table.record(row)
        stamp = self._stamp(ts, below=rec["updated_at"])
        edit_note(rec, self.rng, ts=stamp, by=self.account.catalog.user(self.rng))
        table.replace(row, rec)
        return 1

    def _add_note(self, stream: str, common: dict[str, Any]) -> int:
        entity = NOTE_ENTITIES[stream]
        owner = self._pick_row(entity, LIVE)
        if owner is None:
            return 0
        owners = self.account.tables[entity]
        rec, is_pinned = build_note(
            self.account.catalog,
            self.rng,
            entity=entity,
            entity_id=owners.ids[owner],
            **common,
        )
        self.account.tables[stream].append(rec, with_values={"is_pinned": is_pinned})
        return 1
