"""How fast the derived tables are computed in DuckDB, per row of the parent.

Builds a DuckDB file holding ``--leads`` lead versions whose ``custom_fields_values`` are the
sandbox's own (every field type, the sandbox's mix of records without fields), and as many
``lead_status_changed`` events, then times, as the assets do it: the custom-field values write of
one day's slice and of the whole month (one transaction each, the wide view rebuilt in it), the
status changes of the month with the duration and funnel views, and every row of each view.

    .venv/bin/python -m benchmarks.derived --leads 200000

The extraction of the same leads costs ``leads / 250`` requests at 7 per second; the derived
writes should cost a small fraction of that.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd

from kommo_dagster.derived.declaration import CUSTOM_FIELD_ENTITIES, STATUS_CHANGES, get_derived
from kommo_dagster.derived.long_values import values_select_sql
from kommo_dagster.derived.stages import rebuild_stage_views, status_changes_select_sql
from kommo_dagster.derived.value_text import install_macros
from kommo_dagster.derived.wide import rebuild_wide_view
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.sandbox.catalog_build import build_catalog
from kommo_dagster.sandbox.custom_fields import custom_fields_values
from kommo_dagster.sandbox.events import status_value
from kommo_dagster.sandbox.scale import Scale
from kommo_dagster.warehouse.sql import column_definitions
from kommo_dagster.warehouse.windows import EpochWindow

SCHEMA = "kommo"
START, END = date(2026, 10, 1), date(2026, 11, 1)
REQUESTS_PER_SECOND, PAGE = 7.0, 250


def _fill(con: duckdb.DuckDBPyConnection, leads: int) -> None:
    cat = build_catalog(
        base_url="http://bench", seed=1, scale=Scale.of(1000), start=START, end=END, subdomain="b"
    )
    rng = random.Random(1)
    span = cat.end_ts - cat.start_ts
    pipeline = cat.pipelines[0]["id"]
    stages = [s[1] for s in cat.stages_by_pipeline[pipeline]]
    lead_rows, event_rows = [], []
    for i in range(leads):
        at = cat.start_ts + (i * span) // leads
        cfv = custom_fields_values(cat, "leads", rng, i)
        lead_rows.append(
            (
                100_000 + i,
                at,
                at,
                pipeline,
                stages[i % len(stages)],
                False,
                None if cfv is None else json.dumps(cfv, ensure_ascii=False),
            )
        )
        before, after = status_value(pipeline, stages[0]), status_value(pipeline, stages[1])
        event_rows.append(
            (
                f"e{i}",
                "lead_status_changed",
                "lead",
                100_000 + i % (leads // 3 + 1),
                at,
                json.dumps(after),
                json.dumps(before),
            )
        )
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    for stream in ("leads", "events", "statuses", "pipelines"):
        con.execute(f"CREATE TABLE {SCHEMA}.{stream} ({column_definitions(get_stream(stream))})")
    lead_columns = "id, created_at, updated_at, pipeline_id, status_id, is_deleted, "
    lead_columns += "custom_fields_values"
    event_columns = "id, type, entity_type, entity_id, created_at, value_after, value_before"
    for table, columns, rows in (
        ("leads", lead_columns, lead_rows),
        ("events", event_columns, event_rows),
    ):
        frame = pd.DataFrame(rows, columns=columns.split(", "))
        con.register("bench_rows", frame)
        con.execute(f"INSERT INTO {SCHEMA}.{table} ({columns}) SELECT * FROM bench_rows")
        con.unregister("bench_rows")


def _timed(label: str, action) -> float:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    rows = getattr(result, "rows", None)
    print(f"  {label:<48} {seconds:7.2f} s" + (f"  {rows:>9,} rows" if rows is not None else ""))
    return seconds


# The tables written, looked up once (not in the timed writes), and the windows written.
LEADS = CUSTOM_FIELD_ENTITIES[0]
VALUES, CHANGES = get_derived(LEADS.values), get_derived(STATUS_CHANGES)
MONTH = EpochWindow.from_datetimes(
    datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
)
ONE_DAY = EpochWindow(MONTH.start + 14 * 86_400, MONTH.start + 15 * 86_400)


def _write_values(con: duckdb.DuckDBPyConnection, window: EpochWindow):
    """The leads' custom-field values of ``window``, as their asset writes them."""
    return replace_slice(
        con,
        VALUES,
        schema=SCHEMA,
        window=window,
        select_sql=values_select_sql(LEADS, schema=SCHEMA, window=window),
        after=lambda c: rebuild_wide_view(c, LEADS, schema=SCHEMA),
    )


def _write_changes(con: duckdb.DuckDBPyConnection):
    """The month's status changes with the duration and funnel views, as their asset does."""
    return replace_slice(
        con,
        CHANGES,
        schema=SCHEMA,
        window=MONTH,
        select_sql=status_changes_select_sql(schema=SCHEMA, window=MONTH),
        after=lambda c: rebuild_stage_views(c, schema=SCHEMA),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leads", type=int, default=200_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        con = duckdb.connect(str(Path(directory) / "bench.duckdb"))
        print(f"Building {args.leads:,} lead versions and status changes ...")
        _fill(con, args.leads)
        install_macros(con)
        total = _timed("lead_custom_field_values, the month", lambda: _write_values(con, MONTH))
        _timed("lead_custom_field_values, one day again", lambda: _write_values(con, ONE_DAY))
        total += _timed("lead_status_changes, the month (+ views)", lambda: _write_changes(con))
        for view in (LEADS.wide_view, "lead_stage_durations", "pipeline_funnel"):
            _timed(
                f"every row and column of {view}",
                lambda v=view: con.execute(
                    f"CREATE OR REPLACE TEMP TABLE bench AS SELECT * FROM {SCHEMA}.{v}"
                ),
            )
    extraction = args.leads / PAGE / REQUESTS_PER_SECOND
    print(
        f"\nThe month's writes took {total:.1f} s; extracting {args.leads:,} leads takes at "
        f"least {extraction:.0f} s at {REQUESTS_PER_SECOND:g} requests/s "
        f"({100 * total / extraction:.1f} % of it)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
