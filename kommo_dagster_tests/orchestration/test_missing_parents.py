"""`missing_parents`: a table its parent stream feeds (a derived table, a link table) says
which days of its run the parent never ran for, by the parent's key, and still succeeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster_tests.wiring import Warehouse


@pytest.mark.parametrize("table", ["lead_custom_field_values", "lead_contacts"])
def test_a_slice_whose_parent_never_ran_for_some_days_says_so_and_still_succeeds(
    sandbox: KommoSandbox, tmp_path: Path, table: str
):
    """Days of the parent that no run materialized give an empty slice, like quiet days: the
    run warns with the parent's key and those days, and records them, but succeeds."""
    warehouse = Warehouse(sandbox, tmp_path)
    warehouse.run(["leads"], partition_range=("2026-10-01", "2026-10-03"))

    result = warehouse.run([table], partition_range=("2026-10-01", "2026-10-07"))

    assert result.success
    said = "kommo/leads for 4 of 7 partitions, 2026-10-04..2026-10-07"
    [warning] = [w for w in warehouse.warnings(result.run_id) if "kommo/leads" in w]
    assert warning.startswith(
        f"kommo_crm.kommo.{table} 2026-10-01..2026-10-07: no materialization of {said}."
    ), warning
    events = result.get_asset_materialization_events()
    assert len(events) == 7
    assert {e.materialization.metadata["kommo/parents_missing"].value for e in events} == {said}
    # Once the parent ran for a day, its slice says nothing, whether it has rows or not.
    warehouse.run(["leads"], partition="2026-10-05")
    again = warehouse.run([table], partition="2026-10-05")
    assert not [w for w in warehouse.warnings(again.run_id) if "kommo/leads" in w]
    [event] = again.get_asset_materialization_events()
    assert "kommo/parents_missing" not in event.materialization.metadata
    # Nor when the parent runs before it in the same run, as the jobs run them.
    both = warehouse.run(["leads", table], partition_range=("2026-10-08", "2026-10-09"))
    assert not [w for w in warehouse.warnings(both.run_id) if "kommo/leads" in w]
    events = both.get_asset_materialization_events()
    assert len(events) == 4
    assert not [e for e in events if "kommo/parents_missing" in e.materialization.metadata]
