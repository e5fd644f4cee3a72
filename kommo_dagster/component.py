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

Every setting of ``KOMMO_<ACCOUNT>_*`` is a field of the account, and the shared ones
(``duckdb_path``, ``lock_timeout``...) are top-level fields (`kommo_dagster.settings.SETTINGS`
declares both); `Settings` validates them with the code that validates the variables, so a bad
value fails the load naming its field (``defs.yaml accounts[0].requests_per_second``).

Each account gets exactly what ``KOMMO_ACCOUNTS`` gives it (`kommo_dagster.orchestration.accounts`):
assets ``kommo/<name>/<stream>``, schema ``kommo_<name>``, its jobs, schedules, sensor, checks and
pool, and the ``kommo_all`` views; both paths go through `kommo_dagster.builder`.

The token must be written as ``"{{ env.VARIABLE }}"``: it becomes a `dagster.EnvVar`, read when
a run starts, so it is neither stored in ``defs.yaml`` nor shown in the UI's resource config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component
from dagster.components.resolved.context import ResolutionContext
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from pydantic import Field

from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.kommo.config import DEFAULT_REQUESTS_PER_SECOND
from kommo_dagster.kommo.streams import STREAMS
from kommo_dagster.orchestration.accounts import Account, accounts_of
from kommo_dagster.orchestration.translator import KommoTranslator, KommoTranslatorData
from kommo_dagster.setting_values import SettingsError
from kommo_dagster.settings import (
    DEFAULT_DUCKDB_PATH,
    DEFAULT_SCHEMA,
    DEFAULT_START_DATE,
    SETTING,
    SETTINGS,
    Location,
    Settings,
)
from kommo_dagster.warehouse.sql import is_file_database

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
            "api_token must name an environment variable, written"
            ' "{{ env.KOMMO_<ACCOUNT>_API_TOKEN }}": a token written in defs.yaml would be stored'
            " with the project and shown in the UI"
        )
    return match["dot"] or match["call"]


def _as_written(context: ResolutionContext, value: Any) -> Any:
    return value


# Values are taken as written (or text) and validated by `Settings`, as the variables are, so an
# error names the defs.yaml field and the value given. Unset (None): the default. A number field
# takes a flag as written too: pydantic would otherwise read a YAML true as 1, which no check
# could refuse (a day of history, a second's wait).
Number = Annotated[
    float | str | bool | None,
    dg.Resolver(_as_written, model_field_type=float | str | bool | None),
]
Whole = Annotated[
    int | str | bool | None, dg.Resolver(_as_written, model_field_type=int | str | bool | None)
]
Flag = Annotated[bool | str | None, dg.Resolver(_as_written, model_field_type=bool | str | None)]
Names = Annotated[
    list[str] | str | None, dg.Resolver(_as_written, model_field_type=list[str] | str | None)
]


class KommoAccountConfig(dg.Resolvable, dg.Model):
    """One Kommo account of the component: the fields of ``KOMMO_<ACCOUNT>_*``."""

    name: str = Field(description="Account name ([a-z0-9_]): assets kommo/<name>/<stream>.")
    api_token: Annotated[
        str | None,
        dg.Resolver(
            _token_variable,
            model_field_type=str,
            inject_before_resolve=False,
            description="The token.",
        ),
    ] = Field(
        default=None, description='The token as "{{ env.VARIABLE }}", read when a run starts.'
    )
    subdomain: str | None = Field(default=None, description=SETTING["subdomain"].about)
    base_url: str | None = Field(default=None, description=SETTING["base_url"].about)
    allow_any_host: Flag = Field(default=None, description=SETTING["allow_any_host"].about)
    requests_per_second: Number = Field(
        default=None, description=SETTING["requests_per_second"].about
    )
    allow_requests_per_second_above_limit: Flag = Field(
        default=None, description=SETTING["allow_requests_per_second_above_limit"].about
    )
    max_workers: Whole = Field(default=None, description=SETTING["max_workers"].about)
    rate_limit_dir: str | None = Field(default=None, description=SETTING["rate_limit_dir"].about)
    ban_cooldown_seconds: Number = Field(
        default=None, description=SETTING["ban_cooldown_seconds"].about
    )
    start_date: str | None = Field(default=None, description=SETTING["start_date"].about)
    streams: Names = Field(default=None, description=SETTING["streams"].about)
    full_table_streams: Names = Field(default=None, description=SETTING["full_table_streams"].about)
    schedules: Flag = Field(default=None, description=SETTING["schedules_default_on"].about)
    sensor_interval_seconds: Whole = Field(
        default=None, description=SETTING["sensor_interval_seconds"].about
    )


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
        default=str(DEFAULT_DUCKDB_PATH), description=SETTING["duckdb_path"].about
    )
    lock_timeout: Number = Field(default=None, description=SETTING["lock_timeout"].about)
    memory_limit: str | None = Field(default=None, description=SETTING["memory_limit"].about)
    staging_dir: str | None = Field(default=None, description=SETTING["staging_dir"].about)
    history_retention_days: Whole = Field(
        default=None, description=SETTING["history_retention_days"].about
    )
    timezone: str | None = Field(default=None, description=SETTING["timezone"].about)
    rate_limit_dir: str | None = Field(
        default=None, description="Default of the accounts' rate_limit_dir (KOMMO_RATE_LIMIT_DIR)."
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
        """The accounts' definitions; any bad value, or a token variable that is not set,
        fails the load naming the defs.yaml field and the value."""
        location = Location(tuple(self.build_settings(project_root=context.project_root)))
        location.check_credentials()
        return build_kommo_definitions(accounts_of(location), translator=self.translator())

    def get_asset_spec(self, data: KommoTranslatorData) -> dg.AssetSpec:
        """The spec of one table's asset: the default, then ``translation``. Override it in a
        subclass of the component for what ``defs.yaml`` cannot say."""
        spec = KommoTranslator().get_asset_spec(data)
        return self.translation(spec, data) if self.translation else spec

    def translator(self) -> KommoTranslator:
        """The translator the definitions are built with: this component's `get_asset_spec`."""
        return _ComponentTranslator(self)

    def build_accounts(self, *, project_root: Path | None = None) -> list[Account]:
        return accounts_of(Location(tuple(self.build_settings(project_root=project_root))))

    def build_settings(self, *, project_root: Path | None = None) -> list[Settings]:
        if not self.accounts:
            raise SettingsError("defs.yaml accounts lists no account")
        database: str | Path = self.duckdb_path
        # A blank path stays as given, for Settings to refuse.
        if project_root is not None and database.strip() and is_file_database(database):
            database = project_root / database
        # The top-level fields: the warehouse, and the accounts' default rate_limit_dir.
        top = type(self).model_fields
        shared = {
            s.field: getattr(self, s.yaml_field) if s.yaml_field in top else None for s in SETTINGS
        }
        shared["duckdb_path"] = database
        return [self._account(i, a, shared) for i, a in enumerate(self.accounts)]

    def _account(self, index: int, config: KommoAccountConfig, shared: dict) -> Settings:
        """One account's `Settings` from its fields (else the top-level ones), validated by the
        code that validates the variables; each value is named by its defs.yaml field."""
        where = f"defs.yaml accounts[{index}]"
        if config.api_token is None:
            raise SettingsError(
                f'{where}.api_token is not set: write it as "{{{{ env.VARIABLE }}}}", the '
                f"variable holding the account's token (got no value)"
            )
        values: dict[str, Any] = {}
        sources = {"account": f"{where}.name"}
        for s in SETTINGS:
            own = getattr(config, s.yaml_field) if s.scope in ("own", "account") else None
            value = own if own is not None else shared[s.field]
            top_level = own is None and (s.scope == "shared" or value is not None)
            sources[s.field] = (
                f"defs.yaml {s.yaml_field}" if top_level else f"{where}.{s.yaml_field}"
            )
            if value is not None:
                values[s.field] = value
        schema = f"{DEFAULT_SCHEMA}_{config.name}"
        return Settings(account=config.name, schema=schema, sources=sources, **values)


__all__ = ["KommoAccountConfig", "KommoComponent", "KommoScaffolder"]
