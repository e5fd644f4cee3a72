"""The account's catalog, which its records refer to, and the kinds of a pipeline's stages.

`catalog_build.build_catalog` fills it once per account; record builders and churn read it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kommo_dagster.sandbox import texts

# Status kinds of a pipeline's stages.
UNSORTED, OPEN, WON, LOST = "unsorted", "open", "won", "lost"
WON_STATUS_ID, LOST_STATUS_ID = 142, 143


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
