"""The code location: the Kommo assets, the Kommo resource and the DuckDB IO manager.

Load it with ``dagster dev -w workspace.yaml``, or run one asset with
``dagster asset materialize -m kommo_dagster.definitions --select kommo/leads --partition
2026-10-05`` (``--partition-range 2026-10-01...2026-10-31`` for a range, in one run).

Loading needs no credentials: the token, subdomain and base URL are `dagster.EnvVar` values read
when a run starts (a run without them fails at its start, naming the variable). The settings that
shape the definitions (``KOMMO_START_DATE``, ``KOMMO_DUCKDB_PATH``...) are read here, at load time;
see `kommo_dagster.settings` (``KOMMO_STREAMS``, ``KOMMO_SCHEMA`` and ``KOMMO_FULL_TABLE_STREAMS``
choose what is synced and where). ``KOMMO_ACCOUNTS=acc1,acc2`` serves several accounts, each
from its ``KOMMO_<ACCOUNT>_*`` variables (`kommo_dagster.accounts`).

Keeping it fresh: the jobs (`kommo_dagster.jobs`), schedules (`kommo_dagster.schedules`), the
change sensor (`kommo_dagster.sensors`) and the data checks (`kommo_dagster.checks`) are built
from the same settings, per account, by `kommo_dagster.builder`; schedules and the sensor start
stopped unless ``KOMMO_SCHEDULES_DEFAULT_ON=true``.
"""

import dagster as dg

from kommo_dagster.accounts import Account, accounts_from_env
from kommo_dagster.builder import build_kommo_definitions
from kommo_dagster.resources import KommoResource
from kommo_dagster.settings import Settings
from kommo_dagster.translator import KommoTranslator


def build_definitions(
    settings: Settings | None = None,
    *,
    kommo: KommoResource | None = None,
    translator: KommoTranslator | None = None,
) -> dg.Definitions:
    """The definitions of one account: ``settings`` and ``kommo``, or (both omitted) every
    account the environment configures (``KOMMO_ACCOUNTS``, or the single account).
    ``translator`` (a `KommoTranslator` subclass) renames keys, adds owners, tags..."""
    if settings is None and kommo is None:
        return build_kommo_definitions(accounts_from_env(), translator=translator)
    settings = settings or Settings.from_env()
    account = Account(settings, kommo or KommoResource.from_env())
    return build_kommo_definitions([account], translator=translator)


defs = build_definitions()

__all__ = ["build_definitions", "defs"]
