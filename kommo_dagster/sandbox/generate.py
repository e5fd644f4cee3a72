"""A deterministic Kommo account: the same seed and scale always give the same records.

Timestamps are drawn vectorised (numpy); each record is then built as the dict Kommo would serve
and serialised once to bytes (orjson) by `store.Table`. Builders take a `random.Random`, so churn
(`churn.py`) creates new records with exactly the code that generated the first ones.

Every awkward case is placed by row number rather than left to chance, so an account of a few
hundred leads already holds all of them: the `MESSY_*` strings, every custom-field type, records at
00:00:00 and 23:59:59 UTC, a robot's bulk edit of more than 250 records in one second, deleted
records, unlinked tasks, empty task results.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.randomness import below, between, pick
from kommo_dagster.sandbox.timeline import DAY, day_ts

# Row-number rules that make sure every case exists in a small account.
MESSY_EVERY = 7  # row % 7 == 3 takes the next messy string
ALL_FIELDS_EVERY = 11  # row % 11 == 5 fills every custom field
UTM_SOURCES = ("google", "facebook", "instagram", "(direct)", "newsletter")

# Status kinds of a pipeline's stages.
UNSORTED, OPEN, WON, LOST = "unsorted", "open", "won", "lost"
WON_STATUS_ID, LOST_STATUS_ID = 142, 143


@dataclass
class Scale:
    """How many records of each kind an account of `leads` leads holds."""

    leads: int
    contacts: int
    companies: int
    tasks: int
    extra_events: int
    users: int
    # Notes per entity type: lead_notes, contact_notes, company_notes.
    notes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, leads: int, users: int | None = None) -> Scale:
        return cls(
            leads=leads,
            contacts=max(int(leads * 0.6), min(leads, 60)),
            companies=max(int(leads * 0.15), min(leads, 40)),
            tasks=max(int(leads * 0.6), min(leads, 80)),
            extra_events=max(int(leads * 0.3), min(leads, 60)),
            users=users if users is not None else max(12, leads // 2000),
            notes={
                "lead_notes": leads,
                "contact_notes": max(int(leads * 0.4), min(leads, 90)),
                "company_notes": max(int(leads * 0.3), min(leads, 45)),
            },
        )


@dataclass
class Catalog:
    """The account's configuration, which records refer to (users, pipelines, fields, tags)."""

    base_url: str
    account_id: int
    subdomain: str
    start_ts: int
    end_ts: int
    users: list[dict[str, Any]] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)
    group_ids: list[int] = field(default_factory=list)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    # (pipeline_id, status_id, kind) of every stage, and the stages of each pipeline.
    stages: list[tuple[int, int, str]] = field(default_factory=list)
    stages_by_pipeline: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)
    # Status ids by (pipeline_id, kind).
    stage_ids: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    # Cumulative share of leads per pipeline (the last takes the rest).
    pipeline_cum_weights: list[float] = field(default_factory=list)
    loss_reasons: list[dict[str, Any]] = field(default_factory=list)
    custom_fields: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Pre-built custom_fields_values, partial and with every field (see custom_fields_values).
    cf_pool: dict[str, list[Any]] = field(default_factory=dict)
    cf_full: dict[str, list[Any]] = field(default_factory=dict)
    tags: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    task_type_ids: list[int] = field(default_factory=lambda: [1, 2, 3, 2_910_455])
    # Small paged lists by API path (definitions, tags, catalogs...): see dictionaries.py.
    collections: dict[str, Any] = field(default_factory=dict)
    # Ids of generated companies and contacts, for links between records.
    company_ids: list[int] = field(default_factory=list)
    contact_ids: list[int] = field(default_factory=list)
    # The flavour's ordinary words (texts.WORDS): names, domains, languages.
    words: texts.Words = texts.WORDS["kommo"]

    def href(self, path: str) -> dict[str, Any]:
        return {"self": {"href": f"{self.base_url}{path}"}}

    def user(self, rng: random.Random, *, robot_share: float = 0.0) -> int:
        """A user id, or 0 (a robot or an integration) with probability robot_share."""
        if robot_share and rng.random() < robot_share:
            return 0
        ids = self.user_ids
        return ids[int(rng.random() * len(ids))]


# --- the catalog ----------------------------------------------------------------------------


def build_catalog(
    *,
    base_url: str,
    seed: int,
    scale: Scale,
    start: date,
    end: date,
    subdomain: str,
    flavour: str = "kommo",
) -> Catalog:
    rng = random.Random(f"{seed}:catalog")
    cat = Catalog(
        base_url=base_url,
        account_id=29_000_000 + (seed * 7_919) % 999_983,
        subdomain=subdomain,
        words=texts.WORDS[flavour],
        start_ts=day_ts(start),
        end_ts=day_ts(end),
    )
    cat.group_ids = [0, 401_001, 401_002]
    _build_pipelines(cat)
    _build_users(cat, rng, scale.users)
    cat.loss_reasons = [
        {
            "id": 9_100_001 + i,
            "name": name,
            "sort": 10 * (i + 1),
            "created_at": cat.start_ts - 86_400 * 200,
            "updated_at": cat.start_ts - 86_400 * 200,
            "_links": cat.href(f"/api/v4/leads/loss_reasons/{9_100_001 + i}"),
        }
        for i, name in enumerate(texts.LOSS_REASONS)
    ]
    _build_custom_fields(cat)
    _build_cf_pools(cat, rng)
    for k, entity in enumerate(("leads", "contacts", "companies")):
        cat.tags[entity] = [
            # Kommo serves a tag without a colour with color null, or without the key at all.
            {"id": 70_000 + 100 * k + i, "name": name, "color": texts.TAG_COLORS[i % 6]}
            if i % 6 != 5
            else {"id": 70_000 + 100 * k + i, "name": name}
            for i, name in enumerate(texts.TAG_NAMES)
        ]
    return cat


# name, is_main, is_unsorted_on, is_archive, open stage names
_PIPELINES = (
    ("Воронка продаж", True, True, False, ("Первичный контакт", "Переговоры", "Счёт выставлен")),
    ("Parcerias 🤝", False, True, False, ("Qualificação", 'Proposta "final"', "Contrato")),
    ("Old pipeline (archived)", False, False, True, ("Contacted", "Quoted")),
    ("Renovação 2027", False, False, False, ("Aviso", "Negociação\nfinal")),
)


def _build_pipelines(cat: Catalog) -> None:
    status_id = 61_000_001
    for p, (name, is_main, unsorted_on, archived, open_names) in enumerate(_PIPELINES):
        pipeline_id = 7_100_001 + p * 17
        specs = _stage_specs(status_id, open_names)
        status_id += 1 + len(open_names)
        kinds = [(pipeline_id, sid, kind) for sid, _, _, _, _, kind in specs]
        cat.pipelines.append(
            {
                "id": pipeline_id,
                "name": name,
                "sort": (p + 1) * 10,
                "is_main": is_main,
                "is_unsorted_on": unsorted_on,
                "is_archive": archived,
                "account_id": cat.account_id,
                "_links": cat.href(f"/api/v4/leads/pipelines/{pipeline_id}"),
                "_embedded": {"statuses": [_stage(cat, pipeline_id, p, *spec) for spec in specs]},
            }
        )
        cat.stages.extend(kinds)
        for _, sid, kind in kinds:
            cat.stage_ids.setdefault((pipeline_id, kind), []).append(sid)
        cat.stages_by_pipeline[pipeline_id] = kinds
    cat.pipeline_cum_weights = [0.6, 0.85, 0.95]


def _stage_specs(
    first_id: int, open_names: Sequence[str]
) -> list[tuple[int, str, int, bool, int, str]]:
    """(id, name, sort, is_editable, type, kind) of a pipeline's stages: unsorted, the open
    ones (ids from `first_id` on), won and lost (the same ids in every pipeline)."""
    specs = [(first_id, "Неразобранное", 10, False, 1, UNSORTED)]
    for j, sname in enumerate(open_names):
        specs.append((first_id + 1 + j, sname, 20 + 10 * j, True, 0, OPEN))
    specs.append((WON_STATUS_ID, "Успешно реализовано", 10_000, False, 0, WON))
    specs.append((LOST_STATUS_ID, "Закрыто и не реализовано", 11_000, False, 0, LOST))
    return specs


def _stage(
    cat: Catalog,
    pipeline_id: int,
    p: int,
    sid: int,
    name: str,
    sort: int,
    editable: bool,
    stype: int,
    kind: str,
) -> dict[str, Any]:
    """A status as /api/v4/leads/pipelines embeds it; `p` is the pipeline's position."""
    conditions: list[Any] = []
    if kind == OPEN and sort == 20:
        # A stage with an entry condition (required fields) so the column holds data.
        conditions = [{"type": "required_fields", "field_ids": [900_003, 900_005]}]
    return {
        "id": sid,
        "name": name,
        "sort": sort,
        "is_editable": editable,
        "pipeline_id": pipeline_id,
        "color": texts.STATUS_COLORS[(sort // 10 + p) % len(texts.STATUS_COLORS)],
        "type": stype,
        "account_id": cat.account_id,
        "conditions": conditions,
        "_links": cat.href(f"/api/v4/leads/pipelines/{pipeline_id}/statuses/{sid}"),
    }


def _rights(rng: random.Random, cat: Catalog, *, admin: bool, active: bool) -> dict[str, Any]:
    def entity_rights() -> dict[str, str]:
        if admin:
            return dict.fromkeys(("view", "edit", "add", "delete", "export"), "A")
        return {
            "view": pick(rng, "AGM"),
            "edit": pick(rng, "AGMD"),
            "add": pick(rng, "AD"),
            "delete": pick(rng, "AGMD"),
            "export": pick(rng, "AGMD"),
        }

    pipeline_id, status_id, _ = cat.stages[1]
    return {
        "leads": entity_rights(),
        "contacts": entity_rights(),
        "companies": entity_rights(),
        "tasks": {"edit": "A", "delete": "A" if admin else pick(rng, "AD")},
        "mail_access": admin,
        "catalog_access": admin or rng.random() < 0.5,
        "files_access": True,
        "status_rights": (
            []
            if admin
            else [
                {
                    "entity_type": "leads",
                    "pipeline_id": pipeline_id,
                    "status_id": status_id,
                    "rights": {"view": "A", "edit": "A", "delete": "D"},
                }
            ]
        ),
        "catalog_rights": None,
        "custom_fields_rights": None,
        "oper_day_reports_view_access": admin,
        "oper_day_user_tracking": False,
        "is_admin": admin,
        "is_free": not admin and rng.random() < 0.2,
        "is_active": active,
        "group_id": None if admin else pick(rng, cat.group_ids[1:]),
        "role_id": None if admin else pick(rng, [None, 501, 502]),
    }


def _build_users(cat: Catalog, rng: random.Random, n: int) -> None:
    messy = ["Администратор", "José Antônio Gonçalves", "Robô 🤖 de vendas", 'O\'Brien "Bob"', ""]
    for i in range(n):
        uid = 8_000_001 + i * 3 + below(rng, 3)
        if i < len(messy):
            name = messy[i]
        else:
            name = f"{pick(rng, cat.words.first_names)} {pick(rng, cat.words.last_names)}"
        domains = cat.words.email_domains
        email = f"user{i + 1}+sales@{domains[i % len(domains)]}"
        cat.users.append(
            {
                "id": uid,
                "name": name,
                "email": email,
                "lang": cat.words.user_langs[i % len(cat.words.user_langs)],
                "rights": _rights(rng, cat, admin=i == 0 or i % 9 == 4, active=i % 7 != 6),
                "_links": cat.href(f"/api/v4/users/{uid}"),
            }
        )
        cat.user_ids.append(uid)


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
        "group_id": None,
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


def _build_custom_fields(cat: Catalog) -> None:
    f = _field
    cat.custom_fields["leads"] = [
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
    cat.custom_fields["contacts"] = [
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
        f(cat, "contacts", 910_009, "Aceita marketing", "checkbox"),
    ]
    cat.custom_fields["companies"] = [
        f(cat, "companies", 920_001, "Phone", "multitext", code="PHONE", enums=["WORK", "FAX"]),
        f(cat, "companies", 920_003, "Email", "multitext", code="EMAIL", enums=["WORK"]),
        f(cat, "companies", 920_005, "Web", "url", code="WEB"),
        f(cat, "companies", 920_007, "Адрес", "textarea", code="ADDRESS"),
        f(cat, "companies", 920_009, "Funcionários", "numeric"),
        f(cat, "companies", 920_011, "Segmento", "select", enums=["Varejo", "Опт", "B2B"]),
    ]


# --- field values -----------------------------------------------------------------------------


def _messy(row: int) -> str | None:
    if row % MESSY_EVERY == 3:
        return texts.MESSY_NAMES[(row // MESSY_EVERY) % len(texts.MESSY_NAMES)]
    return None


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


def _build_cf_pools(cat: Catalog, rng: random.Random) -> None:
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
    name, first, last = _person(cat.words, rng, row)
    companies = _company_links(cat, rng, share=0.5)
    return {
        "id": id,
        "name": name,
        "first_name": first,
        "last_name": last,
        "responsible_user_id": cat.user(rng),
        "group_id": pick(rng, cat.group_ids),
        "created_by": cat.user(rng, robot_share=0.15),
        "updated_by": cat.user(rng, robot_share=0.15),
        "created_at": created_at,
        "updated_at": updated_at,
        "closest_task_at": _closest_task_at(rng, created_at, none_share=0.6, days=30),
        "is_deleted": deleted,
        "is_unsorted": row % 29 == 4,
        "custom_fields_values": custom_fields_values(cat, "contacts", rng, row),
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/contacts/{id}"),
        "_embedded": {"tags": _tags(cat, "contacts", rng, row), "companies": companies},
    }


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
    name = _messy(row)
    if name is None:
        name = f"{pick(rng, cat.words.company_words)} {pick(rng, cat.words.last_names)}"
    return {
        "id": id,
        "name": name,
        "responsible_user_id": cat.user(rng),
        "group_id": pick(rng, cat.group_ids),
        "created_by": cat.user(rng, robot_share=0.1),
        "updated_by": cat.user(rng, robot_share=0.1),
        "created_at": created_at,
        "updated_at": updated_at,
        "closest_task_at": _closest_task_at(rng, created_at, none_share=0.7, days=30),
        "is_deleted": deleted,
        "custom_fields_values": custom_fields_values(cat, "companies", rng, row),
        "account_id": cat.account_id,
        "_links": cat.href(f"/api/v4/companies/{id}"),
        "_embedded": {"tags": _tags(cat, "companies", rng, row)},
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
