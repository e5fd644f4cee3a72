"""Links between sandbox records: contacts and products of leads, their sources, and relinks.

Kommo serves a lead's companies in ``_embedded.companies`` without asking (the sandbox keeps them
in the record's bytes, as generated), and its contacts, catalog elements, source and loss reason
only behind ``with=contacts``, ``with=catalog_elements``, ``with=source`` and
``with=loss_reason``. The first three are held here, per lead id (the loss reason is the lead's
``loss_reason_id`` looked up), and spliced into ``_embedded`` when a request asks for them; so
are the other sides of these links, which Kommo also serves only when asked: a contact's leads
(``with=leads``) and a company's leads and contacts (``with=leads,contacts``), live records
only. The same book answers
``GET /api/v4/{leads|contacts|companies}/links`` (batched by ``filter[entity_id][]``, at most
`MAX_LINK_ENTITY_IDS` ids: more is a 400 like Kommo's other list limits) and
``/api/v4/{entity}/{id}/links``.

`relink` changes links the way managers do, without moving any record's ``updated_at`` (Kommo
does not promise it moves), and writes the link events in one of the `READINGS` the API notes
list: generic (``entity_linked``) or typed (``contact_linked``...), on the lead's side or the
other's, an unlink's value in ``value_before`` or as ``unlink`` in ``value_after``.

`expected_link_rows` is the ground truth of the link tables, read from this book and the records'
own ``_embedded.companies``, never with the client's code.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from kommo_dagster.sandbox.events import build_event
from kommo_dagster.sandbox.randomness import ulid
from kommo_dagster.sandbox.responses import Response, hal, no_content, validation_error
from kommo_dagster.sandbox.store import LIVE, AccountParts

# Entity ids one /links request may carry. Kommo documents no number; long lists hit 414, so the
# sandbox holds clients to a modest batch and answers more the way Kommo answers a long filter.
MAX_LINK_ENTITY_IDS = 50
SOURCES = {11_001: "Website form", 11_002: "WhatsApp Business", 11_003: "Facebook Lead Ads"}
PRICE_FIELD_ID = 960_003
LEAD_EMBEDS = ("contacts", "catalog_elements", "source", "loss_reason")
# The other sides of the links, by the stream whose records carry them when asked.
REVERSE_EMBEDS = {"contacts": ("leads",), "companies": ("leads", "contacts")}
_SINGULAR = {"leads": "lead", "contacts": "contact", "companies": "company"}
# The key of each table `expected_link_rows` answers for, as the issue states them.
LINK_KEYS: dict[str, tuple[str, ...]] = {
    "lead_contacts": ("lead_id", "contact_id"),
    "lead_companies": ("lead_id", "company_id"),
    "contact_companies": ("contact_id", "company_id"),
    "lead_products": ("lead_id", "catalog_id", "element_id"),
    "lead_sources": ("id",),
}

# (generic event or typed, on which side, where an unlink's value goes)
READINGS: tuple[tuple[str, str, str], ...] = (
    ("generic", "lead", "before"),
    ("typed", "lead", "before"),
    ("generic", "other", "after"),
    ("typed", "other", "after"),
    ("typed", "lead", "after"),
    ("generic", "other", "before"),
)


@dataclass
class Product:
    element_id: int
    catalog_id: int
    quantity: float | int
    price_id: int | None


class LinkBook:
    """Contacts, products and source of every lead, by lead id (companies stay in the bytes)."""

    def __init__(self, account: AccountParts) -> None:
        self.account = account
        rng = random.Random(f"{account.seed}:links")
        cat = account.catalog
        leads = account.tables["leads"]
        self.elements = [
            (item["catalog_id"], item["id"])
            for c in cat.collections.values()
            if c.table == "catalog_elements"
            for item in c.items
        ]
        self.contacts: dict[int, list[tuple[int, bool]]] = {}
        self.products: dict[int, list[Product]] = {}
        self.sources: dict[int, int | None] = {}
        sources = leads.with_values.get("source_id") or [None] * len(leads)
        for row, lead_id in enumerate(leads.ids):
            picked = rng.sample(
                cat.contact_ids, min(len(cat.contact_ids), rng.choice((0, 1, 1, 2, 3)))
            )
            # A few leads have contacts but no main one (Kommo allows it after an unlink).
            self.contacts[lead_id] = [(c, k == 0 and row % 23 != 5) for k, c in enumerate(picked)]
            self.products[lead_id] = [
                self._product(rng, row + k)
                for k in range(rng.choice((0, 0, 1, 2, 3)) if self.elements else 0)
            ]
            self.sources[lead_id] = sources[row]
        # Two products of one lead may be the same element: Kommo keeps one link per element.
        for lead_id, products in self.products.items():
            seen: dict[tuple[int, int], Product] = {}
            for p in products:
                seen.setdefault((p.catalog_id, p.element_id), p)
            self.products[lead_id] = list(seen.values())

    def _product(self, rng: random.Random, k: int) -> Product:
        catalog_id, element_id = rng.choice(self.elements)
        quantity: float | int = rng.choice((1, 2, 5, 0.5, 1.25, 12))
        return Product(element_id, catalog_id, quantity, PRICE_FIELD_ID if k % 3 else None)

    # --- serving ------------------------------------------------------------------------------

    def lead_embeds(self, lead_id: int, with_: Iterable[str]) -> dict[str, Any]:
        cat = self.account.catalog
        out: dict[str, Any] = {}
        for w in with_:
            if w == "contacts":
                out["contacts"] = [
                    {"id": c, "is_main": main, "_links": cat.href(f"/api/v4/contacts/{c}")}
                    for c, main in self.contacts.get(lead_id, ())
                ]
            elif w == "catalog_elements":
                out["catalog_elements"] = [
                    {"id": p.element_id, "metadata": _metadata(p)}
                    for p in self.products.get(lead_id, ())
                ]
            elif w == "source":
                sid = self.sources.get(lead_id)
                if sid is not None:
                    out["source"] = {"id": sid, "name": SOURCES[sid]}
            elif w == "loss_reason":
                # Documented as an object, served as a one-item array of the loss reason.
                reason = self._loss_reason(lead_id)
                if reason is not None:
                    out["loss_reason"] = [reason]
        return out

    def _loss_reason(self, lead_id: int) -> dict[str, Any] | None:
        leads = self.account.tables["leads"]
        reason_id = orjson.loads(leads.bodies[leads.row_of[lead_id]])["loss_reason_id"]
        reasons = self.account.catalog.collections["/api/v4/leads/loss_reasons"].items
        return next((r for r in reasons if r["id"] == reason_id), None)

    def embed(
        self, stream: str, rows: np.ndarray, bodies: list[bytes], with_: set[str]
    ) -> list[bytes]:
        """``bodies`` of ``rows`` with the asked-for embeds spliced into their ``_embedded``."""
        if stream == "leads":
            asked = [w for w in LEAD_EMBEDS if w in with_]
        else:
            asked = [w for w in REVERSE_EMBEDS.get(stream, ()) if w in with_]
        if not asked:
            return bodies
        ids = self.account.tables[stream].ids
        linked = {w: self._linked_to(stream, w) for w in asked} if stream != "leads" else {}
        out = []
        for r, body in zip(rows.tolist(), bodies, strict=True):
            record_id = ids[r]
            if stream == "leads":
                embeds = self.lead_embeds(record_id, asked)
            else:
                embeds = {w: [self._ref(w, i) for i in linked[w].get(record_id, ())] for w in asked}
            out.append(splice(body, embeds))
        return out

    def _ref(self, stream: str, record_id: int) -> dict[str, Any]:
        return {
            "id": record_id,
            "_links": self.account.catalog.href(f"/api/v4/{stream}/{record_id}"),
        }

    def _linked_to(self, stream: str, other: str) -> dict[int, list[int]]:
        """Ids of the live ``other`` records linked to each record of ``stream``, ascending."""
        out: dict[int, list[int]] = {}
        table = self.account.tables[other]
        for row in table.rows_in_state(LIVE).tolist():
            other_id = table.ids[row]
            if stream == "contacts":
                targets = [c for c, _ in self.contacts.get(other_id, ())]
            else:
                targets = self.companies_of(other, other_id)
            for target in targets:
                out.setdefault(target, []).append(other_id)
        return out

    def links_of(self, entity: str, entity_id: int) -> list[dict[str, Any]]:
        """The /links items of one record, current state."""
        out: list[dict[str, Any]] = []

        def item(to_type: str, to_id: int, metadata: Any) -> None:
            out.append(
                {
                    "entity_id": entity_id,
                    "entity_type": entity,
                    "to_entity_id": to_id,
                    "to_entity_type": to_type,
                    "metadata": metadata,
                }
            )

        if entity == "leads":
            for c, main in self.contacts.get(entity_id, ()):
                item("contacts", c, {"main_contact": main})
            for cid in self.companies_of("leads", entity_id):
                item("companies", cid, None)
            for p in self.products.get(entity_id, ()):
                item("catalog_elements", p.element_id, _metadata(p))
        elif entity == "contacts":
            for lead_id, contacts in self.contacts.items():
                for c, main in contacts:
                    if c == entity_id and self._live("leads", lead_id):
                        item("leads", lead_id, {"main_contact": main})
            for cid in self.companies_of("contacts", entity_id):
                item("companies", cid, None)
        else:
            for stream in ("leads", "contacts"):
                table = self.account.tables[stream]
                for row in table.rows_in_state(LIVE).tolist():
                    if entity_id in self.companies_of(stream, table.ids[row]):
                        item(stream, table.ids[row], None)
        return out

    def companies_of(self, stream: str, record_id: int) -> list[int]:
        table = self.account.tables[stream]
        row = table.row_of.get(record_id)
        if row is None:
            return []
        embedded = orjson.loads(table.bodies[row]).get("_embedded") or {}
        return [c["id"] for c in embedded.get("companies") or ()]

    def _live(self, stream: str, record_id: int) -> bool:
        table = self.account.tables[stream]
        row = table.row_of.get(record_id)
        return row is not None and table.state[row] == LIVE

    def links_response(self, entity: str, ids: list[int], href: str) -> Response:
        if len(ids) > MAX_LINK_ENTITY_IDS:
            return validation_error(
                "filter.entity_id",
                f"This collection should contain {MAX_LINK_ENTITY_IDS} elements or less.",
                "Count",
            )
        if not ids:
            return validation_error(
                "filter.entity_id", "This value should not be blank.", "NotBlank"
            )
        with self.account.lock:
            items = [
                link
                for rid in dict.fromkeys(ids)
                if self._live(entity, rid)
                for link in self.links_of(entity, rid)
            ]
        if not items:
            return no_content()
        return hal(
            {
                "_total_items": len(items),
                "_links": {"self": {"href": href}},
                "_embedded": {"links": items},
            }
        )

    # --- relinks ------------------------------------------------------------------------------

    def relink(self, *, reading: tuple[str, str, str], ts: int, rng: random.Random) -> list[int]:
        """Unlink and link a contact, a company and a product of one live lead and a company of
        one live contact, writing the events in ``reading``; no ``updated_at`` moves. Returns
        the ids of the lead and contact changed."""
        acc = self.account
        cat = acc.catalog
        with acc.lock:
            leads = acc.tables["leads"]
            lead_id = leads.ids[int(rng.choice(leads.rows_in_state(LIVE).tolist()))]
            contacts = self.contacts.setdefault(lead_id, [])
            if contacts:
                gone = contacts.pop(rng.randrange(len(contacts)))
                self._event(reading, ts, "lead", lead_id, "contact", gone[0], unlink=True)
            new = rng.choice(cat.contact_ids)
            if all(c != new for c, _ in contacts):
                contacts.append((new, False))
                self._event(reading, ts, "lead", lead_id, "contact", new, unlink=False)
            old = self.companies_of("leads", lead_id)
            for cid in old:
                self._event(reading, ts, "lead", lead_id, "company", cid, unlink=True)
            company = rng.choice(cat.company_ids)
            self._set_companies("leads", lead_id, [company])
            self._event(reading, ts, "lead", lead_id, "company", company, unlink=False)
            products = self.products.setdefault(lead_id, [])
            if products:
                gone_p = products.pop(0)
                self._event(
                    reading, ts, "lead", lead_id, "catalog_element", gone_p.element_id, unlink=True
                )
            p = self._product(rng, ts)
            if all((q.catalog_id, q.element_id) != (p.catalog_id, p.element_id) for q in products):
                products.append(p)
                self._event(
                    reading, ts, "lead", lead_id, "catalog_element", p.element_id, unlink=False
                )
            contacts_table = acc.tables["contacts"]
            contact_id = contacts_table.ids[
                int(rng.choice(contacts_table.rows_in_state(LIVE).tolist()))
            ]
            for cid in self.companies_of("contacts", contact_id):
                self._event(reading, ts, "contact", contact_id, "company", cid, unlink=True)
            self._set_companies("contacts", contact_id, [])
            acc.max_ts = max(acc.max_ts, ts)
        return [lead_id, contact_id]

    def _set_companies(self, stream: str, record_id: int, companies: list[int]) -> None:
        """Rewrite the record's ``_embedded.companies``; its ``updated_at`` stays as it was."""
        table = self.account.tables[stream]
        row = table.row_of[record_id]
        record = orjson.loads(table.bodies[row])
        record.setdefault("_embedded", {})["companies"] = [
            {"id": c, "_links": self.account.catalog.href(f"/api/v4/companies/{c}")}
            for c in companies
        ]
        table.replace(row, record)

    def _event(
        self,
        reading: tuple[str, str, str],
        ts: int,
        owner_type: str,
        owner_id: int,
        other_type: str,
        other_id: int,
        *,
        unlink: bool,
    ) -> None:
        kind, side, unlink_in = reading
        # Catalog elements have no events of their own: their link is told on the owner's side.
        if side == "other" and other_type in _SINGULAR.values():
            entity_type, entity_id, target = other_type, other_id, (owner_type, owner_id)
        else:
            entity_type, entity_id, target = owner_type, owner_id, (other_type, other_id)
        verb = "unlinked" if unlink else "linked"
        typed = target[0] in _SINGULAR.values() and kind == "typed"
        type_ = f"{target[0]}_{verb}" if typed else f"entity_{verb}"
        value = {"entity": {"type": target[0], "id": target[1]}}
        after: list[Any] = []
        before: list[Any] = []
        if not unlink:
            after = [{"link": value}]
        elif unlink_in == "before":
            before = [{"link": value}]
        else:
            after = [{"unlink": value}]
        cat = self.account.catalog
        rng = random.Random(f"{ts}:{type_}:{entity_id}:{target}")
        self.account.tables["events"].append(
            build_event(
                cat,
                id=ulid(ts * 1000 + rng.randrange(1000), rng),
                type=type_,
                entity_type=entity_type,
                entity_id=entity_id,
                created_by=cat.user(rng),
                created_at=ts,
                value_after=after,
                value_before=before,
            )
        )


def _metadata(p: Product) -> dict[str, Any]:
    meta: dict[str, Any] = {"quantity": p.quantity, "catalog_id": p.catalog_id}
    if p.price_id is not None:
        meta["price_id"] = p.price_id
    return meta


def splice(body: bytes, embeds: dict[str, Any]) -> bytes:
    """``body`` with ``embeds`` added to its top-level ``_embedded`` object (created if absent).

    A record's keys before ``_embedded`` hold no ``"_embedded":{`` (strings escape quotes), so
    the first occurrence is the record's own.
    """
    if not embeds:
        return body
    extra = orjson.dumps(embeds)[1:-1]
    at = body.find(b'"_embedded":{')
    if at < 0:
        return body[:-1] + b',"_embedded":{' + extra + b"}}"
    at += len(b'"_embedded":{')
    sep = b"" if body[at : at + 1] == b"}" else b","
    return body[:at] + extra + sep + body[at:]


def expected_link_rows(account: AccountParts, table: str) -> list[dict[str, Any]]:
    """Rows the link table should hold: the links of the live parent records, sorted by key."""
    book: LinkBook = account.links
    with account.lock:
        live = {
            s: [account.tables[s].ids[r] for r in account.tables[s].rows_in_state(LIVE).tolist()]
            for s in ("leads", "contacts")
        }
        rows: list[dict[str, Any]]
        if table == "lead_contacts":
            rows = [
                {"lead_id": lead, "contact_id": c, "is_main": main}
                for lead in live["leads"]
                for c, main in book.contacts.get(lead, ())
            ]
        elif table == "lead_companies":
            rows = [
                {"lead_id": lead, "company_id": c}
                for lead in live["leads"]
                for c in book.companies_of("leads", lead)
            ]
        elif table == "contact_companies":
            rows = [
                {"contact_id": contact, "company_id": c}
                for contact in live["contacts"]
                for c in book.companies_of("contacts", contact)
            ]
        elif table == "lead_products":
            rows = [
                {
                    "lead_id": lead,
                    "catalog_id": p.catalog_id,
                    "element_id": p.element_id,
                    "quantity": float(p.quantity),
                    "price_id": p.price_id,
                }
                for lead in live["leads"]
                for p in book.products.get(lead, ())
            ]
        elif table == "lead_sources":
            seen = {book.sources.get(lead) for lead in live["leads"]} - {None}
            rows = [{"id": sid, "name": SOURCES[sid]} for sid in seen]
        else:
            raise KeyError(f"unknown link table {table!r}; known: {', '.join(LINK_KEYS)}")
    key = LINK_KEYS[table]
    return sorted(rows, key=lambda r: tuple(r[k] for k in key))


__all__ = [
    "LINK_KEYS",
    "MAX_LINK_ENTITY_IDS",
    "READINGS",
    "SOURCES",
    "LinkBook",
    "expected_link_rows",
    "splice",
]
