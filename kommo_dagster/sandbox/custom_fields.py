"""Custom fields: their definitions per entity, and the values records carry.

Every custom-field type Kommo has is defined, and every ALL_FIELDS_EVERY-th record fills every
field, so an account of a few hundred leads already holds each type. Values are pre-built into
pools per entity when the catalog is built; records draw from the pools.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.randomness import below, pick
from kommo_dagster.sandbox.timeline import DAY

ALL_FIELDS_EVERY = 11  # row % 11 == 5 fills every custom field
UTM_SOURCES = ("google", "facebook", "instagram", "(direct)", "newsletter")


def _field(
    cat: Catalog,
    entity: str,
    fid: int,
    name: str,
    ftype: str,
    *,
    code: str | None = None,
    enums: Sequence[str] | None = None,
    sort: int = 500,
    group: str | None = None,
) -> dict[str, Any]:
    return {
        "id": fid,
        "name": name,
        "type": ftype,
        "account_id": cat.account_id,
        "code": code,
        "sort": sort,
        "is_api_only": False,
        "enums": (
            [{"id": fid * 10 + k, "value": v, "sort": (k + 1) * 10} for k, v in enumerate(enums)]
            if enums
            else None
        ),
        "group_id": group,
        "required_statuses": [],
        "is_deletable": code is None,
        "is_predefined": code is not None,
        "entity_type": entity,
        "remind": None,
        "triggers": [],
        "currency": None,
        "hidden_statuses": [],
        "chained_lists": None,
        "_links": cat.href(f"/api/v4/{entity}/custom_fields/{fid}"),
    }


def build_custom_fields(cat: Catalog) -> None:
    """The fields of leads, contacts and companies: every type, and a name used twice."""
    cat.custom_fields["leads"] = _lead_fields(cat)
    cat.custom_fields["contacts"] = _contact_fields(cat)
    cat.custom_fields["companies"] = _company_fields(cat)


def _lead_fields(cat: Catalog) -> list[dict[str, Any]]:
    """Most field types, and a name used twice (900_013 and 900_019), as Kommo allows."""
    f = _field
    return [
        f(cat, "leads", 900_001, "Комментарий", "text", sort=501),
        f(cat, "leads", 900_003, "Orçamento (R$)", "numeric", sort=502),
        f(
            cat,
            "leads",
            900_005,
            "Источник",
            "select",
            enums=["Instagram", "Сайт", "Indicação", "📞"],
        ),
        f(cat, "leads", 900_007, "Produtos", "multiselect", enums=["CRM", "Suporte", "Обучение"]),
        f(cat, "leads", 900_009, "Data do contrato", "date", sort=505),
        f(cat, "leads", 900_011, "VIP", "checkbox", sort=506),
        f(cat, "leads", 900_013, "Notes", "textarea", sort=507),
        f(cat, "leads", 900_015, "Landing page", "url", sort=508),
        f(cat, "leads", 900_017, "Reunião", "date_time", sort=509),
        # The same name as 900_013: Kommo allows it, and a column per name cannot hold both.
        f(cat, "leads", 900_019, "Notes", "text", sort=510),
        f(cat, "leads", 900_021, "utm_source", "tracking_data", code="UTM_SOURCE", sort=511),
    ]


def _contact_fields(cat: Catalog) -> list[dict[str, Any]]:
    """The predefined phone and email (multitext), a birthday, and a field in a group: Kommo's
    field groups hold contact fields too."""
    f = _field
    return [
        f(
            cat,
            "contacts",
            910_001,
            "Телефон",
            "multitext",
            code="PHONE",
            enums=["WORK", "MOB", "HOME"],
        ),
        f(cat, "contacts", 910_003, "Email", "multitext", code="EMAIL", enums=["WORK", "PRIV"]),
        f(cat, "contacts", 910_005, "Cargo", "text", code="POSITION"),
        f(cat, "contacts", 910_007, "День рождения", "birthday"),
        # Kommo's field groups hold contact and company fields too ("contacts_17015678").
        f(cat, "contacts", 910_009, "Aceita marketing", "checkbox", group="contacts_17015678"),
    ]


def _company_fields(cat: Catalog) -> list[dict[str, Any]]:
    """The predefined company fields, and a select in a group: Kommo's field groups hold
    company fields too."""
    f = _field
    return [
        f(cat, "companies", 920_001, "Phone", "multitext", code="PHONE", enums=["WORK", "FAX"]),
        f(cat, "companies", 920_003, "Email", "multitext", code="EMAIL", enums=["WORK"]),
        f(cat, "companies", 920_005, "Web", "url", code="WEB"),
        f(cat, "companies", 920_007, "Адрес", "textarea", code="ADDRESS"),
        f(cat, "companies", 920_009, "Funcionários", "numeric"),
        f(
            cat,
            "companies",
            920_011,
            "Segmento",
            "select",
            enums=["Varejo", "Опт", "B2B"],
            group="companies_17015679",
        ),
    ]


def _field_values(
    d: dict[str, Any], rng: random.Random, row: int, cat: Catalog
) -> list[dict[str, Any]]:
    t = d["type"]
    enums = d["enums"] or []
    if t in ("text", "textarea"):
        pool = texts.MESSY_TEXTS if t == "textarea" else texts.MESSY_NAMES + cat.words.lead_words
        return [{"value": pool[(row + below(rng, 3)) % len(pool)]}]
    if t == "numeric":
        value = pick(rng, ["1500", "1500.75", "0", "-3", "1000000000", str(below(rng, 10**6))])
        return [{"value": value}]
    if t == "select":
        e = enums[(row + below(rng, len(enums))) % len(enums)]
        return [{"value": e["value"], "enum_id": e["id"], "enum_code": None}]
    if t == "multiselect":
        chosen = [e for k, e in enumerate(enums) if k == row % len(enums) or rng.random() < 0.4]
        return [{"value": e["value"], "enum_id": e["id"], "enum_code": None} for e in chosen]
    if t in ("date", "birthday"):
        # Dates are midnight timestamps, sometimes long before the window.
        return [{"value": cat.start_ts - DAY * below(rng, 0, 20_000)}]
    if t == "date_time":
        return [{"value": cat.start_ts + below(rng, 0, cat.end_ts - cat.start_ts)}]
    if t == "checkbox":
        return [{"value": rng.random() < 0.5}]
    if t == "url":
        return [{"value": texts.URLS[(row + below(rng, 4)) % len(texts.URLS)]}]
    if t == "tracking_data":
        return [{"value": UTM_SOURCES[(row + below(rng, 3)) % len(UTM_SOURCES)]}]
    if t == "multitext":
        out = []
        for k in range(1 + (row % 3 == 0) + (row % 17 == 1)):
            e = enums[(row + k) % len(enums)]
            if d["code"] == "EMAIL":
                domains = cat.words.email_domains
                value = f"client{row}.{k}@{domains[(row + k) % len(domains)]}"
            else:
                value = f"+55 11 9{below(rng, 10**7, 10**8)}" if k % 2 else f"8 (495) {row:07d}"
            out.append({"value": value, "enum_id": e["id"], "enum_code": e["value"]})
        return out
    raise ValueError(f"no generator for custom field type {t!r}")


CF_POOL_SIZE = 253  # variants of custom_fields_values per entity (a prime, so rows spread)


def _cf_variant(
    cat: Catalog, entity: str, rng: random.Random, k: int, *, every: bool
) -> list[dict[str, Any]] | None:
    out = []
    for d in cat.custom_fields[entity]:
        if every or rng.random() < 0.45:
            out.append(
                {
                    "field_id": d["id"],
                    "field_name": d["name"],
                    "field_code": d["code"],
                    "field_type": d["type"],
                    "values": _field_values(d, rng, k, cat),
                }
            )
    return out or None


def build_cf_pools(cat: Catalog, rng: random.Random) -> None:
    """Pre-built values records draw from: building them per record was most of start-up."""
    for entity in cat.custom_fields:
        cat.cf_pool[entity] = [
            _cf_variant(cat, entity, rng, k, every=False) for k in range(CF_POOL_SIZE)
        ]
        cat.cf_full[entity] = [
            _cf_variant(cat, entity, rng, k, every=True) for k in range(CF_POOL_SIZE)
        ]


def custom_fields_values(
    cat: Catalog, entity: str, rng: random.Random, row: int
) -> list[dict[str, Any]] | None:
    """Kommo's custom_fields_values: null (never []) when the record has none.

    Every ALL_FIELDS_EVERY-th record fills every field, so each field type is in any account.
    """
    if row % ALL_FIELDS_EVERY == 5:
        return cat.cf_full[entity][(row // ALL_FIELDS_EVERY) % CF_POOL_SIZE]
    if rng.random() < 0.3:
        return None
    return cat.cf_pool[entity][int(rng.random() * CF_POOL_SIZE)]
