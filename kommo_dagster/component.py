"""`KommoComponent`: Kommo accounts as a ``dg`` component, configured by a ``defs.yaml``.

``dg scaffold defs kommo_dagster.KommoComponent crm`` writes ``defs/crm/defs.yaml``::

    type: kommo_dagster.KommoComponent
    attributes:
      duckdb_path: data/kommo_crm.duckdb
      accounts:
        - name: main
          api_token: "{{ env.KOMMO_MAIN_API_TOKEN }}"
          subdomain: mycompany            # or base_url: https://mycompany.amocrm.ru
          start_date: "2024-01-01"
          streams: [pipelines, statuses, users, leads, contacts, companies, tasks, events]
          full_table_streams: []          # incremental streams to sync as full tables
          schedules: false                # schedules and change sensor start stopped

Each account gets exactly what ``KOMMO_ACCOUNTS`` gives it (`kommo_dagster.accounts`): assets
``kommo/<name>/<stream>``, schema ``kommo_<name>``, its jobs, schedules, sensor, checks and pool,
and the ``kommo_all`` views; both paths go through `kommo_dagster.builder`.

The token must be written as ``"{{ env.VARIABLE }}"``: it becomes a `dagster.EnvVar`, read when
a run starts, so it is neither stored in ``defs.yaml`` nor shown in the UI's resource config.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component
from dagster.components.resolved.context import ResolutionContext
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from pydantic import Field

from kommo_dagster.accounts import Account, check_account_name
from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.kommo.config import DEFAULT_MAX_WORKERS, DEFAULT_REQUESTS_PER_SECOND
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.resources import KommoResource
from kommo_dagster.settings import (
    DEFAULT_DUCKDB_PATH,
    DEFAULT_HISTORY_RETENTION_DAYS,
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_SCHEMA,
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    DEFAULT_START_DATE,
    Settings,
    SettingsError,
)
from kommo_dagster.translator import KommoTranslator, KommoTranslatorData

_ENV_TEMPLATE = re.compile(
    r"\{\{\s*(?:env\.(?P<dot>[A-Za-z_]\w*)|env\(\s*['\"](?P<call>[A-Za-z_]\w*)['\"]\s*\))\s*\}\}"
)


def _token_variable(context: ResolutionContext, raw: Any) -> str:
    """``"{{ env.X }}"`` -> ``"X"``, the variable the resource reads when a run starts (the
    template is not rendered at load); anything else is refused, so that no token is written
    into ``defs.yaml``."""
    match = _ENV_TEMPLATE.fullmatch(str(raw).strip())
    if match is None:
        raise SettingsError(
            'api_token must name an environment variable, written "{{ env.KOMMO_MAIN_API_TOKEN }}"'
            ": a token written in defs.yaml would be stored with the project and shown in the UI"
        )
    return match["dot"] or match["call"]


class KommoAccountConfig(dg.Resolvable, dg.Model):
    """One Kommo account of the component."""

    name: str = Field(description="Account name ([a-z0-9_]): assets kommo/<name>/<stream>.")
    api_token: Annotated[
        str,
        dg.Resolver(
            _token_variable,
            model_field_type=str,
            inject_before_resolve=False,
            description="The token.",
        ),
    ] = Field(description='The token as "{{ env.VARIABLE }}", read when a run starts.')
    subdomain: str | None = Field(default=None, description="mycompany for mycompany.kommo.com.")
    base_url: str | None = Field(
        default=None, description="The account's URL instead: an amoCRM host, a sandbox."
    )
    start_date: str = Field(
        default=DEFAULT_START_DATE.isoformat(), description="First daily partition, YYYY-MM-DD."
    )
    streams: list[str] = Field(default_factory=lambda: list(STREAMS), description="Streams.")
    full_table_streams: list[str] = Field(
        default_factory=list, description="Incremental streams synced as full tables instead."
    )
    schedules: bool = Field(default=False, description="Schedules and sensor start running.")
    sensor_interval_seconds: int = Field(default=DEFAULT_SENSOR_INTERVAL_SECONDS)
    requests_per_second: float = Field(
        default=DEFAULT_REQUESTS_PER_SECOND, description="The account's request budget."
    )
    max_workers: int = Field(default=DEFAULT_MAX_WORKERS, description="Requests in flight.")


DEFS_YAML = """\
# Kommo CRM accounts -> DuckDB. Each account gets assets kommo/<name>/<stream>, schema
# kommo_<name>, its jobs, schedules, change sensor, checks and concurrency pool kommo_<name>;
# kommo_all.<stream> unites the accounts. Add accounts to the list; names are [a-z0-9_].
type: {type_name}
attributes:
  duckdb_path: data/kommo_crm.duckdb   # or md:<database> for MotherDuck
  accounts:
    - name: main
      # Never the token itself: an environment variable, read when a run starts.
      api_token: "{{{{ env.KOMMO_MAIN_API_TOKEN }}}}"
      subdomain: mycompany             # https://mycompany.kommo.com
      # base_url: https://mycompany.amocrm.ru   # instead of subdomain, for amoCRM
      start_date: "{start_date}"
      streams: [{streams}]
      full_table_streams: []           # incremental streams to sync as full tables instead
      schedules: false                 # true: schedules and the change sensor start running
      requests_per_second: {rps}
"""


class KommoScaffolder(dg.Scaffolder):
    """Writes a commented ``defs.yaml`` with one account to fill in."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        if request.scaffold_format != "yaml":
            scaffold_component(request)
            return
        (request.target_path / "defs.yaml").write_text(
            DEFS_YAML.format(
                type_name=request.type_name,
                start_date=DEFAULT_START_DATE.isoformat(),
                streams=", ".join(STREAMS),
                rps=DEFAULT_REQUESTS_PER_SECOND,
            ),
            encoding="utf-8",
        )


def _translation_vars(data: KommoTranslatorData) -> dict[str, Any]:
    return {
        "table": data.table.name,
        "account": data.settings.account,
        "kind": data.table.kind,
        "data": data,
    }


class _ComponentTranslator(KommoTranslator):
    def __init__(self, component: KommoComponent) -> None:
        self.component = component

    def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
        return self.component.get_asset_spec(data)


@dg.scaffold_with(KommoScaffolder)
class KommoComponent(dg.Component, dg.Resolvable, dg.Model):
    """Kommo CRM accounts extracted into one DuckDB (or MotherDuck) warehouse."""

    accounts: list[KommoAccountConfig] = Field(description="The Kommo accounts.")
    duckdb_path: str = Field(
        default=str(DEFAULT_DUCKDB_PATH),
        description="The DuckDB file (relative: to the project root), or md:<database>.",
    )
    lock_timeout: float = Field(default=DEFAULT_LOCK_TIMEOUT_SECONDS)
    memory_limit: str = Field(default=DEFAULT_MEMORY_LIMIT)
    staging_dir: str | None = Field(default=None)
    history_retention_days: int = Field(default=DEFAULT_HISTORY_RETENTION_DAYS)
    rate_limit_dir: str | None = Field(
        default=None, description="Folder of the per-host request budgets (shared per machine)."
    )
    translation: (
        Annotated[
            TranslationFn[KommoTranslatorData],
            TranslationFnResolver(template_vars_for_translation_fn=_translation_vars),
        ]
        | None
    ) = Field(
        default=None,
        description="Asset attributes of every table (key, group_name, owners, tags, kinds, "
        "description...); templates see {{ table }}, {{ account }}, {{ kind }}, {{ spec }}.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_kommo_definitions(
            self.build_accounts(project_root=context.project_root), translator=self.translator()
        )

    def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
        """The spec of one table's asset: the default, then ``translation``. Override it in a
        subclass of the component for what ``defs.yaml`` cannot say."""
        spec = KommoTranslator().get_asset_spec(data)
        return self.translation(spec, data) if self.translation else spec

    def translator(self) -> KommoTranslator:
        """The translator the definitions are built with: this component's `get_asset_spec`."""
        return _ComponentTranslator(self)

    def build_accounts(self, *, project_root: Path | None = None) -> list[Account]:
        if not self.accounts:
            raise SettingsError("KommoComponent lists no account")
        database: str | Path = self.duckdb_path
        if project_root is not None and not str(database).lower().startswith(("md:", ":")):
            database = project_root / database
        return [self._account(a, database=database) for a in self.accounts]

    def _account(self, config: KommoAccountConfig, *, database: str | Path) -> Account:
        name = check_account_name(config.name, source="KommoComponent accounts")
        try:
            start_date = date.fromisoformat(config.start_date)
        except ValueError:
            raise SettingsError(
                f"KommoComponent account {name}: start_date must be a date written YYYY-MM-DD, "
                f"got {config.start_date!r}"
            ) from None
        settings = Settings(
            account=name,
            schema=f"{DEFAULT_SCHEMA}_{name}",
            start_date=start_date,
            duckdb_path=database,
            lock_timeout=self.lock_timeout,
            memory_limit=self.memory_limit,
            staging_dir=Path(self.staging_dir) if self.staging_dir else None,
            streams=tuple(config.streams),
            full_table_streams=tuple(config.full_table_streams),
            history_retention_days=self.history_retention_days,
            schedules_default_on=config.schedules,
            sensor_interval_seconds=config.sensor_interval_seconds,
        )
        kommo = KommoResource(
            api_token=dg.EnvVar(config.api_token),  # resolved holds the variable's name
            subdomain=config.subdomain,
            base_url=config.base_url,
            requests_per_second=config.requests_per_second,
            max_workers=config.max_workers,
            rate_limit_dir=self.rate_limit_dir,
        )
        return Account(settings, kommo)


__all__ = ["KommoAccountConfig", "KommoComponent", "KommoScaffolder"]
