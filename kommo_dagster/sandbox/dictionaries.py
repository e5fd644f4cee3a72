"""The account's dictionaries, served as small paged lists: custom-field definitions, tags, loss
reasons, catalogs and their elements, and the task types and settings of the account itself.

Each list is a `Collection` at its API path in `Catalog.collections`; `api.KommoApi` pages any
collection the same way (a collection may cap its page size below the asked ``limit``, as Kommo
does with 50 custom-field definitions a page). A collection names the contract table it holds, so
the ground truth (`truth.py`) reads the same items the API serves.

Consistency with the records is by construction: values, tags and loss reasons on records are
drawn from the catalog's lists (`catalog_build.py`, `custom_fields.py`), and task types are the
ones tasks use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.randomness import pick
from kommo_dagster.sandbox.timeline import DAY

MAX_LIMIT = 250
CUSTOM_FIELDS_PAGE = 50
# Lead fields no record uses (accounts collect them): with them, leads have over 50 definitions.
UNUSED_LEAD_FIELDS = 55


@dataclass
class Collection:
    """Items served at one path under ``_embedded.<key>``; ``table`` is the contract table."""

    key: str
    items: list[dict[str, Any]]
    table: str | None = None
    max_page: int = MAX_LIMIT


def add_collection(
    cat: Catalog, path: str, key: str, items: list[dict[str, Any]], *, table: str | None = None
) -> Collection:
    """Serve ``items`` at ``path`` (a new stream's data needs nothing more)."""
    collection = Collection(key=key, items=items, table=table)
    cat.collections[path] = collection
    return collection


def build_dictionaries(cat: Catalog, rng: random.Random) -> None:
    """Every collection of the account, after the catalog's fields, tags and loss reasons."""
    for entity, table in (("leads", "lead"), ("contacts", "contact"), ("companies", "company")):
        fields = list(cat.custom_fields[entity])
        if entity == "leads":
            fields += _unused_fields(cat, start=len(fields))
        add_collection(
            cat,
            f"/api/v4/{entity}/custom_fields",
            "custom_fields",
            fields,
            table=f"{table}_custom_fields",
        ).max_page = CUSTOM_FIELDS_PAGE
        add_collection(
            cat, f"/api/v4/{entity}/tags", "tags", cat.tags[entity], table=f"{table}_tags"
        )
    add_collection(
        cat, "/api/v4/leads/loss_reasons", "loss_reasons", cat.loss_reasons, table="loss_reasons"
    )
    catalogs = _catalogs(cat, rng)
    add_collection(cat, "/api/v4/catalogs", "catalogs", catalogs, table="catalogs")
    for c, count in zip(catalogs, ELEMENTS_PER_CATALOG, strict=True):
        add_collection(
            cat,
            f"/api/v4/catalogs/{c['id']}/elements",
            "elements",
            [_element(cat, rng, c, k) for k in range(count)],
            table="catalog_elements",
        )


def _unused_fields(cat: Catalog, *, start: int) -> list[dict[str, Any]]:
    kinds = ("text", "numeric", "checkbox", "url", "date", "textarea")
    out = []
    for k in range(UNUSED_LEAD_FIELDS):
        fid = 901_001 + 2 * k
        field = {
            **cat.custom_fields["leads"][0],
            "id": fid,
            "name": f"{texts.LEAD_WORDS[k % len(texts.LEAD_WORDS)]} · campo {k + 1}",
            "type": kinds[k % len(kinds)],
            "sort": 600 + start + k,
            "is_api_only": k % 9 == 4,
            # Kommo's group ids are strings ("leads_17011234", "statistic").
            "group_id": None if k % 4 else f"leads_{17_011_234 + k // 4}",
            "required_statuses": (
                [{"pipeline_id": cat.pipelines[0]["id"], "status_id": cat.stages[1][1]}]
                if k % 10 == 3
                else []
            ),
            "_links": cat.href(f"/api/v4/leads/custom_fields/{fid}"),
        }
        out.append(field)
    return out


# Products (over one page), services, invoices, and an empty list.
ELEMENTS_PER_CATALOG = (260, 40, 12, 0)
_CATALOGS = (
    ("Produtos", "products", True),
    ("Услуги «Премиум»", "regular", True),
    ("Faturas / Счета", "invoices", False),
    ("Vazio", "regular", True),
)


def _catalogs(cat: Catalog, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for k, (name, kind, can_add) in enumerate(_CATALOGS):
        cid = 8_801 + 2 * k
        out.append(
            {
                "id": cid,
                "name": name,
                "created_by": cat.user(rng),
                "updated_by": cat.user(rng, robot_share=0.5),
                "created_at": cat.start_ts - DAY * (300 - k),
                "updated_at": cat.start_ts - DAY * (30 - k),
                "sort": 10 * (k + 1),
                "type": kind,
                "can_add_elements": can_add,
                "can_show_in_cards": k != 2,
                "can_link_multiple": k == 0,
                "can_be_deleted": k != 2,
                "sdk_widget_code": None,
                "account_id": cat.account_id,
                "_links": cat.href(f"/api/v4/catalogs/{cid}"),
            }
        )
    return out


def _element(cat: Catalog, rng: random.Random, catalog: dict[str, Any], k: int) -> dict[str, Any]:
    eid = 12_000_000 + catalog["id"] * 1_000 + k
    name = texts.MESSY_NAMES[k % len(texts.MESSY_NAMES)] if k % 9 == 4 else None
    if name is None:
        name = f"{pick(rng, texts.LEAD_WORDS)} {k + 1}"
    values: list[dict[str, Any]] | None = None
    if catalog["type"] == "products" and k % 5:
        values = [
            {
                "field_id": 960_001,
                "field_name": "Артикул",
                "field_code": "SKU",
                "field_type": "text",
                "values": [{"value": f"SKU-{k:05d}"}],
            },
            {
                "field_id": 960_003,
                "field_name": "Preço",
                "field_code": "PRICE",
                "field_type": "price",
                "values": [{"value": pick(rng, ("1500", "1500.75", "0", 99))}],
            },
        ]
    created = cat.start_ts - DAY * 60 + k * 3_600
    return {
        "id": eid,
        "catalog_id": catalog["id"],
        "name": name,
        "created_by": cat.user(rng, robot_share=0.2),
        "updated_by": cat.user(rng, robot_share=0.2),
        "created_at": created,
        "updated_at": created + (0 if k % 3 else DAY * k),
        "is_deleted": k % 17 == 8,
        "custom_fields_values": values,
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/catalogs/{catalog['id']}/elements/{eid}"),
    }


def task_types(cat: Catalog) -> list[dict[str, Any]]:
    """The account's task types (1 and 2 are Kommo's built-ins); tasks use exactly these."""
    specs = {
        1: ("Follow-up", None, None, "FOLLOW_UP"),
        2: ("Meeting", None, None, "MEETING"),
        3: ("Enviar proposta", "#ffdc7f", 5, None),
    }
    out = []
    for tid in cat.task_type_ids:
        name, color, icon, code = specs.get(tid, ("Позвонить клиенту «срочно»", None, 11, None))
        out.append({"id": tid, "name": name, "color": color, "icon_id": icon, "code": code})
    return out


def account_body(
    cat: Catalog, with_: set[str], *, base_url: str, unsorted_on: bool
) -> dict[str, Any]:
    """GET /api/v4/account with the ``with=`` parts asked for; ``unsorted_on``: whether the
    unsorted inbox is on (off: GET /api/v4/leads/unsorted answers 204)."""
    payload: dict[str, Any] = {
        "id": cat.account_id,
        "name": "Sandbox Comércio e Serviços «Тест»",
        "subdomain": cat.subdomain,
        "created_at": cat.start_ts - 86_400 * 400,
        "created_by": cat.user_ids[0],
        "updated_at": cat.start_ts - 86_400 * 10,
        "updated_by": cat.user_ids[0],
        "current_user_id": cat.user_ids[0],
        "country": "BR",
        "currency": "BRL",
        "currency_symbol": "R$",
        "customers_mode": "disabled",
        "is_unsorted_on": unsorted_on,
        "mobile_feature_version": 0,
        "is_loss_reason_enabled": True,
        "is_helpbot_enabled": False,
        "is_technical_account": False,
        "contact_name_display_order": 1,
        "_links": {"self": {"href": f"{base_url}/api/v4/account"}},
    }
    embedded: dict[str, Any] = {}
    if "datetime_settings" in with_:
        embedded["datetime_settings"] = {
            "date_pattern": "d.m.Y H:i",
            "short_date_pattern": "d.m.Y",
            "short_time_pattern": "H:i",
            "date_format": "d.m.Y",
            "time_format": "H:i:s",
            "timezone": "America/Sao_Paulo",
            "timezone_offset": "-03:00",
        }
    if "task_types" in with_:
        embedded["task_types"] = task_types(cat)
    if embedded:
        payload["_embedded"] = embedded
    return payload
