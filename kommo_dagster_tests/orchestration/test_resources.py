"""KommoResource: EnvVar-based settings, failures at run start naming the variable, no token in
repr or run config, and a working client against the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.definitions import build_definitions
from kommo_dagster.kommo import KommoClient, KommoConfigError
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.orchestration.accounts import Account
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.settings import Settings
from kommo_dagster_tests.wiring import materialize_streams, sandbox_kommo

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


# What a run's first request meets, the stream it reads, and what its failure must say. The
# wrong-host answers name the host's variables (checked below for each of them).
FIRST_REQUEST_FAILURES = {
    "wrong-token": ({"token": "wrong"}, "leads", "rejected the API token (401"),
    "unpaid": ({"unpaid": True}, "events", "402 Payment Required"),
    "users-without-admin": ({"not_admin": True}, "users", "not an account administrator"),
    "ip-blocked": ({"ban": True}, "contacts", "the IP is blocked"),
    "redirect": ({"redirect_to": "http://127.0.0.1:9"}, "leads", "with a redirect (301)"),
    "404": ({"wrong_host": "404"}, "pipelines", "has no Kommo account (404 on /api/v4/"),
    "html-page": ({"wrong_host": "html"}, "tasks", "200 and an HTML page instead of JSON"),
    "other-json": ({"wrong_host": "json"}, "leads", "did not answer as a Kommo account"),
}
WRONG_HOST_CASES = {"redirect", "404", "html-page", "other-json"}


@pytest.mark.parametrize("case", list(FIRST_REQUEST_FAILURES))
def test_a_runs_first_request_fails_with_its_own_message(sandbox_factory, tmp_path, case):
    """No request checks the account before the run's first list (a quiet run costs one request
    per list); that first request fails the run with the message its answer deserves."""
    change, stream, words = FIRST_REQUEST_FAILURES[case]
    change = dict(change)
    sb = sandbox_factory(leads=300, requests_per_second=None)
    token = change.pop("token", sb.token)
    if change.pop("ban", False):
        sb.ban()
    sb.update_config(**change)
    settings = Settings(start_date=datetime(2026, 9, 1).date(), duckdb_path=tmp_path / "k.duckdb")
    kommo = sandbox_kommo(sb, tmp_path, api_token=token, max_workers=1)
    defs = build_definitions(settings, kommo=kommo)
    result = materialize_streams(
        defs,
        dg.DagsterInstance.ephemeral(),
        [stream],
        partition="2026-10-15" if STREAMS[stream].is_incremental else None,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = str(failure.step_failure_data.error)
    assert words in message and token not in message
    if case in WRONG_HOST_CASES:
        assert "KOMMO_BASE_URL" in message and "KOMMO_SUBDOMAIN" in message
    # Nothing before the stream's first request, and nothing retried: at most the first
    # request of each of its lists (leads and contacts: live and deleted).
    assert list(sb.stats()["by_path"]) == [STREAMS[stream].path]
    assert sb.stats()["requests"] <= (2 if STREAMS[stream].has_deleted_list else 1)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"token": "wrong"}, "check KOMMO_ACC1_API_TOKEN"),
        ({"wrong_host": "json"}, "check KOMMO_ACC1_BASE_URL or KOMMO_ACC1_SUBDOMAIN"),
    ],
    ids=["wrong-token", "wrong-host"],
)
def test_an_account_of_kommo_accounts_is_told_its_own_variables(
    sandbox_factory, tmp_path, monkeypatch, change, words
):
    """With KOMMO_ACCOUNTS=acc1 the account reads KOMMO_ACC1_*, so that is what its run's
    errors name."""
    sb = sandbox_factory(leads=300, requests_per_second=None)
    monkeypatch.setenv("KOMMO_ACC1_API_TOKEN", change.get("token", sb.token))
    monkeypatch.setenv("KOMMO_ACC1_BASE_URL", sb.base_url)
    if "wrong_host" in change:
        sb.update_config(wrong_host=change["wrong_host"])
    settings = Settings(
        account="acc1",
        schema="kommo_acc1",
        start_date=datetime(2026, 9, 1).date(),
        duckdb_path=tmp_path / "k.duckdb",
    )
    defs = build_kommo_definitions([Account(settings, KommoResource.from_env(account="acc1"))])
    result = dg.materialize(
        list(defs.assets or []),
        selection=[dg.AssetKey(["kommo", "acc1", "leads"])],
        resources=defs.resources,
        partition_key="2026-10-15",
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = str(failure.step_failure_data.error)
    assert words in message
    assert "KOMMO_API_TOKEN" not in message and "KOMMO_BASE_URL" not in message


def test_a_run_without_users_does_not_ask_for_them(tmp_path):
    from kommo_dagster.sandbox import KommoSandbox, SandboxConfig

    with KommoSandbox(SandboxConfig(leads=300, requests_per_second=None, not_admin=True)) as sb:
        resource = KommoResource(
            api_token=sb.token, base_url=sb.base_url, rate_limit_dir=str(tmp_path / "rate")
        )
        assert run(resource).success
        assert "/api/v4/users" not in sb.stats()["by_path"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("KOMMO_A1_REQUESTS_PER_SECOND", "abc"), ("KOMMO_A1_MAX_WORKERS", "lots")],
)
def test_a_resource_used_alone_names_the_accounts_variable_and_the_value(
    monkeypatch, variable, value
):
    """A script's resource (`from_env`, no definitions load) fails when it is used, naming the
    variable it read and the value given, not a placeholder."""
    monkeypatch.setenv("KOMMO_A1_API_TOKEN", SECRET)
    monkeypatch.setenv("KOMMO_A1_SUBDOMAIN", "acme")
    monkeypatch.setenv(variable, value)
    resource = KommoResource.from_env(account="a1")
    with pytest.raises(KommoConfigError, match=f"{variable} must be .*got '{value}'"):
        resource.get_client()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KOMMO_REQUESTS_PER_SECOND", "1_0"),
        ("KOMMO_REQUESTS_PER_SECOND", "\u0663"),
        ("KOMMO_MAX_WORKERS", "\u0663"),
        ("KOMMO_MAX_WORKERS", "\u00b2"),
    ],
)
def test_a_resource_refuses_numbers_not_written_plainly_naming_the_value(
    monkeypatch, variable, value
):
    """int() and float() read "1_0" as 10 and an Arabic-Indic 3 as 3; a superscript 2 passed
    `str.isdigit` and then failed the load with a bare ValueError."""
    monkeypatch.setenv("KOMMO_API_TOKEN", SECRET)
    monkeypatch.setenv("KOMMO_SUBDOMAIN", "acme")
    monkeypatch.setenv(variable, value)
    resource = KommoResource.from_env()
    with pytest.raises(KommoConfigError, match=f"{variable} must be .*got {value!r}$"):
        resource.get_client()


@pytest.mark.parametrize(("rate", "workers"), [(" 2.5 ", " 3 "), ("+1", "+2"), ("5e-1", "08")])
def test_a_resource_takes_numbers_written_plainly(monkeypatch, rate, workers):
    monkeypatch.setenv("KOMMO_API_TOKEN", SECRET)
    monkeypatch.setenv("KOMMO_SUBDOMAIN", "acme")
    monkeypatch.setenv("KOMMO_REQUESTS_PER_SECOND", rate)
    monkeypatch.setenv("KOMMO_MAX_WORKERS", workers)
    settings = KommoResource.from_env().settings()
    assert (settings.requests_per_second, settings.max_workers) == (float(rate), int(workers))
