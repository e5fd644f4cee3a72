"""The link tables written in the transaction of their parent's slice, on a real DuckDB file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kommo_dagster.kommo.link_rows import LinkRows
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.warehouse.locks import connect
from kommo_dagster.warehouse.registry import refresh_after_write
from kommo_dagster.warehouse.staging import StagedRows
from kommo_dagster.warehouse.windows import EpochWindow
from kommo_dagster_tests.rows import synthetic_columns

LEADS = get_stream("leads")
OCT1 = EpochWindow.from_datetimes(
    datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
)
T = OCT1.start + 3600


def _lead(lead_id: int, updated_at: int, contacts: list[int], *, deleted: bool = False) -> dict:
    embedded = {"contacts": [{"id": c, "is_main": i == 0} for i, c in enumerate(contacts)]}
    return {"id": lead_id, "updated_at": updated_at, "is_deleted": deleted, "_embedded": embedded}


def _write_leads(db: Path, readings: list[dict]) -> None:
    """Stage the leads read (in this order) with their link rows, and write the slice."""
    links = LinkRows("leads")
    staged = StagedRows(LEADS, window=OCT1)
    columns = synthetic_columns(LEADS, len(readings), cursor_start=T)
    for name in ("id", "updated_at", "is_deleted"):
        columns[name] = [r[name] for r in readings]
    staged.append(columns)
    for reading in readings:
        links.add([reading])
    staged.links.append(links)

    def after(con) -> None:
        refresh_after_write(con, "leads", schema="kommo", full_table=False, links=(links,))

    staged.write(db, schema="kommo", timeout=30, after=after)
    staged.discard()


def _contacts(db: Path) -> list[tuple[int, int]]:
    with connect(db, timeout=30) as con:
        sql = "SELECT lead_id, contact_id FROM kommo.lead_contacts ORDER BY ALL"
        return con.execute(sql).fetchall()


def test_the_newest_reading_of_a_parent_decides_its_links_even_without_any(db: Path):
    """A lead read twice in one extraction (edited while the walk ran): its newer version has no
    contact left, or is deleted, so the older version's contacts must not be written."""
    _write_leads(db, [_lead(1, T, [31]), _lead(2, T, [32]), _lead(3, T, [33])])
    assert _contacts(db) == [(1, 31), (2, 32), (3, 33)]
    _write_leads(
        db,
        [
            _lead(1, T, [31]),
            _lead(2, T, [32]),
            _lead(3, T, [33]),
            _lead(1, T + 60, []),  # the contact was unlinked
            _lead(2, T + 60, [32], deleted=True),
            _lead(3, T + 60, [34]),
        ],
    )
    assert _contacts(db) == [(3, 34)]
    with connect(db, timeout=30) as con:
        live = con.execute("SELECT id FROM kommo.leads_current ORDER BY id").fetchall()
    assert live == [(1,), (3,)]
