"""Building an account's catalog from its seed, scale, window and flavour."""

from __future__ import annotations

import random
from datetime import date

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import Catalog
from kommo_dagster.sandbox.custom_fields import build_cf_pools, build_custom_fields
from kommo_dagster.sandbox.pipelines import build_pipelines
from kommo_dagster.sandbox.scale import Scale
from kommo_dagster.sandbox.timeline import day_ts
from kommo_dagster.sandbox.users import build_users


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
    """The catalog of a seed. Users, then value pools, draw from its own random stream, in
    that order: the records' draws never shift it."""
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
    build_pipelines(cat)
    build_users(cat, rng, scale.users)
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
    build_custom_fields(cat)
    build_cf_pools(cat, rng)
    for k, entity in enumerate(("leads", "contacts", "companies")):
        cat.tags[entity] = [
            # Kommo serves a tag without a colour with color null, or without the key at all.
            {"id": 70_000 + 100 * k + i, "name": name, "color": texts.TAG_COLORS[i % 6]}
            if i % 6 != 5
            else {"id": 70_000 + 100 * k + i, "name": name}
            for i, name in enumerate(texts.TAG_NAMES)
        ]
    return cat
