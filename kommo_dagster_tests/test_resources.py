"""KommoResource: EnvVar-based settings, failures at run start naming the variable, no token in
repr or run config, and a working client against the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from kommo_dagster.kommo import KommoClient, KommoConfigError
from kommo_dagster.resources import KommoResource

SECRET = "tok-resource-SECRET-41"
KOMMO_VARS = (
    "KOMMO_API_TOKEN",
    "KOMMO_SUBDOMAIN",
    "KOMMO_BASE_URL",
    "KOMMO_REQUESTS_PER_SECOND",
    "KOMMO_MAX_WORKERS",
    "KOMMO_RATE_LIMIT_DIR",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in KOMMO_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KOMMO_RATE_LIMIT_DIR", str(tmp_path))


@dg.asset
def companies(kommo: KommoResource) -> int:
    with kommo.get_client() as client:
        start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
        return sum(len(p) for p in client.iter_records("companies", start=start, end=end))


def run(resource: KommoResource) -> dg.ExecuteInProcessResult:
    return dg.materialize([companies], resources={"kommo": resource}, raise_on_error=False)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.all_events if e.is_failure)


def test_definitions_load_without_any_variable_and_show_no_values():
    resource = KommoResource.from_env()
    defs = dg.Definitions(assets=[companies], resources={"kommo": resource})
    assert defs.resolve_asset_graph() is not None
    assert "KOMMO_API_TOKEN" not in repr(resource)  # the token field is hidden altogether
    assert repr(resource).startswith("KommoResource(subdomain='KOMMO_SUBDOMAIN'")


def test_a_missing_variable_fails_the_run_at_start_with_its_name():
    with pytest.raises(dg.DagsterInvalidConfigError, match="KOMMO_API_TOKEN"):
        run(KommoResource.from_env())


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"KOMMO_API_TOKEN": " ", "KOMMO_SUBDOMAIN": "acme"}, "KOMMO_API_TOKEN"),
        ({"KOMMO_API_TOKEN": SECRET, "KOMMO_SUBDOMAIN": "acme.kommo.com"}, "KOMMO_SUBDOMAIN"),
        ({"KOMMO_API_TOKEN": SECRET, "KOMMO_BASE_URL": "ftp://acme"}, "KOMMO_BASE_URL"),
        (
            {
                "KOMMO_API_TOKEN": SECRET,
                "KOMMO_SUBDOMAIN": "acme",
                "KOMMO_REQUESTS_PER_SECOND": "x",
            },
            "KOMMO_REQUESTS_PER_SECOND",
        ),
        (
            {"KOMMO_API_TOKEN": SECRET, "KOMMO_SUBDOMAIN": "acme", "KOMMO_MAX_WORKERS": "lots"},
            "KOMMO_MAX_WORKERS",
        ),
    ],
)
def test_an_invalid_variable_fails_the_run_before_any_request(monkeypatch, env, name):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    resource = KommoResource.from_env()  # loading never fails
    result = run(resource)
    assert not result.success
    text = failure_text(result)
    assert name in text and "KommoConfigError" in text and SECRET not in text
    with pytest.raises(KommoConfigError, match=name):
        resource.get_client()


def test_the_sandbox_needs_no_subdomain_and_the_run_config_shows_no_token(monkeypatch):
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(SandboxConfig(leads=300, requests_per_second=None, token=SECRET)) as sb:
        monkeypatch.setenv("KOMMO_API_TOKEN", sb.token)
        monkeypatch.setenv("KOMMO_BASE_URL", sb.base_url)
        monkeypatch.setenv("KOMMO_REQUESTS_PER_SECOND", "50")
        resource = KommoResource.from_env()
        result = run(resource)
        assert result.success
        assert result.output_for_node("companies") == len(sb.expected_rows("companies"))
        config = result.dagster_run.run_config
        assert SECRET not in repr(config) and SECRET not in repr(resource)
        with resource.get_client() as client:
            assert isinstance(client, KommoClient)
            assert client.base_url == sb.base_url and client.requests_per_second == 50
            assert SECRET not in repr(client)


def test_direct_values_work_and_are_validated(tmp_path):
    resource = KommoResource(api_token=SECRET, subdomain="acme", rate_limit_dir=str(tmp_path))
    with resource.get_client() as client:
        assert client.base_url == "https://acme.kommo.com" and client.max_workers == 4
    assert SECRET not in repr(resource)
    with pytest.raises(KommoConfigError, match="KOMMO_REQUESTS_PER_SECOND"):
        KommoResource(api_token=SECRET, subdomain="acme", requests_per_second=-1).get_client()


def test_from_env_also_works_outside_a_run(monkeypatch):
    # Scripts use the resource directly; its EnvVars are read then.
    monkeypatch.setenv("KOMMO_API_TOKEN", SECRET)
    monkeypatch.setenv("KOMMO_SUBDOMAIN", "acme")
    with KommoResource.from_env().get_client() as client:
        assert client.base_url == "https://acme.kommo.com"


@dg.asset(key=["kommo", "users"])
def users(kommo: KommoResource) -> int:
    with kommo.get_client() as client:
        return sum(len(p) for p in client.iter_records("users"))


@pytest.mark.parametrize(
    ("change", "selected", "words"),
    [
        ({"token": "wrong"}, [companies], "check KOMMO_API_TOKEN"),
        ({"unpaid": True}, [companies], "paid period has ended"),
        ({"not_admin": True}, [companies, users], "not an account administrator"),
    ],
    ids=["wrong-token", "unpaid", "users-without-admin"],
)
def test_a_run_checks_the_credentials_before_reading_any_stream(tmp_path, change, selected, words):
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(SandboxConfig(leads=300, requests_per_second=None, token=SECRET)) as sb:
        token = change.pop("token", SECRET)
        sb.update_config(**change)
        resource = KommoResource(
            api_token=token, base_url=sb.base_url, rate_limit_dir=str(tmp_path / "rate")
        )
        result = dg.materialize(selected, resources={"kommo": resource}, raise_on_error=False)
        assert not result.success and words in failure_text(result)
        assert set(sb.stats()["by_path"]) <= {"/api/v4/account", "/api/v4/users"}


def test_a_run_without_users_does_not_ask_for_them(tmp_path):
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(SandboxConfig(leads=300, requests_per_second=None, not_admin=True)) as sb:
        resource = KommoResource(
            api_token=sb.token, base_url=sb.base_url, rate_limit_dir=str(tmp_path / "rate")
        )
        assert run(resource).success
        assert "/api/v4/users" not in sb.stats()["by_path"]
