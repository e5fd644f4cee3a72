"""What each answer of Kommo means, against the sandbox and hosts that are not it, over real
HTTP: a 429's wait read however it is written, every refusing status's error saying what to
do, and a 200 that is not JSON a clear error."""

from __future__ import annotations

import logging

import pytest

from kommo_dagster.kommo import (
    KommoAuthError,
    KommoForbiddenError,
    KommoHTTPError,
    KommoIPBlockedError,
    KommoNotFoundError,
    KommoPaymentRequiredError,
    KommoResponseError,
    KommoRetryError,
    RetryPolicy,
)
from kommo_dagster_tests.kommo.conftest import SECRET, expected, fetch, rows_of

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("style", ["json", "header", "html", "mixed"])
def test_every_429_style_is_retried(account, client_for, style, caplog):
    account.update_config(rate_limit_style=style)
    account.inject_fault("429", count=2)
    client = client_for(account)
    with caplog.at_level(logging.WARNING, logger="kommo_dagster.kommo"):
        records = fetch(client, "companies")
    assert rows_of("companies", records) == expected(account, "companies")
    st = client.stats()
    assert st.throttled == 2 and st.retries == 2
    assert caplog.text.count("HTTP 429") == 2
    if style in ("json", "header"):
        # The sandbox asks for one second, in the body or in Retry-After; the client waits it.
        assert caplog.text.count("in 1.0s") == 2


def test_401_names_the_token_variable_and_is_not_retried(account, client_for):
    client = client_for(account, token="tok-wrong-" + SECRET)
    with pytest.raises(KommoAuthError, match="check KOMMO_API_TOKEN") as err:
        fetch(client, "tasks")
    assert "401" in str(err.value) and client.stats().requests == 1


def test_402_says_the_paid_period_ended(account, client_for):
    account.update_config(unpaid=True)
    client = client_for(account)
    with pytest.raises(KommoPaymentRequiredError, match="paid period has ended"):
        fetch(client, "pipelines")
    assert client.stats().requests == 1


def test_403_on_users_says_the_user_is_not_an_admin(account, client_for):
    account.update_config(not_admin=True)
    client = client_for(account)
    with pytest.raises(KommoForbiddenError, match="not an account administrator"):
        fetch(client, "users")
    assert client.stats().requests == 1


def test_an_html_403_is_an_ip_block_that_only_support_can_lift(sandbox_factory, client_for):
    sb = sandbox_factory(leads=300, requests_per_second=1, ban_after=1)
    # A client that ignores the limit draws a violation, which bans the IP.
    client = client_for(sb, requests_per_second=None)
    with pytest.raises(KommoIPBlockedError, match="Kommo support") as err:
        for _ in range(3):
            fetch(client, "pipelines")
    assert err.value.status == 403 and sb.stats()["banned"]


def test_404_on_a_pipeline_names_it(account, client_for):
    client = client_for(account)
    with pytest.raises(KommoNotFoundError, match="pipelines entry with id 424242"):
        list(client.iter_records("statuses", parent_ids=[424242]))


def test_a_400_carries_kommos_validation_errors(account, client_for):
    client = client_for(account)
    with pytest.raises(KommoHTTPError, match="HTTP 400") as err:
        client.get("/api/v4/leads", [("limit", "many")])
    assert "limit" in str(err.value)


def test_a_200_that_is_not_json_is_a_clear_error(not_kommo, tmp_path):
    from kommo_dagster.kommo import KommoClient

    with KommoClient(base_url=not_kommo, token=SECRET, rate_limit_dir=tmp_path) as client:
        with pytest.raises(KommoResponseError, match="HTML page instead of JSON") as err:
            client.get("/api/v4/leads")
        assert "KOMMO_BASE_URL" in str(err.value)
        with pytest.raises(KommoResponseError, match="malformed JSON"):
            client.get("/api/v4/broken")
        assert client.stats().retries == 0


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-5", "soon"])
def test_a_retry_after_that_is_no_number_of_seconds_falls_back_to_the_backoff(
    throttling, tmp_path, caplog, value
):
    """Not a number of seconds nor an HTTP-date: a negative one is no more a wait than a
    negative ``retry_after`` in the body, which falls back to the backoff too."""
    from kommo_dagster.kommo import KommoClient

    url, seen = throttling
    policy = RetryPolicy(max_attempts=2, max_elapsed=30, backoff_base=0.6, backoff_max=0.6)
    client = KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path, retry=policy)
    with client, pytest.raises(KommoRetryError, match="kept answering 429"):
        client.get(f"/api/v4/header/{value}")
    # The backoff (0.3 to 0.6 s), not no wait at all (the budget's own spacing is 0.15 s).
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.28
    assert f"in {value}s" not in caplog.text and "in 0.0s" not in caplog.text


@pytest.mark.parametrize("path", ["header/0", "date/-30"])
def test_a_retry_after_of_no_time_is_retried_at_the_budgets_pace(throttling, tmp_path, path):
    """``Retry-After: 0``, or a date already past, asks for no wait: not the backoff's."""
    from kommo_dagster.kommo import KommoClient

    url, seen = throttling
    policy = RetryPolicy(max_attempts=2, max_elapsed=30, backoff_base=4, backoff_max=4)
    client = KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path, retry=policy)
    with client, pytest.raises(KommoRetryError, match="after 2 attempts"):
        client.get(f"/api/v4/{path}")
    assert len(seen) == 2 and seen[1] - seen[0] < 1.5  # the backoff would be 2 to 4 s


def test_a_retry_after_http_date_is_waited_for(throttling, tmp_path, caplog):
    """An HTTP-date has whole seconds: 2 s from now is 1 to 2 s away."""
    from kommo_dagster.kommo import KommoClient

    url, seen = throttling
    policy = RetryPolicy(max_attempts=2, max_elapsed=30, backoff_base=0.01, backoff_max=0.01)
    client = KommoClient(base_url=url, token=SECRET, rate_limit_dir=tmp_path, retry=policy)
    with client, pytest.raises(KommoRetryError, match="kept answering 429"):
        client.get("/api/v4/date/2")
    assert len(seen) == 2 and 0.95 <= seen[1] - seen[0] < 3.0
    assert "retry 1 of 1 in 1." in caplog.text or "retry 1 of 1 in 2.0s" in caplog.text
