"""No record lost, none repeated, while the account changes under the walk (sandbox churn), and
the pure helpers of the walks."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests

from kommo_dagster.kommo.errors import KommoResponseError
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, STREAMS, get_stream
from kommo_dagster.kommo.walks import even_bounds
from kommo_dagster.kommo.walks import overlap as overlap_module
from kommo_dagster.kommo.walks.base import cursor_values
from kommo_dagster.kommo.walks.keyset import KeysetWalk
from kommo_dagster.sandbox import ChurnConfig
from kommo_dagster.sandbox.churn import Churner
from kommo_dagster_tests.kommo.conftest import (
    END,
    START,
    expected,
    fetch,
    rows_of,
    until_today,
)

pytestmark = pytest.mark.timeout(180)

# The streams the sandbox's churn changes: every one with an updated_at cursor.
CHURNED = tuple(n for n, s in STREAMS.items() if s.cursor == "updated_at")
# A change (3 updates, a creation, a deletion, a restore per stream) after every 2nd request.
HEAVY = ChurnConfig(every_requests=2, updates=3, creates=1, deletes=1, restores=1)
# The same, but half the updates and creations carry an earlier updated_at than the record had.
BACKDATED = dataclasses.replace(HEAVY, backdate=0.5)


def key(stream: str, r: dict) -> tuple:
    cursor = STREAMS[stream].cursor
    return (r["id"], r[cursor], r.get("is_deleted"))


def snapshot(sb, stream: str) -> set[tuple]:
    return {key(stream, r) for r in sb.records(stream)}


def in_window(stream: str, r: dict, a: datetime, b: datetime) -> bool:
    return a.timestamp() <= r[STREAMS[stream].cursor] < b.timestamp()


def lost_under_churn(sb, client, stream: str, churn: ChurnConfig, a, b) -> tuple[int, set]:
    """Extract [a, b) while the account churns; assert no (id, cursor) came twice. Returns how
    many records were in the window before and never changed, and those of them not
    delivered."""
    before = snapshot(sb, stream)
    sb.update_config(churn=churn)
    records = fetch(client, stream, a, b)
    sb.update_config(churn=None)
    assert sb.stats()["churn_steps"] >= 1, "the account changed during the walk"
    keys = Counter(key(stream, r) for r in records)
    assert not keys or max(keys.values()) == 1, "no (id, cursor) twice"
    upper = datetime.now(UTC) + timedelta(days=1) if b is None else b
    stayed = {
        key(stream, r)
        for r in sb.records(stream)
        if key(stream, r) in before and in_window(stream, r, a, upper)
    }
    return len(stayed), stayed - set(keys)


def assert_exact_under_churn(sb, client, stream: str, churn: ChurnConfig, a, b) -> None:
    stayed, lost = lost_under_churn(sb, client, stream, churn, a, b)
    assert stayed and not lost, f"{len(lost)} of {stayed} records lost"


@pytest.mark.parametrize("churn", [HEAVY, BACKDATED], ids=["stamped-now", "back-dated"])
@pytest.mark.parametrize("stream", INCREMENTAL_STREAMS)
def test_records_that_stay_are_all_delivered_under_heavy_churn(
    sandbox_factory, client_for, stream, churn
):
    sb = sandbox_factory(leads=1500, requests_per_second=None)
    client = client_for(sb, max_workers=3)
    # Events up to now: new events keep arriving at the top of the window while it is paged.
    end = None if STREAMS[stream].cursor == "created_at" else END
    assert_exact_under_churn(sb, client, stream, churn, START, end)


@pytest.mark.parametrize("stream", INCREMENTAL_STREAMS)
def test_todays_partition_is_exact_while_changes_land_in_it(sandbox_factory, client_for, stream):
    """Live churn: the data ends at midnight and every change is stamped now, inside the
    window being read (today through a day ahead). Each churn step is stamped one second after
    the last, starting now, so the server's events are never older than its clock and a record
    that changed never keeps its (id, cursor)."""
    sb, today = until_today(sandbox_factory, leads=600)
    seconds = itertools.count(int(time.time()))
    live = dataclasses.replace(HEAVY, clock=lambda: next(seconds))
    # Fill today with a few pages of changes first, then read it while more land.
    sb.update_config(churn=dataclasses.replace(live, updates=150, creates=20, deletes=5))
    sb.churn_step(4)
    client = client_for(sb, max_workers=3)
    end = datetime.now(UTC) + timedelta(days=1)
    assert_exact_under_churn(sb, client, stream, live, today, end)


def test_naive_offset_paging_loses_records_under_the_same_churn(sandbox_factory):
    # The control: the churn above is adversarial enough to break plain offset paging.
    sb = sandbox_factory(leads=1500, requests_per_second=None)
    before = snapshot(sb, "leads")
    sb.update_config(churn=HEAVY)
    seen: set[tuple] = set()
    headers = {"Authorization": f"Bearer {sb.token}"}
    for page in range(1, 100):
        params = {
            "filter[updated_at][from]": int(START.timestamp()),
            "filter[updated_at][to]": int(END.timestamp()) - 1,
            "order[updated_at]": "asc",
            "limit": 250,
            "page": page,
        }
        resp = requests.get(f"{sb.base_url}/api/v4/leads", params=params, headers=headers)
        if resp.status_code == 204:
            break
        rows = resp.json()["_embedded"]["leads"]
        seen |= {key("leads", r) for r in rows}
        if len(rows) < 250:
            break
    sb.update_config(churn=None)
    stayed = {key("leads", r) for r in sb.records("leads") if key("leads", r) in before}
    stayed = {k for k in stayed if not k[2] and START.timestamp() <= k[1] < END.timestamp()}
    assert stayed - seen, "plain offset paging should have skipped records here"


@pytest.mark.parametrize("stream", CHURNED)
def test_day_windows_plus_the_windows_churn_touched_give_every_latest_version_once(
    sandbox_factory, client_for, stream
):
    """The partition view: extract October day by day while the account changes, then extract
    again the days churn touched (records left them) and the window churn moved records into.
    Keeping each window's newest extraction, the table equals the account exactly."""
    sb = sandbox_factory(leads=600, requests_per_second=None)
    client = client_for(sb, max_workers=2)
    before = snapshot(sb, stream)
    days = [START + timedelta(days=i) for i in range(31)]
    windows = [(d, d + timedelta(days=1)) for d in days]
    sb.update_config(churn=ChurnConfig(every_requests=3, updates=2, creates=1, deletes=1))
    table = {w: fetch(client, stream, *w) for w in windows}
    sb.update_config(churn=None)
    after = snapshot(sb, stream)
    changed = before ^ after
    touched = {
        w for w in windows if any(w[0].timestamp() <= k[1] < w[1].timestamp() for k in changed)
    }
    assert touched, "churn touched some days"
    # Untouched days were right the first time.
    for w in set(windows) - touched:
        assert rows_of(stream, table[w]) == expected(sb, stream, *w), w
    for w in touched:
        table[w] = fetch(client, stream, *w)
    now_window = (END, datetime.now(UTC) + timedelta(minutes=5))
    table[now_window] = fetch(client, stream, *now_window)
    merged = [r for rows in table.values() for r in rows]
    assert Counter(r["id"] for r in merged).most_common(1)[0][1] == 1
    assert rows_of(stream, merged) == expected(sb, stream, START, now_window[1])


@pytest.mark.parametrize("stream", INCREMENTAL_STREAMS)
def test_a_record_without_an_id_fails_the_walk_naming_it(sandbox_factory, client_for, stream):
    """The walks drop repeats by id: a record the API served without one fails the run with
    the stream's name, not a bare KeyError, nor is it passed on to a table keyed by id."""
    sb = sandbox_factory(leads=300, requests_per_second=None)
    table = sb.account.tables[stream]
    first = next(r for r in sb.records(stream) if in_window(stream, r, START, END))
    with sb.account.lock:
        row = table.row_of[first["id"]]
        rec = table.record(row)
        del rec["id"]
        table.replace(row, rec)
    with pytest.raises(KommoResponseError, match=f"a {stream} record has no id"):
        fetch(client_for(sb), stream, START, END)


@pytest.mark.parametrize(("descending", "served"), [(False, [10, 30, 20]), (True, [30, 10, 20])])
def test_a_keyset_page_out_of_order_fails_naming_the_record_and_its_cursors(descending, served):
    """The keyset walk trusts the order it asked for; a page breaking it names the first record
    out of place and the two cursors, so the answer can be looked up."""
    walk = KeysetWalk(
        stream=get_stream("leads"),
        transport=None,  # type: ignore[arg-type]  # the page is handed in below
        lo=0,
        hi=100,
        descending=descending,
    )
    job = walk.next_job()
    assert job is not None
    records = [{"id": i, "updated_at": t} for i, t in zip([7, 8, 9], served, strict=True)]
    body = {"_embedded": {"leads": records}, "_links": {}}
    order = "desc" if descending else "asc"
    message = (
        f"Kommo returned leads out of updated_at order for order[updated_at]={order}: "
        f"record 9 has updated_at 20 after {served[1]}; the keyset walk relies on it"
    )
    with pytest.raises(KommoResponseError, match=re.escape(message)):
        walk.on_result(job, Response(body=orjson.dumps(body), server_time=None))


def test_a_record_without_a_good_cursor_fails_naming_its_id():
    leads, first = get_stream("leads"), {"id": 7, "updated_at": 1}
    with pytest.raises(KommoResponseError, match=r"^a leads record \(id 8\) has no updated_at$"):
        cursor_values(leads, [first, {"id": 8}], "updated_at")
    with pytest.raises(
        KommoResponseError, match=r"^a leads record \(id 8\) has a non-integer updated_at: '1'$"
    ):
        cursor_values(leads, [first, {"id": 8, "updated_at": "1"}], "updated_at")
    # Without an id to name (or when the id is what is missing), it says what it can.
    with pytest.raises(KommoResponseError, match=r"^a leads record has no updated_at$"):
        cursor_values(leads, [first, None], "updated_at")  # type: ignore[list-item]
    with pytest.raises(KommoResponseError, match=r"^a leads record has no id$"):
        cursor_values(leads, [first, {"updated_at": 1}], "id")


def test_even_bounds_cover_the_range_without_gaps():
    assert even_bounds(0, 99, 4) == [(0, 24), (25, 49), (50, 74), (75, 99)]
    parts = even_bounds(1000, 86_399 + 1000, 8)
    assert parts[0][0] == 1000 and parts[-1][1] == 86_399 + 1000
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(parts))
    assert even_bounds(10, 11, 8) == [(10, 10), (11, 11)]


def test_a_second_of_over_two_pages_steps_back_over_records_that_leave_it(
    sandbox_factory, client_for, caplog
):
    """Records of the window's last second (a crowd of over two pages) leave it while its
    offset pages are read: a page that starts past the last id read steps back."""
    sb = sandbox_factory(leads=9000, requests_per_second=None)
    last_second = int(END.timestamp()) - 1
    crowd = [r for r in sb.records("leads") if r["updated_at"] == last_second]
    assert len(crowd) > 500, "the sandbox puts a crowd at the window's last second"
    # One worker: the requests, and so the (seeded) churn, come in a fixed order. Thirty
    # updates every sixth request hit the crowd while it is paged.
    client = client_for(sb, max_workers=1)
    day = (END - timedelta(days=1), END)
    before = snapshot(sb, "leads")
    churn = ChurnConfig(every_requests=6, updates=30, creates=0, deletes=1, streams=("leads",))
    sb.update_config(churn=churn)
    with caplog.at_level(logging.INFO, logger="kommo_dagster.kommo"):
        records = fetch(client, "leads", *day)
    sb.update_config(churn=None)
    assert f"leads updated at {last_second}: a page left a gap" in caplog.text
    keys = Counter(key("leads", r) for r in records)
    assert max(keys.values()) == 1
    stayed = {
        key("leads", r)
        for r in sb.records("leads")
        if key("leads", r) in before and in_window("leads", r, *day)
    }
    assert len(stayed) > 500 and stayed <= set(keys)
    # Without churn, the same window is exactly the account's.
    assert rows_of("leads", fetch(client, "leads", *day)) == expected(sb, "leads", *day)


def _change_leads_at(sb, second: int, *, updates: int, deletes: int) -> None:
    """Update and delete leads now, all stamped at ``second`` (a crowd there)."""
    churn = ChurnConfig(
        updates=updates, creates=0, deletes=deletes, streams=("leads",), clock=lambda: second
    )
    sb.update_config(churn=churn)
    sb.churn_step()
    sb.update_config(churn=None)


def test_crowded_seconds_in_both_lists_are_stable_when_nothing_changes(
    sandbox_factory, client_for, caplog
):
    """Both lists crowd the window's last second (a bulk deletion of 2,500 leads beside 500+
    live ones), each read in overlapping pages by id. Nothing changes, so no page leaves a gap,
    and the window is exactly the account's."""
    sb = sandbox_factory(leads=12000, requests_per_second=None)
    last_second = int(END.timestamp()) - 1
    _change_leads_at(sb, last_second, updates=0, deletes=2500)
    at_last = [r for r in sb.records("leads") if r["updated_at"] == last_second]
    deleted = sum(r["is_deleted"] for r in at_last)
    assert deleted > 10 * 250 and len(at_last) - deleted > 500
    client = client_for(sb, max_workers=1)
    day = (END - timedelta(days=1), END)
    with caplog.at_level(logging.INFO, logger="kommo_dagster.kommo"):
        records = fetch(client, "leads", *day)
    assert "a page left a gap" not in caplog.text
    assert rows_of("leads", records) == expected(sb, "leads", *day)


def test_an_empty_window_costs_nothing(sandbox_factory, client_for):
    sb = sandbox_factory(leads=300, requests_per_second=None)
    client = client_for(sb)
    assert fetch(client, "leads", END, END) == [] and fetch(client, "tasks", END, START) == []
    assert client.stats().requests == 0


def test_tasks_parts_step_back_over_departed_tasks_and_lose_none(
    sandbox_factory, client_for, caplog
):
    sb = sandbox_factory(leads=1500, requests_per_second=None)
    client = client_for(sb, max_workers=1)
    before = snapshot(sb, "tasks")
    sb.update_config(churn=ChurnConfig(every_requests=2, updates=5, deletes=2, streams=("tasks",)))
    with caplog.at_level(logging.INFO, logger="kommo_dagster.kommo"):
        records = fetch(client, "tasks")
    sb.update_config(churn=None)
    assert "stepping back" in caplog.text
    keys = Counter(key("tasks", r) for r in records)
    assert max(keys.values()) == 1
    stayed = {
        key("tasks", r)
        for r in sb.records("tasks")
        if key("tasks", r) in before and in_window("tasks", r, START, END)
    }
    assert stayed and stayed <= set(keys)


def _plain_pages(monkeypatch) -> None:
    """The control: tasks, and crowded seconds, read in plain offset pages (page 1, 2, ... of
    one limit), each taken as joining the one before it without looking."""
    monkeypatch.setattr(
        overlap_module, "page_at", lambda end, *, limit, need=1: (end // limit + 1, limit)
    )
    monkeypatch.setattr(overlap_module.OverlapPages, "_overlaps", lambda self, offset, ids: True)


@pytest.mark.parametrize("plain", [False, True], ids=["exact", "control-plain-pages"])
def test_tasks_moved_to_an_earlier_updated_at_lose_no_task(
    sandbox_factory, client_for, monkeypatch, plain
):
    """Every update carries an earlier updated_at inside the window, so tasks leave the parts
    all the time, below the pages read as often as above: plain offset pages lose tasks (the
    control); overlapping pages step back over every gap."""
    sb = sandbox_factory(leads=3000, requests_per_second=None)
    if plain:
        _plain_pages(monkeypatch)
    # One worker: the requests, and so the (seeded) churn, come in a fixed order.
    client = client_for(sb, max_workers=1)
    churn = ChurnConfig(every_requests=2, updates=10, deletes=0, streams=("tasks",), backdate=1.0)
    stayed, lost = lost_under_churn(sb, client, "tasks", churn, START, END)
    assert stayed > 1000 and bool(lost) == plain, f"{len(lost)} tasks lost"


@pytest.mark.parametrize("plain", [False, True], ids=["exact", "control-plain-pages"])
def test_a_crowded_second_is_exact_when_its_records_move_to_earlier_seconds(
    sandbox_factory, client_for, monkeypatch, plain
):
    """Records of a second of over two pages move to earlier updated_at values while it is
    offset-paged: plain offset pages lose the records their departures shift (the control);
    overlapping pages step back over every gap."""
    sb = sandbox_factory(leads=9000, requests_per_second=None)
    if plain:
        _plain_pages(monkeypatch)
    client = client_for(sb, max_workers=1)
    churn = ChurnConfig(
        every_requests=3, updates=10, creates=0, deletes=0, streams=("leads",), backdate=1.0
    )
    stayed, lost = lost_under_churn(sb, client, "leads", churn, END - timedelta(days=1), END)
    assert stayed > 500 and bool(lost) == plain, f"{len(lost)} leads lost"


def _move_lead(sb, events: Churner, lead_id: int, updated_at: int) -> None:
    """An integration's PATCH of one lead that sets its updated_at, and the event Kommo stamps
    with its own clock (written by ``events``)."""
    acc = sb.account
    with acc.lock:
        table = acc.tables["leads"]
        row = table.row_of[lead_id]
        rec = table.record(row)
        rec["updated_at"] = updated_at
        table.replace(row, rec)
        events.event(
            int(time.time()), "name_field_changed", "lead", lead_id, rec["responsible_user_id"]
        )


def test_a_record_passing_through_a_crowded_second_while_it_is_offset_paged_loses_none(
    sandbox_factory, client_for
):
    """A lead the walk of a crowded second has already passed (a smaller id) is back-dated
    into that second before its second offset page and leaves it again right after: the page
    after that starts one record later than it would have, so the record at the boundary is on
    no page. The walk never met the lead that came and went."""
    sb = sandbox_factory(leads=9000, requests_per_second=None)
    second = int(END.timestamp()) - 1
    _change_leads_at(sb, second, updates=600, deletes=0)
    live = [r for r in sb.records("leads") if not r["is_deleted"]]
    crowd = sorted(r["id"] for r in live if r["updated_at"] == second)
    assert len(crowd) > 4 * 250, "the crowd is offset-paged past its third page"
    passer = min(r["id"] for r in live if r["updated_at"] != second)
    assert passer < crowd[0]
    client = client_for(sb, max_workers=1)
    transport = client._transport
    real_get = transport.get
    moved: list[str] = []
    events = Churner(sb.account, config=None, seed=1)

    def get(path, params=(), **kwargs):
        q = dict(params)
        crowd_page = (
            path == "/api/v4/leads"
            and q.get("filter[updated_at][from]") == second
            and q.get("order[id]") == "asc"
            and "only_deleted" not in q.get("with", "")
        )
        if crowd_page and q.get("page") == 2 and not moved:
            _move_lead(sb, events, passer, second)
            moved.append("in")
        resp = real_get(path, params, **kwargs)
        if moved == ["in"]:
            _move_lead(sb, events, passer, int(time.time()))
            moved.append("out")
        return resp

    transport.get = get
    records = fetch(client, "leads", END - timedelta(days=1), END)
    assert moved == ["in", "out"], "the lead came into the crowd and left it during the walk"
    got = Counter(key("leads", r) for r in records)
    assert max(got.values()) == 1
    lost = [i for i in crowd if (i, second, False) not in got]
    assert not lost, f"{len(lost)} leads of the crowded second lost: {lost[:5]}"
