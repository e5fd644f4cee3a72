"""Tasks walked by parts of the window (`kommo_dagster.kommo.tasks`) against the sandbox, with a
task changed at chosen moments of the extraction: where a task leaving or passing through a
part shifts the unseen ones past a page boundary, the part's overlapping pages must step back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kommo_dagster.kommo import KommoClient
from kommo_dagster.kommo.response import Response
from kommo_dagster.kommo.walks.pages import even_bounds
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.sandbox.churn import Churner
from kommo_dagster_tests.kommo.conftest import END, START, fetch, until_today

pytestmark = pytest.mark.timeout(120)

Params = list[tuple[str, Any]]


def change_task(sb: KommoSandbox, task_id: int, *, updated_at: int) -> None:
    """An integration's PATCH of a task carrying ``updated_at``: Kommo records an event for
    it, stamped with the server's current time."""
    acc = sb.account
    with acc.lock:
        table = acc.tables["tasks"]
        row = table.row_of[task_id]
        rec = table.record(row)
        before = [{"task_deadline": {"timestamp": rec["complete_till"]}}]
        rec["complete_till"] += 3600
        rec["updated_at"] = updated_at
        table.replace(row, rec)
        after = [{"task_deadline": {"timestamp": rec["complete_till"]}}]
        now = int(time.time())
        by = rec["responsible_user_id"]
        Churner(acc, config=None, seed=0).event(
            now, "task_deadline_changed", "task", task_id, by, after, before
        )


def hook_requests(
    client: KommoClient,
    monkeypatch: pytest.MonkeyPatch,
    *,
    before: Callable[[Params], None] = lambda q: None,
    after: Callable[[Params, Response], None] = lambda q, r: None,
) -> None:
    """Call ``before`` and ``after`` around each request the client sends to the sandbox (the
    requests still go over HTTP); with one worker they come in a fixed order."""
    transport = client._transport
    send = transport.get

    def get(path: str, params: Any = (), **kwargs: Any) -> Response:
        q = list(params)
        if path == "/api/v4/tasks":
            before(q)
        resp = send(path, params, **kwargs)
        if path == "/api/v4/tasks":
            after(q, resp)
        return resp

    monkeypatch.setattr(transport, "get", get)


def first_task(resp: Response) -> int:
    data = resp.data
    assert data is not None
    return data["_embedded"]["tasks"][0]["id"]


def stayed_and_delivered(sb: KommoSandbox, records: list[dict], before: set, lo: int, hi: int):
    """The (id, updated_at) of the tasks that were in [lo, hi] before and never changed, and
    those delivered; asserts none came twice."""
    keys = [(r["id"], r["updated_at"]) for r in records]
    assert len(keys) == len(set(keys)), "no (id, updated_at) twice"
    stayed = {k for k in before & tasks_now(sb) if lo <= k[1] <= hi}
    return stayed, set(keys)


def tasks_now(sb: KommoSandbox) -> set[tuple[int, int]]:
    return {(r["id"], r["updated_at"]) for r in sb.records("tasks")}


def test_a_task_moved_to_a_later_part_makes_the_part_it_left_step_back(
    sandbox_factory, client_for, monkeypatch, caplog
):
    """The first task of the first part's first page moves into the last part, which then
    reads it: the first part's next page starts one task late, leaves a gap after the first
    and steps back."""
    sb = sandbox_factory(leads=1500, requests_per_second=None)
    client = client_for(sb, max_workers=1)
    lo, hi = int(START.timestamp()), int(END.timestamp()) - 1
    moved: list[int] = []

    def after(q: Params, resp: Response) -> None:
        p = dict(q)
        first_part = p["filter[updated_at][from]"] == lo and p["filter[updated_at][to]"] < hi
        if not moved and first_part and p["page"] == 1:
            moved.append(first_task(resp))
            change_task(sb, moved[0], updated_at=hi)

    hook_requests(client, monkeypatch, after=after)
    before = tasks_now(sb)
    with caplog.at_level(logging.INFO, logger="kommo_dagster.kommo"):
        records = fetch(client, "tasks")
    assert moved, "a task moved while the parts were paged"
    assert "stepping back" in caplog.text
    stayed, delivered = stayed_and_delivered(sb, records, before, lo, hi)
    assert len(stayed) > 500 and not stayed - delivered, f"{len(stayed - delivered)} lost"


def test_a_task_that_left_a_part_and_came_back_stamped_now_is_delivered_as_it_is_now(
    sandbox_factory, client_for, monkeypatch, caplog
):
    """The window reaches now. The first task of the last part's first page leaves the window
    (an earlier updated_at): the part's next page starts one task late and steps back. When the
    parts are done the task comes back stamped now, inside the window again: the walk of the
    tasks updated since the parts began delivers that version."""
    sb, today = until_today(sandbox_factory, leads=1500)
    client = client_for(sb, max_workers=1)
    start, end = today - timedelta(days=10), today + timedelta(days=1)
    lo, hi = int(start.timestamp()), int(end.timestamp()) - 1
    moved: list[int] = []
    last_part: list[int] = []

    def after(q: Params, resp: Response) -> None:
        p = dict(q)
        if not moved and lo < p["filter[updated_at][from]"] and p["filter[updated_at][to]"] == hi:
            last_part.append(p["filter[updated_at][from]"])
            moved.append(first_task(resp))
            change_task(sb, moved[0], updated_at=lo - 3600)

    def before(q: Params) -> None:
        check = last_part and dict(q)["filter[updated_at][from]"] > last_part[0]
        if check and len(moved) == 1:
            moved.append(int(time.time()))
            change_task(sb, moved[0], updated_at=moved[1])

    hook_requests(client, monkeypatch, before=before, after=after)
    before_ = tasks_now(sb)
    with caplog.at_level(logging.INFO, logger="kommo_dagster.kommo"):
        records = fetch(client, "tasks", start, end)
    assert len(moved) == 2, "the task left during the parts and came back before the check"
    assert "stepping back" in caplog.text
    stayed, delivered = stayed_and_delivered(sb, records, before_, lo, hi)
    assert len(stayed) > 500 and not stayed - delivered, f"{len(stayed - delivered)} lost"
    assert tuple(moved) in delivered, "the task's version stamped now"


def test_a_task_passing_through_a_part_while_it_is_offset_paged_loses_none(
    sandbox_factory, client_for, monkeypatch
):
    """The task with the lowest id, whose updated_at lies just before the window, is back-dated
    into the first part before that part's second request and leaves it again right after:
    the part's next page starts one task later than it would have, so the task at the boundary
    is on no page. No part ever met the task that came and went."""
    sb = sandbox_factory(leads=3000, requests_per_second=None)
    passer = min(sb.records("tasks"), key=lambda r: r["id"])
    start = datetime.fromtimestamp(passer["updated_at"] + 1, UTC)
    lo, hi = int(start.timestamp()), int(END.timestamp()) - 1
    client = client_for(sb, max_workers=1)
    first_part: list[Params] = []
    moved: list[str] = []

    def is_first_part(q: Params) -> bool:
        p = dict(q)
        return p["filter[updated_at][from]"] == lo and p["filter[updated_at][to]"] < hi

    def before(q: Params) -> None:
        if is_first_part(q):
            first_part.append(q)
            if len(first_part) == 2:
                change_task(sb, passer["id"], updated_at=lo)
                moved.append("in")

    def after(q: Params, resp: Response) -> None:
        if is_first_part(q) and moved == ["in"]:
            change_task(sb, passer["id"], updated_at=int(time.time()))
            moved.append("out")

    hook_requests(client, monkeypatch, before=before, after=after)
    before_ = tasks_now(sb)
    records = fetch(client, "tasks", start, END)
    assert moved == ["in", "out"], "the task came into the first part and left it"
    assert len(first_part) >= 3, "the first part is offset-paged past its second page"
    stayed, delivered = stayed_and_delivered(sb, records, before_, lo, hi)
    assert len(stayed) > 1000 and not stayed - delivered, f"{len(stayed - delivered)} lost"


def test_a_window_in_the_past_costs_the_probe_and_the_pages_of_its_parts_only(
    sandbox_factory, client_for, monkeypatch
):
    """No task can be stamped inside a window that ended before the parts began: no request
    follows the parts, of tasks or of events."""
    sb = sandbox_factory(leads=1500, requests_per_second=None)
    client = client_for(sb, max_workers=1)
    lo, hi = int(START.timestamp()), int(END.timestamp()) - 1
    ranges: list[tuple[int, int]] = []

    def before(q: Params) -> None:
        p = dict(q)
        ranges.append((p["filter[updated_at][from]"], p["filter[updated_at][to]"]))

    hook_requests(client, monkeypatch, before=before)
    records = fetch(client, "tasks")
    # One worker: twice as many parts.
    parts = even_bounds(lo, hi, 2)
    assert len(records) == len(tasks_now(sb)) == 900
    assert ranges[0] == (lo, hi) and set(ranges[1:]) == set(parts), "the probe, then the parts"
    assert len(ranges) > 1 + len(parts), "a part took several pages"
    assert client.stats().requests == len(ranges)
