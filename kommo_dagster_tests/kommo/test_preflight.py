"""The credentials preflight (GET /api/v4/account) and the hosts the token may be sent to."""

from __future__ import annotations

import pytest

from kommo_dagster.kommo import (
    KommoAuthError,
    KommoConfigError,
    KommoForbiddenError,
    KommoHTTPError,
    KommoNotFoundError,
    KommoPaymentRequiredError,
    KommoSettings,
)
from kommo_dagster.kommo.config import base_url_for

pytestmark = pytest.mark.timeout(60)


def _paths(sb) -> dict[str, dict]:
    return sb.stats()["by_path"]


def test_the_preflight_returns_the_account_in_one_request(sandbox_factory, client_for):
    sb = sandbox_factory(leads=300, requests_per_second=None)
    account = client_for(sb).check_account()
    assert account["subdomain"] == "sandbox" and isinstance(account["id"], int)
    assert list(_paths(sb)) == ["/api/v4/account"]


@pytest.mark.parametrize(
    ("setting", "error", "words"),
    [
        ({"token": "wrong"}, KommoAuthError, "check KOMMO_API_TOKEN"),
        ({"unpaid": True}, KommoPaymentRequiredError, "paid period has ended"),
    ],
    ids=["wrong-token", "unpaid"],
)
def test_a_bad_account_fails_at_the_preflight(sandbox_factory, client_for, setting, error, words):
    sb = sandbox_factory(leads=300, requests_per_second=None)
    token = setting.pop("token", sb.token)
    sb.update_config(**setting)
    with pytest.raises(error, match=words):
        client_for(sb, token=token).check_account()
    assert _paths(sb) == {"/api/v4/account": _paths(sb)["/api/v4/account"]}
    assert sb.stats()["requests"] == 1, "not retried"


def test_a_token_that_may_not_list_users_fails_at_the_preflight(sandbox_factory, client_for):
    sb = sandbox_factory(leads=300, requests_per_second=None, not_admin=True)
    client = client_for(sb)
    client.check_account()  # any token may read the account
    with pytest.raises(KommoForbiddenError, match="not an account administrator"):
        client.check_account(users=True)


def test_a_redirect_to_another_host_is_reported_and_not_followed(sandbox_factory, client_for):
    """kommo.com vs amocrm.ru: the host answers with a redirect; the token must not follow."""
    other = sandbox_factory(leads=0, requests_per_second=None)
    sb = sandbox_factory(leads=300, requests_per_second=None, redirect_to=other.base_url)
    with pytest.raises(KommoHTTPError, match="redirect \\(301\\)") as err:
        client_for(sb).check_account()
    assert other.base_url in str(err.value) and "KOMMO_BASE_URL" in str(err.value)
    assert other.stats()["requests"] == 0, "the token never reached the other host"


def test_a_host_without_the_account_says_to_check_the_host(not_an_api, client_for, tmp_path):
    from kommo_dagster.kommo import KommoClient

    with (
        KommoClient(base_url=not_an_api, token="t", rate_limit_dir=tmp_path) as client,
        pytest.raises(KommoNotFoundError, match="has no Kommo account") as err,
    ):
        client.check_account()
    assert "amocrm.ru" in str(err.value)


@pytest.fixture
def not_an_api():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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
