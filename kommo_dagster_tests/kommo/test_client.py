"""KommoClient against the sandbox over real HTTP: exact streams, windows, request counts,
streaming, concurrency and progress."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from kommo_dagster.kommo import KommoError, KommoNotFoundError, KommoResponseError, Progress
from kommo_dagster.kommo.extraction import OUT_PAGES, OUT_PAGES_MAX, OUT_SECONDS, out_pages
from kommo_dagster.kommo.records import to_columns
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.sandbox import ChurnConfig
from kommo_dagster_tests.kommo.conftest import END, INCREMENTAL, START, expected, fetch, rows_of

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def account():
    """300 leads and their companions, no rate limit; read-only for this module."""
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(SandboxConfig(seed=1, leads=300, requests_per_second=None)) as sb:
        yield sb


@pytest.mark.parametrize("stream", list(STREAMS))
def test_every_stream_is_exactly_what_the_api_holds(account, client_for, stream):
    client = client_for(account)
    records = fetch(client, stream)
    assert records, "the sandbox account has rows in every stream"
    assert rows_of(stream, records) == expected(account, stream)
    # Each version exactly once, by its declared key (a status is (pipeline_id, id)).
    keys = Counter(tuple(r.get(c) for c in STREAMS[stream].key) for r in records)
    assert max(keys.values()) == 1


def test_deleted_records_arrive_marked_deleted(account, client_for):
    client = client_for(account)
    with_deleted_list = [n for n, s in STREAMS.items() if s.has_deleted_list]
    assert with_deleted_list
    for stream in with_deleted_list:
        deleted = [r for r in fetch(client, stream) if r["is_deleted"]]
        assert deleted, stream
        assert {r["id"] for r in deleted} == {
            r["id"] for r in account.expected_rows(stream) if r["is_deleted"]
        }
    # Leads carry the with= fields, deleted ones included.
    leads = fetch(client, "leads")
    assert all("source_id" in r and "is_price_modified_by_robot" in r for r in leads)


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_daily_windows_partition_the_stream(account, client_for, stream):
    client = client_for(account, max_workers=2)
    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    seen: list[dict] = []
    for a, b in itertools.pairwise(days):
        page_rows = fetch(client, stream, a, b)
        cursor = STREAMS[stream].cursor
        assert all(a.timestamp() <= r[cursor] < b.timestamp() for r in page_rows)
        seen += page_rows
    assert rows_of(stream, seen) == expected(account, stream)


@pytest.mark.parametrize("stream", INCREMENTAL)
def test_a_quiet_window_costs_one_request_per_list(account, client_for, stream):
    # Leads, contacts and companies have two lists: the live one and the deleted one.
    client = client_for(account)
    quiet = datetime(2026, 9, 1, tzinfo=UTC)
    assert fetch(client, stream, quiet, quiet + timedelta(days=20)) == []
    assert client.stats().requests == (2 if STREAMS[stream].has_deleted_list else 1)


def test_a_window_of_one_short_page_costs_one_request(account, client_for):
    client = client_for(account)
    day = datetime(2026, 10, 20, tzinfo=UTC)
    rows = fetch(client, "tasks", day, day + timedelta(days=1))
    assert 0 < len(rows) < 250
    assert client.stats().requests == 1


def test_the_beginning_and_now_are_the_default_bounds(account, client_for):
    client = client_for(account)
    assert rows_of("events", fetch(client, "events", None, None)) == expected(account, "events")


def test_naive_datetimes_are_refused(account, client_for):
    client = client_for(account)
    with pytest.raises(ValueError, match="timezone-aware"):
        client.iter_records("leads", start=datetime(2026, 10, 1), end=END)


def test_a_path_without_a_leading_slash_is_refused_naming_it(account, client_for):
    client = client_for(account)
    with pytest.raises(ValueError, match=r"path must start with /: 'api/v4/leads'"):
        client.get("api/v4/leads")
    # The path is quoted through the scrubber, like what the API answers: no token shown.
    with pytest.raises(ValueError, match=r"path must start with /: 'api/v4/\*\*\*'") as err:
        client.get(f"api/v4/{account.token}")
    assert account.token not in str(err.value)


def test_statuses_for_given_pipelines_and_a_missing_pipeline(account, client_for):
    client = client_for(account)
    pipelines = fetch(client, "pipelines")
    first = pipelines[0]["id"]
    statuses = [r for page in client.iter_records("statuses", parent_ids=[first]) for r in page]
    assert statuses and {s["pipeline_id"] for s in statuses} == {first}
    with pytest.raises(KommoNotFoundError, match="no pipelines entry with id 999999"):
        list(client.iter_records("statuses", parent_ids=[first, 999999]))


def test_a_pipeline_without_an_id_fails_the_statuses_naming_it(sandbox_factory, client_for):
    """Statuses read for every pipeline take the pipelines' ids: one the API served without
    an id fails the read with the stream's name, not a bare KeyError."""
    sb = sandbox_factory(leads=30, requests_per_second=None)
    del sb.account.catalog.pipelines[0]["id"]
    with pytest.raises(KommoResponseError, match="a pipelines record has no id"):
        list(client_for(sb).iter_records("statuses"))


def test_a_closed_client_starts_no_workers_again(account, client_for):
    client = client_for(account)
    first = fetch(client, "pipelines")[0]["id"]
    assert list(client.iter_records("statuses", parent_ids=[first]))  # the workers ran
    client.close()
    with pytest.raises(KommoError, match="the client is closed"):
        list(client.iter_records("statuses", parent_ids=[first]))


def test_the_limiter_and_the_ban_are_the_accounts_files_of_the_settings(
    account, client_for, tmp_path
):
    client = client_for(account, requests_per_second=3, ban_cooldown_seconds=60)
    limiter, ban = client.limiter, client.ban
    assert limiter is not None and limiter.capacity == 3
    # One account key, one directory: every client of the account on the machine shares both.
    assert limiter.path == tmp_path / "rate" / f"kommo-{ban.key}.ratelimit"
    assert (ban.path, ban.cooldown) == (tmp_path / "rate" / f"kommo-{ban.key}.banned", 60)
    assert not limiter.path.exists()
    assert fetch(client, "pipelines") and limiter.path.exists()  # the requests went through it
    assert client_for(account, requests_per_second=None).limiter is None


@pytest.mark.timeout(180)
def test_a_large_window_is_split_and_costs_near_the_minimum(sandbox_factory, client_for):
    sb = sandbox_factory(leads=4000, requests_per_second=None, latency_ms=5)
    client = client_for(sb, max_workers=4)
    for stream, size in (("leads", 250), ("events", 100)):
        before = len(client.stats().parts)
        start_requests = client.stats().requests
        records = fetch(client, stream)
        assert rows_of(stream, records) == expected(sb, stream)
        parts = client.stats().parts[before:]
        assert len([p for p in parts if p.kind in ("live", "pages")]) > 1, "split into parts"
        requests = client.stats().requests - start_requests
        minimum = sum(math.ceil(p.rows / size) for p in parts)
        # The keyset re-reads the last second of each page, and each crowded second (the
        # sandbox has one of 260 records per stream) costs two first pages; nothing else.
        assert requests <= minimum + len(parts) + 3, (stream, requests, minimum, parts)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stream", ["leads", "lead_notes"])
def test_two_walks_meeting_in_a_list_cost_what_one_walk_costs(sandbox_factory, client_for, stream):
    """A second walk reads each list from its other end and the two meet wherever the rows
    lie: no partial page where a cut window would end. So two workers spend exactly the
    requests one spends (the sandbox's count). The window ends before the sandbox's crowded
    seconds, whose cost depends on where a page happens to meet them."""
    sb = sandbox_factory(leads=6000, requests_per_second=None, latency_ms=5)
    window = (START, START + timedelta(days=10))
    lists = 2 if STREAMS[stream].has_deleted_list else 1
    counts = []
    for workers in (1, 2):
        client = client_for(sb, max_workers=workers)
        sb.reset_stats()
        records = fetch(client, stream, *window)
        assert rows_of(stream, records) == expected(sb, stream, *window)
        counts.append(sb.stats()["requests"])
        walks = [p for p in client.stats().parts if p.kind in ("live", "deleted")]
        assert len(walks) == (lists if workers == 1 else lists + 1), walks
    assert counts[1] == counts[0], counts


def test_pages_stream_as_they_arrive(sandbox_factory, client_for):
    sb = sandbox_factory(leads=2000, requests_per_second=None)
    client = client_for(sb, max_workers=2)
    pages = client.iter_records("events", start=START, end=END)
    first = next(pages)
    assert 0 < len(first) <= 100
    # The first page came long before the window was read.
    assert client.stats().requests < 10
    assert sum(len(p) for p in pages) + len(first) == len(expected(sb, "events"))
    assert all(len(p) <= 250 for p in client.iter_records("leads", start=START, end=END))


@pytest.mark.parametrize("rps", [None, 7])
def test_a_paused_consumer_holds_back_requests_once_its_pages_wait(
    sandbox_factory, client_for, rps
):
    """While the consumer does not take pages, the walks go on until `out_pages` of them wait
    (more under a rate limit: 3 s of pages at it): the API keeps working through a pause, and
    memory stays bounded."""
    sb = sandbox_factory(leads=8000, requests_per_second=None)
    client = client_for(sb, max_workers=3, requests_per_second=rps)
    pages = client.iter_records("leads", start=START, end=END)
    first = next(pages)
    held, still_since = client.stats().pages, time.monotonic()
    while time.monotonic() - still_since < 1.0:  # until the walks have stopped for a second
        time.sleep(0.1)
        if client.stats().pages != held:
            held, still_since = client.stats().pages, time.monotonic()
    # The page taken, the queue full, the coordinator holding one more, and the answers the
    # workers already had.
    assert 1 + out_pages(rps) <= held <= 1 + out_pages(rps) + 1 + 3
    if rps is not None:
        pages.close()  # the rest at 7/s would cost seconds and show nothing new
        return
    assert sum(len(p) for p in pages) + len(first) == len(expected(sb, "leads"))


def test_the_pages_that_may_wait_cover_seconds_at_the_limit():
    assert out_pages(None) == OUT_PAGES
    assert out_pages(1) == OUT_PAGES  # a slow account needs no more than the least
    assert out_pages(7) == math.ceil(7 * OUT_SECONDS) > OUT_PAGES
    assert out_pages(1000) == OUT_PAGES_MAX  # memory stays bounded whatever the limit


def test_an_abandoned_extraction_stops_cleanly(sandbox_factory, client_for):
    sb = sandbox_factory(leads=2000, requests_per_second=None, latency_ms=20)
    client = client_for(sb, max_workers=3)
    pages = client.iter_records("events", start=START, end=END)
    next(pages)
    pages.close()
    # The client is still usable afterwards.
    assert rows_of("companies", fetch(client, "companies")) == expected(sb, "companies")


def test_progress_is_reported_on_a_cadence_and_at_the_end(sandbox_factory, client_for):
    sb = sandbox_factory(leads=1500, requests_per_second=None, latency_ms=30)
    reports: list[Progress] = []
    client = client_for(sb, progress=reports.append, progress_interval=0.05, max_workers=2)
    rows = fetch(client, "events")
    final = reports[-1]
    assert final.done and final.stream == "events"
    assert final.rows == len(rows) and final.pages >= math.ceil(len(rows) / 100)
    assert final.requests == client.stats().requests and final.fraction_done == 1.0
    assert (final.window_start, final.window_end) == (START, END)
    # A steady cadence: reports while the walk runs, not only the final one.
    running = reports[:-1]
    assert len(running) >= 2
    for p in running:
        assert not p.done and p.rows <= final.rows
        assert p.fraction_done is None or 0.0 <= p.fraction_done <= 1.0
    assert any(p.eta_seconds is not None and "left" in str(p) for p in running)
    assert "events" in str(final) and "rows" in str(final)


def test_progress_gives_a_rate_only_once_the_requests_span_a_second():
    """One request in 2 ms is not "500 requests/s": the rate shows from a second on."""
    short = Progress(
        stream="account",
        window_start=None,
        window_end=None,
        pages=1,
        rows=1,
        requests=1,
        elapsed=0.002,
        requests_per_second=500.0,
        retries=0,
        throttled=0,
        done=True,
    )
    assert "1 requests, 0 retries" in str(short) and "/s)" not in str(short)
    long = dataclasses.replace(short, requests=14, elapsed=2.0, requests_per_second=7.0)
    assert "14 requests (7.00/s), 0 retries" in str(long)


def test_stats_count_requests_pages_and_rows(account, client_for):
    """The client's own counts, against what the sandbox counted: the other tests of request
    costs read these counts."""
    client = client_for(account)
    account.reset_stats()
    rows = fetch(client, "contacts")
    st, served = client.stats(), account.stats()
    assert rows_of("contacts", rows) == expected(account, "contacts")
    assert st.rows == len(rows)
    assert (
        st.requests == served["requests"]
        and st.pages == served["by_path"]["/api/v4/contacts"]["200"]
    )
    assert st.pages > 1  # more than one page, so the counts add up
    assert st.retries == st.throttled == st.errors == 0
    assert st.requests_per_second > 0


def test_custom_field_definitions_follow_next_past_pages_shorter_than_asked(account, client_for):
    # Kommo serves 50 definitions a page whatever limit says; the leads have more than 50.
    client = client_for(account)
    fields = fetch(client, "lead_custom_fields")
    assert len(fields) > 50
    assert client.stats().requests == math.ceil(len(fields) / 50)


def test_the_account_is_one_row_with_its_timezone(account, client_for):
    client = client_for(account)
    [row] = fetch(client, "account")
    assert row["_embedded"]["datetime_settings"]["timezone"]
    assert to_columns("account", [row])["timezone"] == ["America/Sao_Paulo"]
    assert client.stats().requests == 1


def test_notes_carry_is_pinned_and_catalog_elements_come_per_catalog(account, client_for):
    client = client_for(account)
    notes = fetch(client, "lead_notes")
    assert {type(n["is_pinned"]) for n in notes} == {bool}
    catalogs = fetch(client, "catalogs")
    first = catalogs[0]["id"]
    pages = list(client.iter_records("catalog_elements", parent_ids=[first]))
    assert len(pages) == 1 and {e["catalog_id"] for e in pages[0]} == {first}
    with pytest.raises(KommoNotFoundError, match="no catalogs entry with id 999999"):
        list(client.iter_records("catalog_elements", parent_ids=[999999]))


@pytest.mark.timeout(180)
def test_events_of_a_past_window_are_split_by_page_and_cost_the_minimum(
    sandbox_factory, client_for
):
    """No event enters a window that ended before the server's clock, so its pages keep their
    rows: a split hands the later pages of the same query to a new walk, and every page is read
    once. The window costs ceil(rows / 100) requests, however many walks read it."""
    sb = sandbox_factory(leads=4000, requests_per_second=None, latency_ms=5)
    client = client_for(sb, max_workers=4)
    sb.reset_stats()
    records = fetch(client, "events")
    assert rows_of("events", records) == expected(sb, "events")
    assert len(client.stats().parts) > 1, "split into walks"
    assert sb.stats()["requests"] == math.ceil(len(records) / 100)


def test_a_busy_top_of_a_past_window_costs_the_minimum(sandbox_factory, client_for):
    """Events are not spread evenly over a window: here twenty minutes at its top hold most of
    them (an import creating 50 leads a minute). The first page's density promises thousands of
    pages, yet no walk asks for a page past the end: ceil(rows / 100) requests. The window
    starts after the sandbox's bulk edit (hundreds of events in one second), which misleads
    a density in its own way (see `QueryPages.last_to_share`)."""
    sb = sandbox_factory(leads=300, requests_per_second=None, latency_ms=5)
    t = int(END.timestamp()) + 60
    for minute in range(20):
        sb.update_config(
            churn=ChurnConfig(
                updates=0,
                creates=50,
                deletes=0,
                streams=("leads",),
                clock=lambda s=t + 60 * minute: s,
            )
        )
        sb.churn_step()
    sb.update_config(churn=None)
    window = (START + timedelta(days=16), END + timedelta(hours=1))
    client = client_for(sb, max_workers=4)
    sb.reset_stats()
    records = fetch(client, "events", *window)
    assert rows_of("events", records) == expected(sb, "events", *window)
    assert sum(r["created_at"] >= t for r in records) > len(records) // 2
    assert len(client.stats().parts) > 1, "split into walks"
    assert sb.stats()["requests"] == math.ceil(len(records) / 100)


def test_a_page_ending_deep_in_a_second_goes_on_with_that_second_by_id(sandbox_factory, client_for):
    """After the data: a few leads created at T - 10, then a robot's 300 edits at T. The page
    holds the few and the rest of it from T, so T is read by id at once (its first page
    ascending and descending): three requests for the live list, none spent on a page full of T
    only to learn it is crowded, and one for the deleted list."""
    sb = sandbox_factory(leads=1500, requests_per_second=None)
    t = int(END.timestamp()) + 3600
    for second, created, edited in ((t - 10, 20, 0), (t, 0, 300)):
        sb.update_config(
            churn=ChurnConfig(
                updates=edited,
                creates=created,
                deletes=0,
                streams=("leads",),
                clock=lambda s=second: s,
            )
        )
        sb.churn_step()
    sb.update_config(churn=None)
    client = client_for(sb, max_workers=1)
    window = (datetime.fromtimestamp(t - 100, UTC), datetime.fromtimestamp(t + 1, UTC))
    sb.reset_stats()
    records = fetch(client, "leads", *window)
    assert rows_of("leads", records) == expected(sb, "leads", *window)
    at = Counter((r["updated_at"], bool(r.get("is_deleted"))) for r in records)
    assert at[(t - 10, False)] < 200 and 250 < at[(t, False)] <= 500, at
    assert sum(n for (_, deleted), n in at.items() if deleted) < 250, at
    assert sb.stats()["requests"] == 3 + 1


def test_the_client_sends_before_importing_arrow_and_msgspec():
    """A run's first request does not wait for PyArrow and msgspec: a read of leads with their
    link rows reaches its first request having imported neither. The thread that imports them
    beside the first requests is held back, so the modules seen are the request path's own."""
    code = (
        "import os, sys, threading\n"
        "import urllib3.connection\n"
        "def first_request(*_, **__):\n"
        "    print(','.join(m for m in ('pyarrow', 'numpy', 'msgspec') if m in sys.modules))\n"
        "    sys.stdout.flush()\n"
        "    os._exit(0)\n"
        "urllib3.connection.HTTPConnection.request = first_request\n"
        "from kommo_dagster.kommo import client as module\n"
        "module._import_decoding = threading.Event().wait\n"
        "from kommo_dagster.kommo.link_rows import LinkRows\n"
        "import socket\n"
        "server = socket.create_server(('127.0.0.1', 0))  # accepts; the request never leaves\n"
        "url = f'http://127.0.0.1:{server.getsockname()[1]}'\n"
        "client = module.KommoClient(base_url=url, token='token', max_workers=1)\n"
        "next(client.iter_batches('leads', links=LinkRows('leads')))\n"
        "print('no request was made')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", (out.stdout, out.stderr[-2000:])
