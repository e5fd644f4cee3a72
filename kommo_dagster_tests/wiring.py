"""Test helpers that wire the code location to a sandbox."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from kommo_dagster.definitions import build_definitions
from kommo_dagster.orchestration.resources import KommoResource
from kommo_dagster.orchestration.translator import KommoTranslator
from kommo_dagster.sandbox import KommoSandbox
from kommo_dagster.settings import Settings


def sandbox_kommo(sandbox: KommoSandbox, directory: Path, **overrides: Any) -> KommoResource:
    """A `KommoResource` for ``sandbox``, with its own rate-limit folder under ``directory``.

    The budget is far above the sandbox's so that tests never wait on it; tests of the limit
    itself build their clients directly.
    """
    settings: dict[str, Any] = dict(
        api_token=sandbox.token,
        base_url=sandbox.base_url,
        requests_per_second=1000.0,
        rate_limit_dir=str(directory / "rate-limit"),
    )
    return KommoResource(**(settings | overrides))


REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def local_definitions(
    directory: Path,
    *,
    kommo: KommoResource | None = None,
    translator: KommoTranslator | None = None,
    **overrides: Any,
) -> dg.Definitions:
    """The single account's definitions from October 2026 on, writing ``directory``'s
    ``crm.duckdb``; ``overrides`` are further `Settings` (``streams=``...), ``kommo`` and
    ``translator`` go to `build_definitions`."""
    settings = Settings(
        start_date=datetime(2026, 10, 1).date(), duckdb_path=directory / "crm.duckdb", **overrides
    )
    return build_definitions(settings, kommo=kommo, translator=translator)


def named_accounts_definitions(directory: Path, names: list[str]) -> dg.Definitions:
    """The definitions of accounts ``names`` (hosts ``<name>.kommo.com``, nothing contacted)."""
    from kommo_dagster.builder import build_kommo_definitions
    from kommo_dagster.orchestration.accounts import accounts_from_env

    env = {
        "KOMMO_ACCOUNTS": ",".join(names),
        "KOMMO_START_DATE": "2026-10-01",
        "KOMMO_DUCKDB_PATH": str(directory / "crm.duckdb"),
    }
    for name in names:
        env[f"KOMMO_{name.upper()}_API_TOKEN"] = f"token-{name}"
        env[f"KOMMO_{name.upper()}_BASE_URL"] = f"https://{name}.kommo.com"
    return build_kommo_definitions(accounts_from_env(env))


def accounts_env(
    sandboxes: Mapping[str, KommoSandbox], directory: Path, **budgets: float
) -> dict[str, str]:
    """The environment of a code location serving ``sandboxes`` as ``KOMMO_ACCOUNTS``, with a
    fresh DAGSTER_HOME and DuckDB file under ``directory``; ``budgets`` sets an account's
    requests per second (default: far above the sandbox's)."""
    home = directory / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # Create the instance's storage once: processes starting together race in its migration.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "DAGSTER_"))}
    env |= {
        "KOMMO_ACCOUNTS": ",".join(sandboxes),
        "KOMMO_START_DATE": "2026-09-01",
        "KOMMO_DUCKDB_PATH": str(directory / "kommo_crm.duckdb"),
        "KOMMO_RATE_LIMIT_DIR": str(directory / "rate-limit"),
        # The sandboxes' budgets are far above Kommo's 7 per second.
        "KOMMO_ALLOW_REQUESTS_PER_SECOND_ABOVE_LIMIT": "true",
        "DAGSTER_HOME": str(home),
    }
    for name, sandbox in sandboxes.items():
        prefix = f"KOMMO_{name.upper()}_"
        env[prefix + "API_TOKEN"] = sandbox.token
        env[prefix + "BASE_URL"] = sandbox.base_url
        env[prefix + "REQUESTS_PER_SECOND"] = str(budgets.get(name, 1000.0))
    return env


def materialize(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    """``dagster asset materialize -m kommo_dagster.definitions ARGS`` as a user runs it."""
    return subprocess.Popen(
        [DAGSTER, "asset", "materialize", "-m", "kommo_dagster.definitions", *args],
        cwd=REPO,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], *, timeout: float = 200) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def materialize_streams(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    streams: list[str] | tuple[str, ...],
    *,
    partition: str | None = None,
    partition_range: tuple[str, str] | None = None,
    raise_on_error: bool = True,
    with_checks: bool = False,
) -> dg.ExecuteInProcessResult:
    """Materialize ``kommo/<stream>`` for ``streams`` in one run, as the CLI would.

    ``partition_range`` is one single-run backfill of that range (the tags Dagster sets for
    it); ``with_checks`` runs the selected assets' checks after them.
    """
    tags = {}
    if partition_range:
        tags = {
            "dagster/asset_partition_range_start": partition_range[0],
            "dagster/asset_partition_range_end": partition_range[1],
        }
    checks = list(defs.asset_checks or []) if with_checks else []
    return dg.materialize(
        [*(defs.assets or []), *checks],
        selection=[dg.AssetKey(["kommo", s]) for s in streams],
        resources=defs.resources,
        instance=instance,
        partition_key=partition,
        tags=tags,
        raise_on_error=raise_on_error,
    )


class Warehouse:
    """A code location wired to one sandbox and one DuckDB file, and the instance its runs use."""

    def __init__(self, sandbox: KommoSandbox, directory: Path) -> None:
        self.sandbox = sandbox
        self.db = directory / "kommo_crm.duckdb"
        self.settings = Settings(start_date=datetime(2026, 9, 1).date(), duckdb_path=self.db)
        # one request in flight: request counts do not depend on timing
        self.kommo = sandbox_kommo(sandbox, directory, max_workers=1)
        self.defs = build_definitions(self.settings, kommo=self.kommo)
        self.instance = dg.DagsterInstance.ephemeral()

    def run(
        self,
        streams: list[str] | tuple[str, ...],
        *,
        partition: str | None = None,
        partition_range: tuple[str, str] | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        return materialize_streams(
            self.defs,
            self.instance,
            streams,
            partition=partition,
            partition_range=partition_range,
            raise_on_error=raise_on_error,
        )

    def rows(self, stream: str, where: str = "") -> list[dict[str, Any]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            cursor = con.execute(f"SELECT * FROM kommo.{stream} {where}")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def sql(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()

    def warnings(self, run_id: str) -> list[str]:
        """The warnings a run logged."""
        return [
            e.user_message
            for e in self.instance.all_logs(run_id)
            if e.user_message and e.level == logging.WARNING
        ]
