"""The unsorted inbox (incoming leads): ``GET /api/v4/leads/unsorted`` of the sandbox account.

Entries of all four categories (sip, mail, forms, chats), each with its category's metadata as
the API notes give it, the lead (in a pipeline's incoming stage) and contact it created, paged by
``page``/``limit`` (at most 250) and filtered by ``filter[category][]`` and
``filter[pipeline_id]``. An empty inbox, and an account whose unsorted feature is off
(``enabled = False``), answer 204 like any empty Kommo list. Entries have no ``updated_at``.

`expected_incoming_rows` is the ground truth of the ``incoming_leads`` table, read from the
entries as served (typed columns picked from each category's metadata by hand, not by the
client's code).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from kommo_dagster.sandbox.responses import Response, hal, no_content, validation_error
from kommo_dagster.sandbox.store import AccountParts

CATEGORIES = ("sip", "mail", "forms", "chats")
MAX_LIMIT = 250
DEFAULT_LIMIT = 50
_CHAT_SERVICES = ("whatsapp", "telegram", "instagram", "facebook")


class Inbox:
    """The account's current unsorted entries, oldest first."""

    def __init__(self, account: AccountParts, *, size: int | None = None) -> None:
        self.account = account
        self.enabled = True
        cat = account.catalog
        rng = random.Random(f"{account.seed}:unsorted")
        leads = account.tables["leads"]
        n = size if size is not None else max(8, min(200, len(leads) // 20))
        if not len(leads):
            n = 0
        self.entries: list[dict[str, Any]] = []
        for k in range(n):
            category = CATEGORIES[k % len(CATEGORIES)]
            created = cat.start_ts + (k * 7_777) % max(1, cat.end_ts - cat.start_ts)
            lead_id = leads.ids[k % len(leads)] if len(leads) else None
            contact_id = cat.contact_ids[k % len(cat.contact_ids)] if cat.contact_ids else None
            company = (
                cat.company_ids[k % len(cat.company_ids)]
                if k % 5 == 0 and cat.company_ids
                else None
            )
            self.entries.append(
                {
                    "uid": f"{k:08x}-{rng.getrandbits(32):08x}-unsorted",
                    "source_uid": f"src-{category}-{k % 3}",
                    "source_name": f"{category.capitalize()} source {k % 3}",
                    "category": category,
                    "pipeline_id": cat.pipelines[k % len(cat.pipelines)]["id"],
                    "created_at": created,
                    "metadata": _metadata(category, k, created, rng),
                    "account_id": cat.account_id,
                    "_links": cat.href(f"/api/v4/leads/unsorted/{k}"),
                    "_embedded": {
                        "leads": [{"id": lead_id}] if lead_id is not None else [],
                        "contacts": [{"id": contact_id}] if contact_id is not None else [],
                        "companies": [{"id": company}] if company is not None else [],
                    },
                }
            )

    def response(self, query: Any, href: Callable[[int], str]) -> Response:
        """One page of the inbox for a parsed `api.Query`; ``href(page)`` links a page."""
        if not self.enabled:
            return no_content()
        page, limit = query.page(), query.limit(MAX_LIMIT)
        wanted = [
            v for chunk in query.filters.get("category", {}).get("", []) for v in chunk.split(",")
        ]
        unknown = [c for c in wanted if c not in CATEGORIES]
        if unknown:
            return validation_error(
                "filter.category", "The value you selected is not a valid choice.", "Choice"
            )
        pipelines = query.filters.get("pipeline_id", {}).get("", [])
        with self.account.lock:
            rows = [
                e
                for e in self.entries
                if (not wanted or e["category"] in wanted)
                and (not pipelines or str(e["pipeline_id"]) in pipelines)
            ]
        chunk = rows[(page - 1) * limit : page * limit]
        if not chunk:
            return no_content()
        links: dict[str, Any] = {"self": {"href": href(page)}}
        if page * limit < len(rows):
            links["next"] = {"href": href(page + 1)}
        return hal({"_page": page, "_links": links, "_embedded": {"unsorted": chunk}})


def _metadata(category: str, k: int, created: int, rng: random.Random) -> dict[str, Any]:
    if category == "sip":
        return {
            "phone": f"+55 11 9{k:04d}-{rng.randrange(10_000):04d}",
            "called_at": created,
            "duration": rng.choice((0, 12, 95, 430)),
            "link": f"https://calls.example/{k}.mp3",
            "service_code": "sandbox_voip",
            "uniq": f"call-{k}",
            "from": "Recepção",
        }
    if category == "forms":
        return {
            "form_id": 300 + k % 4,
            "form_name": ("Contato", "Orçamento «rápido»", "Newsletter", "Demo")[k % 4],
            "form_page": "https://example.com/contato",
            "ip": f"10.0.{k % 255}.{rng.randrange(255)}",
            "form_sent_at": str(created),
            "referer": "https://google.com/",
            "visitor_uid": f"visitor-{k}",
        }
    if category == "chats":
        return {
            "from": f"client-{k}",
            "to": "sandbox",
            "received_at": created,
            "service": _CHAT_SERVICES[k % len(_CHAT_SERVICES)],
            "client": {"name": f"Cliente {k}", "avatar": None},
            "origin": {"chat_id": f"chat-{k}", "ref": None, "visitor_uid": f"visitor-{k}"},
            "last_message_text": "Olá! Quero saber o preço 😀",
            "source_name": "Chat widget",
        }
    return {
        "from": {"email": f"client{k}@example.com", "name": f"Client {k}"},
        "received_at": created,
        "subject": ("Pedido de orçamento", "Re: proposta", "", "Dúvida")[k % 4],
        "thread_id": 9_000 + k,
        "message_id": f"<{k}@mail.example>",
        "content_summary": "Bom dia, gostaria de…",
    }


def _first_id(entry: dict[str, Any], key: str) -> int | None:
    items = entry["_embedded"].get(key) or []
    return items[0]["id"] if items else None


def expected_incoming_rows(account: AccountParts) -> list[dict[str, Any]]:
    """The ``incoming_leads`` rows of the current inbox (none when the feature is off)."""
    inbox: Inbox = account.inbox
    if not inbox.enabled:
        return []
    rows = []
    for e in inbox.entries:
        meta = e["metadata"]
        rows.append(
            {
                "uid": e["uid"],
                "source_uid": e["source_uid"],
                "source_name": e["source_name"],
                "category": e["category"],
                "pipeline_id": e["pipeline_id"],
                "created_at": e["created_at"],
                "lead_id": _first_id(e, "leads"),
                "contact_id": _first_id(e, "contacts"),
                "company_id": _first_id(e, "companies"),
                "form_name": meta["form_name"] if e["category"] == "forms" else None,
                "chat_service": meta["service"] if e["category"] == "chats" else None,
                "call_duration": meta["duration"] if e["category"] == "sip" else None,
                "mail_subject": meta["subject"] if e["category"] == "mail" else None,
                "metadata": json.dumps(meta, ensure_ascii=False, separators=(",", ":")),
            }
        )
    return sorted(rows, key=lambda r: r["uid"])


__all__ = ["CATEGORIES", "Inbox", "expected_incoming_rows"]
