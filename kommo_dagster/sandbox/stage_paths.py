"""Stage histories: each lead walks its pipeline in sort order to the stage it is in now.

Kommo records every move as a ``lead_status_changed`` event, so the funnel a user computes
from the events is only as believable as these walks. A lead in an open stage passed every
stage before it; a won lead passed them all; a lost lead dropped out after a stage drawn
among the ones before won. Moves fall on distinct seconds between the lead's creation and its
last update, so their order is the order of their seconds (event ids are random within one).
A lead updated too soon for its walk jumps to its stage in one move, as a robot would.
"""

from __future__ import annotations

import random
from typing import Any

from kommo_dagster.sandbox.catalog import LOST, UNSORTED, WON, Catalog
from kommo_dagster.sandbox.events import status_value


def walk(cat: Catalog, rng: random.Random, *, pipeline_id: int, status_id: int) -> list[int]:
    """The status ids a lead now in ``status_id`` went through, oldest first."""
    stages = cat.stages_by_pipeline[pipeline_id]
    before_won = [sid for _, sid, kind in stages if kind not in (WON, LOST)]
    kind = next(k for _, sid, k in stages if sid == status_id)
    if kind == WON:
        return [*before_won, status_id]
    if kind == LOST:
        return [*before_won[: 1 + int(rng.random() * len(before_won))], status_id]
    if kind == UNSORTED:
        return [status_id]
    return before_won[: before_won.index(status_id) + 1]


def _spread(rng: random.Random, after: int, last: int, n: int) -> list[int]:
    """``n`` increasing seconds in ``(after, last]``, one in each of ``n`` equal slices."""
    width = (last - after) // n if n else 0
    return [after + 1 + k * width + int(rng.random() * width) for k in range(n)]


def path_events(
    cat: Catalog,
    rng: random.Random,
    *,
    lead_id: int,
    pipeline_id: int,
    status_id: int,
    created_at: int,
    updated_at: int,
    by: list[int],
    robot_last: bool = False,
) -> list[tuple[Any, ...]]:
    """The ``lead_status_changed`` events of a lead's walk, as the account's event tuples
    (created_at, type, entity_type, entity_id, created_by, value_after, value_before).
    ``by`` is who may move it; with ``robot_last`` the last move is a robot's (user 0) at
    ``updated_at`` exactly (the bulk edit's second)."""
    stages = walk(cat, rng, pipeline_id=pipeline_id, status_id=status_id)
    moves = len(stages) - 1
    if moves == 0 or updated_at <= created_at:
        return []
    if updated_at - created_at < moves:
        stages, moves = [stages[0], stages[-1]], 1
    if robot_last:
        seconds = [*_spread(rng, created_at, updated_at - 1, moves - 1), updated_at]
    else:
        seconds = _spread(rng, created_at, updated_at, moves)
    who = [by[int(rng.random() * len(by))] for _ in range(moves)]
    if robot_last:
        who[-1] = 0
    return [
        (
            t,
            "lead_status_changed",
            "lead",
            lead_id,
            user,
            status_value(pipeline_id, after),
            status_value(pipeline_id, before),
        )
        for t, user, before, after in zip(seconds, who, stages, stages[1:], strict=False)
    ]


__all__ = ["path_events", "walk"]
