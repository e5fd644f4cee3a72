"""The gateway: rate limit and its 429 styles, the IP ban, faults, 402/403 and wrong-host modes
and counters.

Rate-limit tests use a long window (`rate_limit_window=60`) so that "these requests arrived
within one window" holds however slow the machine is; the limiter is the same code.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from kommo_dagster.sandbox import FAULT_KINDS, FaultConfig

from .conftest import Api

pytestmark = pytest.mark.timeout(60)


def _limited(sandbox_factory, **kw):
    sb = sandbox_factory(leads=40, requests_per_second=1, rate_limit_window=60, **kw)
    return sb, Api(sb)


def test_over_the_limit_json_style_is_problem_json_with_retry_after(sandbox_factory):
    _sb, api = _limited(sandbox_factory, rate_limit_style="json")
    assert api.get("/api/v4/leads").status_code == 200
    r = api.get("/api/v4/leads")
    assert r.status_code == 429
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["retry_after"] >= 1
    assert "Retry-After" not in r.headers


def test_html_style_is_a_gateway_page_without_hints(sandbox_factory):
    _sb, api = _limited(sandbox_factory, rate_limit_style="html")
    api.get("/api/v4/leads")
    r = api.get("/api/v4/leads")
    assert r.status_code == 429
    assert r.headers["Content-Type"].startswith("text/html")
    assert "429 Too Many Requests" in r.text
    assert "Retry-After" not in r.headers


def test_header_style_sends_retry_after(sandbox_factory):
    _sb, api = _limited(sandbox_factory, rate_limit_style="header")
    api.get("/api/v4/leads")
    r = api.get("/api/v4/leads")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"


def test_mixed_style_uses_every_style(sandbox_factory):
    _sb, api = _limited(sandbox_factory, rate_limit_style="mixed")
    api.get("/api/v4/leads")
    kinds = set()
    for _ in range(15):
        r = api.get("/api/v4/leads")
        assert r.status_code == 429
        if r.headers["Content-Type"].startswith("text/html"):
            kinds.add("html")
        elif "Retry-After" in r.headers:
            kinds.add("header")
        else:
            assert "retry_after" in r.json()
            kinds.add("json")
    assert kinds == {"json", "html", "header"}


def test_rejected_requests_count_as_arrivals_and_every_violation_is_counted(sandbox_factory):
    sb, api = _limited(sandbox_factory)
    sb.update_config(requests_per_second=3)
    statuses = [api.get("/api/v4/leads").status_code for _ in range(8)]
    assert statuses == [200, 200, 200] + [429] * 5
    stats = sb.stats()
    assert stats["violations"] == 5
    assert stats["rate_limited"] == 5
    assert stats["requests"] == 8
    assert stats["by_path"]["/api/v4/leads"] == {"200": 3, "429": 5}


def test_ban_after_k_violations_answers_html_403_to_everything(sandbox_factory):
    sb, api = _limited(sandbox_factory, ban_after=2)
    assert [api.get("/api/v4/leads").status_code for _ in range(3)] == [200, 429, 429]
    for path in ("/api/v4/leads", "/api/v4/users", "/api/v4/account"):
        r = api.get(path)
        assert r.status_code == 403
        assert r.headers["Content-Type"].startswith("text/html")
        assert "403 Forbidden" in r.text
    assert sb.stats()["banned"] is True
    sb.reset()
    sb.update_config(requests_per_second=None)
    assert api.get("/api/v4/leads").status_code == 200


def test_unlimited_sandbox_counts_the_peak_second_and_concurrency(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None, latency_ms=300)
    barrier = threading.Barrier(4)
    results = []

    def call():
        api = Api(sb)
        barrier.wait()
        results.append(api.get("/api/v4/leads").status_code)
        api.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 4
    stats = sb.stats()
    assert stats["peak_concurrency"] >= 2
    assert stats["peak_requests_per_second"] >= 2
    # A request leaves the count after its answer is written, so the client may read the answer
    # a moment before the server thread gets there: wait (bounded) for every one to leave.
    deadline = time.monotonic() + 5.0
    while sb.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sb.stats()["in_flight"] == 0


def test_stats_over_http_and_reset(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)
    api.get("/api/v4/leads")
    api.get("/api/v4/leads", token="nope")
    over_http = requests.get(f"{sb.base_url}/__sandbox/stats", timeout=10).json()
    assert over_http["by_path"] == {"/api/v4/leads": {"200": 1, "401": 1}}
    assert over_http["by_status"] == {"200": 1, "401": 1}
    assert requests.post(f"{sb.base_url}/__sandbox/reset", timeout=10).status_code == 200
    assert sb.stats()["requests"] == 0
    assert requests.get(f"{sb.base_url}/__sandbox/nothing", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("500_json", 500, "application/problem+json"),
        ("500_html", 500, "text/html"),
        ("502", 502, "text/html"),
        ("504", 504, "text/html"),
        ("429", 429, "application/problem+json"),
    ],
)
def test_each_injected_error_is_served_once(sandbox_factory, kind, status, content_type):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)
    sb.inject_fault(kind)
    r = api.get("/api/v4/leads")
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith(content_type)
    if kind == "500_json":
        assert r.json()["trace_id"]
    assert api.get("/api/v4/leads").status_code == 200
    stats = sb.stats()
    assert stats["faults"] == {kind: 1}
    assert stats["violations"] == 0


def test_a_dropped_connection_gets_no_response_at_all(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)
    sb.inject_fault("drop")
    with pytest.raises(requests.ConnectionError):
        api.get("/api/v4/leads")
    assert api.get("/api/v4/leads").status_code == 200
    assert sb.stats()["by_path"]["/api/v4/leads"] == {"dropped": 1, "200": 1}


def test_a_slow_response_outlasts_a_client_timeout(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None, faults=FaultConfig(slow_seconds=3.0))
    api = Api(sb)
    sb.inject_fault("slow")
    with pytest.raises(requests.ReadTimeout):
        api.get("/api/v4/leads", timeout=0.3)
    assert sb.stats()["faults"] == {"slow": 1}


def test_latency_is_applied_to_every_request(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None, latency_ms=1500)
    api = Api(sb)
    with pytest.raises(requests.ReadTimeout):
        api.get("/api/v4/account", timeout=0.3)


def test_faults_can_target_one_path(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)
    sb.inject_fault("502", count=2, path="/api/v4/users")
    assert api.get("/api/v4/leads").status_code == 200
    assert api.get("/api/v4/users").status_code == 502
    assert api.get("/api/v4/users").status_code == 502
    assert api.get("/api/v4/users").status_code == 200


def test_fault_rates_are_seeded(sandbox_factory):
    faults = FaultConfig(error_502=0.3, error_500_json=0.2, seed=11)
    runs = []
    for _ in range(2):
        sb = sandbox_factory(leads=40, requests_per_second=None, faults=faults)
        api = Api(sb)
        runs.append([api.get("/api/v4/account").status_code for _ in range(30)])
    assert runs[0] == runs[1]
    assert {200, 500, 502} == set(runs[0])


def test_unknown_fault_kind_is_refused(sandbox_factory):
    sb = sandbox_factory(leads=40)
    with pytest.raises(ValueError, match="unknown fault"):
        sb.inject_fault("teapot")
    assert "drop" in FAULT_KINDS


def test_unpaid_account_answers_402_to_everything(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None, unpaid=True)
    api = Api(sb)
    for path in ("/api/v4/leads", "/api/v4/account"):
        r = api.get(path)
        assert r.status_code == 402
        assert r.headers["Content-Type"] == "application/problem+json"
    sb.update_config(unpaid=False)
    assert api.get("/api/v4/leads").status_code == 200


def test_not_admin_token_gets_403_problem_json_on_users_only(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None, not_admin=True)
    api = Api(sb)
    r = api.get("/api/v4/users")
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/problem+json"
    assert api.get("/api/v4/leads").status_code == 200


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [("404", 404, "text/html"), ("html", 200, "text/html"), ("json", 200, "application/json")],
)
def test_a_wrong_host_answers_every_request_as_no_kommo_account(
    sandbox_factory, kind, status, content_type
):
    sb = sandbox_factory(leads=40, requests_per_second=None, wrong_host=kind)
    api = Api(sb)
    for path in ("/api/v4/leads", "/api/v4/account"):
        r = api.get(path)
        assert r.status_code == status and r.headers["Content-Type"].startswith(content_type)
        if kind == "json":
            assert not {"_links", "_embedded"} & set(r.json())
    assert sb.stats()["requests"] == 2
    sb.update_config(wrong_host=None)
    assert api.get("/api/v4/leads").status_code == 200
    with pytest.raises(ValueError, match="wrong_host"):
        sb.update_config(wrong_host="500")


def test_runtime_config_and_fault_injection_over_http(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)
    r = requests.post(
        f"{sb.base_url}/__sandbox/faults", params={"kind": "504", "count": 1}, timeout=10
    )
    assert r.status_code == 200
    assert api.get("/api/v4/leads").status_code == 504
    r = requests.post(f"{sb.base_url}/__sandbox/config", json={"unpaid": True}, timeout=10)
    assert r.json()["unpaid"] is True
    assert api.get("/api/v4/leads").status_code == 402
    r = requests.post(f"{sb.base_url}/__sandbox/config", json={"token": "x"}, timeout=10)
    assert r.status_code == 400


def test_over_long_urls_get_414(sandbox_factory):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)
    r = api.get("/api/v4/leads", [("filter[id][]", str(10_000_000 + i)) for i in range(700)])
    assert r.status_code == 414


def test_a_sandbox_bug_is_a_500_not_a_dropped_connection(sandbox_factory, monkeypatch, capsys):
    sb = sandbox_factory(leads=40, requests_per_second=None)
    api = Api(sb)

    def boom(path, query):
        raise RuntimeError("kaputt")

    monkeypatch.setattr(sb._api, "get", boom)
    r = api.get("/api/v4/leads")
    assert r.status_code == 500
    assert "kaputt" in r.json()["detail"]
    assert "RuntimeError" in capsys.readouterr().err


def test_answers_go_out_without_waiting_for_the_client_s_ack(sandbox_factory):
    """Headers and body are two writes: with Nagle's algorithm, a small answer's body waited
    for the client's delayed ACK of its headers (40 ms a request on a kept-alive connection,
    which Kommo's servers do not add). Every connection the sandbox accepts sends at once."""
    sb = sandbox_factory(leads=5)
    api = Api(sb)
    assert api.get("/api/v4/account").status_code == 200
    assert sb._server is not None
    accepted = sb._server.open_connections()
    assert accepted
    for conn in accepted:
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
