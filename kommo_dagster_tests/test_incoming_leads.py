"""The incoming leads (unsorted inbox) against the sandbox: rows equal to its ground truth, the
accepted entries kept in the history snapshots, and an inbox that is off gives 0 rows and why."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from kommo_dagster.kommo.unsorted import EMPTY_REASON
from kommo_dagster.sandbox.unsorted import CATEGORIES
from kommo_dagster_tests.rows import canonical
from kommo_dagster_tests.wiring import Warehouse

TABLE = "incoming_leads"


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(["kommo", TABLE])
    ]
    return event.materialization.metadata


def test_incoming_leads_equal_the_inbox_and_history_keeps_accepted_ones(
    sandbox_factory, tmp_path: Path
):
    sb = sandbox_factory(seed=3, leads=300, requests_per_second=None)
    wh = Warehouse(sb, tmp_path)
    wh.run([TABLE])
    expected = sb.expected_rows(TABLE)
    assert {r["category"] for r in expected} == set(CATEGORIES)
    assert canonical(TABLE, wh.rows(TABLE)) == canonical(TABLE, expected)
    typed = wh.sql(
        "SELECT category, count(form_name), count(chat_service), count(call_duration), "
        "count(mail_subject) FROM kommo.incoming_leads GROUP BY ALL ORDER BY ALL"
    )
    per_category = {c: tuple(n > 0 for n in counts) for c, *counts in typed}
    assert per_category == {
        "chats": (False, True, False, False),
        "forms": (True, False, False, False),
        "mail": (False, False, False, True),
        "sip": (False, False, True, False),
    }
    accepted = sb.account.inbox.entries.pop(0)
    wh.run([TABLE])
    assert accepted["uid"] not in {r["uid"] for r in wh.rows(TABLE)}
    history = wh.sql(
        "SELECT count(DISTINCT snapshot_at) FROM kommo.incoming_leads_history "
        f"WHERE uid = '{accepted['uid']}'"
    )
    assert history == [(1,)]


def test_an_inbox_that_is_off_gives_no_rows_and_says_why(sandbox_factory, tmp_path: Path):
    sb = sandbox_factory(seed=3, leads=300, requests_per_second=None, unsorted_inbox=False)
    wh = Warehouse(sb, tmp_path)
    result = wh.run([TABLE])
    assert wh.rows(TABLE) == []
    metadata = _metadata(result)
    assert metadata["dagster/row_count"].value == 0
    assert metadata["kommo/empty_reason"].value == EMPTY_REASON
