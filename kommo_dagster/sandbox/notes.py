"""Notes on leads, contacts and companies, as /api/v4/{entity}/notes serves them.

Notes are records of their own: incremental by updated_at like their entities, with a robot's
bulk edit of more than one page in one second, boundary seconds, every note type Kommo documents
with its own ``params``, and ``is_pinned`` served only with ``with=is_pinned``. Every note
belongs to a live record of its entity type. Deleted notes are gone from every list.
"""

from __future__ import annotations

import random
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.randomness import below, between, pick
from kommo_dagster.sandbox.store import Table

# The note tables by the entity type in their path, and the id range of each.
NOTE_TABLES = {"leads": "lead_notes", "contacts": "contact_notes", "companies": "company_notes"}
NOTE_ID_BASES = {"lead_notes": 60_000_000, "contact_notes": 63_000_000, "company_notes": 66_000_000}
NOTE_WITH_FIELDS = ("is_pinned",)
NOTE_TYPES = (
    "common",
    "call_in",
    "call_out",
    "service_message",
    "sms_in",
    "sms_out",
    "attachment",
    "geolocation",
    "extended_service_message",
)


def notes_table(name: str) -> Table:
    return Table(
        name,
        int_cols=("id", "updated_at", "created_at", "entity_id"),
        code_cols=("note_type",),
        with_fields=NOTE_WITH_FIELDS,
    )


def _phone(rng: random.Random, row: int) -> str:
    return f"+55 11 9{below(rng, 10**7, 10**8)}" if row % 2 else f"8 (495) {row:07d}"


def call_params(rng: random.Random, row: int) -> dict[str, Any]:
    """A call's params as telephony integrations write them: the duration mostly in seconds,
    sometimes as text ("1:05", a numeric string) or absent; ``call_status`` (1-7) and
    ``call_result`` only from some integrations."""
    params: dict[str, Any] = {
        "uniq": f"{row:08x}-call",
        "source": pick(rng, ("onlinePBX", "Zadarma", "телефония")),
        "link": f"https://records.example.com/{row}.mp3" if row % 3 else "",
        "phone": _phone(rng, row),
    }
    odd = row % 13
    if odd == 4:
        params["duration"] = pick(rng, ("1:05", "65 сек", ""))
    elif odd == 8:
        params["duration"] = str(below(rng, 1, 900))
    elif odd != 11:
        params["duration"] = pick(rng, (0, 7, 42, 65, 180, 600, 3_601))
    if rng.random() < 0.6:
        params["call_status"] = between(rng, 1, 7)
        if rng.random() < 0.5:
            params["call_result"] = pick(rng, ("Договорились о встрече", "Not interested", ""))
    return params


def note_params(note_type: str, rng: random.Random, row: int) -> dict[str, Any]:
    text = texts.MESSY_TEXTS[row % len(texts.MESSY_TEXTS)]
    if note_type in ("call_in", "call_out"):
        return call_params(rng, row)
    if note_type == "service_message":
        return {"service": pick(rng, ("Robot", "Salesbot", "Интеграция")), "text": text}
    if note_type in ("sms_in", "sms_out"):
        return {"text": text, "phone": _phone(rng, row)}
    if note_type == "attachment":
        return {"original_name": f"proposta «{row}».pdf", "attachment": f"{row:032x}.pdf"}
    if note_type == "geolocation":
        return {
            "text": text,
            "address": "Av. Paulista, 1000 — São Paulo",
            "longitude": "-46.6544",
            "latitude": "-23.5632",
        }
    if note_type == "extended_service_message":
        return {"service": "WhatsApp", "text": text}
    return {"text": text}


def build_note(
    cat: Catalog,
    rng: random.Random,
    *,
    row: int,
    id: int,
    entity: str,
    entity_id: int,
    created_at: int,
    updated_at: int,
) -> tuple[dict[str, Any], bool]:
    """A note of ``entity`` (leads, contacts, companies) and its ``is_pinned``."""
    note_type = NOTE_TYPES[row % len(NOTE_TYPES)]
    by = cat.user(rng, robot_share=0.15)
    record = {
        "id": id,
        "entity_id": entity_id,
        "created_by": by,
        "updated_by": by if updated_at == created_at else cat.user(rng, robot_share=0.15),
        "created_at": created_at,
        "updated_at": updated_at,
        "responsible_user_id": cat.user(rng),
        "group_id": pick(rng, cat.group_ids),
        "note_type": note_type,
        "params": note_params(note_type, rng, row),
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/{entity}/{entity_id}/notes/{id}"),
    }
    if note_type in ("call_in", "call_out") and row % 4:
        # Who the telephony gave the call to: its maker, or the note's responsible user.
        record["params"]["call_responsible"] = by if row % 4 == 1 else record["responsible_user_id"]
    return record, row % 9 == 4


def edit_note(record: dict[str, Any], rng: random.Random, *, ts: int, by: int) -> None:
    """An edit: the note's text (or its call's duration) changes and updated_at moves to ts."""
    params = record["params"]
    if "text" in params:
        params["text"] = pick(rng, texts.MESSY_TEXTS)
    elif isinstance(params.get("duration"), int):
        params["duration"] += 1
    record["updated_at"] = ts
    record["updated_by"] = by
