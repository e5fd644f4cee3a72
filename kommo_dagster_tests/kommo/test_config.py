"""Settings are validated before any request, and every error names its environment variable."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kommo_dagster.kommo import KommoClient, KommoConfigError, KommoSettings, Secret, config
from kommo_dagster.kommo.ban import IPBan
from kommo_dagster.kommo.config import (
    MAX_BAN_COOLDOWN_SECONDS,
    base_url_for,
    validate_ban_cooldown,
    validate_max_workers,
)
from kommo_dagster_tests.kommo.conftest import NOT_PLAIN

TOKEN = "tok-3f9a-very-secret"


def test_base_url_from_subdomain_or_override():
    assert base_url_for(subdomain="acme", base_url=None) == "https://acme.kommo.com"
    assert base_url_for(subdomain=" Acme-2 ", base_url=None) == "https://acme-2.kommo.com"
    assert (
        base_url_for(subdomain=None, base_url="https://acme.amocrm.ru/") == "https://acme.amocrm.ru"
    )
    # The override wins, so a sandbox needs no subdomain.
    assert (
        base_url_for(subdomain="acme", base_url="http://127.0.0.1:8123") == "http://127.0.0.1:8123"
    )


@pytest.mark.parametrize(
    "subdomain",
    ["acme.kommo.com", "https://acme", "acme/", "ac me", "-acme", "acme_1", "a" * 64],
)
def test_a_subdomain_must_be_a_bare_name(subdomain):
    with pytest.raises(KommoConfigError, match="KOMMO_SUBDOMAIN must be the bare subdomain"):
        base_url_for(subdomain=subdomain, base_url=None)


@pytest.mark.parametrize("subdomain", [None, "", "   "])
def test_a_missing_subdomain_names_both_variables(subdomain):
    with pytest.raises(KommoConfigError) as err:
        base_url_for(subdomain=subdomain, base_url=None)
    assert "KOMMO_SUBDOMAIN" in str(err.value) and "KOMMO_BASE_URL" in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://acme.kommo.com",
        "acme.kommo.com",
        "https://",
        "https://acme.kommo.com/api/v4",
        "https://user:pw@acme.kommo.com",
        "https://acme.kommo.com?x=1",
        "http://127.0.0.1:notaport",
        # No host has these: they failed only when a run first connected.
        "https://acme .kommo.com",
        "https://acme..kommo.com",
        "https://ac%6De.kommo.com",
        "https://acme,kommo.com",
    ],
)
def test_a_base_url_must_be_a_bare_http_url(url):
    with pytest.raises(KommoConfigError, match="KOMMO_BASE_URL") as err:
        base_url_for(subdomain=None, base_url=url)
    assert urlsplit(url).hostname is None or urlsplit(url).hostname in str(err.value)


@pytest.mark.parametrize("url", ["http://my proxy:8080", "http://proxy..local", "http://[::1"])
def test_a_base_url_needs_a_real_host_name_even_when_any_host_is_allowed(url):
    with pytest.raises(KommoConfigError, match=r"KOMMO_BASE_URL .*got '"):
        base_url_for(subdomain=None, base_url=url, allow_any_host=True)
    assert base_url_for(
        subdomain=None, base_url="http://kommo_proxy.internal:8080", allow_any_host=True
    ) == ("http://kommo_proxy.internal:8080")
    assert base_url_for(subdomain=None, base_url="http://[::1]:8765") == "http://[::1]:8765"


def test_a_base_url_with_credentials_or_a_query_is_named_without_them():
    url = "https://robot:pw-9z@acme.kommo.com/?access_token=tok-9z#frag-9z"
    with pytest.raises(KommoConfigError, match="KOMMO_BASE_URL") as err:
        base_url_for(subdomain=None, base_url=url)
    assert "acme.kommo.com" in str(err.value) and "9z" not in str(err.value)


@pytest.mark.parametrize("value", [True, False])
def test_a_ban_cooldown_is_a_number_not_a_flag(value):
    with pytest.raises(KommoConfigError, match="KOMMO_BAN_COOLDOWN_SECONDS"):
        KommoSettings.build(token=TOKEN, subdomain="acme", ban_cooldown_seconds=value)


def test_a_ban_cooldown_ends_at_a_date_the_ban_message_can_name(tmp_path):
    """A block's message names when the cool-down ends: 1e12 s (year 33000) made recording the
    block fail with 'year is out of range' instead of stopping the run with its message."""
    longest = validate_ban_cooldown(MAX_BAN_COOLDOWN_SECONDS)
    ban = IPBan(key="acme.kommo.com", directory=tmp_path, cooldown=longest)
    assert "none will send a request until" in str(ban.record(path="/api/v4/leads"))
    with pytest.raises(KommoConfigError, match=r"KOMMO_BAN_COOLDOWN_SECONDS .* got '1e12'"):
        KommoSettings.build(token=TOKEN, subdomain="acme", ban_cooldown_seconds="1e12")


@pytest.mark.parametrize("token", [None, "", "   "])
def test_an_empty_token_is_refused(token):
    with pytest.raises(KommoConfigError, match="KOMMO_API_TOKEN is empty"):
        KommoSettings.build(token=token, subdomain="acme")


def test_a_token_with_whitespace_is_refused_without_echoing_it():
    with pytest.raises(KommoConfigError, match="KOMMO_API_TOKEN") as err:
        KommoSettings.build(token=TOKEN + "\n", subdomain="acme")
    assert TOKEN not in str(err.value)


@pytest.mark.parametrize(
    "token",
    [TOKEN + "\u201d", "\u201c" + TOKEN, "tok 3f9a", "tok\t3f9a", "tok\x003f9a", TOKEN + "é"],
)
def test_a_token_that_cannot_go_in_a_header_is_refused_without_echoing_it(token):
    """A token pasted with a typographic quote used to pass, then fail on the first request
    with a bare UnicodeEncodeError from http.client; a control character went out as is."""
    with pytest.raises(KommoConfigError, match="KOMMO_API_TOKEN") as err:
        KommoSettings.build(token=token, subdomain="acme")
    assert "3f9a" not in str(err.value)


@pytest.mark.parametrize("value", ["fast", "0", "-1", "nan", "inf", 0, -3.0])
def test_requests_per_second_must_be_positive(value):
    with pytest.raises(KommoConfigError, match="KOMMO_REQUESTS_PER_SECOND"):
        KommoSettings.build(token=TOKEN, subdomain="acme", requests_per_second=value)


@pytest.mark.parametrize("value", ["0.009", "1e-300", "7e-5", 0.001])
def test_a_budget_too_small_to_finish_a_run_is_refused(value):
    with pytest.raises(KommoConfigError, match=r"must be at least 0\.01") as err:
        KommoSettings.build(token=TOKEN, subdomain="acme", requests_per_second=value)
    assert repr(value) in str(err.value)


def test_the_least_budget_is_accepted():
    s = KommoSettings.build(token=TOKEN, subdomain="acme", requests_per_second="0.01")
    assert s.requests_per_second == 0.01


@pytest.mark.parametrize("value", ["many", "0", 65, 2.5, True])
def test_max_workers_must_be_a_small_positive_integer(value):
    with pytest.raises(KommoConfigError, match="KOMMO_MAX_WORKERS"):
        validate_max_workers(value)


@pytest.mark.parametrize("value", NOT_PLAIN)
def test_numbers_not_written_plainly_are_refused_naming_the_variable_and_value(value):
    with pytest.raises(KommoConfigError, match="KOMMO_REQUESTS_PER_SECOND must be a number") as e:
        KommoSettings.build(token=TOKEN, subdomain="acme", requests_per_second=value)
    assert repr(value) in str(e.value)
    with pytest.raises(KommoConfigError, match="KOMMO_BAN_COOLDOWN_SECONDS must be a number") as e:
        KommoSettings.build(token=TOKEN, subdomain="acme", ban_cooldown_seconds=value)
    assert repr(value) in str(e.value)
    with pytest.raises(KommoConfigError, match="KOMMO_MAX_WORKERS must be an integer") as e:
        validate_max_workers(value)
    assert repr(value) in str(e.value)


@pytest.mark.parametrize(
    ("value", "number"),
    [(" 2.5 ", 2.5), ("+3", 3.0), ("5.", 5.0), (".5", 0.5), ("1E0", 1.0), ("\t6e-1\n", 0.6)],
)
def test_numbers_written_plainly_stay_accepted(value, number):
    s = KommoSettings.build(
        token=TOKEN,
        subdomain="acme",
        requests_per_second=value,
        ban_cooldown_seconds=value,
    )
    assert (s.requests_per_second, s.ban_cooldown_seconds) == (number, number)


@pytest.mark.parametrize(("value", "workers"), [(" 8 ", 8), ("+2", 2), ("064", 64), (3.0, 3)])
def test_workers_written_plainly_stay_accepted(value, workers):
    assert validate_max_workers(value) == workers


def test_a_rate_limit_dir_under_a_file_fails_with_the_settings(tmp_path):
    """It passed validation, then failed at the first client with a bare NotADirectoryError."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(KommoConfigError, match="KOMMO_RATE_LIMIT_DIR") as err:
        KommoSettings.build(token=TOKEN, subdomain="acme", rate_limit_dir=f / "budget")
    assert str(f / "budget") in str(err.value)


def test_a_rate_limit_dir_in_the_home_of_no_user_names_its_value():
    value = "~no-such-user-kommo/budget"
    with pytest.raises(KommoConfigError, match=f"KOMMO_RATE_LIMIT_DIR .*'{value}'.*no-such-user"):
        KommoSettings.build(token=TOKEN, subdomain="acme", rate_limit_dir=value)


def test_a_rate_limit_dir_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(KommoConfigError, match="KOMMO_RATE_LIMIT_DIR"):
        KommoSettings.build(token=TOKEN, subdomain="acme", rate_limit_dir=str(f))


def test_settings_from_env_defaults_and_values(tmp_path):
    s = KommoSettings.from_env({"KOMMO_API_TOKEN": TOKEN, "KOMMO_SUBDOMAIN": "acme"})
    assert (s.base_url, s.requests_per_second, s.max_workers) == ("https://acme.kommo.com", 7.0, 4)
    s = KommoSettings.from_env(
        {
            "KOMMO_API_TOKEN": TOKEN,
            "KOMMO_BASE_URL": "http://127.0.0.1:9",
            "KOMMO_REQUESTS_PER_SECOND": "3.5",
            "KOMMO_MAX_WORKERS": "2",
            "KOMMO_RATE_LIMIT_DIR": str(tmp_path),
        }
    )
    assert (s.base_url, s.requests_per_second, s.max_workers, s.rate_limit_dir) == (
        "http://127.0.0.1:9",
        3.5,
        2,
        tmp_path,
    )


def test_the_token_never_shows_in_repr_str_or_pickle(tmp_path):
    secret = Secret(TOKEN)
    settings = KommoSettings.build(token=TOKEN, subdomain="acme")
    client = KommoClient(token=TOKEN, subdomain="acme", rate_limit_dir=tmp_path)
    try:
        for obj in (secret, settings, client, client.limiter):
            assert TOKEN not in repr(obj) and TOKEN not in str(obj)
        assert secret.get_secret_value() == TOKEN
        with pytest.raises(TypeError, match="a Secret cannot be pickled"):
            pickle.dumps(secret)
    finally:
        client.close()


def test_the_client_validates_before_any_request(tmp_path):
    with pytest.raises(KommoConfigError, match="KOMMO_API_TOKEN"):
        KommoClient(token="", base_url="http://127.0.0.1:9", rate_limit_dir=tmp_path)
    with pytest.raises(KommoConfigError, match="KOMMO_SUBDOMAIN"):
        KommoClient(token=TOKEN, subdomain="acme.kommo.com", rate_limit_dir=tmp_path)
    with pytest.raises(KommoConfigError, match="KOMMO_REQUESTS_PER_SECOND"):
        KommoClient(token=TOKEN, subdomain="acme", requests_per_second=0, rate_limit_dir=tmp_path)


def test_the_environment_is_read_in_this_module_only():
    """Every other module reads variables through `environment` and `account_variable`, so a
    variable means the same wherever it is read (the sandbox, a separate program, aside)."""
    package = Path(config.__file__).parents[1]
    readers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "sandbox" not in path.parts
        and any(word in path.read_text(encoding="utf-8") for word in ("os.environ", "getenv("))
    }
    assert readers == {"kommo/config.py"}


@pytest.mark.parametrize("value", ["8", "50", 7.5])
def test_a_budget_above_kommos_limit_needs_to_be_allowed(value):
    with pytest.raises(KommoConfigError, match="KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT=true"):
        KommoSettings.from_env(
            {
                "KOMMO_API_TOKEN": TOKEN,
                "KOMMO_SUBDOMAIN": "acme",
                "KOMMO_REQUESTS_PER_SECOND": value,
            }
        )
    allowed = KommoSettings.from_env(
        {
            "KOMMO_API_TOKEN": TOKEN,
            "KOMMO_SUBDOMAIN": "acme",
            "KOMMO_REQUESTS_PER_SECOND": str(value),
            "KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT": "true",
        }
    )
    assert allowed.requests_per_second == float(value)
