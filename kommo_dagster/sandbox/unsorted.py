"""The unsorted inbox (incoming leads): ``GET /api/v4/leads/unsorted`` of the sandbox account.

Entries of all four categories (sip, mail, forms, chats), each with its category's metadata as
the API notes give it, the lead it created (a live lead in its pipeline's incoming stage, status
type 1) with that lead's pipeline, and the lead's main contact and company, paged by
``page``/``limit`` (at most 250) and filtered by ``filter[category][]`` and
``filter[pipeline_id]``. The list is the current inbox: an entry whose lead has left the
incoming stage (accepted) or was deleted (declined) is no longer served. An empty inbox, and an
account whose unsorted feature is off (``enabled = False``), answer 204 like any empty Kommo
list. Entries have no ``updated_at``.

`expected_incoming_rows` is the ground truth of the ``incoming_leads`` table, read from the
entries as served (typed columns picked from each category's metadata by hand, not by the
client's code).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from kommo_dagster.sandbox.responses import (
    Response,
    hal,
    no_content,
    page_links,
    validation_error,
)
from kommo_dagster.sandbox.store import LIVE, AccountParts

CATEGORIES = ("sip", "mail", "forms", "chats")
MAX_LIMIT = 250
DEFAULT_LIMIT = 50
_CHAT_SERVICES = ("whatsapp", "telegram", "instagram", "facebook")


class Inbox:
    """The account's unsorted entries, oldest first; `current` are those still waiting."""

    def __init__(self, account: AccountParts, *, size: int | None = None) -> None:
        self.account = account
        self.enabled = True
        cat = account.catalog
        rng = random.Random(f"{account.seed}:unsorted")
        leads = account.tables["leads"]
        n = size if size is not None else max(8, min(200, len(leads) // 20))
        if not len(leads):
            n = 0
        self.incoming = {
            (p["id"], s["id"])
            for p in cat.pipelines
            for s in p["_embedded"]["statuses"]
            if s["type"] == 1
        }
        incoming_ids = np.asarray(sorted({s for _, s in self.incoming}), dtype=np.int64)
        maybe = np.flatnonzero(
            (leads.state == LIVE) & np.isin(leads.cols["status_id"], incoming_ids)
        )
        waiting = [row for row in maybe.tolist() if self._incoming(row)][:n]
        # Oldest first, as the entries' created_at (their lead's) tell.
        waiting.sort(key=lambda row: (int(leads.cols["created_at"][row]), leads.ids[row]))
        self.entries: list[dict[str, Any]] = []
        for k, row in enumerate(waiting):
            category = CATEGORIES[k % len(CATEGORIES)]
            lead_id = leads.ids[row]
            created = int(leads.cols["created_at"][row])
            main = [c for c, is_main in account.links.contacts.get(lead_id, ()) if is_main]
            companies = account.links.companies_of("leads", lead_id)
            self.entries.append(
                {
                    "uid": f"{k:08x}-{rng.getrandbits(32):08x}-unsorted",
                    "source_uid": f"src-{category}-{k % 3}",
                    "source_name": f"{category.capitalize()} source {k % 3}",
                    "category": category,
                    "pipeline_id": int(leads.cols["pipeline_id"][row]),
                    "created_at": created,
                    "metadata": _metadata(category, k, created, rng),
                    "account_id": cat.account_id,
                    "_links": cat.href(f"/api/v4/leads/unsorted/{k}"),
                    "_embedded": {
                        "leads": [{"id": lead_id}],
                        "contacts": [{"id": c} for c in main[:1]],
                        "companies": [{"id": c} for c in companies[:1]],
                    },
                }
            )

    def _incoming(self, row: int) -> bool:
        leads = self.account.tables["leads"]
        stage = (int(leads.cols["pipeline_id"][row]), int(leads.cols["status_id"][row]))
        return leads.state[row] == LIVE and stage in self.incoming

    def current(self) -> list[dict[str, Any]]:
        """The entries still waiting: their lead is live and still in an incoming stage.

        Empty when the feature is off. The caller holds the account's lock.
        """
        if not self.enabled:
            return []
        row_of = self.account.tables["leads"].row_of
        return [
            e
            for e in self.entries
            if (row := row_of.get(e["_embedded"]["leads"][0]["id"])) is not None
            and self._incoming(row)
        ]

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
                for e in self.current()
                if (not wanted or e["category"] in wanted)
                and (not pipelines or str(e["pipeline_id"]) in pipelines)
            ]
        chunk = rows[(page - 1) * limit : page * limit]
        if not chunk:
            return no_content()
        links = page_links(href, page, more=page * limit < len(rows))
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
    rows = []
    with account.lock:
        entries = inbox.current()
    for e in entries:
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
