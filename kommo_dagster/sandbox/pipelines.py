"""The account's pipelines and their stages, as /api/v4/leads/pipelines serves them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kommo_dagster.sandbox import texts
from kommo_dagster.sandbox.catalog import (
    LOST,
    LOST_STATUS_ID,
    OPEN,
    UNSORTED,
    WON,
    WON_STATUS_ID,
    Catalog,
)

# name, is_main, is_unsorted_on, is_archive, open stage names
_PIPELINES = (
    ("Воронка продаж", True, True, False, ("Первичный контакт", "Переговоры", "Счёт выставлен")),
    ("Parcerias 🤝", False, True, False, ("Qualificação", 'Proposta "final"', "Contrato")),
    ("Old pipeline (archived)", False, False, True, ("Contacted", "Quoted")),
    ("Renovação 2027", False, False, False, ("Aviso", "Negociação\nfinal")),
)


def build_pipelines(cat: Catalog) -> None:
    """The pipelines, their stages by kind, and the share of leads each pipeline takes."""
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
