"""`KommoComponent` in a `dg` project of its own: registered with `dg`, scaffolded by
`dg scaffold defs`, filled in for two sandbox accounts, and materialized with `dg launch`; and,
in process, that the component builds what the environment builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.component import KommoComponent
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.orchestration.accounts import accounts_from_env
from kommo_dagster.sandbox import SandboxConfig
from kommo_dagster.setting_values import SettingsError

DG = str(Path(sys.executable).with_name("dg"))
PYPROJECT = """\
[project]
name = "crm_project"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "crm_project"

[tool.dg.cli]
suppress_warnings = ["project_and_activated_venv_mismatch"]
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def _dg(project: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [DG, *args], cwd=project, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _project(root: Path) -> Path:
    """An empty dg project, ``crm_project``, with a defs folder."""
    (root / "crm_project" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "crm_project" / "__init__.py").write_text("")
    (root / "crm_project" / "defs" / "__init__.py").write_text("")
    (root / "crm_project" / "definitions.py").write_text(DEFINITIONS)
    return root


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_scaffold_fill_and_launch_two_accounts_with_dg(tmp_path: Path, sandbox_factory):
    br = sandbox_factory(SandboxConfig(seed=5, leads=30, token="token-of-br"))
    ru = sandbox_factory(SandboxConfig(seed=6, leads=20, token="token-of-ru"))
    project = _project(tmp_path / "project")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    env |= {"DAGSTER_HOME": str(home), "BR_TOKEN": br.token, "RU_TOKEN": ru.token}

    listed = _dg(project, "list", "components", "--json", env=env)
    assert "kommo_dagster.KommoComponent" in {c["key"] for c in json.loads(listed.stdout)["items"]}

    _dg(project, "scaffold", "defs", "kommo_dagster.KommoComponent", "crm", env=env)
    defs_yaml = project / "crm_project" / "defs" / "crm" / "defs.yaml"
    scaffolded = yaml.safe_load(defs_yaml.read_text())
    assert scaffolded["type"] == "kommo_dagster.KommoComponent"
    [example] = scaffolded["attributes"]["accounts"]
    assert example["api_token"] == "{{ env.KOMMO_MAIN_API_TOKEN }}"
    assert example["streams"] == list(STREAMS)
    assert "base_url: https://mycompany.amocrm.ru" in defs_yaml.read_text()

    # Fill it in for the two sandboxes, as a user edits the scaffolded file.
    scaffolded["attributes"] |= {
        "duckdb_path": "data/crm.duckdb",
        "rate_limit_dir": str(tmp_path / "rate-limit"),
        "accounts": [
            {
                "name": name,
                "api_token": "{{ env." + variable + " }}",
                "base_url": sandbox.base_url,
                "start_date": "2026-10-01",
                "streams": ["pipelines", "statuses", "users", "leads"],
                "full_table_streams": ["leads"],
                "schedules": False,
            }
            for name, variable, sandbox in (("br", "BR_TOKEN", br), ("ru", "RU_TOKEN", ru))
        ],
    }
    defs_yaml.write_text(yaml.safe_dump(scaffolded, sort_keys=False))

    listed = json.loads(_dg(project, "list", "defs", "--json", env=env).stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    chosen = ("pipelines", "statuses", "users", "leads")
    # The chosen streams of each account, plus what is derived from them (and their inputs).
    assert {k for k in keys if k.rsplit("/", 1)[1] in chosen} == {
        f"kommo/{a}/{s}" for a in ("br", "ru") for s in chosen
    }
    assert {k.split("/")[1] for k in keys} == {"br", "ru"}
    assert {s["name"] for s in listed["sensors"]} == {
        "kommo_br_change_sensor",
        "kommo_ru_change_sensor",
    }

    selection = ",".join(
        f"kommo/{a}/{s}" for a in ("br", "ru") for s in ("pipelines", "statuses", "users", "leads")
    )
    _dg(project, "launch", "--assets", selection, env=env)

    with duckdb.connect(str(project / "data" / "crm.duckdb"), read_only=True) as con:
        for account, sandbox in (("br", br), ("ru", ru)):
            for stream in ("pipelines", "statuses", "users", "leads"):
                [(count,)] = con.execute(
                    f"SELECT count(*) FROM kommo_{account}.{stream}"
                ).fetchall()
                assert count == len(sandbox.expected_rows(stream)), (account, stream)
        [(accounts,)] = con.execute(
            "SELECT count(DISTINCT account) FROM kommo_all.leads"
        ).fetchall()
        assert accounts == 2
    for sandbox in (br, ru):
        assert "401" not in sandbox.stats()["by_status"]


def test_the_component_builds_what_the_environment_builds(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BR_TOKEN", "token-br")
    component = KommoComponent.resolve_from_yaml(
        textwrap.dedent(
            f"""
            duckdb_path: {tmp_path / "crm.duckdb"}
            accounts:
              - name: br
                api_token: "{{{{ env.BR_TOKEN }}}}"
                subdomain: brazil
                start_date: "2026-10-01"
                full_table_streams: [tasks]
                schedules: true
              - name: ru
                api_token: "{{{{ env('RU_TOKEN') }}}}"
                base_url: https://moscow.amocrm.ru
                streams: [pipelines, statuses]
            """
        )
    )
    from_yaml = build_kommo_definitions(component.build_accounts())
    from_env = build_kommo_definitions(
        accounts_from_env(
            {
                "KOMMO_ACCOUNTS": "br,ru",
                "KOMMO_DUCKDB_PATH": str(tmp_path / "crm.duckdb"),
                "KOMMO_BR_SUBDOMAIN": "brazil",
                "KOMMO_BR_START_DATE": "2026-10-01",
                "KOMMO_BR_FULL_TABLE_STREAMS": "tasks",
                "KOMMO_BR_SCHEDULES_DEFAULT_ON": "true",
                "KOMMO_RU_BASE_URL": "https://moscow.amocrm.ru",
                "KOMMO_RU_STREAMS": "pipelines,statuses",
            }
        )
    )

    def shape(defs: dg.Definitions) -> dict[str, object]:
        repo = defs.get_repository_def()
        assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
        return {
            "assets": sorted(
                (a.key.to_user_string(), a.op.pool, str(a.partitions_def)) for a in assets
            ),
            "checks": sorted(c.node_def.name for c in defs.asset_checks or []),
            "jobs": sorted(j.name for j in repo.get_all_jobs()),
            "schedules": sorted((s.name, s.default_status.value) for s in repo.schedule_defs),
            "sensors": sorted((s.name, s.default_status.value) for s in repo.sensor_defs),
            "resources": sorted(defs.resources or {}),
        }

    built = shape(from_yaml)
    assert built == shape(from_env)
    # ...and both built what the file says, not the same defaults
    ru = sorted(k for k, _, _ in built["assets"] if k.startswith("kommo/ru/"))
    assert ru == ["kommo/ru/pipelines", "kommo/ru/statuses"]
    assert ("kommo/br/tasks", "kommo_br", "None") in built["assets"]  # a full table
    on = {name for name, status in built["schedules"] if status == "RUNNING"}
    assert on and all(name.startswith("kommo_br_") for name in on)
    # The token stays a variable, read when a run starts.
    br = component.build_accounts()[0].kommo
    assert isinstance(br.api_token, dg.EnvVar) and br.api_token.env_var_name == "BR_TOKEN"
    assert br.settings().token.get_secret_value() == "token-br"


def test_a_literal_token_is_refused():
    with pytest.raises(Exception, match="api_token must name an environment variable") as failure:
        KommoComponent.resolve_from_yaml(
            "accounts:\n  - name: br\n    api_token: a-real-token\n    subdomain: x\n"
        )
    # Dagster's resolution error wraps the project's own refusal
    assert isinstance(failure.value.__cause__ or failure.value.__context__, SettingsError)
    # The example names the account's own variable, not another account's; nor is the token quoted
    assert "{{ env.KOMMO_<ACCOUNT>_API_TOKEN }}" in str(failure.value)
    assert "a-real-token" not in "".join(traceback.format_exception(failure.value))


def test_a_bad_account_name_is_refused(tmp_path: Path):
    component = KommoComponent.resolve_from_yaml(
        'accounts:\n  - name: Br-1\n    api_token: "{{ env.X }}"\n    subdomain: x\n'
    )
    with pytest.raises(SettingsError, match="lower-case letters, digits and _"):
        component.build_accounts()
