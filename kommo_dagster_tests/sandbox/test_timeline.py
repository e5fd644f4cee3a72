"""When records happen: every timestamp inside the window, the seconds at its edges and around
midnights, and a robot's bulk edit of more than a page in one second."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, STREAMS
from kommo_dagster.sandbox.account import Account
from kommo_dagster.sandbox.timeline import DAY, day_ts
from kommo_dagster_tests.sandbox.conftest import END, START

START_TS, END_TS = day_ts(START), day_ts(END)


def test_everything_is_inside_the_window(account):
    for name, table in account.tables.items():
        for col in ("created_at", "updated_at"):
            if col in table.cols:
                assert table.cols[col].min() >= START_TS and table.cols[col].max() < END_TS, name


@pytest.mark.parametrize("stream", INCREMENTAL_STREAMS)
def test_records_at_exactly_midnight_and_one_second_before(account, stream):
    """On the cursor that slices the stream into days, so every day boundary is exercised."""
    cursor = STREAMS[stream].cursor
    live = [r for r in account.records(stream) if not r.get("is_deleted")]
    seconds = Counter(r[cursor] % DAY for r in live)
    assert seconds[0] >= 2 and seconds[DAY - 1] >= 2
    stamps = {r[cursor] for r in live}
    assert START_TS in stamps and END_TS - 1 in stamps


def test_more_than_a_page_of_leads_share_one_updated_at_second(account):
    live = [r for r in account.records("leads") if not r["is_deleted"]]
    _, count = Counter(r["updated_at"] for r in live).most_common(1)[0]
    assert count > 250
    _, events = Counter(e["created_at"] for e in account.records("events")).most_common(1)[0]
    assert events > 250


def test_a_one_day_window_still_holds_its_boundary_records():
    acc = Account(
        seed=1, leads=300, start=date(2026, 10, 5), end=date(2026, 10, 6), base_url="http://x"
    )
    stamps = {r["updated_at"] for r in acc.records("leads")}
    lo = day_ts(date(2026, 10, 5))
    assert lo in stamps and lo + DAY - 1 in stamps
    assert min(stamps) >= lo and max(stamps) < lo + DAY
