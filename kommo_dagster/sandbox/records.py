"""Leads, contacts, companies and tasks: the same seed and scale always give the same records.

Each record is built as the dict Kommo would serve, at ids and timestamps `timeline.py` draws,
and serialised once to bytes (orjson) by `store.Table`. Builders take a `random.Random`, so churn
(`churn.py`) creates new records with exactly the code that generated the first ones.

Every awkward case is placed by row number rather than left to chance, so an account of a few
hundred leads already holds all of them: the `MESSY_*` strings, every custom-field type
(`custom_fields.py`), records at 00:00:00 and 23:59:59 UTC and a robot's bulk edit of more than
250 records in one second (`timeline.py`), deleted records, unlinked tasks, empty task results.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import LOST, OPEN, UNSORTED, WON, Catalog
from kommo_dagster.sandbox.custom_fields import custom_fields_values
from kommo_dagster.sandbox.randomness import below, between, pick
from kommo_dagster.sandbox.timeline import DAY

# Every seventh row takes a messy string, so that each exists in a small account.
MESSY_EVERY = 7  # row % 7 == 3 takes the next messy string


def _messy(row: int) -> str | None:
    if row % MESSY_EVERY == 3:
        return texts.MESSY_NAMES[(row // MESSY_EVERY) % len(texts.MESSY_NAMES)]
    return None


def _tags(cat: Catalog, entity: str, rng: random.Random, row: int) -> list[dict[str, Any]]:
    pool = cat.tags[entity]
    if row % 13 == 0:
        return [pool[(row // 13) % len(pool)], pool[(row // 13 + 3) % len(pool)]]
    if rng.random() < 0.7:
        return []
    return rng.sample(pool, k=below(rng, 1, 4))


# --- records ----------------------------------------------------------------------------------


def build_lead(
    cat: Catalog,
    rng: random.Random,
    *,
    row: int,
    id: int,
    created_at: int,
    updated_at: int,
    deleted: bool,
) -> tuple[dict[str, Any], int | None, bool]:
    """A lead as /api/v4/leads serves it, plus its `with=source_id,is_price_modified_by_robot`.

    The steps draw from `rng` in a fixed order (stage, name, price, company, people, details,
    tags, the `with` values): a seed must give the same account byte for byte, and churn draws
    from the same sequence, so a change here keeps that order.
    """
    stage = _lead_stage(cat, rng, created_at=created_at, updated_at=updated_at)
    name = _lead_name(cat, rng, row)
    price = _lead_price(rng.random(), row)
    companies = _company_links(cat, rng, share=0.35)
    record = {
        "id": id,
        "name": name,
        "price": price,
        "responsible_user_id": cat.user(rng),
        "group_id": pick(rng, cat.group_ids),
        "status_id": stage.status_id,
        "pipeline_id": stage.pipeline_id,
        "loss_reason_id": _loss_reason_id(cat, rng, stage.kind),
        "created_by": cat.user(rng, robot_share=0.2),
        "updated_by": cat.user(rng, robot_share=0.2),
        "created_at": created_at,
        "updated_at": updated_at,
        "closed_at": stage.closed_at,
        **_lead_details(cat, rng, row=row, created_at=created_at, deleted=deleted),
        "_links": cat.href(f"/api/v4/leads/{id}"),
        "_embedded": {"tags": _tags(cat, "leads", rng, row), "companies": companies},
    }
    source_id = None if rng.random() < 0.6 else pick(rng, (11_001, 11_002, 11_003))
    return record, source_id, rng.random() < 0.15


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 5 times as much
class _LeadStage:
    """Where a lead stands: its pipeline, its stage's kind and id, and when it was closed."""

    pipeline_id: int
    kind: str
    status_id: int
    closed_at: int | None


def _lead_stage(
    cat: Catalog, rng: random.Random, *, created_at: int, updated_at: int
) -> _LeadStage:
    """A pipeline by its share of leads, then a stage: a tenth unsorted, a fifth won, 15% lost.

    Only won and lost leads are closed, at some time of their life.
    """
    pipeline_id = cat.pipelines[bisect.bisect(cat.pipeline_cum_weights, rng.random())]["id"]
    r = rng.random()
    kind = UNSORTED if r < 0.1 else WON if r < 0.3 else LOST if r < 0.45 else OPEN
    status_id = pick(rng, cat.stage_ids[pipeline_id, kind])
    closed_at = between(rng, created_at, updated_at) if kind in (WON, LOST) else None
    return _LeadStage(pipeline_id, kind, status_id, closed_at)


def _lead_name(cat: Catalog, rng: random.Random, row: int) -> str:
    """A messy name on its rows (see `_messy`), else words, the row number, maybe a surname."""
    name = _messy(row)
    if name is None:
        name = f"{pick(rng, cat.words.lead_words)} #{row + 1}"
        if rng.random() < 0.3:
            name += f" {pick(rng, cat.words.last_names)}"
    return name


def _lead_price(r: float, row: int) -> int:
    """The price for the draw `r`: zero (a quarter, and every 50th row), large, small, or
    Kommo's int32 maximum (a client must not narrow it)."""
    if r < 0.25 or row % 50 == 7:
        return 0
    if r < 0.75:
        return int(r * 500_000)
    if r < 0.98:
        return int(r * 5_000)
    return 2_147_483_647


def _company_links(cat: Catalog, rng: random.Random, *, share: float) -> list[dict[str, Any]]:
    """The embedded company of a lead or a contact (with probability `share`), or none."""
    if cat.company_ids and rng.random() < share:
        cid = pick(rng, cat.company_ids)
        return [{"id": cid, "_links": cat.href(f"/api/v4/companies/{cid}")}]
    return []


def _loss_reason_id(cat: Catalog, rng: random.Random, kind: str) -> int | None:
    """Most lost leads give a reason; no other lead draws for one."""
    return pick(rng, cat.loss_reasons)["id"] if kind == LOST and rng.random() < 0.7 else None


def _closest_task_at(
    rng: random.Random, created_at: int, *, none_share: float, days: int
) -> int | None:
    """No open task (with probability `none_share`), else one due 1 to `days` days after the
    record was created."""
    if rng.random() < none_share:
        return None
    return created_at + below(rng, DAY, days * DAY)


def _lead_details(
    cat: Catalog, rng: random.Random, *, row: int, created_at: int, deleted: bool
) -> dict[str, Any]:
    """The fields after a lead's dates, in the API's order: its next task, custom fields, and
    the score and labor cost most leads leave empty."""
    return {
        "closest_task_at": _closest_task_at(rng, created_at, none_share=0.5, days=40),
        "is_deleted": deleted,
        "custom_fields_values": custom_fields_values(cat, "leads", rng, row),
        "score": None if rng.random() < 0.8 else int(rng.random() * 101),
        "account_id": cat.account_id,
        "labor_cost": None if rng.random() < 0.9 else int(rng.random() * 100_000),
        "is_price_computed": rng.random() < 0.1,
    }


def _person(words: texts.Words, rng: random.Random, row: int) -> tuple[str, str, str]:
    messy = _messy(row)
    if messy is not None:
        # Kommo keeps whatever was typed: sometimes only `name`, with empty first/last names.
        return messy, (messy if row % 2 else ""), ""
    first, last = pick(rng, words.first_names), pick(rng, words.last_names)
    if row % 31 == 9:
        return first, first, ""
    return f"{first} {last}", first, last


def build_contact(
    cat: Catalog,
    rng: random.Random,
    *,
    row: int,
    id: int,
    created_at: int,
    updated_at: int,
    deleted: bool,
) -> dict[str, Any]:
    """A contact as /api/v4/contacts serves it: a person's names, maybe a company.

    Draws its names, then its company, then `_party`'s fields: a seed's account and churn
    depend on that order.
    """
    name, first, last = _person(cat.words, rng, row)
    companies = _company_links(cat, rng, share=0.5)
    return _party(
        cat,
        rng,
        "contacts",
        row=row,
        id=id,
        created_at=created_at,
        updated_at=updated_at,
        deleted=deleted,
        names={"name": name, "first_name": first, "last_name": last},
        robot_share=0.15,
        no_task_share=0.6,
        flags={"is_unsorted": row % 29 == 4},
        embedded={"companies": companies},
    )


def build_company(
    cat: Catalog,
    rng: random.Random,
    *,
    row: int,
    id: int,
    created_at: int,
    updated_at: int,
    deleted: bool,
) -> dict[str, Any]:
    """A company as /api/v4/companies serves it: a messy name on its rows, else words and a
    surname; then `_party`'s fields, drawn in their order."""
    name = _messy(row)
    if name is None:
        name = f"{pick(rng, cat.words.company_words)} {pick(rng, cat.words.last_names)}"
    return _party(
        cat,
        rng,
        "companies",
        row=row,
        id=id,
        created_at=created_at,
        updated_at=updated_at,
        deleted=deleted,
        names={"name": name},
        robot_share=0.1,
        no_task_share=0.7,
        flags={},
        embedded={},
    )


def _party(
    cat: Catalog,
    rng: random.Random,
    entity: str,
    *,
    row: int,
    id: int,
    created_at: int,
    updated_at: int,
    deleted: bool,
    names: dict[str, str],
    robot_share: float,
    no_task_share: float,
    flags: dict[str, Any],
    embedded: dict[str, Any],
) -> dict[str, Any]:
    """The fields contacts and companies share, in the API's key order, around what differs.

    `names` follow the id, `flags` follow is_deleted and `embedded` follows the tags. The
    draws run in the keys' order (users, group, next task, custom fields, tags), after the
    caller's own draws: a change here changes every seed's account.
    """
    return {
        "id": id,
        **names,
        "responsible_user_id": cat.user(rng),
        "group_id": pick(rng, cat.group_ids),
        "created_by": cat.user(rng, robot_share=robot_share),
        "updated_by": cat.user(rng, robot_share=robot_share),
        "created_at": created_at,
        "updated_at": updated_at,
        "closest_task_at": _closest_task_at(rng, created_at, none_share=no_task_share, days=30),
        "is_deleted": deleted,
        **flags,
        "custom_fields_values": custom_fields_values(cat, entity, rng, row),
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/{entity}/{id}"),
        "_embedded": {"tags": _tags(cat, entity, rng, row), **embedded},
    }


def build_task(
    cat: Catalog,
    rng: random.Random,
    *,
    row: int,
    id: int,
    created_at: int,
    updated_at: int,
    entity: tuple[str, int] | None,
) -> dict[str, Any]:
    """A task; `entity` is (plural entity type, id) or None for a task linked to nothing."""
    completed = row % 3 == 1 or rng.random() < 0.2
    if not completed:
        result: Any = []
    elif row % 6 == 1:
        result = {"text": texts.MESSY_TEXTS[(row // 6) % len(texts.MESSY_TEXTS)]}
    else:
        result = [] if rng.random() < 0.5 else {"text": pick(rng, texts.MESSY_TEXTS)}
    text = texts.MESSY_TEXTS[row % len(texts.MESSY_TEXTS)] if row % 4 == 2 else ""
    if not text:
        text = f"{pick(rng, ('Позвонить', 'Ligar', 'Call', 'Enviar proposta'))} #{row + 1}"
    return {
        "id": id,
        "created_by": cat.user(rng, robot_share=0.1),
        "updated_by": cat.user(rng, robot_share=0.1),
        "created_at": created_at,
        "updated_at": updated_at,
        "responsible_user_id": cat.user(rng),
        "group_id": pick(rng, cat.group_ids),
        "entity_id": entity[1] if entity else None,
        "entity_type": entity[0] if entity else None,
        "duration": pick(rng, (0, 0, 900, 1800, 3600)),
        "is_completed": completed,
        "task_type_id": pick(rng, cat.task_type_ids),
        "text": text,
        "result": result,
        "complete_till": created_at + below(rng, -DAY, 20 * DAY),
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/tasks/{id}"),
    }
