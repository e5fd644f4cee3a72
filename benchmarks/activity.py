"""How fast the conversation and activity tables are rebuilt in DuckDB, per extracted event.

Builds a DuckDB file holding a sandbox account of ``--leads`` leads (its events, with the chat
messages and stage walks, its notes with the calls, its account row), derives the status
changes, then times each activity table as its asset writes it: the whole table rebuilt in one
transaction (chat_response_times with its view, calls, manager_activity_daily), and every row of
the response-time view.

    .venv/bin/python -m benchmarks.activity --leads 100000

The events alone cost ``events / 100`` requests at 7 per second to extract; rebuilding the
tables should cost a small fraction of that, even though each rebuild reads every event.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import duckdb
import pandas as pd

from benchmarks.derived import END, REQUESTS_PER_SECOND, SCHEMA, START, _timed
from kommo_dagster.derived import calls, chats
from kommo_dagster.derived.activity import CALLS, CHAT_RESPONSE_TIMES, NOTE_STREAMS
from kommo_dagster.derived.declaration import ACTIVITY_TABLES, STATUS_CHANGES, get_derived
from kommo_dagster.derived.manager_activity import MANAGER_ACTIVITY_DAILY, activity_select_sql
from kommo_dagster.derived.stages import status_changes_select_sql
from kommo_dagster.derived.write import replace_slice
from kommo_dagster.kommo.streams import get_stream
from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.truth import to_row
from kommo_dagster.warehouse.sql import create_table_sql

EVENTS_PAGE = 100
ZONE = "America/Sao_Paulo"


def _fill(con: duckdb.DuckDBPyConnection, leads: int) -> int:
    """The account's tables; returns the number of events."""
    account = Account(seed=1, leads=leads, start=START, end=END, base_url="http://bench")
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    events = 0
    for name in ("events", *NOTE_STREAMS, "account"):
        stream = get_stream(name)
        frame = pd.DataFrame(
            [to_row(name, r) for r in account.records(name)], columns=list(stream.column_names)
        )
        con.execute(create_table_sql(stream, schema=SCHEMA))
        con.execute(f"INSERT INTO {SCHEMA}.{name} SELECT * FROM frame")
        events = len(frame) if name == "events" else events
    changes = get_derived(STATUS_CHANGES)
    replace_slice(
        con,
        changes,
        schema=SCHEMA,
        window=None,
        select_sql=status_changes_select_sql(schema=SCHEMA, window=None),
    )
    return events


def _rebuild(con: duckdb.DuckDBPyConnection, name: str, select_sql: str, after=None):
    return replace_slice(
        con,
        ACTIVITY_TABLES[name],
        schema=SCHEMA,
        window=None,
        select_sql=select_sql,
        after=after,
        recreate=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leads", type=int, default=100_000)
    args = ap.parse_args(argv)
    present = {"events", "lead_status_changes", CHAT_RESPONSE_TIMES, CALLS}
    with tempfile.TemporaryDirectory() as directory:
        con = duckdb.connect(str(Path(directory) / "bench.duckdb"))
        print(f"Building a sandbox account of {args.leads:,} leads ...")
        events = _fill(con, args.leads)
        print(f"  {events:,} events")
        view = chats.response_view_sql(schema=SCHEMA, time_zone=ZONE, present=set())
        total = _timed(
            "chat_response_times (+ view)",
            lambda: _rebuild(
                con,
                CHAT_RESPONSE_TIMES,
                chats.response_times_select_sql(schema=SCHEMA),
                after=lambda c: c.execute(view),
            ),
        )
        total += _timed(
            "calls",
            lambda: _rebuild(
                con, CALLS, calls.calls_select_sql(schema=SCHEMA, streams=NOTE_STREAMS)
            ),
        )
        total += _timed(
            "manager_activity_daily",
            lambda: _rebuild(
                con,
                MANAGER_ACTIVITY_DAILY,
                activity_select_sql(schema=SCHEMA, time_zone=ZONE, present=present),
            ),
        )
        _timed(
            f"every row and column of {chats.RESPONSE_VIEW}",
            lambda: con.execute(
                f"CREATE OR REPLACE TEMP TABLE bench AS "
                f"SELECT * FROM {SCHEMA}.{chats.RESPONSE_VIEW}"
            ),
        )
    extraction = events / EVENTS_PAGE / REQUESTS_PER_SECOND
    print(
        f"\nThe three rebuilds took {total:.1f} s; extracting {events:,} events takes at least "
        f"{extraction:.0f} s at {REQUESTS_PER_SECOND:g} requests/s "
        f"({100 * total / extraction:.2f} % of it)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
