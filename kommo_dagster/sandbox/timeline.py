"""When records happen: ids, created_at/updated_at in the account's window, deleted rows.

Timestamps are drawn vectorised (numpy) for a whole table at once. The awkward seconds are placed
on chosen rows rather than left to chance, so any account holds them: 00:00:00 and 23:59:59 UTC
at the window's edges and around midnights, and a robot's bulk edit of more than 250 records in
one second.
"""

from __future__ import annotations

from calendar import timegm
from dataclasses import dataclass
from datetime import date

import numpy as np

DAY = 86_400

DELETED_EVERY = 25  # row % 25 == 11 is deleted (leads, contacts, companies)
BULK_SIZE = 260  # records a robot edits in one second (more than one 250-record page)


def day_ts(d: date) -> int:
    return timegm(d.timetuple())


def boundary_timestamps(start_ts: int, end_ts: int) -> list[int]:
    """00:00:00 and 23:59:59 UTC at the window's edges and around a few interior midnights."""
    out = [start_ts, start_ts, end_ts - 1, end_ts - 1]
    days = (end_ts - start_ts) // DAY
    for d in sorted({days // 3, days // 2, (2 * days) // 3} - {0}):
        midnight = start_ts + d * DAY
        out += [midnight - 1, midnight, midnight - 1, midnight]
    return out


def bulk_timestamp(start_ts: int, end_ts: int) -> int:
    """The second of the robot's bulk edit: the middle day of the window, 09:30:00 UTC."""
    days = (end_ts - start_ts) // DAY
    return start_ts + (days // 2) * DAY + 9 * 3600 + 30 * 60


@dataclass
class Timeline:
    created: np.ndarray
    updated: np.ndarray
    bulk_rows: np.ndarray


def timeline(
    n: int,
    nprng: np.random.Generator,
    *,
    start_ts: int,
    end_ts: int,
    bulk_size: int,
    excluded: np.ndarray | None = None,
) -> Timeline:
    """created_at/updated_at of n records in id order, all inside [start_ts, end_ts).

    Ids follow creation order; records are updated a while after creation (30% never).
    Boundary seconds and the bulk-edit second are then forced onto chosen rows.
    """
    created = np.sort(nprng.integers(start_ts, end_ts, n, dtype=np.int64))
    delay = nprng.exponential(3 * DAY, n).astype(np.int64)
    delay[nprng.random(n) < 0.3] = 0
    updated = np.minimum(created + delay, end_ts - 1)
    blocked = np.zeros(n, dtype=bool) if excluded is None else excluded.copy()
    specials = boundary_timestamps(start_ts, end_ts)
    free = np.flatnonzero(~blocked)
    k = min(len(specials), len(free))
    # Spread the boundary records over the table, on rows that stay live.
    special_rows = free[[(j * len(free)) // k for j in range(k)]] if k else free[:0]
    for row, ts in zip(special_rows, specials, strict=False):
        updated[row] = ts
        created[row] = min(created[row], ts)
    blocked[special_rows] = True
    candidates = np.flatnonzero(~blocked)
    size = min(bulk_size, len(candidates))
    bulk_rows = np.sort(nprng.choice(candidates, size=size, replace=False))
    bulk_ts = bulk_timestamp(start_ts, end_ts)
    updated[bulk_rows] = bulk_ts
    created[bulk_rows] = np.minimum(created[bulk_rows], bulk_ts)
    return Timeline(created=created, updated=updated, bulk_rows=bulk_rows)


def bulk_size_for(n: int, *, headroom: int = 30) -> int:
    """BULK_SIZE records, leaving `headroom` records spread over the rest of the window."""
    return max(0, min(BULK_SIZE, n - headroom))


def deleted_mask(n: int) -> np.ndarray:
    return np.arange(n) % DELETED_EVERY == 11


def ids_for(n: int, nprng: np.random.Generator, base: int) -> np.ndarray:
    """Ascending ids with small gaps, like an account where some records were purged."""
    return base + np.cumsum(nprng.integers(1, 4, n, dtype=np.int64))
