"""End to end through the Dagster UI's own API.

Starts `dagster-webserver` on loopback with `workspace.yaml` and a throwaway DAGSTER_HOME, and asks
its GraphQL endpoint what a user would see: the location loads, every asset is documented with its
column schema, and a materialization launched from the UI
against the sandbox succeeds. Every process the test starts is stopped in the fixture's teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests

from kommo_dagster.kommo.streams import STREAMS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LOCATION = "kommo_dagster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GraphQL:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = requests.post(
            self.url, json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory, sandbox) -> Iterator[tuple[GraphQL, Path]]:
    home = tmp_path_factory.mktemp("dagster_home")
    # Runs launched from the UI start at once instead of waiting for a daemon to dequeue them.
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
    database = tmp_path_factory.mktemp("warehouse") / "ui_test.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "KOMMO_API_TOKEN": sandbox.token,
        "KOMMO_SUBDOMAIN": "sandbox",
        "KOMMO_BASE_URL": sandbox.base_url,
        "KOMMO_DUCKDB_PATH": str(database),
        "KOMMO_START_DATE": "2026-10-01",
    }
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    graphql = GraphQL(f"http://127.0.0.1:{port}/graphql")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "dagster-webserver exited during start-up"
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "dagster-webserver did not start in 120 s"
            time.sleep(0.5)
        yield graphql, database
    finally:
        # The webserver's code server and run workers share its session: stop them all.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_code_location_is_loaded(webserver):
    graphql, _ = webserver
    data = graphql(
        """{ workspaceOrError { ... on Workspace { locationEntries {
              name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
        } } } }"""
    )
    entries = {e["name"]: e for e in data["workspaceOrError"]["locationEntries"]}
    assert entries[LOCATION]["loadStatus"] == "LOADED"
    assert entries[LOCATION]["locationOrLoadError"]["__typename"] == "RepositoryLocation"


def test_every_asset_is_documented_with_its_column_schema(webserver):
    graphql, _ = webserver
    data = graphql(
        """{ assetNodes {
              assetKey { path } description kinds groupName
              metadataEntries { label ... on TableSchemaMetadataEntry {
                  schema { columns { name type description } } } }
        } }"""
    )
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert set(nodes) >= {f"kommo/{name}" for name in STREAMS}
    for name, stream in STREAMS.items():
        node = nodes[f"kommo/{name}"]
        assert stream.holds in node["description"]  # the endpoint given once, with its query
        assert set(node["kinds"]) >= {"kommo", "duckdb"}
        schemas = [e for e in node["metadataEntries"] if e["label"] == "dagster/column_schema"]
        assert len(schemas) == 1, node["metadataEntries"]
        columns = schemas[0]["schema"]["columns"]
        assert [(c["name"], c["type"]) for c in columns] == [
            (c.name, c.duckdb_type) for c in stream.columns
        ]
        assert all(c["description"] for c in columns)


def test_materialization_launched_from_the_ui_succeeds(webserver, sandbox):
    graphql, database = webserver
    launched = graphql(
        """mutation Launch($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message }
                ... on InvalidSubsetError { message }
                ... on RunConfigValidationInvalid { errors { message } }
              }
        }""",
        params={
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["kommo", "pipelines"]}, {"path": ["kommo", "users"]}],
            },
            "runConfigData": {},
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + 180
    status = None
    while time.monotonic() < deadline:
        status = graphql(
            """query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }""",
            id=run_id,
        )["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(1)
    assert status == "SUCCESS"

    with duckdb.connect(str(database), read_only=True) as con:
        pipelines = con.execute("select count(*) from kommo.pipelines").fetchone()[0]
        users = con.execute("select count(*) from kommo.users").fetchone()[0]
    assert pipelines == len(sandbox.expected_rows("pipelines"))
    assert users == len(sandbox.expected_rows("users"))


def test_schedules_and_sensors_are_listed_and_stopped(webserver):
    from kommo_dagster.orchestration.schedules import (
        FINALIZE_SCHEDULE,
        FULL_SYNC_SCHEDULE,
        FULL_TABLES_SCHEDULE,
        TODAY_SCHEDULE,
    )
    from kommo_dagster.orchestration.sensors import CHANGE_SENSOR

    graphql, _ = webserver
    data = graphql(
        """{ repositoriesOrError { ... on RepositoryConnection { nodes {
              location { name }
              schedules { name cronSchedule scheduleState { status } }
              sensors { name sensorState { status } }
        } } } }"""
    )
    repositories = [
        r for r in data["repositoriesOrError"]["nodes"] if r["location"]["name"] == LOCATION
    ]
    assert len(repositories) == 1
    repository = repositories[0]
    expected_schedules = {
        TODAY_SCHEDULE,
        FINALIZE_SCHEDULE,
        FULL_TABLES_SCHEDULE,
        FULL_SYNC_SCHEDULE,
    }
    assert {s["name"] for s in repository["schedules"]} == expected_schedules
    assert {s["name"] for s in repository["sensors"]} == {CHANGE_SENSOR}
    # Off until a user turns them on (KOMMO_SCHEDULES_DEFAULT_ON is not set here).
    assert {s["scheduleState"]["status"] for s in repository["schedules"]} == {"STOPPED"}
    assert {s["sensorState"]["status"] for s in repository["sensors"]} == {"STOPPED"}
