"""The account's users and their rights, as /api/v4/users serves them."""

from __future__ import annotations

import random
from typing import Any

from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.randomness import below, pick


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


def build_users(cat: Catalog, rng: random.Random, n: int) -> None:
    """`n` users, the first ones with messy names; after the pipelines, which rights name."""
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
