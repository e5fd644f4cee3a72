"""The client's first answer as the check of the token, the account and the host (no request of
its own), and the hosts the token may be sent to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kommo_dagster.kommo import (
    KommoAuthError,
    KommoConfigError,
    KommoForbiddenError,
    KommoHTTPError,
    KommoNotFoundError,
    KommoPaymentRequiredError,
    KommoResponseError,
    KommoSettings,
)
from kommo_dagster.kommo.config import base_url_for
from kommo_dagster.kommo.streams import INCREMENTAL_STREAMS, STREAMS
from kommo_dagster_tests.kommo.conftest import fetch

pytestmark = pytest.mark.timeout(60)


QUIET_DAY = (datetime(2026, 9, 15, tzinfo=UTC), datetime(2026, 9, 16, tzinfo=UTC))


def _paths(sb) -> dict[str, dict]:
    return sb.stats()["by_path"]


def _lists(stream: str) -> int:
    """The lists a stream reads, each with its own first request (live and deleted)."""
    return 2 if STREAMS[stream].has_deleted_list else 1


def _first_page(client, stream: str) -> list:
    start, end = QUIET_DAY if STREAMS[stream].is_incremental else (None, None)
    return next(iter(client.iter_records(stream, start=start, end=end)), [])


def test_no_request_checks_the_account_before_the_first_list(sandbox_factory, client_for):
    sb = sandbox_factory(leads=300, requests_per_second=None)
    client = client_for(sb)
    for stream in INCREMENTAL_STREAMS:
        assert fetch(client, stream, *QUIET_DAY) == []
    lists = {STREAMS[s].path: 2 if STREAMS[s].has_deleted_list else 1 for s in INCREMENTAL_STREAMS}
    assert {path: sum(counts.values()) for path, counts in _paths(sb).items()} == lists
    assert all(set(counts) == {"204"} for counts in _paths(sb).values())


@pytest.mark.parametrize("stream", ["leads", "events", "pipelines", "account"])
@pytest.mark.parametrize(
    ("setting", "error", "words"),
    [
        ({"token": "wrong"}, KommoAuthError, "check KOMMO_API_TOKEN"),
        ({"unpaid": True}, KommoPaymentRequiredError, "paid period has ended"),
    ],
    ids=["wrong-token", "unpaid"],
)
def test_a_bad_account_fails_at_the_first_request(
    sandbox_factory, client_for, stream, setting, error, words
):
    sb = sandbox_factory(leads=300, requests_per_second=None)
    setting = dict(setting)  # shared by the stream's cases
    token = setting.pop("token", sb.token)
    sb.update_config(**setting)
    with pytest.raises(error, match=words):
        _first_page(client_for(sb, token=token, max_workers=1), stream)
    assert list(_paths(sb)) == [STREAMS[stream].path]
    assert sb.stats()["requests"] <= _lists(stream), "at most each list's first, not retried"


def test_the_users_request_is_the_admin_check(sandbox_factory, client_for):
    sb = sandbox_factory(leads=300, requests_per_second=None, not_admin=True)
    client = client_for(sb)
    assert _first_page(client, "pipelines")  # any token may read the other streams
    with pytest.raises(KommoForbiddenError, match="not an account administrator"):
        _first_page(client, "users")
    assert _paths(sb)[STREAMS["users"].path] == {"403": 1}


@pytest.mark.parametrize("stream", ["leads", "users"])
def test_a_redirect_to_another_host_is_reported_and_not_followed(
    sandbox_factory, client_for, stream
):
    """kommo.com vs amocrm.ru: the host answers with a redirect; the token must not follow."""
    other = sandbox_factory(leads=0, requests_per_second=None)
    sb = sandbox_factory(leads=300, requests_per_second=None, redirect_to=other.base_url)
    with pytest.raises(KommoHTTPError, match="redirect \\(301\\)") as err:
        _first_page(client_for(sb), stream)
    assert other.base_url in str(err.value) and "KOMMO_BASE_URL" in str(err.value)
    assert other.stats()["requests"] == 0, "the token never reached the other host"


@pytest.mark.parametrize("stream", ["leads", "events", "users", "pipelines", "account"])
@pytest.mark.parametrize(
    ("wrong_host", "error", "words"),
    [
        ("404", KommoNotFoundError, "has no Kommo account \\(404 on /api/v4/"),
        ("html", KommoResponseError, "200 and an HTML page instead of JSON"),
        ("json", KommoResponseError, "did not answer as a Kommo account"),
    ],
    ids=["404", "html", "json"],
)
def test_a_host_that_is_not_the_account_says_to_check_the_host(
    sandbox_factory, client_for, stream, wrong_host, error, words
):
    sb = sandbox_factory(leads=300, requests_per_second=None, wrong_host=wrong_host)
    with pytest.raises(error, match=words) as err:
        _first_page(client_for(sb, max_workers=1), stream)
    message = str(err.value)
    assert "KOMMO_BASE_URL" in message and "KOMMO_SUBDOMAIN" in message
    if wrong_host != "html":
        assert sb.base_url in message and "amocrm.ru" in message
    assert sb.stats()["requests"] <= _lists(stream), "at most each list's first, not retried"


def test_a_404_on_an_objects_path_keeps_its_own_message(sandbox_factory, client_for):
    """A pipeline that no longer exists is not a wrong host, even on the client's first request."""
    sb = sandbox_factory(leads=300, requests_per_second=None)
    with pytest.raises(KommoNotFoundError, match="materialize pipelines again") as err:
        list(client_for(sb).iter_records("statuses", parent_ids=[999999]))
    assert "KOMMO_BASE_URL" not in str(err.value)


def test_the_sensors_poll_checks_the_host_too(sandbox_factory, client_for):
    from kommo_dagster.kommo.changes import ChangeCursor, poll_changes

    sb = sandbox_factory(leads=30, requests_per_second=None, wrong_host="json")
    with pytest.raises(KommoResponseError, match="did not answer as a Kommo account"):
        poll_changes(client_for(sb), ChangeCursor(since=0))
    assert sb.stats()["requests"] == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://mycompany.kommo.com",
        "https://mycompany.amocrm.ru",
        "https://mycompany.amocrm.com",
        "http://127.0.0.1:8080",
        "http://localhost:9000",
        "http://[::1]:9000",
    ],
)
def test_kommo_hosts_and_this_machine_are_allowed(url):
    assert base_url_for(subdomain=None, base_url=url) == url


@pytest.mark.parametrize(
    "url",
    ["https://kommo.com.evil.example", "https://mycompany.kommo.co", "https://amocrm.ru"],
)
def test_other_hosts_are_refused_unless_allowed(url):
    with pytest.raises(KommoConfigError, match="KOMMO_ALLOW_ANY_HOST=true"):
        base_url_for(subdomain=None, base_url=url)
    env = {"KOMMO_API_TOKEN": "t", "KOMMO_BASE_URL": url, "KOMMO_ALLOW_ANY_HOST": "true"}
    assert KommoSettings.from_env(env).base_url == url


def test_the_new_settings_are_validated_and_name_their_variable():
    env = {"KOMMO_API_TOKEN": "t", "KOMMO_SUBDOMAIN": "acme"}
    assert KommoSettings.from_env(env).ban_cooldown_seconds == 3600
    assert (
        KommoSettings.from_env({**env, "KOMMO_BAN_COOLDOWN_SECONDS": "60"}).ban_cooldown_seconds
        == 60
    )
    with pytest.raises(KommoConfigError, match="KOMMO_BAN_COOLDOWN_SECONDS"):
        KommoSettings.from_env({**env, "KOMMO_BAN_COOLDOWN_SECONDS": "an hour"})
    with pytest.raises(KommoConfigError, match="KOMMO_ALLOW_ANY_HOST"):
        KommoSettings.from_env({**env, "KOMMO_ALLOW_ANY_HOST": "perhaps"})
